package kexec

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// debianMIPSKernel is Debian's 4kc-malta kernel as make vmdeps unpacks
// it: an ELF (a vmlinuz whose loadable part decompresses the kernel).
func debianMIPSKernel(t *testing.T) []byte {
	t.Helper()
	images, _ := filepath.Glob("/var/cache/roost-vm/mipsel/boot/vmlinuz-*-4kc-malta")
	if len(images) == 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("no 4kc-malta kernel in /var/cache/roost-vm/mipsel: make vmdeps unpacks it")
		}
		t.Skip("SKIPPED: no 4kc-malta kernel in /var/cache/roost-vm/mipsel: make vmdeps unpacks it")
	}
	b, err := os.ReadFile(images[len(images)-1])
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// bootArgs decodes what the setup stub passes and the strings it points
// at: the registers a0-a3, the jump target, argv and envp.
type bootArgs struct {
	regs       [4]uint32
	jump       uint32
	argv, envp []string
}

func decodeBoot(t *testing.T, img *Image, o binary.ByteOrder) bootArgs {
	t.Helper()
	var seg Segment
	for _, s := range img.Segments {
		if img.Entry >= s.Mem && img.Entry < s.end() {
			seg = s
		}
	}
	off := img.Entry - seg.Mem
	code := seg.Buf[off:]
	var b bootArgs
	pair := func(i int, reg uint32) uint32 {
		hi, lo := o.Uint32(code[4*i:]), o.Uint32(code[4*i+4:])
		if hi>>26 != 0x0f || (hi>>16)&31 != reg || lo>>26 != 0x0d || (lo>>16)&31 != reg || (lo>>21)&31 != reg {
			t.Fatalf("stub instructions %d-%d (%#08x %#08x): not lui/ori of register %d", i, i+1, hi, lo, reg)
		}
		return hi<<16 | lo&0xffff
	}
	for r := range 4 {
		b.regs[r] = pair(2*r, uint32(4+r))
	}
	b.jump = pair(8, 25)
	if w := o.Uint32(code[40:]); w != 0x03200009 {
		t.Fatalf("stub instruction 10: %#08x, want jr $t9 (0x03200009)", w)
	}
	str := func(virt uint32) string {
		phys := uint64(virt &^ kseg0)
		for _, s := range img.Segments {
			if phys >= s.Mem && phys < s.Mem+uint64(len(s.Buf)) {
				rest := s.Buf[phys-s.Mem:]
				return string(rest[:bytes.IndexByte(rest, 0)])
			}
		}
		t.Fatalf("pointer %#x points into no segment", virt)
		return ""
	}
	table := func(virt uint32, n int) []string {
		var out []string
		base := uint64(virt&^kseg0) - seg.Mem
		for i := 0; n < 0 || i < n; i++ {
			p := o.Uint32(seg.Buf[base+4*uint64(i):])
			if p == 0 {
				break
			}
			out = append(out, str(p))
		}
		return out
	}
	b.argv = table(b.regs[1], int(b.regs[0]))
	b.envp = table(b.regs[2], -1)
	return b
}

// TestMIPSImageDebian lays out Debian's malta kernel with an initrd as
// the MIPS VM test boots it (64 MiB), and checks every rule the kernel
// and the boot convention set.
func TestMIPSImageDebian(t *testing.T) {
	kernel := debianMIPSKernel(t)
	initrd := bytes.Repeat([]byte("initrd"), 300000) // 1.8 MB, about a roostd initramfs
	ram := []Range{{0x1000, 64 << 20}}
	img, err := MIPSImage(MIPSOptions{Kernel: kernel, Initrd: initrd, Cmdline: "console=ttyS0 roost.trial=1", RAM: ram})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range img.Segments {
		t.Logf("segment %s", s)
	}
	if err := img.Check(ram, 4096); err != nil {
		t.Fatal(err)
	}
	k, _ := ParseELF(kernel)
	if len(img.Segments) != 3 || len(k.Loads) != 1 {
		t.Fatalf("%d segments for %d loads, want the kernel, the initrd and the boot data", len(img.Segments), len(k.Loads))
	}
	kseg := img.Segments[0]
	load := k.Loads[0]
	if kseg.Mem != load.Paddr&0x1fffffff || !bytes.Equal(kseg.Buf, load.Data) || kseg.Memsz < load.Memsz {
		t.Fatalf("kernel segment %s, want %d bytes at %#x reserving %d", kseg, len(load.Data), load.Paddr&0x1fffffff, load.Memsz)
	}
	rd := img.Segments[1]
	if !bytes.Equal(rd.Buf, initrd) || rd.Mem < kseg.end() {
		t.Fatalf("initrd segment %s, want it above the kernel (%s)", rd, kseg)
	}
	boot := decodeBoot(t, img, binary.LittleEndian)
	if boot.jump != uint32(k.Entry) {
		t.Errorf("stub jumps to %#x, want the kernel's entry %#x", boot.jump, k.Entry)
	}
	wantCmd := fmt.Sprintf("rd_start=%#x rd_size=%d console=ttyS0 roost.trial=1", kseg0|rd.Mem, len(initrd))
	if boot.regs[0] != 2 || len(boot.argv) != 2 || boot.argv[1] != wantCmd {
		t.Errorf("argc %d argv %q, want 2 [kexec %q]", boot.regs[0], boot.argv, wantCmd)
	}
	if strings.Join(boot.envp, " ") != "memsize 67108864" {
		t.Errorf("envp %q, want memsize 67108864", boot.envp)
	}
	if boot.regs[3] != 0 {
		t.Errorf("a3 = %#x, want 0", boot.regs[3])
	}
	t.Logf("stub: a0=%d a1=%#x a2=%#x a3=%#x, jumps to %#x; argv %q; envp %q", boot.regs[0], boot.regs[1], boot.regs[2], boot.regs[3], boot.jump, boot.argv, boot.envp)
}

