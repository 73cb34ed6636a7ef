package image

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/roostrouter/roost/boards"
)

// SpareVolume is the name of the volume an image for live volume live is
// written to before the swap, and which holds the previous image after it.
func SpareVolume(live string) string { return live + "_spare" }

// ubiVol is a UBI volume, from /sys/class/ubi/ubiN/ubiN_M.
type ubiVol struct {
	ID       int
	Name     string
	Reserved uint64 // reserved_ebs
	LEB      uint64 // usable_eb_size
	Static   bool
}

func (v ubiVol) bytes() uint64 { return v.Reserved * v.LEB }

// ubiPlan is what checkUBI found.
type ubiPlan struct {
	num         int    // N of ubiN
	leb         uint64 // the device's LEB size
	live        ubiVol
	spare       *ubiVol // nil: to be made
	spareName   string
	volumesPath string
}

// checkUBI checks volume p of flash f for an image of size bytes: its UBI
// device, the live volume, and room for the spare.
func (c Config) checkUBI(f boards.Flash, p boards.Partition, size uint64) (*Target, error) {
	var ubiPart *boards.Partition
	for _, q := range f.Partitions {
		if q.Use == boards.UseUBI && !q.Volume {
			ubiPart = &q
		}
	}
	if ubiPart == nil {
		return nil, fmt.Errorf("image: board %s's flash %s has no UBI partition for volume %q", c.Board.Name, f.Name, p.Name)
	}
	spare := SpareVolume(p.Name)
	if len(spare) > ubiMaxName {
		return nil, fmt.Errorf("image: UBI volume name %q is too long for its spare (%d bytes at most)", p.Name, ubiMaxName-len("_spare"))
	}
	for _, g := range c.Board.Flash {
		for _, q := range g.Partitions {
			if q.Name == spare && (q.Never || q.Use != boards.UseImage) {
				return nil, fmt.Errorf("image: the spare for volume %q would be %q, which board %s has as a %s partition: refused", p.Name, spare, c.Board.Name, q.Use)
			}
		}
	}
	m, err := c.findMTD(ubiPart.Name)
	if err != nil {
		return nil, err
	}
	dev, err := c.ubiOnMTD(m.Index)
	if err != nil {
		return nil, err
	}
	if dev == "" {
		return nil, fmt.Errorf("image: no UBI device is attached to %s (partition %q): refused, attach it (ubiattach -m %d, or ubi.mtd=%s on the kernel's command line)", m.Device(), m.Name, m.Index, m.Name)
	}
	plan, err := c.ubiPlan(dev, p.Name, spare)
	if err != nil {
		return nil, err
	}
	where := fmt.Sprintf("UBI device %s (on %s)", dev, m.Device())
	avail, err := c.sysUint(filepath.Join(plan.volumesPath, "avail_eraseblocks"))
	if err != nil {
		return nil, fmt.Errorf("image: %s: %w", where, err)
	}
	var have uint64
	device := ""
	if plan.spare != nil {
		have = plan.spare.Reserved
		device = fmt.Sprintf("/dev/ubi%d_%d", plan.num, plan.spare.ID)
	}
	usable := (have + avail) * plan.leb
	if usable < size {
		return nil, fmt.Errorf("image: the image (%d bytes) does not fit spare volume %q on %s: %d bytes (%d LEBs of %d: %d in the spare, %d free): refused, build a smaller image or make room",
			size, spare, where, usable, have+avail, plan.leb, have, avail)
	}
	return &Target{Method: boards.ImageUBI, Partition: p.Name, Device: device, Usable: usable, ubi: plan}, nil
}

