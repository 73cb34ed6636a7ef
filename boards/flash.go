package boards

import (
	"fmt"
	"slices"
	"sort"
	"strings"
)

// Upgrade methods (Board.Upgrade).
const (
	UpgradeStore = "store" // into the writable store, in place
	UpgradeImage = "image" // the read-only image rewritten from RAM
)

// Ways an image is written (Board.ImageWrite).
const (
	ImageMTD   = "mtd"   // erase and write an MTD partition, skipping bad blocks
	ImageUBI   = "ubi"   // write a UBI volume
	ImageBlock = "block" // write a block device
)

// Kinds of flash (Flash.Kind).
const (
	FlashNOR     = "nor"      // SPI NOR: MTD, no bad blocks
	FlashSPINAND = "spi-nand" // SPI NAND: MTD with bad blocks, UBI on top
	FlashEMMC    = "emmc"     // a block device with a partition table
	FlashVirtio  = "virtio"   // a VM's disk
	// FlashBlock2MTD is a VM's disk made an MTD device by block2mtd, as a
	// stand-in for NOR: its one partition is the whole device, which the
	// kernel names by the label roostd init gives block2mtd.
	FlashBlock2MTD = "block2mtd"
)

// Uses of a partition (Partition.Use).
const (
	UseBootloader    = "bootloader"     // preloader, bootloader, firmware image packages
	UseBootloaderEnv = "bootloader-env" // the bootloader's environment
	UseCalibration   = "calibration"    // radio calibration and MAC addresses, one of a kind per unit
	UseRecovery      = "recovery"       // a rescue system the bootloader can start
	UseBackup        = "backup"         // a copy of what an installer replaced (the vendor's boot chain)
	UseUBI           = "ubi"            // the MTD partition UBI runs on; its volumes are the flash's other partitions
	UseImage         = "image"          // where the system's image is written
	UseData          = "data"           // state that outlives images
	UseStore         = "store"          // the file system holding /nix and /persist
)

// protected are the uses roost never writes: what a unit cannot get back
// (calibration) or needs to come back at all (bootloader, recovery).
var protected = []string{UseBootloader, UseBootloaderEnv, UseCalibration, UseRecovery, UseBackup}

// Flash is one of a board's storage devices and what is on it.
type Flash struct {
	// Name is the block device (mmcblk0, vda) of a disk or of a block2mtd
	// flash, or a label (nor, nand) of an MTD flash, whose partitions the
	// kernel names itself.
	Name string `json:"name"`
	Kind string `json:"kind"` // nor, spi-nand, emmc, virtio
	// SizeMB is its size in MiB; 0 for a disk whose size is read from it.
	SizeMB int `json:"sizeMB"`
	// EraseBlockBytes and PageBytes are a NAND flash's erase block and
	// page (its smallest write), which a UBI image is made for (ubinize
	// -p, -m); required on spi-nand, absent elsewhere. A block2mtd flash
	// has EraseBlockBytes only: the erase size block2mtd is given.
	EraseBlockBytes int         `json:"eraseBlockBytes,omitempty"`
	PageBytes       int         `json:"pageBytes,omitempty"`
	Partitions      []Partition `json:"partitions"`
}

// Partition is a part of a flash: an MTD partition (by the name the kernel
// gives it, from the device tree), a UBI volume inside the flash's UBI
// partition, or a disk's partition (by its device name).
type Partition struct {
	Name string `json:"name"`
	Use  string `json:"use"` // bootloader, calibration, image, … (the Use constants)
	// Offset is where it starts, in bytes from the flash's start; nil for
	// a volume, and for a partition a partition table places.
	Offset *uint64 `json:"offset,omitempty"`
	// Size is its size in bytes; nil if not fixed (a volume that grows,
	// a partition sized at installation).
	Size   *uint64 `json:"size,omitempty"`
	Volume bool    `json:"volume,omitempty"` // a UBI volume
	// Never: roost never opens it for writing.
	Never bool `json:"never,omitempty"`
}

// MTD reports whether the flash is raw flash, whose partitions the kernel
// takes from the device tree, or a block2mtd device.
func (f Flash) MTD() bool {
	return f.Kind == FlashNOR || f.Kind == FlashSPINAND || f.Kind == FlashBlock2MTD
}

// Block2MTD is the block2mtd module parameter that makes f an MTD device
// (/dev/vda,65536,image-a), "" if f is not a block2mtd flash.
func (f Flash) Block2MTD() string {
	if f.Kind != FlashBlock2MTD || len(f.Partitions) != 1 {
		return ""
	}
	return fmt.Sprintf("/dev/%s,%d,%s", f.Name, f.EraseBlockBytes, f.Partitions[0].Name)
}

// Never lists the partitions roost never writes, by name.
func (b Board) Never() []string {
	var out []string
	for _, f := range b.Flash {
		for _, p := range f.Partitions {
			if p.Never {
				out = append(out, p.Name)
			}
		}
	}
	return out
}

