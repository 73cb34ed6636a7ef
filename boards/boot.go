package boards

import (
	"encoding/json"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
)

// Boot formats (Boot.Format): what a board's U-Boot boots from its image
// partition.
const (
	// BootUImage is a legacy uImage of the kernel (device tree appended)
	// with the root file system after it, as OpenWrt's sysupgrade image
	// for NOR boards lays them out: written into an MTD partition.
	BootUImage = "uimage"
	// BootFIT is a FIT image holding the kernel, the device tree, the
	// initrd and the root file system: written into a UBI volume.
	BootFIT = "fit"
)

// Boot is what a board's bootloader starts from the image partition,
// which roost image builds in front of the root file system.
type Boot struct {
	Format string `json:"format"` // uimage or fit
	// Compression is the kernel's in the image, which U-Boot undoes:
	// lzma, gzip or none.
	Compression string `json:"compression"`
	// LoadAddress and EntryAddress are where U-Boot puts the kernel and
	// jumps to, as OpenWrt's target for the SoC has them.
	LoadAddress  Address `json:"loadAddress"`
	EntryAddress Address `json:"entryAddress"`
	// DeviceTree is the board's device tree blob, a path below the
	// system's dtbs folder as the kernel's `make dtbs_install` lays it
	// out (mediatek/mt7981b-openwrt-one.dtb); "" if the board boots none.
	DeviceTree string `json:"deviceTree"`
	// DeviceTreeAddress is where U-Boot copies the device tree (FIT), 0
	// for U-Boot's choice.
	DeviceTreeAddress Address `json:"deviceTreeAddress,omitempty"`
	// RootAlignBytes is where the root file system may start in the
	// image: a multiple of it (the NOR's erase block after a uImage, as
	// OpenWrt pads; the FIT's external data alignment).
	RootAlignBytes int `json:"rootAlignBytes"`
}

// Kernel compressions (Boot.Compression), as mkimage names them.
const (
	CompressLZMA = "lzma"
	CompressGzip = "gzip"
	CompressNone = "none"
)

// Address is a physical address, written "0x80060000" in boards.json as
// the sources write it.
type Address uint64

func (a Address) String() string { return fmt.Sprintf("0x%08x", uint64(a)) }

// MarshalJSON writes a as a hexadecimal string.
func (a Address) MarshalJSON() ([]byte, error) { return json.Marshal(a.String()) }

// UnmarshalJSON reads a "0x…" string.
func (a *Address) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("an address is a string like \"0x80060000\": %w", err)
	}
	if !strings.HasPrefix(s, "0x") {
		return fmt.Errorf("address %q: want hexadecimal, like \"0x80060000\"", s)
	}
	n, err := strconv.ParseUint(s[2:], 16, 64)
	if err != nil {
		return fmt.Errorf("address %q: %w", s, err)
	}
	*a = Address(n)
	return nil
}

// UBootArch is the architecture as mkimage names it (-A).
func (b Board) UBootArch() string {
	switch b.GOARCH {
	case "mips", "mipsle":
		return "mips"
	case "arm64":
		return "arm64"
	case "arm":
		return "arm"
	case "amd64":
		return "x86_64"
	}
	return b.GOARCH
}

// validateBoot checks the boot format against how the image is written,
// the addresses against the architecture, and that the image partition
// lies on whole alignment units.
func (b Board) validateBoot(bad func(format string, args ...any)) {
	bt := b.Boot
	if bt == nil {
		return
	}
	want := map[string]string{BootUImage: ImageMTD, BootFIT: ImageUBI}[bt.Format]
	switch {
	case want == "":
		bad("boot.format %q: want %s or %s", bt.Format, BootUImage, BootFIT)
	case b.ImageWrite != want:
		bad("boot.format %q: written by %s, but imageWrite is %q", bt.Format, want, b.ImageWrite)
	}
	if bt.Compression != CompressLZMA && bt.Compression != CompressGzip && bt.Compression != CompressNone {
		bad("boot.compression %q: want %s, %s or %s", bt.Compression, CompressLZMA, CompressGzip, CompressNone)
	}
	limit := Address(1<<32 - 1)
	if b.GOARCH == "arm64" || b.GOARCH == "amd64" {
		limit = 1<<64 - 1
	}
	for name, a := range map[string]Address{"loadAddress": bt.LoadAddress, "entryAddress": bt.EntryAddress, "deviceTreeAddress": bt.DeviceTreeAddress} {
		if a > limit || a == 0 && name != "deviceTreeAddress" {
			bad("boot.%s %s: want an address of the board's %s RAM", name, a, b.GOARCH)
		}
	}
	if dt := bt.DeviceTree; dt != "" && (path.Clean(dt) != dt || path.IsAbs(dt) || strings.HasPrefix(dt, "../") || !strings.HasSuffix(dt, ".dtb")) {
		bad("boot.deviceTree %q: want a .dtb path below the system's dtbs folder, like mediatek/mt7981b-openwrt-one.dtb", dt)
	}
	if a := bt.RootAlignBytes; a < 4 || a&(a-1) != 0 {
		bad("boot.rootAlignBytes %d: want a power of two (the erase block, or 4096)", a)
	}
	if bt.Format == BootUImage && bt.RootAlignBytes > 0 {
		for _, p := range b.imageTargets(ImageMTD) {
			if p.Offset != nil && *p.Offset%uint64(bt.RootAlignBytes) != 0 || p.Size != nil && *p.Size%uint64(bt.RootAlignBytes) != 0 {
				bad("boot.rootAlignBytes %d: image partition %s is not whole units of it", bt.RootAlignBytes, p.Name)
			}
		}
	}
	if !slices.Contains(b.Needs, PartKernel) {
		bad("boot: the board boots a kernel from its image, so its systems need %s", PartKernel)
	}
}