// ubiPlan reads UBI device dev's volumes: live must exist, spare may.
func (c Config) ubiPlan(dev, live, spare string) (*ubiPlan, error) {
	num, err := strconv.Atoi(strings.TrimPrefix(dev, "ubi"))
	if err != nil {
		return nil, fmt.Errorf("image: UBI device %q: want ubiN", dev)
	}
	plan := &ubiPlan{num: num, spareName: spare, volumesPath: c.path("sys/class/ubi/" + dev)}
	if plan.leb, err = c.sysUint(filepath.Join(plan.volumesPath, "eraseblock_size")); err != nil || plan.leb == 0 {
		return nil, fmt.Errorf("image: UBI device %s: its LEB size: %v", dev, err)
	}
	vols, err := c.ubiVolumes(plan.volumesPath, dev)
	if err != nil {
		return nil, err
	}
	var names []string
	found := false
	for _, v := range vols {
		names = append(names, v.Name)
		switch v.Name {
		case live:
			plan.live, found = v, true
		case spare:
			plan.spare = &v
		}
	}
	if !found {
		return nil, fmt.Errorf("image: UBI device %s has no volume %q (it has %s): refused, the flash is not laid out as board %s's", dev, live, list(names), c.Board.Name)
	}
	return plan, nil
}

// ubiVolumes reads the volumes of UBI device dev from its sysfs folder.
func (c Config) ubiVolumes(dir, dev string) ([]ubiVol, error) {
	matches, _ := filepath.Glob(filepath.Join(dir, dev+"_*"))
	var out []ubiVol
	for _, m := range matches {
		id, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(m), dev+"_"))
		if err != nil {
			continue
		}
		name, err := os.ReadFile(filepath.Join(m, "name"))
		if err != nil {
			return nil, fmt.Errorf("image: UBI volume %s: %w", m, err)
		}
		typ, err := os.ReadFile(filepath.Join(m, "type"))
		if err != nil {
			return nil, fmt.Errorf("image: UBI volume %s: %w", m, err)
		}
		v := ubiVol{ID: id, Name: strings.TrimSuffix(string(name), "\n"), Static: strings.TrimSpace(string(typ)) == "static"}
		if v.Reserved, err = c.sysUint(filepath.Join(m, "reserved_ebs")); err != nil {
			return nil, fmt.Errorf("image: UBI volume %s: %w", m, err)
		}
		if v.LEB, err = c.sysUint(filepath.Join(m, "usable_eb_size")); err != nil {
			return nil, fmt.Errorf("image: UBI volume %s: %w", m, err)
		}
		out = append(out, v)
	}
	return out, nil
}

func (c Config) sysUint(file string) (uint64, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", file, err)
	}
	return n, nil
}

// writeUBI writes the image into the spare volume (made or grown first if
// need be), reads it back, and swaps the spare's and the live volume's
// names in one rename.
func (c Config) writeUBI(ctx context.Context, t *Target, img Image, dev devices) (*Result, error) {
	plan := t.ubi
	where := fmt.Sprintf("UBI device ubi%d", plan.num)
	u, err := dev.openUBI(c.path(fmt.Sprintf("/dev/ubi%d", plan.num)))
	if err != nil {
		return nil, fmt.Errorf("image: %s: %w", where, err)
	}
	defer u.Close()
	size := uint64(img.Size)
	id, err := c.prepareSpare(u, plan, size, where)
	if err != nil {
		return nil, err
	}
	device := fmt.Sprintf("/dev/ubi%d_%d", plan.num, id)
	vwhere := fmt.Sprintf("spare volume %q (%s)", plan.spareName, device)
	res := &Result{Target: *t, Bytes: img.Size, Spare: plan.spareName}
	res.Device = device
	if res.SHA256, err = c.updateVolume(ctx, u, device, vwhere, img); err != nil {
		return nil, err
	}
	if err := ctxErr(ctx, vwhere, size, size); err != nil {
		return nil, fmt.Errorf("%w: not swapped, the live volume is as it was", err)
	}
	if err := c.swap(u, plan, id, where); err != nil {
		return nil, err
	}
	return res, nil
}

// prepareSpare makes the spare volume, or grows it to hold size bytes,
// and returns its ID.
func (c Config) prepareSpare(u ubiDevice, plan *ubiPlan, size uint64, where string) (int, error) {
	if plan.spare == nil {
		id, err := u.makeVolume(plan.spareName, int64(size), plan.live.Static)
		if err != nil {
			return 0, fmt.Errorf("image: %s: make spare volume %q of %d bytes: %w", where, plan.spareName, size, err)
		}
		return id, nil
	}
	if plan.spare.bytes() < size {
		if err := u.resizeVolume(plan.spare.ID, int64(size)); err != nil {
			return 0, fmt.Errorf("image: %s: grow spare volume %q from %d to %d bytes: %w", where, plan.spareName, plan.spare.bytes(), size, err)
		}
	}
	return plan.spare.ID, nil
}

