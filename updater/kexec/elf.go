package kexec

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// ELFKernel is what a kexec loader needs of an ELF kernel (a MIPS
// vmlinux, or Debian's vmlinuz, which is an ELF that decompresses the
// kernel): where its loadable parts go and where it starts.
type ELFKernel struct {
	Class64 bool
	Order   binary.ByteOrder
	Machine uint16
	Entry   uint64 // as the ELF says (a virtual address on MIPS)
	Loads   []ELFLoad
}

// ELFLoad is one PT_LOAD segment.
type ELFLoad struct {
	Data   []byte // the file's bytes, Filesz of them
	Paddr  uint64 // as the ELF says
	Vaddr  uint64
	Memsz  uint64
	Offset uint64
}

// The ELF constants this parser uses (debug/elf has them, but its parser
// is not meant for hostile input; this one reads only what it needs).
const (
	elfMachineMIPS = 8
	elfMachineARM  = 40
	ptLoad         = 1
	maxELFLoads    = 64
)

// ParseELF reads an ELF executable's header and PT_LOAD segments. data is
// untrusted: every offset is checked against its length.
func ParseELF(data []byte) (*ELFKernel, error) {
	if len(data) < 52 || string(data[:4]) != "\x7fELF" {
		return nil, errors.New("not an ELF file (no \\x7fELF magic)")
	}
	k := &ELFKernel{}
	switch data[4] {
	case 1:
	case 2:
		k.Class64 = true
	default:
		return nil, fmt.Errorf("ELF class %d: want 1 (32-bit) or 2 (64-bit)", data[4])
	}
	switch data[5] {
	case 1:
		k.Order = binary.LittleEndian
	case 2:
		k.Order = binary.BigEndian
	default:
		return nil, fmt.Errorf("ELF data encoding %d: want 1 (little-endian) or 2 (big-endian)", data[5])
	}
	o := k.Order
	if t := o.Uint16(data[16:]); t != 2 {
		return nil, fmt.Errorf("ELF type %d: want an executable (2)", t)
	}
	k.Machine = o.Uint16(data[18:])
	var phoff, phentsize, phnum uint64
	if k.Class64 {
		if len(data) < 64 {
			return nil, errors.New("ELF header cut short")
		}
		k.Entry = o.Uint64(data[24:])
		phoff = o.Uint64(data[32:])
		phentsize, phnum = uint64(o.Uint16(data[54:])), uint64(o.Uint16(data[56:]))
	} else {
		k.Entry = uint64(o.Uint32(data[24:]))
		phoff = uint64(o.Uint32(data[28:]))
		phentsize, phnum = uint64(o.Uint16(data[42:])), uint64(o.Uint16(data[44:]))
	}
	want := uint64(32)
	if k.Class64 {
		want = 56
	}
	if phentsize < want {
		return nil, fmt.Errorf("ELF program header size %d: want at least %d", phentsize, want)
	}
	if phnum == 0 || phoff > uint64(len(data)) || phnum*phentsize > uint64(len(data))-phoff {
		return nil, fmt.Errorf("ELF program headers (%d at %#x) lie outside the %d-byte file", phnum, phoff, len(data))
	}
	for i := range phnum {
		ph := data[phoff+i*phentsize:]
		l, typ, filesz := readPhdr(k, ph)
		if typ != ptLoad || l.Memsz == 0 {
			continue
		}
		if filesz > l.Memsz {
			return nil, fmt.Errorf("ELF segment %d: %d bytes in the file but %d in memory", i, filesz, l.Memsz)
		}
		if l.Offset > uint64(len(data)) || filesz > uint64(len(data))-l.Offset {
			return nil, fmt.Errorf("ELF segment %d (%d bytes at %#x) lies outside the %d-byte file", i, filesz, l.Offset, len(data))
		}
		if l.Paddr+l.Memsz < l.Paddr || !k.Class64 && l.Paddr+l.Memsz > 1<<32 {
			return nil, fmt.Errorf("ELF segment %d at %#x: size %#x wraps around", i, l.Paddr, l.Memsz)
		}
		l.Data = data[l.Offset : l.Offset+filesz]
		if len(k.Loads) == maxELFLoads {
			return nil, fmt.Errorf("more than %d ELF load segments", maxELFLoads)
		}
		k.Loads = append(k.Loads, l)
	}
	if len(k.Loads) == 0 {
		return nil, errors.New("ELF file has no loadable segment")
	}
	return k, nil
}

func readPhdr(k *ELFKernel, ph []byte) (l ELFLoad, typ uint32, filesz uint64) {
	o := k.Order
	typ = o.Uint32(ph)
	if k.Class64 {
		l.Offset, l.Vaddr, l.Paddr = o.Uint64(ph[8:]), o.Uint64(ph[16:]), o.Uint64(ph[24:])
		filesz, l.Memsz = o.Uint64(ph[32:]), o.Uint64(ph[40:])
		return l, typ, filesz
	}
	l.Offset, l.Vaddr, l.Paddr = uint64(o.Uint32(ph[4:])), uint64(o.Uint32(ph[8:])), uint64(o.Uint32(ph[12:]))
	filesz, l.Memsz = uint64(o.Uint32(ph[16:])), uint64(o.Uint32(ph[20:]))
	return l, typ, filesz
}
