package boot

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/roostrouter/roost/boards"
	"github.com/roostrouter/roost/updater/atomicfile"
	"github.com/roostrouter/roost/updater/image"
	"github.com/roostrouter/roost/updater/slots"
)

// An image board (boards.json's upgrade "image") boots from its flash,
// unless roost.disk= names a disk: its data partition (jffs2) is /persist,
// and one of its image partitions (a squashfs, which hosttool/image
// builds) is mounted read-only on /storage, its nix folder bound on /nix.
// Which image slot boots is updater/slots's choice.

// BootedSlot is the image slot this boot mounted, which init writes to
// BootedSlotFile for roostd status and the agent.
type BootedSlot struct {
	Slot   string `json:"slot"`            // the MTD partition mounted on /storage
	Device string `json:"device"`          // its block device, /dev/mtdblockN
	Trial  bool   `json:"trial,omitempty"` // booted once as a trial (slots.State.Once)
	// Chosen is the slot updater/slots chose, if it is not Slot: it did
	// not mount, and Fallback says why.
	Chosen   string `json:"chosen,omitempty"`
	Fallback string `json:"fallback,omitempty"`
}

// BootedSlotFile is where init says which slot it booted, below root.
func BootedSlotFile(root string) string { return filepath.Join(root, "run/booted-slot.json") }

// ReadBootedSlot reads what init wrote; an error wrapping os.ErrNotExist
// if this boot mounted no slot (a store board, or roost.disk=).
func ReadBootedSlot(root string) (BootedSlot, error) {
	var s BootedSlot
	b, err := os.ReadFile(BootedSlotFile(root))
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("%s: %w", BootedSlotFile(root), err)
	}
	return s, nil
}

// imageBoot says whether this boot mounts the board's flash: an image
// board, and no roost.disk= naming another disk.
func imageBoot(b boards.Board, p Params) bool {
	return b.Upgrade == boards.UpgradeImage && p.Disk == ""
}

// block2mtdParams are the parameters that make the board's block2mtd
// flashes MTD devices, and the disks they need, once each: a module does
// not see the kernel command line, so init passes them as it loads it.
func block2mtdParams(b boards.Board) (params string, disks []string) {
	var ps []string
	for _, f := range b.Flash {
		if p := f.Block2MTD(); p != "" {
			ps = append(ps, "block2mtd="+p)
			disks = append(disks, "/dev/"+f.Name)
		}
	}
	return strings.Join(ps, " "), disks
}

// imageLayout is where an image board boots from: its image slots (the
// MTD partitions its image is written to, in the board's order) and its
// data partition.
func imageLayout(b boards.Board) (slotNames []string, data string, err error) {
	for _, f := range b.Flash {
		for _, p := range f.Partitions {
			switch {
			case !f.MTD() || p.Volume:
			case p.Use == boards.UseImage:
				slotNames = append(slotNames, p.Name)
			case p.Use == boards.UseData && data == "":
				data = p.Name
			}
		}
	}
	if len(slotNames) == 0 || data == "" {
		return nil, "", fmt.Errorf("board %s boots from an image, but boards.json gives it no MTD partition of use %q and one of use %q (it has %v and %q)",
			b.Name, boards.UseImage, boards.UseData, slotNames, data)
	}
	return slotNames, data, nil
}

