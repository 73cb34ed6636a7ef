// Package kexec loads a Linux kernel for kexec and starts it, in pure Go,
// on every board architecture: kexec_file_load (the kernel parses the
// image) on amd64 and arm64, and kexec_load with segments that this
// package builds where only that exists: an ELF kernel on MIPS (MIPSImage)
// and a zImage with a device tree on 32-bit ARM (ARMImage).
//
// Invariants of an Image that Check enforces, and that the kernel's own
// check (kernel/kexec_core.c) would refuse with a bare EINVAL or
// EADDRNOTAVAIL: at most 16 segments; each starts and ends on a page;
// none overlaps another; each lies in one range of system RAM; no segment
// holds more bytes than it reserves; they take at most half the RAM; the
// entry point lies in a segment. Kernel, initrd and device tree come with
// an update, so the parsers treat them as untrusted: every offset and size
// is checked before use, and a malformed input is an error naming what is
// wrong, never a panic.
package kexec

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// MaxSegments is the kernel's KEXEC_SEGMENT_MAX.
const MaxSegments = 16

// Segment is a piece of the new kernel's memory: Buf is copied to the
// physical address Mem, and the rest of Memsz is zeroed.
type Segment struct {
	Buf   []byte
	Mem   uint64 // physical address, page-aligned
	Memsz uint64 // page-aligned, at least len(Buf)
}

func (s Segment) end() uint64 { return s.Mem + s.Memsz }

func (s Segment) String() string {
	return fmt.Sprintf("%#x-%#x (%d bytes data)", s.Mem, s.end(), len(s.Buf))
}

// Image is what kexec_load takes: the segments and the physical entry
// point, where the CPU starts once the segments are in place.
type Image struct {
	Entry    uint64
	Segments []Segment
}

// Range is a range of physical memory, [Start, End).
type Range struct{ Start, End uint64 }

func (r Range) String() string { return fmt.Sprintf("%#x-%#x", r.Start, r.End) }

// Check tells whether img obeys the kernel's rules for ram (system RAM)
// and the page size, and says which rule a segment breaks.
func (img *Image) Check(ram []Range, pageSize uint64) error {
	if len(img.Segments) == 0 {
		return errors.New("kexec image: no segments")
	}
	if len(img.Segments) > MaxSegments {
		return fmt.Errorf("kexec image: %d segments, the kernel takes at most %d", len(img.Segments), MaxSegments)
	}
	if pageSize == 0 || pageSize&(pageSize-1) != 0 {
		return fmt.Errorf("kexec image: page size %d is not a power of two", pageSize)
	}
	var total, ramSize uint64
	for _, r := range ram {
		ramSize += r.End - r.Start
	}
	segs := append([]Segment(nil), img.Segments...)
	sort.Slice(segs, func(i, j int) bool { return segs[i].Mem < segs[j].Mem })
	entryIn := false
	for i, s := range segs {
		switch {
		case s.Memsz == 0:
			return fmt.Errorf("kexec segment %s: empty", s)
		case s.Mem%pageSize != 0 || s.Memsz%pageSize != 0:
			return fmt.Errorf("kexec segment %s: not aligned to the %d-byte page", s, pageSize)
		case s.end() < s.Mem:
			return fmt.Errorf("kexec segment %s: wraps around", s)
		case uint64(len(s.Buf)) > s.Memsz:
			return fmt.Errorf("kexec segment %s: %d bytes do not fit in %d", s, len(s.Buf), s.Memsz)
		case i > 0 && s.Mem < segs[i-1].end():
			return fmt.Errorf("kexec segments %s and %s overlap", segs[i-1], s)
		case !inRAM(ram, s.Mem, s.end()):
			return fmt.Errorf("kexec segment %s: not inside one range of system RAM %v", s, ram)
		}
		total += s.Memsz
		entryIn = entryIn || (img.Entry >= s.Mem && img.Entry < s.end())
	}
	if total > ramSize/2 {
		return fmt.Errorf("kexec image: %d bytes in segments, more than half of the %d bytes of RAM", total, ramSize)
	}
	if !entryIn {
		return fmt.Errorf("kexec image: entry %#x is in no segment", img.Entry)
	}
	return nil
}

func inRAM(ram []Range, start, end uint64) bool {
	for _, r := range ram {
		if start >= r.Start && end <= r.End {
			return true
		}
	}
	return false
}

// ParseIOMem reads the top-level "System RAM" ranges of /proc/iomem
// (children such as "Kernel code" lie inside them), merged where they
// touch. /proc/iomem shows zeros to a reader without CAP_SYS_ADMIN: that
// is an error, not an empty map.
func ParseIOMem(r io.Reader) ([]Range, error) {
	var ram []Range
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, " ") {
			continue
		}
		span, name, ok := strings.Cut(line, " : ")
		if !ok || strings.TrimSpace(name) != "System RAM" {
			continue
		}
		rg, err := parseSpan(span)
		if err != nil {
			return nil, fmt.Errorf("/proc/iomem line %q: %w", line, err)
		}
		ram = append(ram, rg)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return mergeRanges(ram)
}

