package vm

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/roostrouter/roost/updater/atomicfile"
	"github.com/roostrouter/roost/updater/storepath"
)

// The test bootloader: what a router's bootloader (grub, U-Boot's
// extlinux) does before the kernel runs, for the router VM, whose QEMU
// otherwise boots what it is given. It reads the disk image while QEMU is
// stopped, with debugfs (no mount, no root privileges): the profile's
// default generation, or a one-shot entry the router left for its next
// boot only, as grub-reboot does.

// BootOnceFile is the one-shot entry in the disk image: the number of a
// generation to boot once as a trial (roost.trial=1), in the state folder
// (/persist/roost/boot-once on the router). The bootloader deletes it as
// it takes it, as grub clears grub-reboot's next_entry.
const BootOnceFile = "persist/roost/boot-once"

// BootEntry is what the bootloader boots: a generation's kernel, initrd
// and kernel command line.
type BootEntry struct {
	Generation int
	System     storepath.Path
	// Kernel and Initrd are the system's, copied out of the image.
	Kernel, Initrd string
	// Cmdline is the system's cmdline file; a one-shot entry's has
	// roost.generation=N roost.trial=1 after it.
	Cmdline string
	Once    bool // the one-shot entry, now deleted
	// Notes say what else the bootloader did: a journal replayed, a
	// one-shot entry passed over and why.
	Notes []string
}

// ReadBootEntry is the test bootloader: it finds in the ext4 disk image
// the entry to boot, copies its kernel and initrd into dir (as dir/kernel
// and dir/initrd, replacing those of an earlier boot) and returns it. The
// entry is the one-shot one if the image has BootOnceFile naming a
// generation it holds, else the profile's default (its first generation's
// entry is the disk's Kernel, Initrd and Cmdline). A journal the last boot
// left unreplayed (a reset, a power cut) is replayed first, as the kernel
// would as it mounts the disk: reading around it would boot what was the
// default before the last commits. QEMU must not run on the image.
func ReadBootEntry(image, dir string) (*BootEntry, error) {
	x := extImage{file: image}
	e := &BootEntry{}
	replayed, err := x.replayJournal()
	if err != nil {
		return nil, err
	}
	if replayed {
		e.Notes = append(e.Notes, "replayed the file system's journal: the last boot ended without unmounting it")
	}
	once, note, err := x.takeBootOnce()
	if err != nil {
		return nil, err
	}
	if once > 0 {
		if err := x.entry(e, once, dir); err != nil {
			note = fmt.Sprintf("the one-shot entry, generation %d, cannot boot (%v): booting the default", once, err)
		} else {
			e.Once = true
			e.Cmdline += fmt.Sprintf(" roost.generation=%d roost.trial=1", once)
		}
	}
	if note != "" {
		e.Notes = append(e.Notes, note)
	}
	if !e.Once {
		n, err := x.defaultGeneration()
		if err != nil {
			return nil, err
		}
		if err := x.entry(e, n, dir); err != nil {
			return nil, fmt.Errorf("%s: the default, generation %d: %w", image, n, err)
		}
	}
	return e, nil
}

const profileDir = "/nix/var/nix/profiles"

var generationLink = regexp.MustCompile(`^system-([0-9]+)-link$`)

// defaultGeneration is the generation the profile's system link names.
func (x extImage) defaultGeneration() (int, error) {
	target, err := x.readlink(profileDir + "/system")
	if err != nil {
		return 0, fmt.Errorf("the profile's default: %w", err)
	}
	m := generationLink.FindStringSubmatch(path.Base(target))
	if m == nil {
		return 0, fmt.Errorf("%s: the profile's default links to %q, not a system-N-link", x.file, target)
	}
	return strconv.Atoi(m[1])
}

// entry fills e with generation n's system, its kernel and initrd (copied
// into dir) and its command line.
func (x extImage) entry(e *BootEntry, n int, dir string) error {
	target, err := x.readlink(fmt.Sprintf("%s/system-%d-link", profileDir, n))
	if err != nil {
		return err
	}
	sys, err := storepath.FromLink(target)
	if err != nil {
		return fmt.Errorf("generation %d: %w", n, err)
	}
	parts := map[string][]byte{}
	for _, part := range []string{"kernel", "initrd", "cmdline"} {
		if parts[part], err = x.readFile(sys.String() + "/" + part); err != nil {
			return fmt.Errorf("system %s: %w", sys, err)
		}
	}
	kernel, initrd := filepath.Join(dir, "kernel"), filepath.Join(dir, "initrd")
	if err := atomicfile.WriteFile(kernel, parts["kernel"], 0o644); err != nil {
		return err
	}
	if err := atomicfile.WriteFile(initrd, parts["initrd"], 0o644); err != nil {
		return err
	}
	e.Generation, e.System, e.Kernel, e.Initrd = n, sys, kernel, initrd
	e.Cmdline = strings.TrimSpace(string(parts["cmdline"]))
	return nil
}

