package kexec

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// ARMOptions say what ARMImage loads.
type ARMOptions struct {
	ZImage  []byte
	DTB     []byte // the board's device tree: the running one is /sys/firmware/fdt
	Initrd  []byte // optional
	Cmdline string
	RAM     []Range
	// PageSize defaults to 4096, 32-bit ARM's.
	PageSize uint64
}

// The zImage header (arch/arm/boot/compressed/head.S): after nine
// instructions, a magic word, the image's start and end, an endianness
// word, and optionally a table of tags, one of which gives the size of
// the decompressed kernel.
const (
	zImageMagic     = 0x016f2818
	zImageMagic2    = 0x45454545
	zImageTagKSize  = 0x5a534c4b // "KLSZ"
	zImageLE        = 0x04030201
	armTextOffset   = 0x8000    // TEXT_OFFSET: the kernel sits 32 KiB into RAM
	armLowmem       = 512 << 20 // DTB and initrd stay in the kernel's low memory
	armCmdlineSize  = 1023      // COMMAND_LINE_SIZE on ARM is 1024 with the NUL
	zImageStackHeap = 0x11000   // the decompressor's stack (4 KiB) and malloc arena (64 KiB), past its end
)

// zImage is what the layout needs of an ARM zImage.
type zImage struct {
	data []byte // the image itself, without trailing bytes
	// room is the memory, from the load address, that decompression
	// uses: the decompressed kernel and its BSS, with the zImage
	// (moved past it) and its stack and heap.
	room uint64
}

// parseZImage reads an ARM zImage's header. b is untrusted.
func parseZImage(b []byte) (zImage, error) {
	le := binary.LittleEndian
	if len(b) < 0x3c || le.Uint32(b[0x24:]) != zImageMagic {
		return zImage{}, errors.New("not an ARM zImage (no magic 0x016f2818 at offset 0x24)")
	}
	if e := le.Uint32(b[0x30:]); e != zImageLE {
		return zImage{}, fmt.Errorf("zImage endianness word %#x: only little-endian kernels are supported", e)
	}
	start, end := le.Uint32(b[0x28:]), le.Uint32(b[0x2c:])
	if end <= start {
		return zImage{}, fmt.Errorf("zImage header: end %#x is not after start %#x", end, start)
	}
	size := uint64(end - start)
	if size > uint64(len(b)) {
		return zImage{}, fmt.Errorf("zImage is cut short: %d bytes, its header says %d", len(b), size)
	}
	z := zImage{data: b[:size]}
	need := size + zImageStackHeap
	z.room = need * 5 // a compression ratio of 4 at most, and the zImage itself
	if edata, bss, ok := zImageKernelSize(z.data); ok {
		z.room = max(edata+bss, edata+need)
	}
	return z, nil
}

// zImageKernelSize reads the KLSZ tag: the decompressed kernel's size
// (through a pointer into the image) and its BSS.
func zImageKernelSize(b []byte) (edata, bss uint64, ok bool) {
	le := binary.LittleEndian
	if le.Uint32(b[0x34:]) != zImageMagic2 {
		return 0, 0, false
	}
	off := uint64(le.Uint32(b[0x38:]))
	for i := 0; i < 64 && off+8 <= uint64(len(b)); i++ {
		size, tag := uint64(le.Uint32(b[off:]))*4, le.Uint32(b[off+4:])
		if size < 8 || off+size > uint64(len(b)) {
			return 0, 0, false
		}
		if tag == zImageTagKSize && size >= 16 {
			ptr := uint64(le.Uint32(b[off+8:]))
			if ptr+4 > uint64(len(b)) {
				return 0, 0, false
			}
			return uint64(le.Uint32(b[ptr:])), uint64(le.Uint32(b[off+12:])), true
		}
		off += size
	}
	return 0, 0, false
}

