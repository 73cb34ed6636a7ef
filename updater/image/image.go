// Package image writes a system image into a board's image slot, as the
// board's imageWrite says (package boards): erase and write an MTD
// partition (NOR or NAND), write a spare UBI volume and swap it with the
// live one, or write a block device; and, for pivot-to-maintenance, checks
// that RAM holds what the write needs (CheckMemory).
//
// Invariants:
//
//   - Only a partition the board lists with use "image", of the kind its
//     imageWrite writes, is ever opened for writing. A partition the board
//     marks never written, one it does not list, or one whose size on the
//     running kernel is not the board's is refused before anything is
//     opened for writing: Write makes every check Check makes (reading
//     /proc, /sys and the device read-only) and opens the device
//     read-write only after the last.
//   - What was written is read back from the device and its SHA-256
//     compared with the image's (and with Image.SHA256, if given); a write
//     succeeds only after that compare.
//   - Commit point, by kind. MTD: none here; the slot holds a partial
//     image from the first erase until the compare, and what makes the
//     new image the one that boots is the caller's boot slot switch or the
//     bootloader's fallback to its other slot or recovery. UBI: the rename
//     that swaps the spare's and the live volume's names in one
//     UBI_IOCRNVOL, made only after the spare's compare; the live volume
//     is never written nor removed, so a cut before the rename leaves the
//     old image live (the spare is written again next time) and a cut
//     after it the new one. Block: none here, as for MTD: the caller's.
//   - NAND bad blocks (MEMGETBADBLOCK) are skipped alike in the size
//     check, the write and the read back; a block that fails during the
//     write fails the write (it is not marked bad here).
//   - Cancelling the context stops between blocks, leaving the slot (MTD,
//     block) or the spare (UBI) partial. A caller whose write must outlive
//     a cut connection passes a context the connection does not cancel.
//   - The MTD and UBI ioctl numbers are golang.org/x/sys/unix's, generated
//     from each architecture's headers (MIPS lays out _IOC differently);
//     UBI's request structs are laid out here as ubi-user.h packs them.
package image

import (
	"context"
	"crypto/sha256"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/roostrouter/roost/boards"
)

// Config says where an image goes.
type Config struct {
	Board boards.Board
	// Partition is the board's name of the image partition (an MTD
	// partition, a UBI volume, a disk partition); "" if the board has one.
	Partition string
	// Root is where proc, sys and dev are: "/" on a router.
	Root string
	// Progress, if set, is called as the work goes on, from Write's
	// goroutine.
	Progress func(Progress)
}

// Image is what is written: Size bytes from R, which is read no further.
type Image struct {
	R    io.Reader
	Size int64
	// SHA256, if set, is the image's hash as its sender gave it: a
	// different one fails the write (for UBI, before the swap).
	SHA256 []byte
}

// Phases of a write (Progress.Phase).
const (
	PhaseErase  = "erase"  // MTD: erasing the blocks the image takes
	PhaseWrite  = "write"  // writing the image
	PhaseVerify = "verify" // reading it back and hashing it
	PhaseSwap   = "swap"   // UBI: renaming the spare and the live volume
)

// Progress is how far a phase is: Done of Total bytes.
type Progress struct {
	Phase       string
	Done, Total uint64
}

// Target is where an image goes, as Check found it.
type Target struct {
	Method    string // boards.ImageMTD, ImageUBI or ImageBlock
	Partition string // the board's name for it
	// Device is what is opened for writing: /dev/mtdN, the spare volume's
	// /dev/ubiN_M (empty if Write must create it), a disk partition.
	Device string
	// Usable is how many bytes the image may have: the partition less its
	// bad blocks (MTD), the room the spare has or can get (UBI), the
	// device's size (block).
	Usable uint64

	mtd *mtdPlan
	ubi *ubiPlan
}

// Result is what Write did.
type Result struct {
	Target
	Bytes     int64
	SHA256    [sha256.Size]byte
	Erased    uint64   // MTD: bytes erased
	BadBlocks []uint64 // MTD: offsets of the bad blocks skipped
	// Spare is, for UBI, the name the previous image's volume has now.
	Spare string
}

// Check finds the image partition and checks, without writing anything,
// that an image of size bytes may be written there: Write's refusals,
// early (pivot-to-maintenance checks before it stops anything).
func Check(c Config, size int64) (*Target, error) {
	return c.check(size, realDevices{})
}

// Write writes the image, reads it back and compares its hash. See the
// package's invariants for what a failure leaves behind.
func Write(ctx context.Context, c Config, img Image) (*Result, error) {
	return c.write(ctx, img, realDevices{})
}

// devices opens what the writers work on; tests substitute it.
type devices interface {
	openMTD(path string, write bool) (mtdDevice, error)
	openBlock(path string, write bool) (blockDevice, error)
	openUBI(path string) (ubiDevice, error)
}

func (c Config) check(size int64, dev devices) (*Target, error) {
	if size <= 0 {
		return nil, fmt.Errorf("image: size %d: want the image's size in bytes", size)
	}
	f, p, err := c.partition()
	if err != nil {
		return nil, err
	}
	switch c.Board.ImageWrite {
	case boards.ImageMTD:
		return c.checkMTD(f, p, uint64(size), dev)
	case boards.ImageUBI:
		return c.checkUBI(f, p, uint64(size))
	default:
		return c.checkBlock(f, p, uint64(size), dev)
	}
}

