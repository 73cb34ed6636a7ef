package image

import (
	"bytes"
	"compress/gzip"
	"context"
	"debug/elf"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/roostrouter/roost/boards"
	"github.com/roostrouter/roost/updater/storepath"
)

// needTools fails the test in CI, and skips it elsewhere, when a Debian
// tool it runs is missing: CI installs them (make deps).
func needTools(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := lookPath(n, []string{"/usr/sbin", "/sbin"}); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%v: make deps installs it", err)
			}
			t.Skipf("SKIPPED: %v", err)
		}
	}
}

// realKernel is a real kernel's bytes as U-Boot would load them: Debian's
// MIPS malta kernel (make vmdeps unpacks it) made a flat binary from its
// ELF load segments, as objcopy -O binary does; else the host's kernel.
func realKernel(t *testing.T) []byte {
	t.Helper()
	if elfs, _ := filepath.Glob("/var/cache/roost-vm/mipsel/boot/vmlinuz-*-4kc-malta"); len(elfs) > 0 {
		f, err := elf.Open(elfs[0])
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		var flat []byte
		var base uint64
		for _, p := range f.Progs {
			if p.Type != elf.PT_LOAD {
				continue
			}
			if flat == nil {
				base = p.Paddr
			}
			seg := make([]byte, p.Filesz)
			if _, err := p.ReadAt(seg, 0); err != nil {
				t.Fatal(err)
			}
			flat = append(flat[:min(uint64(len(flat)), p.Paddr-base)], seg...)
		}
		return flat
	}
	if hosts, _ := filepath.Glob("/boot/vmlinuz-*"); len(hosts) > 0 {
		b, err := os.ReadFile(hosts[len(hosts)-1])
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if os.Getenv("CI") != "" {
		t.Fatal("no kernel: make vmdeps unpacks Debian's MIPS kernel into /var/cache/roost-vm/mipsel")
	}
	t.Skip("SKIPPED: no kernel in /var/cache/roost-vm/mipsel/boot or /boot (make vmdeps)")
	return nil
}

// testSystem lays out below a new root a system as the router sees it:
// its parts are absolute links into other store paths, as Nix makes them.
type testSystem struct {
	root   string
	system storepath.Path
	kernel []byte
	initrd []byte
	dtb    string // the board's device tree in the system
}

const testCmdline = `console=ttyS0,115200 roost.note="a b"`

func newTestSystem(t *testing.T, kernel []byte, deviceTree string) testSystem {
	t.Helper()
	ts := testSystem{root: t.TempDir(), kernel: kernel, initrd: []byte("070701 an initrd stand-in\n")}
	var err error
	if ts.system, err = storepath.ParseBase("00000000000000000000000000000000-system"); err != nil {
		t.Fatal(err)
	}
	linux := filepath.Join(ts.root, "nix/store/11111111111111111111111111111111-linux")
	sys := filepath.Join(ts.root, ts.system.String())
	for _, d := range []string{filepath.Join(linux, "dtbs", filepath.Dir(deviceTree)), sys, filepath.Join(ts.root, "persist/roost")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(name string, b []byte) {
		if err := os.WriteFile(name, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(linux, "vmlinux"), kernel)
	write(filepath.Join(linux, "initrd"), ts.initrd)
	write(filepath.Join(sys, "cmdline"), []byte(testCmdline+"\n"))
	ts.dtb = filepath.Join(linux, "dtbs", deviceTree)
	dts := filepath.Join(t.TempDir(), "board.dts")
	write(dts, []byte("/dts-v1/;\n/ {\n\tcompatible = \"roost,test\";\n\t#address-cells = <1>;\n\t#size-cells = <1>;\n\tchosen { bootargs = \"console=ttyS1\"; };\n};\n"))
	if out, err := exec.Command("dtc", "-I", "dts", "-O", "dtb", "-o", ts.dtb, dts).CombinedOutput(); err != nil {
		t.Fatalf("dtc: %v: %s", err, out)
	}
	for link, target := range map[string]string{
		"kernel": "/nix/store/11111111111111111111111111111111-linux/vmlinux",
		"initrd": "../11111111111111111111111111111111-linux/initrd",
		"dtbs":   "/nix/store/11111111111111111111111111111111-linux/dtbs",
	} {
		if err := os.Symlink(target, filepath.Join(sys, link)); err != nil {
			t.Fatal(err)
		}
	}
	return ts
}

func (ts testSystem) input() Input { return Input{Root: ts.root, System: ts.system} }

func planOf(t *testing.T, board string) Plan {
	t.Helper()
	b, err := boards.Lookup(board)
	if err != nil {
		t.Fatal(err)
	}
	p, err := PlanFor(b)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func mustOutput(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestBuildUImage builds the gl-ar750's image with a real kernel and reads
// it back with U-Boot's and the kernel's own tools: a MIPS kernel uImage,
// lzma-compressed, loaded and entered at OpenWrt's 0x80060000, whose
// payload is the kernel with the device tree carrying the system's
// command line appended, then the squashfs on the next 64 KiB.
func TestBuildUImage(t *testing.T) {
	needTools(t, "mksquashfs", "unsquashfs", "mkimage", "dumpimage", "lzma_alone", "dtc", "fdtput", "fdtget", "xz")
	ts := newTestSystem(t, realKernel(t), "qca/qca9531_glinet_gl-ar750.dtb")
	out := filepath.Join(t.TempDir(), "ar750.bin")
	var log []string
	res, err := Build(context.Background(), planOf(t, "gl-ar750"), ts.input(), out, func(s string) { log = append(log, s) })
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kernel %d bytes; %+v %+v; progress: %q", len(ts.kernel), res, *res.Boot, log)
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	// dumpimage checks the data CRC over the rest of its file: give it the
	// uImage alone, as long as its header says.
	dir := t.TempDir()
	head := filepath.Join(dir, "head.uimage")
	if err := os.WriteFile(head, b[:64+binary.BigEndian.Uint32(b[12:16])], 0o644); err != nil {
		t.Fatal(err)
	}
	list := mustOutput(t, "dumpimage", "-T", "kernel", "-l", head)
	for _, want := range []string{"Image Type:   MIPS Linux Kernel Image (lzma compressed)", "Load Address: 80060000", "Entry Point:  80060000"} {
		if !strings.Contains(list, want) {
			t.Errorf("dumpimage -l lacks %q:\n%s", want, list)
		}
	}
	if !strings.Contains(strings.Join(log, "\n"), "the kernel must have its initramfs, roostd init, built in") {
		t.Errorf("no word that the initrd is not in the uImage: %q", log)
	}
	bt := res.Boot
	if bt.RootOffset%65536 != 0 || bt.RootOffset < 64+bt.KernelBytes || string(b[bt.RootOffset:bt.RootOffset+4]) != "hsqs" ||
		uint64(len(b)) != res.Bytes || res.Bytes%65536 != 0 || res.Bytes != bt.RootOffset+bt.RootBytes {
		t.Errorf("%d bytes, boot %+v: want the squashfs (hsqs) on a 64 KiB boundary after the uImage, the whole padded to 64 KiB", len(b), bt)
	}

	// The payload, as U-Boot unpacks it: the kernel, then the device tree.
	packed := filepath.Join(dir, "payload.lzma")
	mustOutput(t, "dumpimage", "-T", "kernel", "-p", "0", "-o", packed, head)
	payload := mustOutput(t, "xz", "--format=lzma", "-dc", packed)
	if !strings.HasPrefix(payload, string(ts.kernel)) {
		t.Fatalf("the payload (%d bytes) does not start with the kernel (%d bytes)", len(payload), len(ts.kernel))
	}
	dtb := filepath.Join(dir, "appended.dtb")
	if err := os.WriteFile(dtb, []byte(payload[len(ts.kernel):]), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(mustOutput(t, "fdtget", dtb, "/chosen", "bootargs")); got != testCmdline {
		t.Errorf("the appended device tree's bootargs are %q, want the system's %q", got, testCmdline)
	}
	root := filepath.Join(dir, "root.squashfs")
	if err := os.WriteFile(root, b[bt.RootOffset:bt.RootOffset+bt.RootBytes], 0o644); err != nil {
		t.Fatal(err)
	}
	if ls := mustOutput(t, "unsquashfs", "-l", root); !strings.Contains(ls, "squashfs-root"+ts.system.String()+"/cmdline") {
		t.Errorf("the root lacks the system:\n%s", ls)
	}
}

// TestBuildFIT builds the OpenWrt One's FIT image with a real kernel and
// reads it back with mkimage -l and dumpimage: the kernel gzipped at
// 0x44000000, the device tree at 0x43f00000 with the system's command
// line, the initrd as the ramdisk, the squashfs as a filesystem image at a
// 4 KiB-aligned position, in configuration config-1.
func TestBuildFIT(t *testing.T) {
	needTools(t, "mksquashfs", "unsquashfs", "mkimage", "dumpimage", "dtc", "fdtput", "fdtget")
	kernel := realKernel(t)
	ts := newTestSystem(t, kernel, "mediatek/mt7981b-openwrt-one.dtb")
	out := filepath.Join(t.TempDir(), "one.itb")
	res, err := Build(context.Background(), planOf(t, "openwrt-one"), ts.input(), out, func(s string) { t.Log(s) })
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v %+v", res, *res.Boot)
	list := mustOutput(t, "mkimage", "-l", out)
	l := parseListing(list)
	for _, c := range []struct {
		section   any
		key, want string
	}{
		{"image kernel-1", "Type", "Kernel Image"},
		{"image kernel-1", "Compression", "gzip compressed"},
		{"image kernel-1", "Architecture", "AArch64"},
		{"image kernel-1", "Load Address", "0x44000000"},
		{"image kernel-1", "Entry Point", "0x44000000"},
		{"image fdt-1", "Type", "Flat Device Tree"},
		{"image fdt-1", "Load Address", "0x43f00000"},
		{"image initrd-1", "Type", "RAMDisk Image"},
		{"image rootfs-1", "Type", "Filesystem Image"},
		{"configuration config-1", "Loadables", "rootfs-1"},
		{"configuration config-1", "Init Ramdisk", "initrd-1"},
		{0, "Default Configuration", "'config-1'"},
	} {
		if got := l[c.section][c.key]; got != c.want {
			t.Errorf("mkimage -l: %v %s = %q, want %q\n%s", c.section, c.key, got, c.want, list)
		}
	}
	pos := strings.Fields(mustOutput(t, "fdtget", "-t", "u", out, "/images/rootfs-1", "data-position", "/images/rootfs-1", "data-size"))
	if len(pos) != 2 || pos[0] != strconv.FormatUint(res.Boot.RootOffset, 10) || pos[1] != strconv.FormatUint(res.Boot.RootBytes, 10) || res.Boot.RootOffset%4096 != 0 {
		t.Errorf("rootfs-1 at %v, Build says %d (%d bytes): want the same, 4 KiB-aligned", pos, res.Boot.RootOffset, res.Boot.RootBytes)
	}
	dir := t.TempDir()
	extract := func(n, name string) string {
		f := filepath.Join(dir, name)
		mustOutput(t, "dumpimage", "-T", "flat_dt", "-p", n, "-o", f, out)
		return f
	}
	if got, _ := os.ReadFile(extract("2", "initrd")); !bytes.Equal(got, ts.initrd) {
		t.Errorf("the ramdisk is %q, want the system's initrd", got)
	}
	if got := strings.TrimSpace(mustOutput(t, "fdtget", extract("1", "dtb"), "/chosen", "bootargs")); got != testCmdline {
		t.Errorf("the device tree's bootargs are %q, want %q", got, testCmdline)
	}
	if ls := mustOutput(t, "unsquashfs", "-l", extract("3", "root")); !strings.Contains(ls, "squashfs-root/nix/store") {
		t.Errorf("the root is not the image's root:\n%s", ls)
	}
	gz, err := os.Open(extract("0", "kernel.gz"))
	if err != nil {
		t.Fatal(err)
	}
	defer gz.Close()
	zr, err := gzip.NewReader(gz)
	if err != nil {
		t.Fatal(err)
	}
	var unpacked bytes.Buffer
	if _, err := unpacked.ReadFrom(zr); err != nil || !bytes.Equal(unpacked.Bytes(), kernel) {
		t.Errorf("the kernel, gunzipped, is not the system's (%d bytes, %v)", unpacked.Len(), err)
	}
}

// TestBuildBootRefusals: what U-Boot could not boot is refused before
// anything is kept, saying what to give instead.
func TestBuildBootRefusals(t *testing.T) {
	needTools(t, "mksquashfs", "mkimage", "dumpimage", "lzma_alone", "dtc", "fdtput", "fdtget")
	kernel := realKernel(t)
	gz := func() []byte {
		var b bytes.Buffer
		zw := gzip.NewWriter(&b)
		zw.Write(kernel)
		zw.Close()
		return b.Bytes()
	}()
	for _, tc := range []struct {
		name, board string
		kernel      []byte
		change      func(ts testSystem, in *Input, plan *Plan)
		want        string
	}{
		{"ELF kernel", "gl-ar750", append([]byte("\x7fELF"), kernel...), nil, "is an ELF file: U-Boot jumps into the raw image"},
		{"no device tree", "belkin-rt3200", kernel, func(ts testSystem, in *Input, plan *Plan) {
			os.Remove(filepath.Join(ts.root, ts.system.String(), "dtbs"))
		}, "the board boots device tree mediatek/mt7622-linksys-e8450-ubi.dtb (boards.json boot.deviceTree), and system /nix/store/00000000000000000000000000000000-system has no dtbs/mediatek/mt7622-linksys-e8450-ubi.dtb: give one with --dtb FILE"},
		{"not a device tree", "belkin-rt3200", kernel, func(ts testSystem, in *Input, plan *Plan) {
			in.DTB = filepath.Join(ts.root, ts.system.String(), "cmdline")
		}, "is not a device tree blob (no d00dfeed magic)"},
		{"too big", "gl-ar750", kernel, func(ts testSystem, in *Input, plan *Plan) { plan.PartitionBytes = 65536 },
			"the uimage image is"},
		{"no system", "openwrt-one", kernel, func(ts testSystem, in *Input, plan *Plan) { in.System = "" },
			"a fit image for board openwrt-one boots the system's kernel: say which system"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dt := map[string]string{"gl-ar750": "qca/qca9531_glinet_gl-ar750.dtb", "belkin-rt3200": "mediatek/mt7622-linksys-e8450-ubi.dtb", "openwrt-one": "mediatek/mt7981b-openwrt-one.dtb"}[tc.board]
			ts := newTestSystem(t, tc.kernel, dt)
			in, plan := ts.input(), planOf(t, tc.board)
			if tc.change != nil {
				tc.change(ts, &in, &plan)
			}
			out := filepath.Join(t.TempDir(), "img")
			_, err := Build(context.Background(), plan, in, out, func(string) {})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Build = %v, want %q", err, tc.want)
			}
			if left, _ := os.ReadDir(filepath.Dir(out)); len(left) != 0 {
				t.Errorf("a refused image left %v", left)
			}
		})
	}
	t.Run("gzipped kernel kept", func(t *testing.T) {
		ts := newTestSystem(t, gz, "mediatek/mt7622-linksys-e8450-ubi.dtb")
		res, err := Build(context.Background(), planOf(t, "belkin-rt3200"), ts.input(), filepath.Join(t.TempDir(), "img"), func(string) {})
		if err != nil || res.Boot.KernelBytes != uint64(len(gz)) || res.Boot.Compression != "gzip" {
			t.Errorf("Build = %+v, %v; want the %d gzipped bytes as they are", res.Boot, err, len(gz))
		}
	})
}

// TestVerifyUImageCatchesDamage: a uImage whose data or root changed
// after it was made does not verify.
func TestVerifyUImageCatchesDamage(t *testing.T) {
	needTools(t, "mksquashfs", "mkimage", "dumpimage", "lzma_alone", "dtc", "fdtput")
	ts := newTestSystem(t, realKernel(t), "qca/qca9531_glinet_gl-ar750.dtb")
	plan := planOf(t, "gl-ar750")
	dir := t.TempDir()
	parts, err := readBootParts(ts.root, ts.system, plan.Boot, "")
	if err != nil {
		t.Fatal(err)
	}
	sq, out := filepath.Join(dir, "root.squashfs"), filepath.Join(dir, "image")
	if err := Squashfs(context.Background(), ts.root, sq, func(string) {}); err != nil {
		t.Fatal(err)
	}
	info, err := UImage(context.Background(), plan, parts, sq, out, dir, func(string) {})
	if err != nil {
		t.Fatal(err)
	}
	uimage := filepath.Join(dir, "kernel.uimage")
	for _, tc := range []struct {
		name, file string
		at         int64
		want       string
	}{
		{"uImage data", uimage, 64 + 100, "the uImage does not verify (header or data CRC)"},
		{"kernel in the image", out, 64 + 100, "the uImage at 0 is not"},
		{"root", out, int64(info.RootOffset) + 100, "the root at"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			files := map[string]string{out: filepath.Join(t.TempDir(), "image"), uimage: filepath.Join(t.TempDir(), "kernel.uimage")}
			for from, to := range files {
				b, _ := os.ReadFile(from)
				if from == tc.file {
					b[tc.at] ^= 0xff
				}
				if err := os.WriteFile(to, b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			err := verifyUImage(context.Background(), plan, files[out], files[uimage], filepath.Join(dir, "kernel.lzma"), sq, info)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("verifyUImage = %v, want %q", err, tc.want)
			}
		})
	}
}

// TestResolve: a system's parts are found through absolute and relative
// links as the router resolves them, never outside the root.
func TestResolve(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"nix/store/a/dir", "nix/store/b"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(root, "nix/store/a/dir/file"), []byte("x"), 0o644)
	os.Symlink("/nix/store/a/dir", filepath.Join(root, "nix/store/b/abs"))
	os.Symlink("../a/dir/file", filepath.Join(root, "nix/store/b/rel"))
	os.Symlink("/etc/passwd", filepath.Join(root, "nix/store/b/host"))
	os.Symlink("loop", filepath.Join(root, "nix/store/b/loop"))
	for _, tc := range []struct{ name, want, err string }{
		{"/nix/store/b/abs/file", "nix/store/a/dir/file", ""},
		{"/nix/store/b/rel", "nix/store/a/dir/file", ""},
		{"/nix/store/b/host", "", "/etc: lstat"},
		{"/nix/store/b/loop", "", "too many symbolic links"},
		{"/nix/store/b/../../../etc/passwd", "", "/etc: lstat"},
	} {
		got, err := resolve(root, tc.name)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("resolve(%s) = %q, %v; want error %q", tc.name, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != filepath.Join(root, tc.want) {
			t.Errorf("resolve(%s) = %q, %v; want %s", tc.name, got, err, tc.want)
		}
	}
}