// ARMImage builds the kexec segments for a 32-bit ARM zImage: the zImage
// 32 KiB into the first RAM bank (where the decompressor's
// AUTO_ZRELADDR finds the bank's start), then, past the memory that
// decompression uses, the initrd, and after it the device tree with
// /chosen's bootargs and linux,initrd-start/-end set. The entry is the
// zImage; the kernel's machine_kexec starts it with r2 pointing at the
// segment that begins with the FDT magic, so no purgatory is needed.
func ARMImage(o ARMOptions) (*Image, error) {
	if o.PageSize == 0 {
		o.PageSize = 4096
	}
	if len(o.Cmdline) > armCmdlineSize {
		return nil, fmt.Errorf("kernel command line: %d bytes, ARM takes at most %d", len(o.Cmdline), armCmdlineSize)
	}
	if len(o.RAM) == 0 {
		return nil, errors.New("ARM kexec: no system RAM given")
	}
	z, err := parseZImage(o.ZImage)
	if err != nil {
		return nil, err
	}
	fdt, err := ParseFDT(o.DTB)
	if err != nil {
		return nil, err
	}
	p := &placer{ram: o.RAM, pageSize: o.PageSize}
	bank := o.RAM[0]
	base := alignUp(bank.Start, 1<<20) // the decompressor rounds its pc down to 128 MiB; a bank starts at least MiB-aligned
	limit := bank.Start + min(bank.End-bank.Start, armLowmem)
	if base+armTextOffset+z.room > limit {
		return nil, fmt.Errorf("the zImage needs %d bytes from %#x to decompress; the first RAM bank is %s", z.room, base+armTextOffset, bank)
	}
	kernel := p.add(z.data, base+armTextOffset, uint64(len(z.data))+4) // 4 more: an appended DTB must see a word past _edata
	// The decompression's room is not a segment, but nothing may go there.
	p.used = append(p.used, Segment{Mem: kernel.Mem, Memsz: alignUp(z.room, o.PageSize)})
	next := kernel.Mem + alignUp(z.room, o.PageSize)
	fdt.SetChosen("bootargs", append([]byte(o.Cmdline), 0))
	fdt.SetChosen("linux,initrd-start", nil)
	fdt.SetChosen("linux,initrd-end", nil)
	if len(o.Initrd) > 0 {
		at, ok := p.lowest(uint64(len(o.Initrd)), next, limit)
		if !ok {
			return nil, fmt.Errorf("no room for the %d-byte initrd in low memory %#x-%#x after the kernel", len(o.Initrd), next, limit)
		}
		p.add(o.Initrd, at, uint64(len(o.Initrd)))
		fdt.SetChosen("linux,initrd-start", fdtCell(at))
		fdt.SetChosen("linux,initrd-end", fdtCell(at+uint64(len(o.Initrd))))
		next = at + alignUp(uint64(len(o.Initrd)), o.PageSize) + o.PageSize // a page between, as kexec-tools leaves
	}
	dtb := fdt.Bytes()
	at, ok := p.lowest(uint64(len(dtb)), next, limit)
	if !ok {
		return nil, fmt.Errorf("no room for the %d-byte device tree in low memory %#x-%#x", len(dtb), next, limit)
	}
	p.add(dtb, at, uint64(len(dtb)))
	img := &Image{Entry: kernel.Mem, Segments: withoutHoles(p.used)}
	if err := img.Check(o.RAM, o.PageSize); err != nil {
		return nil, err
	}
	return img, nil
}

// fdtCell is an address as one 32-bit cell, or two when it needs them
// (the kernel reads either, by the property's length).
func fdtCell(a uint64) []byte {
	if a>>32 == 0 {
		return be.AppendUint32(nil, uint32(a))
	}
	return be.AppendUint64(nil, a)
}

// withoutHoles drops the placeholders that only kept room free.
func withoutHoles(segs []Segment) []Segment {
	var out []Segment
	for _, s := range segs {
		if s.Buf != nil {
			out = append(out, s)
		}
	}
	return out
}