func (c Config) write(ctx context.Context, img Image, dev devices) (*Result, error) {
	if img.SHA256 != nil && len(img.SHA256) != sha256.Size {
		return nil, fmt.Errorf("image: SHA256 of %d bytes: want %d, or none", len(img.SHA256), sha256.Size)
	}
	t, err := c.check(img.Size, dev)
	if err != nil {
		return nil, err
	}
	switch t.Method {
	case boards.ImageMTD:
		return c.writeMTD(ctx, t, img, dev)
	case boards.ImageUBI:
		return c.writeUBI(ctx, t, img, dev)
	default:
		return c.writeBlock(ctx, t, img, dev)
	}
}

// partition finds the partition c names among the board's image
// partitions for its imageWrite, and refuses any other.
func (c Config) partition() (boards.Flash, boards.Partition, error) {
	b := c.Board
	method := b.ImageWrite
	if !slices.Contains([]string{boards.ImageMTD, boards.ImageUBI, boards.ImageBlock}, method) {
		return boards.Flash{}, boards.Partition{}, fmt.Errorf("image: board %s writes no image (imageWrite %q): its upgrades go into the store", b.Name, method)
	}
	var targets []string
	for _, f := range b.Flash {
		for _, p := range f.Partitions {
			if p.Use == boards.UseImage && !p.Never && writes(method, f, p) {
				targets = append(targets, p.Name)
			}
		}
	}
	name := c.Partition
	if name == "" {
		if len(targets) != 1 {
			return boards.Flash{}, boards.Partition{}, fmt.Errorf("image: board %s has %d image partitions that %s writes (%s): name one", b.Name, len(targets), method, list(targets))
		}
		name = targets[0]
	}
	var found *boards.Partition
	var flash boards.Flash
	for _, f := range b.Flash {
		for _, p := range f.Partitions {
			if p.Name != name {
				continue
			}
			// A name on two flashes (a volume and an MTD partition) is
			// refused if either is never written: the safe reading.
			if p.Never {
				return boards.Flash{}, boards.Partition{}, fmt.Errorf("image: partition %q of board %s (%s, on %s) is never written: refused; the board's image partitions are %s", name, b.Name, p.Use, f.Name, list(targets))
			}
			if p.Use == boards.UseImage && writes(method, f, p) {
				found, flash = &p, f
			}
		}
	}
	if found == nil {
		return boards.Flash{}, boards.Partition{}, fmt.Errorf("image: board %s has no image partition %q that %s writes: refused; its image partitions are %s", b.Name, name, method, list(targets))
	}
	return flash, *found, nil
}

// writes reports whether method writes partition p of flash f, as
// boards' validation pairs them.
func writes(method string, f boards.Flash, p boards.Partition) bool {
	switch method {
	case boards.ImageMTD:
		return f.MTD() && !p.Volume
	case boards.ImageUBI:
		return f.MTD() && p.Volume
	case boards.ImageBlock:
		return !f.MTD() && !p.Volume
	}
	return false
}

// list says names, quoted (a name may have spaces).
func list(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = strconv.Quote(n)
	}
	return strings.Join(q, ", ")
}

func (c Config) path(p string) string {
	root := c.Root
	if root == "" {
		root = "/"
	}
	return filepath.Join(root, p)
}

func (c Config) progress(phase string, done, total uint64) {
	if c.Progress != nil {
		c.Progress(Progress{Phase: phase, Done: done, Total: total})
	}
}

// source reads exactly the image's bytes, hashing them, and says so if
// the reader has fewer.
type source struct {
	r    io.Reader
	size int64
	read int64
	h    hash.Hash
}

func newSource(img Image) *source {
	return &source{r: img.R, size: img.Size, h: sha256.New()}
}

// fill reads len(p) bytes of the image.
func (s *source) fill(p []byte) error {
	n, err := io.ReadFull(s.r, p)
	s.h.Write(p[:n])
	s.read += int64(n)
	if err != nil {
		return fmt.Errorf("image: read the image: %w after %d of %d bytes", err, s.read, s.size)
	}
	return nil
}

// finish returns the hash of what the reader gave, and checks it against
// the sender's. It reads nothing past the image: a stream that goes on
// (a connection that waits for the result) is not waited for.
func (s *source) finish(want []byte) ([sha256.Size]byte, error) {
	var sum [sha256.Size]byte
	copy(sum[:], s.h.Sum(nil))
	if want != nil && string(want) != string(sum[:]) {
		return sum, fmt.Errorf("image: the image's SHA-256 is %x, its sender said %x: refused", sum, want)
	}
	return sum, nil
}

// verify compares the hash of what was read back with the image's.
func verify(device string, got, want [sha256.Size]byte) error {
	if got != want {
		return fmt.Errorf("image: %s reads back SHA-256 %x, the image is %x: the write did not take", device, got, want)
	}
	return nil
}

func ctxErr(ctx context.Context, device string, done, total uint64) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("image: %s: stopped after %d of %d bytes: %w", device, done, total, err)
	}
	return nil
}

// mounted reports whether one of sources is mounted (the first field of
// a line of /proc/self/mounts).
func (c Config) mounted(sources ...string) (string, error) {
	b, err := os.ReadFile(c.path("proc/self/mounts"))
	if err != nil {
		return "", fmt.Errorf("image: read the mounts: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 1 && slices.Contains(sources, f[0]) {
			return f[0] + " on " + f[1], nil
		}
	}
	return "", nil
}