// mipsELF builds a small ELF kernel with the given loads.
func mipsELF(o binary.ByteOrder, entry uint32, loads ...[3]uint32) []byte { // vaddr, filesz, memsz
	const ehsize, phsize = 52, 32
	b := make([]byte, ehsize+phsize*len(loads))
	copy(b, "\x7fELF\x01")
	b[5] = 1
	if o == binary.BigEndian {
		b[5] = 2
	}
	b[6] = 1
	o.PutUint16(b[16:], 2)
	o.PutUint16(b[18:], elfMachineMIPS)
	o.PutUint32(b[24:], entry)
	o.PutUint32(b[28:], ehsize)
	o.PutUint16(b[42:], phsize)
	o.PutUint16(b[44:], uint16(len(loads)))
	for i, l := range loads {
		ph := b[ehsize+phsize*i:]
		o.PutUint32(ph, ptLoad)
		o.PutUint32(ph[4:], uint32(len(b)))
		o.PutUint32(ph[8:], l[0])
		o.PutUint32(ph[12:], l[0])
		o.PutUint32(ph[16:], l[1])
		o.PutUint32(ph[20:], l[2])
		b = append(b, bytes.Repeat([]byte{byte(i + 1)}, int(l[1]))...)
	}
	return b
}

func TestMIPSImage(t *testing.T) {
	ram := []Range{{0, 32 << 20}}
	tests := []struct {
		name   string
		kernel []byte
		opts   MIPSOptions
		err    string
		check  func(t *testing.T, img *Image)
	}{
		{
			name:   "big-endian, loads sharing a page merge",
			kernel: mipsELF(binary.BigEndian, 0x80100000, [3]uint32{0x80100000, 0x1800, 0x1800}, [3]uint32{0x80101900, 0x100, 0x2000}),
			check: func(t *testing.T, img *Image) {
				k := img.Segments[0]
				if k.Mem != 0x100000 || k.Memsz != 0x4000 || len(k.Buf) != 0x1a00 || k.Buf[0x17ff] != 1 || k.Buf[0x1800] != 0 || k.Buf[0x1900] != 2 {
					t.Fatalf("merged kernel segment %s: %d bytes", k, len(k.Buf))
				}
				b := decodeBoot(t, img, binary.BigEndian)
				if b.jump != 0x80100000 || len(b.argv) != 2 || b.argv[1] != "console=ttyS0" {
					t.Fatalf("boot args %+v", b)
				}
			},
		},
		{
			name:   "unaligned load gets a zeroed head",
			kernel: mipsELF(binary.LittleEndian, 0x80100200, [3]uint32{0x80100200, 0x100, 0x100}),
			check: func(t *testing.T, img *Image) {
				k := img.Segments[0]
				if k.Mem != 0x100000 || k.Memsz != 0x1000 || len(k.Buf) != 0x300 || k.Buf[0x1ff] != 0 || k.Buf[0x200] != 1 {
					t.Fatalf("kernel segment %s", k)
				}
			},
		},
		{
			name:   "overlapping loads",
			kernel: mipsELF(binary.LittleEndian, 0x80100000, [3]uint32{0x80100000, 0x100, 0x2000}, [3]uint32{0x80101000, 0x100, 0x100}),
			err:    "overlap",
		},
		{
			name:   "kernel outside RAM",
			kernel: mipsELF(binary.LittleEndian, 0x84000000, [3]uint32{0x84000000, 0x100, 0x100}),
			err:    "not inside system RAM",
		},
		{
			name:   "entry not in KSEG0",
			kernel: mipsELF(binary.LittleEndian, 0x00100000, [3]uint32{0x80100000, 0x100, 0x100}),
			err:    "KSEG0",
		},
		{
			name:   "command line too long",
			kernel: mipsELF(binary.LittleEndian, 0x80100000, [3]uint32{0x80100000, 0x100, 0x100}),
			opts:   MIPSOptions{Cmdline: strings.Repeat("x", 4096)},
			err:    "command line",
		},
		{
			name:   "initrd too big",
			kernel: mipsELF(binary.LittleEndian, 0x80100000, [3]uint32{0x80100000, 0x100, 0x100}),
			opts:   MIPSOptions{Initrd: make([]byte, 40<<20)},
			err:    "no room for the",
		},
		{
			name:   "odd environment",
			kernel: mipsELF(binary.LittleEndian, 0x80100000, [3]uint32{0x80100000, 0x100, 0x100}),
			opts:   MIPSOptions{Env: []string{"memsize"}},
			err:    "pairs",
		},
		{
			name: "not MIPS",
			kernel: func() []byte {
				b := mipsELF(binary.LittleEndian, 0x80100000, [3]uint32{0x80100000, 0x100, 0x100})
				b[18] = elfMachineARM
				return b
			}(),
			err: "machine 40",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.opts
			o.Kernel, o.RAM = tc.kernel, ram
			if o.Cmdline == "" {
				o.Cmdline = "console=ttyS0"
			}
			img, err := MIPSImage(o)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("MIPSImage: %v, want an error with %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, img)
		})
	}
}

