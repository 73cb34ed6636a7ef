package image

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/roostrouter/roost/boards"
)

// MTD is an MTD device or partition, as a line of /proc/mtd gives it.
type MTD struct {
	Index     int
	Size      uint64
	EraseSize uint32
	Name      string
}

// Device is its character device, the one MTD's ioctls act on.
func (m MTD) Device() string { return "/dev/mtd" + strconv.Itoa(m.Index) }

// ParseProcMTD reads /proc/mtd: a header, then a line per device,
// `mtd3: 00fa0000 00010000 "firmware"` (index, size and erase size in
// hex, the name in quotes, which the kernel does not escape).
func ParseProcMTD(r io.Reader) ([]MTD, error) {
	var out []MTD
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if n == 1 && strings.HasPrefix(line, "dev:") || strings.TrimSpace(line) == "" {
			continue
		}
		m, err := parseMTDLine(line)
		if err != nil {
			return nil, fmt.Errorf("/proc/mtd line %d %q: %w", n, line, err)
		}
		out = append(out, m)
	}
	return out, sc.Err()
}

func parseMTDLine(line string) (MTD, error) {
	dev, rest, ok := strings.Cut(line, ": ")
	num, isMTD := strings.CutPrefix(dev, "mtd")
	if !ok || !isMTD {
		return MTD{}, fmt.Errorf("want mtdN: size erasesize \"name\"")
	}
	idx, err := strconv.ParseUint(num, 10, 16)
	if err != nil || num != strconv.FormatUint(idx, 10) {
		return MTD{}, fmt.Errorf("device %q: want mtd and a number", dev)
	}
	f := strings.SplitN(rest, " ", 3)
	if len(f) != 3 {
		return MTD{}, fmt.Errorf("want a size, an erase size and a name")
	}
	size, err := strconv.ParseUint(f[0], 16, 64)
	if err != nil || len(f[0]) > 16 {
		return MTD{}, fmt.Errorf("size %q: want hex", f[0])
	}
	erase, err := strconv.ParseUint(f[1], 16, 32)
	if err != nil || len(f[1]) > 8 {
		return MTD{}, fmt.Errorf("erase size %q: want hex", f[1])
	}
	name := f[2]
	if len(name) < 2 || name[0] != '"' || name[len(name)-1] != '"' {
		return MTD{}, fmt.Errorf("name %s: want it in quotes", name)
	}
	return MTD{Index: int(idx), Size: size, EraseSize: uint32(erase), Name: name[1 : len(name)-1]}, nil
}

// mtdInfo is MEMGETINFO's struct mtd_info_user.
type mtdInfo struct {
	Type                              uint8
	Flags, Size, EraseSize, WriteSize uint32
}

// MTD types and flags (include/uapi/mtd/mtd-abi.h).
const (
	mtdNAND     = 4
	mtdMLCNAND  = 8
	mtdWritable = 0x400
)

func (i mtdInfo) nand() bool { return i.Type == mtdNAND || i.Type == mtdMLCNAND }

// mtdDevice is an open /dev/mtdN.
type mtdDevice interface {
	info() (mtdInfo, error)
	isBad(off uint64) (bool, error)
	erase(off uint64, n uint32) error
	io.ReaderAt
	io.WriterAt
	Close() error
}

// mtdPlan is what checkMTD found: the device, its geometry, and the good
// blocks the image goes into, in order.
type mtdPlan struct {
	mtd    MTD
	info   mtdInfo
	blocks []uint64
	bad    []uint64 // every bad block of the partition
}

// findMTD is the partition called name in /proc/mtd.
func (c Config) findMTD(name string) (MTD, error) {
	b, err := os.ReadFile(c.path("proc/mtd"))
	if err != nil {
		return MTD{}, fmt.Errorf("image: read the MTD partitions: %w (is MTD in the kernel?)", err)
	}
	all, err := ParseProcMTD(bytes.NewReader(b))
	if err != nil {
		return MTD{}, fmt.Errorf("image: %w", err)
	}
	var found []MTD
	var names []string
	for _, m := range all {
		names = append(names, m.Name)
		if m.Name == name {
			found = append(found, m)
		}
	}
	switch len(found) {
	case 0:
		return MTD{}, fmt.Errorf("image: no MTD partition %q in /proc/mtd (the kernel has %s): is this a %s, and its kernel the board's?", name, list(names), c.Board.Name)
	case 1:
		return found[0], nil
	}
	return MTD{}, fmt.Errorf("image: %d MTD partitions are called %q: refused, which one is the image's is not known", len(found), name)
}