// validateFlash checks each flash and its partitions: kinds, names, that
// they fit and do not overlap, that protected ones are never written, and
// that the storage roostd init mounts is on one of them.
func (b Board) validateFlash(bad func(format string, args ...any)) {
	mtdNames := map[string]string{}
	flashNames := map[string]bool{}
	for i, f := range b.Flash {
		where := fmt.Sprintf("flash[%d] (%s)", i, f.Name)
		if f.Name == "" || strings.ContainsAny(f.Name, " /\t\n") || flashNames[f.Name] {
			bad("%s: want a name of its own, like nor or mmcblk0", where)
		}
		flashNames[f.Name] = true
		f.validate(where, bad)
		for _, p := range f.Partitions {
			if !f.MTD() || p.Volume {
				continue
			}
			if other, dup := mtdNames[p.Name]; dup {
				bad("%s: MTD partition %q is also on flash %s: the kernel would have two of that name", where, p.Name, other)
			}
			mtdNames[p.Name] = f.Name
		}
	}
	if st := b.Storage; st != nil && !b.onDisk(strings.TrimPrefix(st.Device, "/dev/")) {
		bad("storage.device %q: not a disk of the board's flash, nor one of its partitions", st.Device)
	}
}

// validate checks one flash; where names it in errors.
func (f Flash) validate(where string, bad func(format string, args ...any)) {
	switch {
	case f.MTD() && f.SizeMB <= 0:
		bad("%s: sizeMB %d: an MTD flash's partitions are fixed against its size: want it in MiB", where, f.SizeMB)
	case !f.MTD() && f.Kind != FlashEMMC && f.Kind != FlashVirtio:
		bad("%s: kind %q: want %s, %s, %s, %s or %s", where, f.Kind, FlashNOR, FlashSPINAND, FlashEMMC, FlashVirtio, FlashBlock2MTD)
	case f.SizeMB < 0:
		bad("%s: sizeMB %d: want its size in MiB, or 0 if read from the disk", where, f.SizeMB)
	}
	nand := f.Kind == FlashSPINAND
	pow2 := func(n int) bool { return n > 0 && n&(n-1) == 0 }
	switch {
	case nand && (!pow2(f.EraseBlockBytes) || !pow2(f.PageBytes) || f.PageBytes >= f.EraseBlockBytes):
		bad("%s: eraseBlockBytes %d, pageBytes %d: a NAND flash needs both, powers of two, the page smaller", where, f.EraseBlockBytes, f.PageBytes)
	case f.Kind == FlashBlock2MTD:
		f.validateBlock2MTD(where, bad)
	case !nand && (f.EraseBlockBytes != 0 || f.PageBytes != 0):
		bad("%s: eraseBlockBytes and pageBytes are for spi-nand flash only", where)
	}
	seen := map[string]bool{}
	var ubi *Partition
	for j, p := range f.Partitions {
		pw := fmt.Sprintf("%s.partitions[%d] (%s)", where, j, p.Name)
		key := fmt.Sprint(p.Volume, p.Name)
		if p.Name == "" || strings.ContainsAny(p.Name, "/\t\n") || seen[key] {
			bad("%s: want a name of its own (the kernel's)", pw)
		}
		seen[key] = true
		p.validate(pw, f, bad)
		if p.Use == UseUBI && !p.Volume {
			if ubi != nil {
				bad("%s: a second UBI partition: volumes would not say which they are in", pw)
			}
			ubi = &f.Partitions[j]
		}
	}
	f.validateLayout(where, ubi, bad)
}

// validateBlock2MTD checks a block2mtd flash: an erase size block2mtd
// takes, that divides the device, and one partition, the whole device,
// which block2mtd's label names.
func (f Flash) validateBlock2MTD(where string, bad func(format string, args ...any)) {
	e := f.EraseBlockBytes
	if e < 4096 || e&(e-1) != 0 || f.PageBytes != 0 {
		bad("%s: eraseBlockBytes %d, pageBytes %d: a block2mtd flash needs its erase size, a power of two of 4096 or more, and no page size", where, e, f.PageBytes)
	} else if f.SizeMB > 0 && (f.SizeMB<<20)%e != 0 {
		bad("%s: eraseBlockBytes %d does not divide the flash's %d MiB", where, e, f.SizeMB)
	}
	whole := uint64(f.SizeMB) << 20
	if len(f.Partitions) != 1 || f.Partitions[0].Volume || f.Partitions[0].Offset == nil || *f.Partitions[0].Offset != 0 ||
		f.Partitions[0].Size == nil || *f.Partitions[0].Size != whole {
		bad("%s: a block2mtd flash has one partition, the whole device (offset 0, size %d), named as block2mtd labels it", where, whole)
	}
	if f.Name == "" || strings.ContainsAny(f.Name, ", ") || len(f.Partitions) == 1 && strings.ContainsAny(f.Partitions[0].Name, ", ") {
		bad("%s: a block2mtd flash's disk and label go into block2mtd=/dev/DISK,ERASESIZE,LABEL: no commas or spaces in them", where)
	}
}

