package image

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/roostrouter/roost/boards"
)

// blockChunk is how much a block write or read back moves at a time.
const blockChunk = 1 << 20

// checkBlock checks disk partition p of flash f for an image of size bytes.
func (c Config) checkBlock(f boards.Flash, p boards.Partition, size uint64, dev devices) (*Target, error) {
	name := p.Name
	device := "/dev/" + name
	where := fmt.Sprintf("partition %q (%s)", name, device)
	if name == "" || filepath.Base(name) != name || name == "." || name == ".." {
		return nil, fmt.Errorf("image: board %s's partition %q is not a device name", c.Board.Name, name)
	}
	if name == f.Name && len(f.Partitions) > 1 {
		return nil, fmt.Errorf("image: %s is the whole disk, which holds board %s's other partitions: refused", where, c.Board.Name)
	}
	if on, err := c.mounted(device); err != nil {
		return nil, err
	} else if on != "" {
		return nil, fmt.Errorf("image: %s is mounted (%s): refused, unmount it first", where, on)
	}
	sys := c.path("sys/class/block/" + name)
	if ro, err := os.ReadFile(filepath.Join(sys, "ro")); err == nil && strings.TrimSpace(string(ro)) != "0" {
		return nil, fmt.Errorf("image: %s is read-only (%s/ro): refused", where, sys)
	}
	if holders, _ := os.ReadDir(filepath.Join(sys, "holders")); len(holders) > 0 {
		return nil, fmt.Errorf("image: %s is in use by %s (device mapper, RAID): refused", where, holders[0].Name())
	}
	d, err := dev.openBlock(c.path(device), false)
	if err != nil {
		return nil, fmt.Errorf("image: %s: %w (mounted or in use?)", where, err)
	}
	defer d.Close()
	n, err := d.size()
	if err != nil {
		return nil, fmt.Errorf("image: %s: its size: %w", where, err)
	}
	if p.Size != nil && *p.Size != uint64(n) {
		return nil, fmt.Errorf("image: %s has %d bytes, board %s says %d: refused, the disk's partitions are not the board's", where, n, c.Board.Name, *p.Size)
	}
	if uint64(n) < size {
		return nil, fmt.Errorf("image: the image (%d bytes) does not fit %s (%d bytes): refused, build a smaller image", size, where, n)
	}
	return &Target{Method: boards.ImageBlock, Partition: name, Device: device, Usable: uint64(n)}, nil
}

// writeBlock writes the image to the device, syncs it, and reads it back
// past the page cache.
func (c Config) writeBlock(ctx context.Context, t *Target, img Image, dev devices) (*Result, error) {
	where := fmt.Sprintf("partition %q (%s)", t.Partition, t.Device)
	d, err := dev.openBlock(c.path(t.Device), true)
	if err != nil {
		return nil, fmt.Errorf("image: %s: %w", where, err)
	}
	defer d.Close()
	src := newSource(img)
	size := uint64(img.Size)
	buf := make([]byte, blockChunk)
	for done := uint64(0); done < size; {
		if err := ctxErr(ctx, where, done, size); err != nil {
			return nil, err
		}
		n := min(uint64(len(buf)), size-done)
		if err := src.fill(buf[:n]); err != nil {
			return nil, err
		}
		if _, err := d.WriteAt(buf[:n], int64(done)); err != nil {
			return nil, fmt.Errorf("image: %s: write at %d: %w", where, done, err)
		}
		done += n
		c.progress(PhaseWrite, done, size)
	}
	if err := d.Sync(); err != nil {
		return nil, fmt.Errorf("image: %s: sync: %w", where, err)
	}
	sum, err := src.finish(img.SHA256)
	if err != nil {
		return nil, err
	}
	if err := d.dropCache(); err != nil {
		return nil, fmt.Errorf("image: %s: drop its cache before the read back: %w", where, err)
	}
	h := sha256.New()
	for done := uint64(0); done < size; {
		if err := ctxErr(ctx, where, done, size); err != nil {
			return nil, err
		}
		n := min(uint64(len(buf)), size-done)
		if _, err := d.ReadAt(buf[:n], int64(done)); err != nil {
			return nil, fmt.Errorf("image: %s: read back at %d: %w", where, done, err)
		}
		h.Write(buf[:n])
		done += n
		c.progress(PhaseVerify, done, size)
	}
	var got [sha256.Size]byte
	copy(got[:], h.Sum(nil))
	if err := verify(where, got, sum); err != nil {
		return nil, err
	}
	return &Result{Target: *t, Bytes: img.Size, SHA256: sum}, nil
}
