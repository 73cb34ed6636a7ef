package itest

import (
	"debug/elf"
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
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

// bootSystemExpr is a system for a board whose U-Boot boots it, from the
// Nix library with prebuilt inputs: a real kernel, an initrd and the
// device tree blobs (the library's dtbs input), each a file the test
// names. checker is this machine's roostd, which checks the config;
// roostd, linked as the router's, is a small stand-in, so that the
// stand-in kernel (Debian's malta kernel, already compressed: larger than
// a board's) and the store still fit the gl-ar750's 16 MB.
const bootSystemExpr = `
{ repo, board, roostd, checker, kernel, initrd, dtbs }:
(import (/. + repo + "/nix") { }).mkSystem {
  inherit board roostd checker kernel initrd dtbs;
  config = { };
}
`

// rawKernel writes a real kernel's bytes as U-Boot loads them: Debian's
// MIPS malta kernel (make vmdeps unpacks it) flattened from its ELF load
// segments, as objcopy -O binary does; else the host's kernel.
func rawKernel(t *testing.T, file string) {
	t.Helper()
	var flat []byte
	if elfs, _ := filepath.Glob("/var/cache/roost-vm/mipsel/boot/vmlinuz-*-4kc-malta"); len(elfs) > 0 {
		f, err := elf.Open(elfs[0])
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		for _, p := range f.Progs {
			if p.Type == elf.PT_LOAD {
				seg := make([]byte, p.Filesz)
				if _, err := p.ReadAt(seg, 0); err != nil {
					t.Fatal(err)
				}
				flat = append(flat, seg...)
			}
		}
	} else if hosts, _ := filepath.Glob("/boot/vmlinuz-*"); len(hosts) > 0 {
		var err error
		if flat, err = os.ReadFile(hosts[len(hosts)-1]); err != nil {
			t.Fatal(err)
		}
	} else {
		need(t, "/var/cache/roost-vm/mipsel/boot/vmlinuz-4kc-malta (make vmdeps)")
	}
	if err := os.WriteFile(file, flat, 0o644); err != nil {
		t.Fatal(err)
	}
}

// bootInputs writes the inputs of bootSystemExpr: the kernel, an initrd
// stand-in and the four U-Boot boards' device trees (a minimal tree each,
// compiled by dtc, where make dtbs_install would put the board's).
func bootInputs(t *testing.T) (kernel, initrd, dtbs string) {
	dir := t.TempDir()
	kernel, initrd, dtbs = filepath.Join(dir, "kernel"), filepath.Join(dir, "initrd"), filepath.Join(dir, "dtbs")
	rawKernel(t, kernel)
	if err := os.WriteFile(initrd, []byte("070701 initrd stand-in\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	dts := filepath.Join(dir, "board.dts")
	if err := os.WriteFile(dts, []byte("/dts-v1/;\n/ { compatible = \"roost,test\"; #address-cells = <1>; #size-cells = <1>; chosen { }; };\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, dt := range []string{"qca/qca9531_glinet_gl-ar750.dtb", "ralink/mt7628an_glinet_gl-mt300n-v2.dtb",
		"mediatek/mt7622-linksys-e8450-ubi.dtb", "mediatek/mt7981b-openwrt-one.dtb"} {
		if err := os.MkdirAll(filepath.Join(dtbs, filepath.Dir(dt)), 0o755); err != nil {
			t.Fatal(err)
		}
		mustRun(t, nil, "dtc", "-I", "dts", "-O", "dtb", "-o", filepath.Join(dtbs, dt), dts)
	}
	return kernel, initrd, dtbs
}

// TestRoostImage builds systems with the real nix-build and makes each
// kind of image of them with roost image, as Debian's tools read them
// back: a uImage of a real kernel and the squashfs for the NOR boards
// (gl-ar750, gl-mt300n-v2), a FIT image of it for the NAND boards' fit
// volume (belkin-rt3200, openwrt-one), an ext4 disk for qemu-x86_64. No
// VM is started, and no U-Boot runs them.
func TestRoostImage(t *testing.T) {
	need(t, "mksquashfs", "unsquashfs", "/usr/sbin/mke2fs", "/usr/sbin/debugfs",
		"mkimage", "dumpimage", "lzma_alone", "dtc", "fdtput", "fdtget")
	n := newNixStore(t)
	sys := n.build(tinySystemExpr)
	closure := n.closure(sys)
	kernel, initrd, dtbs := bootInputs(t)
	standIn := filepath.Join(t.TempDir(), "roostd")
	if err := os.WriteFile(standIn, []byte("#!/bin/sh\necho a stand-in for the router's roostd\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	bootSystem := func(board string) (string, []string) {
		sys := n.build(bootSystemExpr, "repo", repoRoot(t), "board", board, "roostd", standIn, "checker", roostd,
			"kernel", kernel, "initrd", initrd, "dtbs", dtbs)
		return sys, n.closure(sys)
	}
	env := []string{"NIX_REMOTE=" + n.dir}
	dir := t.TempDir()
	image := func(t *testing.T, board, sys string, closure []string) imageJSON {
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

	// holdsClosure checks that a squashfs file is the image's root.
	holdsClosure := func(t *testing.T, squashfs string, closure []string) {
		t.Helper()
		list := mustRun(t, nil, "unsquashfs", "-l", squashfs)
		want := []string{"squashfs-root/nix/var/nix/profiles/system-1-link", "squashfs-root/persist/roost"}
		for _, p := range closure {
			want = append(want, "squashfs-root"+p)
		}
		for _, w := range want {
			if !strings.Contains(list, w+"\n") {
				t.Errorf("unsquashfs -l lacks %s:\n%s", w, list)
			}
		}
	}

	for _, tc := range []struct {
		board, load string
		partition   uint64
	}{
		{"gl-ar750", "80060000", 16384000},
		{"gl-mt300n-v2", "80000000", 16449536},
	} {
		t.Run(tc.board+" uImage", func(t *testing.T) {
			bootSys, bootClosure := bootSystem(tc.board)
			res := image(t, tc.board, bootSys, bootClosure)
			bt := res.Boot
			if res.Kind != "uimage" || res.Partition != "firmware" || res.PartitionBytes != tc.partition || res.Bytes > res.PartitionBytes || bt == nil {
				t.Fatalf("got %+v, want a uImage and root that fit firmware (%d bytes)", res, tc.partition)
			}
			b, err := os.ReadFile(res.File)
			if err != nil {
				t.Fatal(err)
			}
			// dumpimage checks the data CRC over its whole file: the uImage
			// alone, as long as its header says.
			head, root := filepath.Join(t.TempDir(), "uimage"), filepath.Join(t.TempDir(), "root")
			size := uint64(binary.BigEndian.Uint32(b[12:16]))
			if err := os.WriteFile(head, b[:64+size], 0o644); err != nil {
				t.Fatal(err)
			}
			list := mustRun(t, nil, "dumpimage", "-T", "kernel", "-l", head)
			for _, want := range []string{"Image Type:   MIPS Linux Kernel Image (lzma compressed)", "Load Address: " + tc.load, "Entry Point:  " + tc.load,
				"Data Size:    " + strconv.FormatUint(size, 10) + " Bytes"} {
				if !strings.Contains(list, want) {
					t.Errorf("dumpimage -l lacks %q:\n%s", want, list)
				}
			}
			if bt.RootOffset%(64<<10) != 0 || bt.RootOffset < 64+size || bt.RootOffset+bt.RootBytes != res.Bytes || res.Bytes%(64<<10) != 0 {
				t.Errorf("root at %d (%d bytes) of %d, after a %d-byte uImage: want it on the next 64 KiB, the image whole 64 KiB blocks", bt.RootOffset, bt.RootBytes, res.Bytes, 64+size)
			}
			if err := os.WriteFile(root, b[bt.RootOffset:bt.RootOffset+bt.RootBytes], 0o644); err != nil {
				t.Fatal(err)
			}
			holdsClosure(t, root, bootClosure)
		})
	}

	for _, tc := range []struct {
		board     string
		partition uint64
		fdtLoad   string
	}{
		{"belkin-rt3200", 131072000, ""},
		{"openwrt-one", 267386880, "0x43f00000"},
	} {
		t.Run(tc.board+" FIT", func(t *testing.T) {
			bootSys, bootClosure := bootSystem(tc.board)
			res := image(t, tc.board, bootSys, bootClosure)
			bt := res.Boot
			if res.Kind != "fit" || res.Partition != "fit" || res.PartitionBytes != tc.partition || res.Bytes > res.PartitionBytes || bt == nil {
				t.Fatalf("got %+v, want a FIT image for volume fit", res)
			}
			list := mustRun(t, nil, "mkimage", "-l", res.File)
			for _, want := range []string{"Type:         Kernel Image", "Compression:  gzip compressed", "Architecture: AArch64",
				"Load Address: 0x44000000", "Entry Point:  0x44000000", "Type:         Flat Device Tree", "Type:         RAMDisk Image",
				"Type:         Filesystem Image", "Default Configuration: 'config-1'", "Loadables:    rootfs-1", "Load Address: " + tc.fdtLoad} {
				if !strings.Contains(list, want) {
					t.Errorf("mkimage -l lacks %q:\n%s", want, list)
				}
			}
			pos := strings.Fields(mustRun(t, nil, "fdtget", "-t", "u", res.File, "/images/rootfs-1", "data-position", "/images/rootfs-1", "data-size"))
			if want := []string{strconv.FormatUint(bt.RootOffset, 10), strconv.FormatUint(bt.RootBytes, 10)}; strings.Join(pos, " ") != strings.Join(want, " ") || bt.RootOffset%4096 != 0 {
				t.Errorf("rootfs-1 at %v; roost image says %v: want the same, 4 KiB-aligned", pos, want)
			}
			root := filepath.Join(t.TempDir(), "root")
			mustRun(t, nil, "dumpimage", "-T", "flat_dt", "-p", "3", "-o", root, res.File)
			holdsClosure(t, root, bootClosure)
			dtb := filepath.Join(t.TempDir(), "dtb")
			mustRun(t, nil, "dumpimage", "-T", "flat_dt", "-p", "1", "-o", dtb, res.File)
			if got := strings.TrimSpace(mustRun(t, nil, "fdtget", dtb, "/chosen", "bootargs")); got != "console=ttyS0,115200" {
				t.Errorf("the device tree's bootargs are %q, want the system's cmdline (the board's)", got)
			}
		})
	}

	t.Run("gl-ar750 system without a kernel", func(t *testing.T) {
		out := filepath.Join(dir, "nokernel.img")
		r := run(t, nil, env, roost, "image", "--board", "gl-ar750", "--system", sys, "-o", out)
		if r.code == 0 || !strings.Contains(r.stderr, "has no kernel, which a uimage image boots") {
			t.Errorf("roost image of a system without a kernel: exit %d, %s", r.code, r.stderr)
		}
		if _, err := os.Stat(out); !os.IsNotExist(err) {
			t.Errorf("a refused image left %s (%v)", out, err)
		}
	})

	t.Run("qemu-x86_64 ext4", func(t *testing.T) {
		res := image(t, "qemu-x86_64", sys, closure)
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
	Boot                         *struct {
		Format, Compression, LoadAddress, EntryAddress string
		KernelBytes, RootOffset, RootBytes             uint64
		Initrd                                         bool
	}
}