// parseSpan parses "start-end" (hex, end inclusive).
func parseSpan(s string) (Range, error) {
	a, b, ok := strings.Cut(strings.TrimSpace(s), "-")
	if !ok {
		return Range{}, fmt.Errorf("no range in %q", s)
	}
	start, err1 := strconv.ParseUint(a, 16, 64)
	last, err2 := strconv.ParseUint(b, 16, 64)
	if err1 != nil || err2 != nil || last < start || last == ^uint64(0) {
		return Range{}, fmt.Errorf("bad range %q", s)
	}
	return Range{start, last + 1}, nil
}

func mergeRanges(ram []Range) ([]Range, error) {
	sort.Slice(ram, func(i, j int) bool { return ram[i].Start < ram[j].Start })
	var out []Range
	for _, r := range ram {
		if n := len(out); n > 0 && r.Start <= out[n-1].End {
			out[n-1].End = max(out[n-1].End, r.End)
			continue
		}
		out = append(out, r)
	}
	if len(out) == 0 || (len(out) == 1 && out[0] == Range{0, 1}) {
		return nil, errors.New("no system RAM listed (is the reader root? /proc/iomem shows zeros to others)")
	}
	return out, nil
}

// ParseMemmap reads the firmware memory map under dir
// (/sys/firmware/memmap: x86 and EFI systems), its "System RAM" entries.
func ParseMemmap(dir string) ([]Range, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var ram []Range
	for _, e := range entries {
		read := func(f string) string {
			b, _ := os.ReadFile(filepath.Join(dir, e.Name(), f))
			return strings.TrimSpace(string(b))
		}
		if read("type") != "System RAM" {
			continue
		}
		rg, err := parseSpan(strings.TrimPrefix(read("start"), "0x") + "-" + strings.TrimPrefix(read("end"), "0x"))
		if err != nil {
			return nil, fmt.Errorf("%s/%s: %w", dir, e.Name(), err)
		}
		ram = append(ram, rg)
	}
	return mergeRanges(ram)
}

// SystemRAM is the running kernel's system RAM: /proc/iomem, else the
// firmware map.
func SystemRAM() ([]Range, error) {
	f, err := os.Open("/proc/iomem")
	if err == nil {
		defer f.Close()
		ram, err := ParseIOMem(f)
		if err == nil {
			return ram, nil
		}
		if mm, err2 := ParseMemmap("/sys/firmware/memmap"); err2 == nil {
			return mm, nil
		}
		return nil, fmt.Errorf("/proc/iomem: %w", err)
	}
	return ParseMemmap("/sys/firmware/memmap")
}

// placer finds room for segments in RAM around the ones already placed.
type placer struct {
	ram      []Range
	used     []Segment
	pageSize uint64
}

func alignUp(x, a uint64) uint64   { return (x + a - 1) &^ (a - 1) }
func alignDown(x, a uint64) uint64 { return x &^ (a - 1) }

func (p *placer) free(start, end uint64) bool {
	for _, s := range p.used {
		if start < s.end() && s.Mem < end {
			return false
		}
	}
	return true
}

// lowest finds the lowest page-aligned hole of size bytes at or above
// floor and below limit.
func (p *placer) lowest(size, floor, limit uint64) (uint64, bool) {
	size = alignUp(size, p.pageSize)
	for _, r := range p.ram {
		start := alignUp(max(r.Start, floor), p.pageSize)
		for start+size <= min(r.End, limit) && start+size > start {
			if p.free(start, start+size) {
				return start, true
			}
			start = p.nextFree(start, size)
		}
	}
	return 0, false
}

// nextFree is the page after the used segment that overlaps [start, start+size).
func (p *placer) nextFree(start, size uint64) uint64 {
	next := start + p.pageSize
	for _, s := range p.used {
		if start < s.end() && s.Mem < start+size {
			next = max(next, alignUp(s.end(), p.pageSize))
		}
	}
	return next
}

// highest finds the highest page-aligned hole of size bytes that ends at
// or below limit.
func (p *placer) highest(size, limit uint64) (uint64, bool) {
	size = alignUp(size, p.pageSize)
	for i := len(p.ram) - 1; i >= 0; i-- {
		r := p.ram[i]
		end := alignDown(min(r.End, limit), p.pageSize)
		for end >= r.Start+size && end >= size {
			start := end - size
			if start < r.Start {
				break
			}
			if p.free(start, end) {
				return start, true
			}
			end = alignDown(p.prevFree(start, end), p.pageSize)
		}
	}
	return 0, false
}

// prevFree is the start of the lowest used segment overlapping [start, end).
func (p *placer) prevFree(start, end uint64) uint64 {
	prev := end - p.pageSize
	for _, s := range p.used {
		if start < s.end() && s.Mem < end {
			prev = min(prev, s.Mem)
		}
	}
	return prev
}

// add places buf at mem, reserving memsz rounded up to pages.
func (p *placer) add(buf []byte, mem, memsz uint64) Segment {
	s := Segment{Buf: buf, Mem: mem, Memsz: alignUp(max(memsz, uint64(len(buf))), p.pageSize)}
	p.used = append(p.used, s)
	return s
}
