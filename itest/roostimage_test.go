package itest

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// tinySystemExpr is a small lab system: its config and a package it
// references.
const tinySystemExpr = `
{ }:
let
` + nixMk + `  pkg = mk "hello-1.0" [] ''
    ${bb} mkdir -p $out/bin
    ${bb} echo hello > $out/bin/hello
  '';
in mk "system" [ pkg ] ''
  ${bb} mkdir -p $out/etc/roost
  ${bb} echo '{}' > $out/etc/roost/config.json
  ${bb} ln -s ${pkg}/bin/hello $out/hello
''
`

// TestRoostImage builds a system with the real nix-build and makes each
// kind of image of it with roost image, as Debian's tools read them back:
// a squashfs for gl-ar750's NOR, a UBI image for belkin-rt3200's NAND, an
// ext4 disk for qemu-x86_64. No VM is started.
func TestRoostImage(t *testing.T) {
	need(t, "mksquashfs", "unsquashfs", "ubinize", "/usr/sbin/mke2fs", "/usr/sbin/debugfs")
	n := newNixStore(t)
	sys := n.build(tinySystemExpr)
	closure := n.closure(sys)
	env := []string{"NIX_REMOTE=" + n.dir}
	dir := t.TempDir()
	image := func(board string) imageJSON {
		t.Helper()
		out := filepath.Join(dir, board+".img")
		r := run(t, nil, env, roost, "image", "--board", board, "--system", sys, "-o", out, "--json")
		if r.code != 0 {
			t.Fatalf("roost image --board %s: exit %d\n%s", board, r.code, r.stderr)
		}
		var res imageJSON
		if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
			t.Fatalf("roost image --json: %v: %s", err, r.stdout)
		}
		fi, err := os.Stat(out)
		if err != nil {
			t.Fatal(err)
		}
		if res.File != out || res.Bytes != uint64(fi.Size()) || res.Paths != len(closure) {
			t.Errorf("roost image --board %s says %+v; the file has %d bytes, the closure %d paths", board, res, fi.Size(), len(closure))
		}
		t.Logf("%s: %s, %d bytes (partition %s: %d bytes); progress:\n%s", board, res.Kind, res.Bytes, res.Partition, res.PartitionBytes, r.stderr)
		return res
	}

	t.Run("gl-ar750 squashfs", func(t *testing.T) {
		res := image("gl-ar750")
		if res.Kind != "squashfs" || res.Partition != "firmware" || res.PartitionBytes != 16384000 || res.Bytes > res.PartitionBytes {
			t.Errorf("got %+v, want a squashfs that fits firmware (16384000 bytes)", res)
		}
		list := mustRun(t, nil, "unsquashfs", "-l", res.File)
		want := []string{"squashfs-root/nix/var/nix/profiles/system-1-link", "squashfs-root/persist/roost"}
		for _, p := range closure {
			want = append(want, "squashfs-root"+p)
		}
		for _, w := range want {
			if !strings.Contains(list, w+"\n") {
				t.Errorf("unsquashfs -l lacks %s:\n%s", w, list)
			}
		}
	})

	t.Run("belkin-rt3200 UBI", func(t *testing.T) {
		res := image("belkin-rt3200")
		b, err := os.ReadFile(res.File)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(b, []byte("UBI#")) || len(b)%(128<<10) != 0 || res.Kind != "ubi" || res.Partition != "fit" || res.Bytes > res.PartitionBytes {
			t.Errorf("got %+v, starting %q: want a UBI image (UBI#) of whole 128 KiB erase blocks for volume fit", res, b[:min(4, len(b))])
		}
		if !bytes.Contains(b, []byte("fit")) {
			t.Error("no volume called fit in the UBI image")
		}
	})

	t.Run("qemu-x86_64 ext4", func(t *testing.T) {
		res := image("qemu-x86_64")
		if res.Kind != "ext4" || res.Bytes != 512<<20 {
			t.Errorf("got %+v, want a 512 MiB ext4 image", res)
		}
		ls := mustRun(t, nil, "/usr/sbin/debugfs", "-R", "ls -l /nix/var/nix/profiles", res.File)
		if !strings.Contains(ls, "system-1-link") {
			t.Errorf("debugfs ls /nix/var/nix/profiles lacks system-1-link:\n%s", ls)
		}
		link := mustRun(t, nil, "/usr/sbin/debugfs", "-R", "stat /nix/var/nix/profiles/system-1-link", res.File)
		if !strings.Contains(link, filepath.Base(sys)) {
			t.Errorf("system-1-link does not point at %s:\n%s", sys, link)
		}
	})

	t.Run("a board without an image", func(t *testing.T) {
		out := filepath.Join(dir, "lab.img")
		r := run(t, nil, env, roost, "image", "--board", "lab", "--system", sys, "-o", out)
		if r.code == 0 || !strings.Contains(r.stderr, "board lab has no image to build") {
			t.Errorf("roost image --board lab: exit %d, %s", r.code, r.stderr)
		}
		if _, err := os.Stat(out); !os.IsNotExist(err) {
			t.Errorf("a refused image left %s (%v)", out, err)
		}
	})
}

// imageJSON is what roost image --json prints.
type imageJSON struct {
	Board, Kind, File, Partition string
	Bytes, PartitionBytes        uint64
	Paths                        int
}
