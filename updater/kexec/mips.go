package kexec

import (
	"encoding/binary"
	"fmt"
	"sort"
	"strconv"
)

// MIPSOptions say what MIPSImage loads.
type MIPSOptions struct {
	Kernel  []byte // an ELF kernel: vmlinux, or a self-decompressing vmlinuz
	Initrd  []byte // optional
	Cmdline string
	// Env is the firmware environment the new kernel reads with
	// fw_getenv, as YAMON name/value pairs ("memsize", "67108864", …).
	// Default: memsize from RAM (MIPSEnv).
	Env      []string
	RAM      []Range
	PageSize uint64 // default 4096
}

// The MIPS32 boot convention of YAMON, U-Boot and QEMU's malta loader,
// which the kernel reads in fw_init_cmdline and fw_getenv: a0 = argc, a1
// = argv, a2 = envp (32-bit pointers into KSEG0), a3 = memory size.
// mainline kexec on MIPS passes none of it: relocate_new_kernel loads a0-a3
// from kexec_args, which only UHI (a device tree) and some platforms
// (Octeon, Loongson) fill, so a kernel started bare sees no command line.
// The image therefore starts at a small setup stub of its own (below),
// which loads a0-a3 and jumps to the kernel's entry: what kexec-tools'
// purgatory does on other architectures.
const (
	kseg0      = 0x80000000
	mipsLimit  = 0x10000000 // the boot data and initrd stay below 256 MiB, inside KSEG0 on every MIPS kernel
	maxCmdline = 4095       // COMMAND_LINE_SIZE on MIPS is 4096 with the NUL
	stubSize   = 12 * 4
)

// MIPSImage builds the kexec segments for an ELF MIPS kernel: its PT_LOAD
// segments at their physical addresses, the initrd, and one segment with
// the setup stub (the entry), argv (the command line, with rd_start= and
// rd_size= for the initrd, as the kernel parses them) and envp. Initrd and
// boot data go as high in RAM below 256 MiB as they fit, above a kernel
// that relocates itself (RELOCATABLE, RANDOMIZE_BASE) or decompresses
// upward.
func MIPSImage(o MIPSOptions) (*Image, error) {
	if o.PageSize == 0 {
		o.PageSize = 4096
	}
	if len(o.Cmdline) > maxCmdline {
		return nil, fmt.Errorf("kernel command line: %d bytes, MIPS takes at most %d", len(o.Cmdline), maxCmdline)
	}
	k, err := ParseELF(o.Kernel)
	if err != nil {
		return nil, fmt.Errorf("MIPS kernel: %w", err)
	}
	if k.Machine != elfMachineMIPS {
		return nil, fmt.Errorf("MIPS kernel: ELF machine %d, want MIPS (%d)", k.Machine, elfMachineMIPS)
	}
	entry, err := mipsKSEG0(k.Entry)
	if err != nil {
		return nil, fmt.Errorf("MIPS kernel entry: %w", err)
	}
	p := &placer{ram: o.RAM, pageSize: o.PageSize}
	if err := addELFLoads(p, k); err != nil {
		return nil, err
	}
	cmdline := o.Cmdline
	if len(o.Initrd) > 0 {
		at, ok := p.highest(uint64(len(o.Initrd)), mipsLimit)
		if !ok {
			return nil, fmt.Errorf("no room for the %d-byte initrd in RAM %v below 256 MiB beside the kernel", len(o.Initrd), o.RAM)
		}
		p.add(o.Initrd, at, uint64(len(o.Initrd)))
		cmdline = fmt.Sprintf("rd_start=%#x rd_size=%d %s", kseg0|at, len(o.Initrd), cmdline)
		if len(cmdline) > maxCmdline {
			return nil, fmt.Errorf("kernel command line with the initrd's rd_start and rd_size: %d bytes, MIPS takes at most %d", len(cmdline), maxCmdline)
		}
	}
	env := o.Env
	if env == nil {
		env = MIPSEnv(o.RAM)
	}
	if len(env)%2 != 0 {
		return nil, fmt.Errorf("MIPS firmware environment %q: want name/value pairs", env)
	}
	size := uint64(bootDataSize(cmdline, env))
	at, ok := p.highest(size, mipsLimit)
	if !ok {
		return nil, fmt.Errorf("no room for the %d bytes of boot data in RAM %v below 256 MiB", size, o.RAM)
	}
	p.add(bootData(k.Order, uint32(at), uint32(entry), cmdline, env), at, size)
	img := &Image{Entry: at, Segments: p.used}
	if err := img.Check(o.RAM, o.PageSize); err != nil {
		return nil, err
	}
	return img, nil
}

// MIPSEnv is the firmware environment a Malta-style kernel needs:
// memsize, the bytes of RAM below 256 MiB.
func MIPSEnv(ram []Range) []string {
	var top uint64
	for _, r := range ram {
		if r.Start < mipsLimit {
			top = max(top, min(r.End, mipsLimit))
		}
	}
	return []string{"memsize", strconv.FormatUint(top, 10)}
}