// checkMTD checks MTD partition p of flash f for an image of size bytes.
func (c Config) checkMTD(f boards.Flash, p boards.Partition, size uint64, dev devices) (*Target, error) {
	m, err := c.findMTD(p.Name)
	if err != nil {
		return nil, err
	}
	where := fmt.Sprintf("MTD partition %q (%s)", p.Name, m.Device())
	if p.Size != nil && *p.Size != m.Size {
		return nil, fmt.Errorf("image: %s has %d bytes, board %s says %d: refused, the kernel's partitions are not the board's (wrong board, or another device tree)", where, m.Size, c.Board.Name, *p.Size)
	}
	if ubi, err := c.ubiOnMTD(m.Index); err != nil {
		return nil, err
	} else if ubi != "" {
		return nil, fmt.Errorf("image: %s: UBI device %s is attached to it: refused (detach it first; the image goes into a volume, not the partition)", where, ubi)
	}
	if on, err := c.mounted("/dev/mtdblock"+strconv.Itoa(m.Index), "mtd"+strconv.Itoa(m.Index), "mtd:"+m.Name, m.Device()); err != nil {
		return nil, err
	} else if on != "" {
		return nil, fmt.Errorf("image: %s is mounted (%s): refused, unmount it first", where, on)
	}
	d, err := dev.openMTD(c.path(m.Device()), false)
	if err != nil {
		return nil, fmt.Errorf("image: %s: %w", where, err)
	}
	defer d.Close()
	plan, err := c.planMTD(d, m, f, where, size)
	if err != nil {
		return nil, err
	}
	return &Target{Method: boards.ImageMTD, Partition: p.Name, Device: m.Device(),
		Usable: m.Size - uint64(len(plan.bad))*uint64(m.EraseSize), mtd: plan}, nil
}

// planMTD reads the device's geometry and bad blocks, and picks the good
// blocks the image goes into.
func (c Config) planMTD(d mtdDevice, m MTD, f boards.Flash, where string, size uint64) (*mtdPlan, error) {
	info, err := d.info()
	if err != nil {
		return nil, fmt.Errorf("image: %s: MEMGETINFO: %w", where, err)
	}
	switch {
	case f.Kind == boards.FlashSPINAND && !info.nand(), f.Kind == boards.FlashNOR && info.nand():
		return nil, fmt.Errorf("image: %s is MTD type %d, but board %s's flash %s is %s: refused", where, info.Type, c.Board.Name, f.Name, f.Kind)
	case info.Flags&mtdWritable == 0:
		return nil, fmt.Errorf("image: %s is read-only (its device tree node says so): refused", where)
	case uint64(info.Size) != m.Size || info.EraseSize != m.EraseSize || info.EraseSize == 0 || info.WriteSize == 0 || m.Size%uint64(info.EraseSize) != 0:
		return nil, fmt.Errorf("image: %s: MEMGETINFO says %d bytes in blocks of %d, written in %d, /proc/mtd %d in %d: refused", where, info.Size, info.EraseSize, info.WriteSize, m.Size, m.EraseSize)
	}
	plan := &mtdPlan{mtd: m, info: info}
	es := uint64(info.EraseSize)
	for off := uint64(0); off < m.Size; off += es {
		bad, err := d.isBad(off)
		if err != nil {
			return nil, fmt.Errorf("image: %s: MEMGETBADBLOCK at %#x: %w", where, off, err)
		}
		switch {
		case bad:
			plan.bad = append(plan.bad, off)
		case uint64(len(plan.blocks))*es < size:
			plan.blocks = append(plan.blocks, off)
		}
	}
	if usable := m.Size - uint64(len(plan.bad))*es; usable < size {
		return nil, fmt.Errorf("image: the image (%d bytes) does not fit %s: %d bytes usable (%d of %d, less %d bad blocks of %d): refused, build a smaller image",
			size, where, usable, m.Size, m.Size, len(plan.bad), es)
	}
	return plan, nil
}

