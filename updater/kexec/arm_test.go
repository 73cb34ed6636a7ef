package kexec

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// debianARM is Debian's armmp zImage and the device tree of QEMU's
// vexpress-a9 board, as make vmdeps unpacks linux-image-*-armmp (armhf).
func debianARM(t *testing.T) (zimage, dtb []byte) {
	t.Helper()
	images, _ := filepath.Glob("/var/cache/roost-vm/armhf/boot/vmlinuz-*-armmp")
	dtbs, _ := filepath.Glob("/var/cache/roost-vm/armhf/usr/lib/linux-image-*-armmp/vexpress-v2p-ca9.dtb")
	if len(images) == 0 || len(dtbs) == 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("no armmp zImage and vexpress-v2p-ca9.dtb in /var/cache/roost-vm/armhf: make vmdeps unpacks them")
		}
		t.Skip("SKIPPED: no armmp zImage and vexpress-v2p-ca9.dtb in /var/cache/roost-vm/armhf: make vmdeps unpacks them")
	}
	z, err := os.ReadFile(images[len(images)-1])
	if err != nil {
		t.Fatal(err)
	}
	d, err := os.ReadFile(dtbs[len(dtbs)-1])
	if err != nil {
		t.Fatal(err)
	}
	return z, d
}

func checkARMLayout(t *testing.T, img *Image, o ARMOptions, z zImage) {
	t.Helper()
	if err := img.Check(o.RAM, 4096); err != nil {
		t.Fatal(err)
	}
	kernel := img.Segments[0]
	if img.Entry != kernel.Mem || kernel.Mem != o.RAM[0].Start+armTextOffset || !bytes.Equal(kernel.Buf, z.data) {
		t.Fatalf("kernel segment %s, entry %#x: want the zImage at %#x, entered there", kernel, img.Entry, o.RAM[0].Start+armTextOffset)
	}
	free := kernel.Mem + z.room
	var dtbSeg Segment
	for _, s := range img.Segments[1:] {
		if s.Mem < free {
			t.Errorf("segment %s lies in the memory the decompressor uses (up to %#x)", s, free)
		}
		if binary.BigEndian.Uint32(s.Buf) == fdtMagic {
			dtbSeg = s
		}
	}
	if dtbSeg.Buf == nil {
		t.Fatal("no segment starts with the FDT magic: the kernel would pass no r2")
	}
	fdt, err := ParseFDT(dtbSeg.Buf)
	if err != nil {
		t.Fatalf("the DTB segment: %v", err)
	}
	if args, _ := fdt.Chosen("bootargs"); string(args) != o.Cmdline+"\x00" {
		t.Errorf("bootargs %q, want %q", args, o.Cmdline)
	}
	start, hasStart := fdt.Chosen("linux,initrd-start")
	end, hasEnd := fdt.Chosen("linux,initrd-end")
	if len(o.Initrd) == 0 {
		if hasStart || hasEnd {
			t.Errorf("initrd-start/end %x %x without an initrd", start, end)
		}
		return
	}
	rd := img.Segments[1]
	if !bytes.Equal(rd.Buf, o.Initrd) || len(start) != 4 || uint64(binary.BigEndian.Uint32(start)) != rd.Mem || uint64(binary.BigEndian.Uint32(end)) != rd.Mem+uint64(len(o.Initrd)) {
		t.Errorf("initrd segment %s, /chosen says %x-%x", rd, start, end)
	}
	if dtbSeg.Mem < rd.end() {
		t.Errorf("DTB %s before the initrd's end %#x", dtbSeg, rd.end())
	}
}

// TestARMImageDebian lays out Debian's armmp zImage with the vexpress-a9
// device tree (RAM at 0x60000000, as QEMU's vexpress-a9 has it).
func TestARMImageDebian(t *testing.T) {
	zimg, dtb := debianARM(t)
	z, err := parseZImage(zimg)
	if err != nil {
		t.Fatal(err)
	}
	edata, bss, ok := zImageKernelSize(z.data)
	t.Logf("zImage: %d bytes (file %d); KLSZ tag: %v, decompressed %d + BSS %d; decompression uses %d bytes", len(z.data), len(zimg), ok, edata, bss, z.room)
	if !ok || edata < 4*uint64(len(z.data))/2 {
		t.Errorf("no plausible decompressed size in the zImage's KLSZ tag")
	}
	for _, initrd := range [][]byte{bytes.Repeat([]byte("rd"), 1<<20), nil} {
		o := ARMOptions{ZImage: zimg, DTB: dtb, Initrd: initrd, Cmdline: "console=ttyAMA0 roost.generation=3 roost.trial=1", RAM: []Range{{0x60000000, 0x70000000}}}
		img, err := ARMImage(o)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range img.Segments {
			t.Logf("segment %s", s)
		}
		checkARMLayout(t, img, o, z)
	}
}

