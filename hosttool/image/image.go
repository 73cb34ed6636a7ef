// Package image builds, on the laptop, what a board boots from: the root
// folder a router expects (its store holding a system's closure, imported
// by the router's own store code, the system as generation 1, an empty
// state folder), packed as the board's flash takes it: a squashfs for NOR
// boards (imageWrite mtd), that squashfs in a UBI image for NAND boards
// (ubi), an ext4 image for disk boards (block, or a store board with a
// disk). Where the board's U-Boot boots from that partition (boards.json
// boot), the kernel goes in front of the root as it expects: a legacy
// uImage followed by the squashfs on NOR (OpenWrt's sysupgrade layout), a
// FIT image of kernel, device tree, initrd and squashfs for the NAND
// boards' fit volume. It runs Debian's mksquashfs, ubinize, mke2fs,
// lzma_alone, mkimage, dumpimage, fdtput, fdtget and dtc.
//
// Invariants:
//
//   - An image is written to a temporary file beside its destination and
//     renamed there only once complete, synced and, where the board fixes
//     the partition's size, checked to fit: a refused or failed build
//     leaves no file at the destination (nor changes one there).
//   - A squashfs holds every file as root's (-all-root): the router's
//     store code runs as root and the laptop's user is nobody there.
//   - A boot image is read back with u-boot-tools before it is kept: its
//     type, compression, addresses and sizes as the board says, and every
//     part, the root included, byte for byte what went in.
package image

import (
	"fmt"

	"github.com/roostrouter/roost/boards"
)

// Kinds of image.
const (
	KindSquashfs = "squashfs" // NOR: written into an MTD partition
	KindUBI      = "ubi"      // NAND: the squashfs as a UBI volume, in a UBI image
	KindExt4     = "ext4"     // a disk
	KindUImage   = "uimage"   // NOR with U-Boot: a uImage of the kernel, then the squashfs
	KindFIT      = "fit"      // NAND with U-Boot: a FIT image of kernel, device tree, initrd and squashfs, for a UBI volume
)

// Plan is what an image for a board is and where it goes.
type Plan struct {
	Board string
	Kind  string
	// Partition is where the image goes: the MTD partition (squashfs),
	// the UBI volume (ubi) or the disk or partition (ext4).
	Partition string
	// PartitionBytes is the most the image may take: the MTD partition's
	// size, the UBI partition's (which holds the volume), 0 if not fixed
	// (a disk, read from the disk itself).
	PartitionBytes uint64
	// EraseBlockBytes and PageBytes are the NAND's, for ubinize.
	EraseBlockBytes, PageBytes int
	// Boot is what U-Boot boots in front of the root (uimage, fit): the
	// board's boot, its Format empty for the root alone.
	Boot boards.Boot
	// Arch is the architecture as mkimage names it.
	Arch string
}

// PlanFor says what image board b boots from, or why it has none.
func PlanFor(b boards.Board) (Plan, error) {
	p := Plan{Board: b.Name}
	if b.Boot != nil {
		p.Boot, p.Arch = *b.Boot, b.UBootArch()
	}
	switch {
	case b.ImageWrite == boards.ImageMTD:
		p.Kind = KindSquashfs
		if p.Boot.Format == boards.BootUImage {
			p.Kind = KindUImage
		}
		for _, f := range b.Flash {
			for _, part := range f.Partitions {
				if f.MTD() && !part.Volume && part.Use == boards.UseImage && part.Size != nil {
					p.Partition, p.PartitionBytes = part.Name, *part.Size
					return p, nil
				}
			}
		}
	case b.ImageWrite == boards.ImageUBI:
		p.Kind = KindUBI
		if p.Boot.Format == boards.BootFIT {
			p.Kind = KindFIT
		}
		for _, f := range b.Flash {
			var ubi, vol *boards.Partition
			for i, part := range f.Partitions {
				switch {
				case part.Use == boards.UseUBI && !part.Volume:
					ubi = &f.Partitions[i]
				case part.Use == boards.UseImage && part.Volume && vol == nil:
					vol = &f.Partitions[i]
				}
			}
			if ubi != nil && vol != nil && ubi.Size != nil {
				p.Partition, p.PartitionBytes = vol.Name, *ubi.Size
				p.EraseBlockBytes, p.PageBytes = f.EraseBlockBytes, f.PageBytes
				return p, nil
			}
		}
	case b.ImageWrite == boards.ImageBlock || b.Upgrade == boards.UpgradeStore && b.Storage != nil:
		p.Kind = KindExt4
		for _, f := range b.Flash {
			if f.MTD() {
				continue
			}
			p.Partition = f.Name
			for _, part := range f.Partitions {
				if part.Use == boards.UseStore || part.Use == boards.UseImage {
					p.Partition = part.Name
					if part.Size != nil {
						p.PartitionBytes = *part.Size
					}
				}
			}
			return p, nil
		}
	}
	return Plan{}, fmt.Errorf("board %s has no image to build: it writes none (imageWrite %q) and has no disk for its store", b.Name, b.ImageWrite)
}

// Fits refuses an image of size bytes that is larger than the partition
// it goes to, giving both sizes.
func (p Plan) Fits(size uint64) error {
	if p.PartitionBytes == 0 || size <= p.PartitionBytes {
		return nil
	}
	what := fmt.Sprintf("partition %s", p.Partition)
	if p.Kind == KindUBI || p.Kind == KindFIT {
		what = fmt.Sprintf("the UBI partition holding volume %s", p.Partition)
	}
	return fmt.Errorf("the %s image is %d bytes (%.1f MiB), more than %s of board %s holds: %d bytes (%.1f MiB); make the system smaller",
		p.Kind, size, mib(size), what, p.Board, p.PartitionBytes, mib(p.PartitionBytes))
}

func mib(n uint64) float64 { return float64(n) / (1 << 20) }