// ubiOnMTD is the UBI device attached to MTD device index, if any.
func (c Config) ubiOnMTD(index int) (string, error) {
	nums, _ := filepath.Glob(c.path("sys/class/ubi/ubi*/mtd_num"))
	for _, f := range nums {
		b, err := os.ReadFile(f)
		if err != nil {
			return "", fmt.Errorf("image: %w", err)
		}
		if strings.TrimSpace(string(b)) == strconv.Itoa(index) {
			return filepath.Base(filepath.Dir(f)), nil
		}
	}
	return "", nil
}

// writeMTD erases the plan's blocks, writes the image into them and reads
// it back.
func (c Config) writeMTD(ctx context.Context, t *Target, img Image, dev devices) (*Result, error) {
	plan := t.mtd
	where := fmt.Sprintf("MTD partition %q (%s)", t.Partition, t.Device)
	d, err := dev.openMTD(c.path(t.Device), true)
	if err != nil {
		return nil, fmt.Errorf("image: %s: %w", where, err)
	}
	defer d.Close()
	res := &Result{Target: *t, Bytes: img.Size, BadBlocks: plan.bad}
	es := plan.info.EraseSize
	total := uint64(len(plan.blocks)) * uint64(es)
	for i, off := range plan.blocks {
		if err := ctxErr(ctx, where, uint64(i)*uint64(es), total); err != nil {
			return nil, err
		}
		if err := d.erase(off, es); err != nil {
			return nil, fmt.Errorf("image: %s: erase the block at %#x: %w (the slot holds a partial image now)", where, off, err)
		}
		res.Erased += uint64(es)
		c.progress(PhaseErase, res.Erased, total)
	}
	src := newSource(img)
	buf := make([]byte, es)
	size := uint64(img.Size)
	done := uint64(0)
	for _, off := range plan.blocks {
		if err := ctxErr(ctx, where, done, size); err != nil {
			return nil, err
		}
		n := min(uint64(es), size-done)
		if err := src.fill(buf[:n]); err != nil {
			return nil, err
		}
		// NAND is written in whole pages: pad the last with the erased
		// state, which leaves the flash as it was.
		end := (n + uint64(plan.info.WriteSize) - 1) / uint64(plan.info.WriteSize) * uint64(plan.info.WriteSize)
		for i := n; i < end; i++ {
			buf[i] = 0xff
		}
		if _, err := d.WriteAt(buf[:end], int64(off)); err != nil {
			return nil, fmt.Errorf("image: %s: write the block at %#x: %w (the slot holds a partial image now)", where, off, err)
		}
		done += n
		c.progress(PhaseWrite, done, size)
	}
	sum, err := src.finish(img.SHA256)
	if err != nil {
		return nil, err
	}
	res.SHA256 = sum
	got, err := c.readMTD(ctx, d, plan, where, size)
	if err != nil {
		return nil, err
	}
	if err := verify(where, got, sum); err != nil {
		return nil, err
	}
	return res, nil
}

// readMTD hashes the image's bytes in the plan's blocks.
func (c Config) readMTD(ctx context.Context, d mtdDevice, plan *mtdPlan, where string, size uint64) ([sha256.Size]byte, error) {
	h := sha256.New()
	buf := make([]byte, plan.info.EraseSize)
	done := uint64(0)
	for _, off := range plan.blocks {
		if err := ctxErr(ctx, where, done, size); err != nil {
			return [sha256.Size]byte{}, err
		}
		n := min(uint64(len(buf)), size-done)
		if _, err := d.ReadAt(buf[:n], int64(off)); err != nil {
			return [sha256.Size]byte{}, fmt.Errorf("image: %s: read back the block at %#x: %w", where, off, err)
		}
		h.Write(buf[:n])
		done += n
		c.progress(PhaseVerify, done, size)
	}
	var sum [sha256.Size]byte
	copy(sum[:], h.Sum(nil))
	return sum, nil
}
