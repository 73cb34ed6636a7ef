package vm

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestReadBootEntry: the test bootloader on a disk of BuildRouterDisk,
// with a second generation (its kernel reached through a link in its own
// store path, then a relative one) and a third without a kernel, in the
// states a router leaves its disk in.
func TestReadBootEntry(t *testing.T) {
	for _, tool := range []string{"debugfs", "mke2fs", "e2fsck"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("SKIPPED: no %s (e2fsprogs)", tool)
		}
	}
	if _, _, err := Kernel(); err != nil {
		t.Skipf("SKIPPED: %v", err)
	}
	dir := t.TempDir()
	roostd := filepath.Join(dir, "roostd")
	os.WriteFile(roostd, []byte("#!/bin/sh\n"), 0o755)
	d, err := BuildRouterDisk(filepath.Join(dir, "disk"), RouterSystem{Roostd: roostd, Config: []byte("{}"), Cmdline: "console=ttyS0 panic=-1 quiet"})
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "disk", "root")
	sys2, sys3 := "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-roost-system-two", "/nix/store/zyxwvsrqpnmlkjihgfdcba9876543210-roost-system-three"
	initrd, _ := os.Readlink(filepath.Join(root, d.System.String(), "initrd"))
	linux, _ := filepath.Rel(filepath.Join(root, "nix/store"), filepath.Dir(d.Kernel))
	os.Chmod(filepath.Join(root, "nix/store"), 0o755)
	for file, spec := range map[string]string{
		sys2 + "/cmdline":                    "data:console=ttyS0 roost.test=2\n",
		sys2 + "/kernel":                     "link:" + sys2 + "/boot/kernel",
		sys2 + "/boot/kernel":                "link:../../" + linux + "/bzImage",
		sys2 + "/initrd":                     "link:" + initrd,
		sys3 + "/cmdline":                    "data:console=ttyS0\n",
		sys3 + "/initrd":                     "link:" + initrd,
		"nix/var/nix/profiles/system-2-link": "link:" + sys2,
		"nix/var/nix/profiles/system-3-link": "link:" + sys3,
	} {
		if err := writeSpec(filepath.Join(root, file), spec); err != nil {
			t.Fatal(err)
		}
	}
	kernel, initrdData := read(t, d.Kernel), read(t, d.Initrd)

	for _, tc := range []struct {
		name     string
		def      int    // the profile's default
		once     string // persist/roost/boot-once, if not ""
		dirty    bool   // a journal to replay
		gen      int
		cmdline  string
		note     string
		thenGen  int    // the next boot's
		errorHas string // ReadBootEntry fails
	}{
		{name: "the first generation", def: 1, gen: 1, cmdline: d.Cmdline, thenGen: 1},
		{name: "the default", def: 2, gen: 2, cmdline: "console=ttyS0 roost.test=2", thenGen: 2},
		{name: "one-shot", def: 1, once: "2\n", gen: 2, cmdline: "console=ttyS0 roost.test=2 roost.generation=2 roost.trial=1", thenGen: 1},
		{name: "one-shot of a missing generation", def: 1, once: "7", gen: 1, cmdline: d.Cmdline, note: "the one-shot entry, generation 7, cannot boot", thenGen: 1},
		{name: "one-shot without a kernel", def: 2, once: "3", gen: 2, cmdline: "console=ttyS0 roost.test=2", note: "generation 3, cannot boot", thenGen: 2},
		{name: "malformed one-shot", def: 1, once: "two", gen: 1, cmdline: d.Cmdline, note: `holds "two", not a generation number`, thenGen: 1},
		{name: "journal to replay", def: 2, dirty: true, gen: 2, cmdline: "console=ttyS0 roost.test=2", note: "replayed the file system's journal", thenGen: 2},
		{name: "default without a kernel", def: 3, errorHas: "the default, generation 3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			profile := filepath.Join(root, "nix/var/nix/profiles/system")
			os.Remove(profile)
			os.Symlink(fmt.Sprintf("system-%d-link", tc.def), profile)
			once := filepath.Join(root, BootOnceFile)
			os.Remove(once)
			if tc.once != "" {
				os.WriteFile(once, []byte(tc.once), 0o600)
			}
			image := filepath.Join(t.TempDir(), "disk.img")
			if out, err := exec.Command("mke2fs", "-q", "-t", "ext4", "-d", root, image, "512M").CombinedOutput(); err != nil {
				t.Fatalf("mke2fs: %v: %s", err, out)
			}
			if tc.dirty {
				// An empty transaction left in the journal: the image
				// needs recovery, as after a reset.
				script := filepath.Join(t.TempDir(), "journal")
				os.WriteFile(script, []byte("jo\njw /dev/null\n"), 0o644)
				exec.Command("debugfs", "-w", "-f", script, image).Run()
				if out, _ := (extImage{image}).debugfs(false, "features"); !bytes.Contains(out, []byte("needs_recovery")) {
					t.Fatalf("the image needs no recovery: %s", out)
				}
			}
			boot := t.TempDir()
			e, err := ReadBootEntry(image, boot)
			if tc.errorHas != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errorHas) {
					t.Fatalf("ReadBootEntry: %+v, %v; want an error with %q", e, err, tc.errorHas)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			notes := strings.Join(e.Notes, "; ")
			if e.Generation != tc.gen || e.Cmdline != tc.cmdline || e.Once != (tc.gen != tc.def) || (tc.note == "") != (notes == "") || !strings.Contains(notes, tc.note) {
				t.Fatalf("entry %+v; want generation %d, cmdline %q, note %q", e, tc.gen, tc.cmdline, tc.note)
			}
			if want := map[int]string{1: d.System.String(), 2: sys2}[tc.gen]; e.System.String() != want {
				t.Errorf("system %s, want %s", e.System, want)
			}
			if !bytes.Equal(read(t, e.Kernel), kernel) || !bytes.Equal(read(t, e.Initrd), initrdData) || filepath.Dir(e.Kernel) != boot {
				t.Errorf("kernel %s or initrd %s is not the system's", e.Kernel, e.Initrd)
			}
			next, err := ReadBootEntry(image, boot)
			if err != nil || next.Generation != tc.thenGen || next.Once || len(next.Notes) > 0 {
				t.Fatalf("the next boot: %+v, %v; want generation %d, the one-shot entry gone, the journal replayed", next, err, tc.thenGen)
			}
		})
	}
}

func read(t *testing.T, file string) []byte {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