// takeBootOnce reads and deletes the one-shot entry: the generation it
// names (0: none), or a note on why it was passed over.
func (x extImage) takeBootOnce() (int, string, error) {
	b, err := x.cat("/" + BootOnceFile)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, "", nil
	}
	if err != nil {
		return 0, "", err
	}
	if _, err := x.debugfs(true, "rm /"+BootOnceFile); err != nil {
		return 0, "", fmt.Errorf("delete the one-shot entry: %w", err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || n <= 0 {
		return 0, fmt.Sprintf("%s holds %q, not a generation number: passed over", BootOnceFile, b), nil
	}
	return n, "", nil
}

// extImage is an ext4 file system image, read with debugfs.
type extImage struct{ file string }

// debugfs runs one debugfs request on the image and returns its output.
// debugfs exits 0 on most failures and says them on stderr after its
// banner: any such line is an error (fs.ErrNotExist for a missing file).
func (x extImage) debugfs(write bool, request string) ([]byte, error) {
	args := []string{"-R", request, x.file}
	if write {
		args = append([]string{"-w"}, args...)
	} else {
		// Reads skip the allocation bitmaps (-c): after a power cut,
		// before the journal is replayed, their checksums may not match,
		// and debugfs would not open the image at all.
		args = append([]string{"-c"}, args...)
	}
	cmd := exec.Command("debugfs", args...)
	cmd.Env = append(os.Environ(), "DEBUGFS_PAGER=__none__")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var said []string
	for i, l := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
		if l = strings.TrimSpace(l); l != "" && !(i == 0 && strings.HasPrefix(l, "debugfs ")) && !strings.Contains(l, "catastrophic mode") {
			said = append(said, l)
		}
	}
	switch {
	case len(said) > 0 && strings.Contains(said[0], "File not found"):
		return nil, fmt.Errorf("debugfs -R %q %s: %s: %w", request, x.file, said[0], fs.ErrNotExist)
	case len(said) > 0 || err != nil:
		return nil, fmt.Errorf("debugfs -R %q %s: %v: %s", request, x.file, err, strings.Join(said, "; "))
	}
	return stdout.Bytes(), nil
}

// cat is the contents of the file at p (absolute in the image; a link's
// target for a link).
func (x extImage) cat(p string) ([]byte, error) {
	if err := plainPath(p); err != nil {
		return nil, err
	}
	return x.debugfs(false, "cat "+p)
}

var (
	inodeType = regexp.MustCompile(`Type: (\S+)`)
	fastLink  = regexp.MustCompile(`Fast link dest: "(.*)"\n`)
)

// stat is the type debugfs gives the inode at p (regular, directory,
// symlink, …) and, for a link, its target.
func (x extImage) stat(p string) (kind, target string, err error) {
	if err := plainPath(p); err != nil {
		return "", "", err
	}
	out, err := x.debugfs(false, "stat "+p)
	if err != nil {
		return "", "", err
	}
	m := inodeType.FindSubmatch(out)
	if m == nil {
		return "", "", fmt.Errorf("debugfs stat %s in %s: no type in %q", p, x.file, out)
	}
	if kind = string(m[1]); kind != "symlink" {
		return kind, "", nil
	}
	// A short target is in the inode (a fast link), which cat cannot read;
	// a long one in a block, which cat reads.
	if m := fastLink.FindSubmatch(out); m != nil {
		return kind, string(m[1]), nil
	}
	b, err := x.cat(p)
	return kind, string(b), err
}

func (x extImage) readlink(p string) (string, error) {
	kind, target, err := x.stat(p)
	if err == nil && kind != "symlink" {
		err = fmt.Errorf("%s in %s is a %s, not a link", p, x.file, kind)
	}
	return target, err
}

// readFile reads the file at p (absolute in the image), following every
// link on the way inside the image, as handover.Resolve does below a root.
func (x extImage) readFile(p string) ([]byte, error) {
	rest, cur, kind := strings.Split(p, "/"), "/", "directory"
	for links := 0; len(rest) > 0; {
		name := rest[0]
		rest = rest[1:]
		switch name {
		case "", ".":
			continue
		case "..":
			cur, kind = path.Dir(cur), "directory"
			continue
		}
		next := path.Join(cur, name)
		k, target, err := x.stat(next)
		if err != nil {
			return nil, err
		}
		if k != "symlink" {
			cur, kind = next, k
			continue
		}
		if links++; links > 40 { // as the kernel
			return nil, fmt.Errorf("%s in %s: too many levels of links", p, x.file)
		}
		if path.IsAbs(target) {
			cur, kind = "/", "directory"
		}
		rest = append(strings.Split(target, "/"), rest...)
	}
	if kind != "regular" {
		return nil, fmt.Errorf("%s in %s is %s, a %s, not a file", p, x.file, cur, kind)
	}
	return x.cat(cur)
}

// plainPath refuses what debugfs's request parser would split or unquote.
func plainPath(p string) error {
	if !strings.HasPrefix(p, "/") || strings.ContainsAny(p, " \t\n\"'\\") {
		return fmt.Errorf("path %q: want an absolute path without spaces or quotes (debugfs's requests)", p)
	}
	return nil
}

// replayJournal replays the journal if the image needs it (e2fsck
// replays it and nothing else), and says whether it did.
func (x extImage) replayJournal() (bool, error) {
	out, err := x.debugfs(false, "features")
	if err != nil {
		return false, err
	}
	if !bytes.Contains(out, []byte("needs_recovery")) {
		return false, nil
	}
	b, err := exec.Command("e2fsck", "-p", "-E", "journal_only", x.file).CombinedOutput()
	var ee *exec.ExitError
	if err != nil && !(errors.As(err, &ee) && ee.ExitCode() == 1) { // 1: fixed
		return false, fmt.Errorf("e2fsck -E journal_only %s: %v: %s", x.file, err, b)
	}
	if out, err := x.debugfs(false, "features"); err != nil || bytes.Contains(out, []byte("needs_recovery")) {
		return false, fmt.Errorf("%s still needs its journal replayed after e2fsck (%v): %s", x.file, err, b)
	}
	return true, nil
}