func TestParseELFHostile(t *testing.T) {
	good := mipsELF(binary.LittleEndian, 0x80100000, [3]uint32{0x80100000, 0x100, 0x100})
	tests := []struct {
		name string
		mod  func(b []byte) []byte
		err  string
	}{
		{"not ELF", func(b []byte) []byte { return []byte("MZ") }, "not an ELF"},
		{"cut short", func(b []byte) []byte { return b[:60] }, "outside"},
		{"program headers past the end", func(b []byte) []byte { binary.LittleEndian.PutUint32(b[28:], 0xffffff00); return b }, "outside"},
		{"data past the end", func(b []byte) []byte { binary.LittleEndian.PutUint32(b[52+4:], 0xfffffff0); return b }, "outside"},
		{"filesz above memsz", func(b []byte) []byte { binary.LittleEndian.PutUint32(b[52+20:], 0x10); return b }, "in memory"},
		{"wraps", func(b []byte) []byte { binary.LittleEndian.PutUint32(b[52+20:], 0xffffff00); return b }, "wraps"},
		{"class 3", func(b []byte) []byte { b[4] = 3; return b }, "class"},
		{"not executable", func(b []byte) []byte { b[16] = 3; return b }, "type"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseELF(tc.mod(append([]byte(nil), good...)))
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("ParseELF: %v, want %q", err, tc.err)
			}
		})
	}
}

func TestMIPSStub(t *testing.T) {
	// Assembled by hand from the MIPS32 manual: lui $a0,0x1234; ori $a0,$a0,0x5678; ... jr $t9; nop.
	w := mipsStub([4]uint32{0x12345678, 0x80fff000, 0x80fff00c, 0}, 0x810f0000)
	want := [12]uint32{0x3c041234, 0x34845678, 0x3c0580ff, 0x34a5f000, 0x3c0680ff, 0x34c6f00c, 0x3c070000, 0x34e70000, 0x3c19810f, 0x37390000, 0x03200009, 0}
	if w != want {
		t.Fatalf("stub %#08x\nwant %#08x", w, want)
	}
}

func FuzzParseELF(f *testing.F) {
	f.Add(mipsELF(binary.LittleEndian, 0x80100000, [3]uint32{0x80100000, 0x100, 0x100}))
	f.Add(mipsELF(binary.BigEndian, 0x80100000, [3]uint32{0x80100000, 0x1800, 0x1800}, [3]uint32{0x80101900, 0x100, 0x2000}))
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, err := ParseELF(b); err != nil {
			return
		}
		ram := []Range{{0, 64 << 20}}
		img, err := MIPSImage(MIPSOptions{Kernel: b, Initrd: []byte("rd"), Cmdline: "x", RAM: ram})
		if err != nil {
			return
		}
		if err := img.Check(ram, 4096); err != nil {
			t.Fatalf("MIPSImage built an image that breaks the rules: %v", err)
		}
	})
}