// validate checks one partition of f; where names it in errors.
func (p Partition) validate(where string, f Flash, bad func(format string, args ...any)) {
	uses := []string{UseBootloader, UseBootloaderEnv, UseCalibration, UseRecovery, UseBackup, UseUBI, UseImage, UseData, UseStore}
	switch {
	case !slices.Contains(uses, p.Use):
		bad("%s: use %q: want one of %s", where, p.Use, strings.Join(uses, ", "))
	case slices.Contains(protected, p.Use) && !p.Never:
		bad("%s: a %s partition must be never written: set never", where, p.Use)
	case p.Never && (p.Use == UseImage || p.Use == UseData || p.Use == UseStore):
		bad("%s: never written, but it holds the %s roost writes", where, p.Use)
	}
	switch {
	case p.Volume && p.Offset != nil:
		bad("%s: a UBI volume has no offset: UBI places it", where)
	case p.Volume && (!f.MTD() || p.Use == UseUBI):
		bad("%s: a UBI volume must be inside the UBI partition of an MTD flash", where)
	case !p.Volume && f.MTD() && (p.Offset == nil || p.Size == nil):
		bad("%s: an MTD partition needs its offset and size, from the device tree", where)
	case p.Size != nil && *p.Size == 0:
		bad("%s: size 0", where)
	}
}

// validateLayout checks that f's partitions fit it without overlapping,
// and its fixed-size volumes fit their UBI partition.
func (f Flash) validateLayout(where string, ubi *Partition, bad func(format string, args ...any)) {
	var placed []Partition
	var volumes uint64
	for _, p := range f.Partitions {
		switch {
		case p.Volume && p.Size != nil:
			volumes += *p.Size
		case !p.Volume && p.Offset != nil && p.Size != nil:
			placed = append(placed, p)
		}
	}
	sort.Slice(placed, func(i, j int) bool { return *placed[i].Offset < *placed[j].Offset })
	size := uint64(f.SizeMB) << 20
	for i, p := range placed {
		end := *p.Offset + *p.Size
		if f.SizeMB > 0 && end > size {
			bad("%s: partition %s ends at %#x, past the flash's end (%#x)", where, p.Name, end, size)
		}
		if i+1 < len(placed) && end > *placed[i+1].Offset {
			bad("%s: partitions %s and %s overlap (%#x > %#x)", where, p.Name, placed[i+1].Name, end, *placed[i+1].Offset)
		}
	}
	hasVolumes := slices.ContainsFunc(f.Partitions, func(p Partition) bool { return p.Volume })
	switch {
	case hasVolumes && ubi == nil:
		bad("%s: UBI volumes, but no partition with use %q for them to be in", where, UseUBI)
	case ubi != nil && ubi.Size != nil && volumes > *ubi.Size:
		bad("%s: the fixed-size volumes (%d bytes) do not fit UBI partition %s (%d bytes)", where, volumes, ubi.Name, *ubi.Size)
	}
}

// imageTargets are the partitions an image written by method goes to.
func (b Board) imageTargets(method string) []Partition {
	var out []Partition
	for _, f := range b.Flash {
		for _, p := range f.Partitions {
			if p.Use == UseImage && fits(method, f, p) {
				out = append(out, p)
			}
		}
	}
	return out
}

// fits reports whether method writes partition p of flash f.
func fits(method string, f Flash, p Partition) bool {
	switch method {
	case ImageMTD:
		return f.MTD() && !p.Volume
	case ImageUBI:
		return p.Volume
	case ImageBlock:
		return !f.MTD()
	}
	return false
}

// hasFlashFor reports whether the board has a flash that method writes.
func (b Board) hasFlashFor(method string) bool {
	return slices.ContainsFunc(b.Flash, func(f Flash) bool {
		switch method {
		case ImageMTD:
			return f.MTD()
		case ImageUBI:
			return slices.ContainsFunc(f.Partitions, func(p Partition) bool { return p.Use == UseUBI })
		}
		return !f.MTD()
	})
}

func flashKindsFor(method string) string {
	switch method {
	case ImageMTD:
		return "an MTD partition of nor or spi-nand flash"
	case ImageUBI:
		return "a UBI volume"
	}
	return "an emmc or virtio disk"
}

// onDisk reports whether dev (mmcblk0p1, vda) is a disk of the board's
// flash or one of a disk's partitions.
func (b Board) onDisk(dev string) bool {
	for _, f := range b.Flash {
		if f.MTD() {
			continue
		}
		if f.Name == dev || slices.ContainsFunc(f.Partitions, func(p Partition) bool { return p.Name == dev }) {
			return true
		}
	}
	return false
}