// fakeZImage is a zImage header with a KLSZ tag, as head.S lays it out.
func fakeZImage(size, edata, bss uint32) []byte {
	b := make([]byte, size)
	le := binary.LittleEndian
	le.PutUint32(b[0x24:], zImageMagic)
	le.PutUint32(b[0x28:], 0)
	le.PutUint32(b[0x2c:], size)
	le.PutUint32(b[0x30:], zImageLE)
	le.PutUint32(b[0x34:], zImageMagic2)
	le.PutUint32(b[0x38:], 0x40)
	le.PutUint32(b[0x40:], 4) // tag size in words
	le.PutUint32(b[0x44:], zImageTagKSize)
	le.PutUint32(b[0x48:], size-4) // where the decompressed size is
	le.PutUint32(b[0x4c:], bss)
	le.PutUint32(b[size-4:], edata)
	return b
}

// fakeDTB is a small tree with a /chosen holding stale initrd properties,
// as the running kernel's /sys/firmware/fdt has.
func fakeDTB() []byte {
	f := &FDT{root: &fdtNode{children: []*fdtNode{
		{name: "memory@60000000", props: []fdtProp{{"device_type", []byte("memory\x00")}, {"reg", []byte{0x60, 0, 0, 0, 0x10, 0, 0, 0}}}},
	}}, rsvmap: [][2]uint64{{0x60000000, 0x1000}}}
	f.SetChosen("bootargs", []byte("old\x00"))
	f.SetChosen("linux,initrd-start", []byte{0x61, 0, 0, 0})
	f.SetChosen("linux,initrd-end", []byte{0x61, 0x10, 0, 0})
	return f.Bytes()
}

func TestARMImage(t *testing.T) {
	ram := []Range{{0x60000000, 0x64000000}}
	tests := []struct {
		name string
		o    ARMOptions
		err  string
	}{
		{"with initrd", ARMOptions{ZImage: fakeZImage(0x300000, 0x900000, 0x100000), DTB: fakeDTB(), Initrd: make([]byte, 0x123456), Cmdline: "console=ttyAMA0"}, ""},
		{"stale initrd dropped", ARMOptions{ZImage: fakeZImage(0x300000, 0x900000, 0x100000), DTB: fakeDTB(), Cmdline: "console=ttyAMA0"}, ""},
		{"trailing bytes after the image", ARMOptions{ZImage: append(fakeZImage(0x3000, 0x9000, 0x1000), make([]byte, 100)...), DTB: fakeDTB(), Cmdline: "x"}, ""},
		{"no KLSZ tag", ARMOptions{ZImage: func() []byte { b := fakeZImage(0x3000, 0, 0); b[0x34] = 0; return b }(), DTB: fakeDTB(), Cmdline: "x"}, ""},
		{"cut short", ARMOptions{ZImage: fakeZImage(0x3000, 0x9000, 0)[:0x2000], DTB: fakeDTB()}, "cut short"},
		{"not a zImage", ARMOptions{ZImage: make([]byte, 0x3000), DTB: fakeDTB()}, "not an ARM zImage"},
		{"big-endian", ARMOptions{ZImage: func() []byte {
			b := fakeZImage(0x3000, 0x9000, 0)
			binary.LittleEndian.PutUint32(b[0x30:], 0x01020304)
			return b
		}(), DTB: fakeDTB()}, "little-endian"},
		{"kernel too big for the bank", ARMOptions{ZImage: fakeZImage(0x300000, 0x4000000, 0), DTB: fakeDTB()}, "decompress"},
		{"initrd too big", ARMOptions{ZImage: fakeZImage(0x3000, 0x9000, 0), DTB: fakeDTB(), Initrd: make([]byte, 0x4000000)}, "no room"},
		{"bad DTB", ARMOptions{ZImage: fakeZImage(0x3000, 0x9000, 0), DTB: []byte("nope")}, "FDT magic"},
		{"command line too long", ARMOptions{ZImage: fakeZImage(0x3000, 0x9000, 0), DTB: fakeDTB(), Cmdline: strings.Repeat("x", 1024)}, "command line"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.o.RAM = ram
			img, err := ARMImage(tc.o)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("ARMImage: %v, want an error with %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			z, _ := parseZImage(tc.o.ZImage)
			checkARMLayout(t, img, tc.o, z)
		})
	}
}

func FuzzARMImage(f *testing.F) {
	f.Add(fakeZImage(0x3000, 0x9000, 0x1000), fakeDTB())
	f.Fuzz(func(t *testing.T, zimg, dtb []byte) {
		ram := []Range{{0x60000000, 0x64000000}}
		img, err := ARMImage(ARMOptions{ZImage: zimg, DTB: dtb, Initrd: []byte("rd"), Cmdline: "x", RAM: ram})
		if err != nil {
			return
		}
		if err := img.Check(ram, 4096); err != nil {
			t.Fatalf("ARMImage built an image that breaks the rules: %v", err)
		}
	})
}