// mountImage mounts an image board's flash: the data partition on
// /persist, then the slot updater/slots chooses on /storage, falling back
// to another slot if that one does not mount (a corrupt image), and
// /storage/nix on /nix.
func (in *Init) mountImage() error {
	slotNames, data, err := imageLayout(in.board)
	if err != nil {
		return err
	}
	mtds, err := in.waitMTD(append([]string{data}, slotNames...), DeviceWait)
	if err != nil {
		return err
	}
	// An erased partition (all 0xff) is an empty jffs2.
	if err := in.mountAll([]mount{{source: mtds[data], target: "/persist", fstype: "jffs2", flags: unix.MS_NOATIME}}); err != nil {
		return fmt.Errorf("the data partition %s: %w", data, err)
	}
	in.log.Info("data partition mounted", "partition", data, "device", mtds[data], "on", "/persist")
	state := in.path(stateDir)
	if err := os.MkdirAll(state, 0o700); err != nil {
		return fmt.Errorf("the state folder: %w", err)
	}
	chosen, trial, err := slots.ForBoot(state, slotNames)
	if err != nil {
		if chosen == "" {
			chosen = slotNames[0]
		}
		in.log.Error("SLOT STATE UNUSABLE: booting slot "+chosen, "err", err)
	}
	booted := BootedSlot{Slot: chosen, Trial: trial}
	var failed []string // why each slot tried did not mount
	for _, s := range tryOrder(chosen, slotNames) {
		err := in.mountAll([]mount{{source: mtds[s], target: StorageDir, fstype: "squashfs", flags: unix.MS_RDONLY | unix.MS_NOATIME}})
		if err == nil {
			booted.Slot, booted.Device = s, mtds[s]
			break
		}
		failed = append(failed, fmt.Sprintf("slot %s: %v", s, err))
		in.log.Error(fmt.Sprintf("SLOT %s DOES NOT MOUNT: its image is corrupt or was never written", s), "device", mtds[s], "err", err)
	}
	if booted.Device == "" {
		return fmt.Errorf("no image slot mounts: %s", strings.Join(failed, "; "))
	}
	if booted.Slot != chosen {
		booted.Chosen, booted.Fallback, booted.Trial = chosen, failed[0], false
		in.log.Error(fmt.Sprintf("BOOTING SLOT %s INSTEAD OF %s", booted.Slot, chosen), "why", failed[0])
	}
	if err := in.mountAll([]mount{{source: StorageDir + "/nix", target: "/nix", flags: unix.MS_BIND}}); err != nil {
		return err
	}
	in.log.Info("image slot mounted", "slot", booted.Slot, "device", booted.Device, "trial", booted.Trial, "on", StorageDir)
	b, _ := json.Marshal(booted)
	if err := atomicfile.WriteFile(BootedSlotFile(in.opts.Root), append(b, '\n'), 0o644); err != nil {
		in.log.Warn("the booted slot is not recorded: roostd status will not say it", "err", err)
	}
	return nil
}

// tryOrder is chosen, then the board's other slots in its order.
func tryOrder(chosen string, slotNames []string) []string {
	out := []string{chosen}
	for _, s := range slotNames {
		if s != chosen {
			out = append(out, s)
		}
	}
	return out
}

// waitMTD waits up to d until the kernel has the MTD partitions of the
// given names (/proc/mtd) and their block devices, and returns each
// one's /dev/mtdblockN.
func (in *Init) waitMTD(names []string, d time.Duration) (map[string]string, error) {
	deadline := in.opts.Clock.Now().Add(d)
	for {
		devs, missing, err := in.findMTD(names)
		if err == nil && len(missing) == 0 {
			return devs, nil
		}
		if !in.opts.Clock.Now().Before(deadline) {
			if err == nil {
				err = fmt.Errorf("no MTD partition or device node for %s", strings.Join(missing, ", "))
			}
			return nil, fmt.Errorf("the board's flash after %s: %w (is block2mtd or the flash's driver in the initrd's modules?)", d, err)
		}
		<-in.opts.Clock.After(100 * time.Millisecond)
	}
}

// findMTD reads /proc/mtd for names: the block devices of those it has
// and whose node exists, and the names it lacks.
func (in *Init) findMTD(names []string) (devs map[string]string, missing []string, err error) {
	b, err := os.ReadFile(in.path("/proc/mtd"))
	if err != nil {
		return nil, names, err
	}
	all, err := image.ParseProcMTD(bytes.NewReader(b))
	if err != nil {
		return nil, names, err
	}
	devs = map[string]string{}
	for _, n := range names {
		i := slices.IndexFunc(all, func(m image.MTD) bool { return m.Name == n })
		if i < 0 {
			missing = append(missing, n)
			continue
		}
		dev := "/dev/mtdblock" + strconv.Itoa(all[i].Index)
		if _, err := os.Stat(in.path(dev)); err != nil {
			missing = append(missing, n+" ("+dev+")")
			continue
		}
		devs[n] = dev
	}
	return devs, missing, nil
}

// waitDisks waits for the disks block2mtd is given: it opens them as it
// loads, and fails for one the disk's driver has not made yet.
func (in *Init) waitDisks(disks []string) {
	for _, d := range disks {
		if err := in.waitDevice(d, DeviceWait); err != nil {
			in.log.Error("FLASH DISK MISSING", "err", err)
		}
	}
}