// updateVolume replaces the volume's content with the image
// (UBI_IOCVOLUP) and reads it back.
func (c Config) updateVolume(ctx context.Context, u ubiDevice, device, where string, img Image) ([sha256.Size]byte, error) {
	var sum [sha256.Size]byte
	v, err := u.openVolume(c.path(device))
	if err != nil {
		return sum, fmt.Errorf("image: %s: %w", where, err)
	}
	defer v.Close()
	size := uint64(img.Size)
	if err := v.update(img.Size); err != nil {
		return sum, fmt.Errorf("image: %s: start the update of %d bytes: %w (in use?)", where, size, err)
	}
	src := newSource(img)
	buf := make([]byte, 128<<10)
	for done := uint64(0); done < size; {
		if err := ctxErr(ctx, where, done, size); err != nil {
			return sum, err
		}
		n := min(uint64(len(buf)), size-done)
		if err := src.fill(buf[:n]); err != nil {
			return sum, err
		}
		if _, err := v.Write(buf[:n]); err != nil {
			return sum, fmt.Errorf("image: %s: write at %d: %w", where, done, err)
		}
		done += n
		c.progress(PhaseWrite, done, size)
	}
	if err := v.Sync(); err != nil {
		return sum, fmt.Errorf("image: %s: sync: %w", where, err)
	}
	sum, err = src.finish(img.SHA256)
	if err != nil {
		return sum, fmt.Errorf("%w (the spare is not swapped in)", err)
	}
	h := sha256.New()
	for done := uint64(0); done < size; {
		if err := ctxErr(ctx, where, done, size); err != nil {
			return sum, err
		}
		n := min(uint64(len(buf)), size-done)
		if _, err := v.ReadAt(buf[:n], int64(done)); err != nil {
			return sum, fmt.Errorf("image: %s: read back at %d: %w", where, done, err)
		}
		h.Write(buf[:n])
		done += n
		c.progress(PhaseVerify, done, size)
	}
	var got [sha256.Size]byte
	copy(got[:], h.Sum(nil))
	return sum, verify(where, got, sum)
}

// swap renames the live volume to the spare's name and the spare to the
// live one's, in one UBI_IOCRNVOL: UBI writes the new volume table in one
// step, so either both names changed or neither did. Both volumes are in
// the request, so the kernel removes neither (it removes a volume whose
// name another takes only if that volume is not renamed too).
func (c Config) swap(u ubiDevice, plan *ubiPlan, spareID int, where string) error {
	vols, err := c.ubiVolumes(plan.volumesPath, fmt.Sprintf("ubi%d", plan.num))
	if err != nil {
		return err
	}
	names := map[int]string{}
	for _, v := range vols {
		names[v.ID] = v.Name
	}
	if names[plan.live.ID] != plan.live.Name || names[spareID] != plan.spareName {
		return fmt.Errorf("image: %s: volume %d is %q and volume %d %q now, not %q and %q: not swapped", where, plan.live.ID, names[plan.live.ID], spareID, names[spareID], plan.live.Name, plan.spareName)
	}
	c.progress(PhaseSwap, 0, 1)
	if err := u.rename([]ubiRename{{ID: plan.live.ID, Name: plan.spareName}, {ID: spareID, Name: plan.live.Name}}); err != nil {
		return fmt.Errorf("image: %s: swap volumes %q and %q: %w (UBI renames both or neither: the live volume is as it was)", where, plan.live.Name, plan.spareName, err)
	}
	if vols, err = c.ubiVolumes(plan.volumesPath, fmt.Sprintf("ubi%d", plan.num)); err != nil {
		return err
	}
	for _, v := range vols {
		if v.ID == spareID && v.Name != plan.live.Name || v.ID == plan.live.ID && v.Name != plan.spareName {
			return fmt.Errorf("image: %s: after the swap volume %d is %q: the rename did not take", where, v.ID, v.Name)
		}
	}
	c.progress(PhaseSwap, 1, 1)
	return nil
}