// mipsPhys turns a MIPS kernel address into a physical one: KSEG0/KSEG1
// (and their sign-extended 64-bit forms, CKSEG0/CKSEG1) drop their
// segment bits, XKPHYS its cache bits; a low address is physical already.
func mipsPhys(a uint64, class64 bool) (uint64, error) {
	switch {
	case !class64 && a >= 0x80000000 && a < 0xc0000000,
		class64 && a >= 0xffffffff80000000 && a < 0xffffffffc0000000:
		return a & 0x1fffffff, nil
	case class64 && a>>62 == 2:
		return a & (1<<59 - 1), nil
	case a < 0x80000000:
		return a, nil
	}
	return 0, fmt.Errorf("address %#x is in no unmapped segment (KSEG0, KSEG1, XKPHYS)", a)
}

// mipsKSEG0 is the 32-bit KSEG0 address the setup stub jumps to.
func mipsKSEG0(a uint64) (uint64, error) {
	switch {
	case a >= 0x80000000 && a < 0xa0000000:
		return a, nil
	case a >= 0xffffffff80000000 && a < 0xffffffffa0000000:
		return a & 0xffffffff, nil
	}
	return 0, fmt.Errorf("%#x is not a KSEG0 address (0x80000000-0x9fffffff)", a)
}

// addELFLoads places the kernel's PT_LOAD segments at their physical
// addresses; loads that share a page become one segment.
func addELFLoads(p *placer, k *ELFKernel) error {
	type load struct {
		phys, memsz uint64
		data        []byte
	}
	var loads []load
	for _, l := range k.Loads {
		phys, err := mipsPhys(l.Paddr, k.Class64)
		if err != nil {
			return fmt.Errorf("MIPS kernel segment: %w", err)
		}
		loads = append(loads, load{phys, l.Memsz, l.Data})
	}
	sort.Slice(loads, func(i, j int) bool { return loads[i].phys < loads[j].phys })
	for i := 0; i < len(loads); {
		first := loads[i]
		mem, end, dataEnd := alignDown(first.phys, p.pageSize), first.phys+first.memsz, first.phys+uint64(len(first.data))
		j := i + 1
		for ; j < len(loads) && loads[j].phys < alignUp(end, p.pageSize); j++ {
			if loads[j].phys < end {
				return fmt.Errorf("MIPS kernel segments at %#x and %#x overlap", loads[j-1].phys, loads[j].phys)
			}
			end, dataEnd = loads[j].phys+loads[j].memsz, loads[j].phys+uint64(len(loads[j].data))
		}
		buf := first.data
		if j > i+1 || first.phys != mem {
			buf = make([]byte, dataEnd-mem)
			for _, l := range loads[i:j] {
				copy(buf[l.phys-mem:], l.data)
			}
		}
		s := Segment{Buf: buf, Mem: mem, Memsz: alignUp(end, p.pageSize) - mem}
		if !inRAM(p.ram, s.Mem, s.end()) {
			return fmt.Errorf("MIPS kernel segment %s is not inside system RAM %v", s, p.ram)
		}
		p.used = append(p.used, s)
		i = j
	}
	return nil
}

// bootDataSize is the size of bootData's segment for cmdline and env.
func bootDataSize(cmdline string, env []string) int {
	n := stubSize + 4*(3+len(env)+1) + len("kexec") + 1 + len(cmdline) + 1
	for _, e := range env {
		n += len(e) + 1
	}
	return n
}

// bootData lays out, at physical address at: the setup stub, argv
// {"kexec", cmdline, NULL}, envp {env..., NULL}, then the strings.
func bootData(o binary.ByteOrder, at, entry uint32, cmdline string, env []string) []byte {
	buf := make([]byte, bootDataSize(cmdline, env))
	virt := func(off int) uint32 { return kseg0 | (at + uint32(off)) }
	argvOff := stubSize
	envpOff := argvOff + 4*3
	strOff := envpOff + 4*(len(env)+1)
	putStr := func(table, i int, s string) {
		o.PutUint32(buf[table+4*i:], virt(strOff))
		strOff += copy(buf[strOff:], s) + 1
	}
	argc := 2
	putStr(argvOff, 0, "kexec")
	putStr(argvOff, 1, cmdline)
	for i, e := range env {
		putStr(envpOff, i, e)
	}
	stub := mipsStub([4]uint32{uint32(argc), virt(argvOff), virt(envpOff), 0}, entry)
	for i, w := range stub {
		o.PutUint32(buf[4*i:], w)
	}
	return buf
}

// mipsStub is the setup stub: load a0-a3, jump to entry. lui
// sign-extends on MIPS64, which makes a KSEG0 address CKSEG0 there.
func mipsStub(args [4]uint32, entry uint32) [12]uint32 {
	const (
		lui, ori = 0x0f << 26, 0x0d << 26
		a0, t9   = 4, 25
	)
	var w [12]uint32
	load := func(i int, reg, v uint32) {
		w[i] = lui | reg<<16 | v>>16
		w[i+1] = ori | reg<<21 | reg<<16 | v&0xffff
	}
	for i, v := range args {
		load(2*i, a0+uint32(i), v)
	}
	load(8, t9, entry)
	w[10] = t9<<21 | 0x09 // jalr $zero, $t9: jr on every revision, R6 included
	w[11] = 0             // nop in the delay slot
	return w
}
