package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"

	"github.com/roostrouter/roost/agent/boot"
	"github.com/roostrouter/roost/agent/control"
	"github.com/roostrouter/roost/agent/handover"
	"github.com/roostrouter/roost/boards"
	"github.com/roostrouter/roost/updater/activate"
	"github.com/roostrouter/roost/updater/image"
	"github.com/roostrouter/roost/updater/maintenance"
	"github.com/roostrouter/roost/updater/slots"
)

// Image upgrades (pivot-to-maintenance), the resident agent's part: check
// and receive the new image into RAM while everything still serves, then
// hand over to a copy of this roostd in RAM (roostd maintain, package
// agent/maintain) that writes it. See updater/maintenance for the whole.

// ImageInfo is what the router says of its image slots.
type ImageInfo = maintenance.Info

// imageBoard is the running system's board, if it upgrades by image.
func (a *Agent) imageBoard() (boards.Board, error) {
	sys, ok := a.activator.Current()
	if !ok {
		return boards.Board{}, errors.New("no system runs: nothing says the board")
	}
	b, err := activate.SystemBoard(a.opts.Store.PhysicalPath(sys), sys)
	if err != nil {
		return b, err
	}
	if b.Upgrade != boards.UpgradeImage {
		return b, fmt.Errorf("board %s upgrades its store in place, not by image: use roost rebuild's usual path", b.Name)
	}
	return b, nil
}

// ImageInfo reads the board's slots and their state.
func (a *Agent) ImageInfo() (ImageInfo, error) {
	b, err := a.imageBoard()
	if err != nil {
		return ImageInfo{}, err
	}
	st, err := slots.Load(a.opts.State)
	if err != nil {
		return ImageInfo{}, err
	}
	info := ImageInfo{Board: b.Name, Slots: maintenance.ImageSlots(b), Images: st.Images, Trial: st.Trial, Last: st.Last,
		Budget: uint64(b.MaintenanceMB) << 20}
	info.Default, _ = st.Booting(info.Slots)
	if info.Running, err = maintenance.RunningSlot(a.opts.Root, boot.StorageDir); err != nil {
		return info, err
	}
	return info, nil
}

// HashRunningImage reads the running slot's squashfs and hashes it.
func (a *Agent) HashRunningImage(info *ImageInfo) error {
	f, err := maintenance.OpenSlot(a.opts.Root, info.Running)
	if err != nil {
		return fmt.Errorf("read the running slot %s: %w", info.Running, err)
	}
	defer f.Close()
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return err
	}
	n, sum, err := maintenance.SquashfsImage(f, size)
	if err != nil {
		return fmt.Errorf("slot %s: %w", info.Running, err)
	}
	info.RunningImage = &slots.Image{Bytes: n, SHA256: sum}
	return nil
}

// ImageWrite is what roostd image write is asked.
type ImageWrite struct {
	Want    maintenance.Want
	System  string
	Timeout time.Duration // for the confirmation, from the write's end
}

// StartImageWrite checks that the router can take the image (board,
// slot, size, RAM: a refusal stops nothing) and readies the maintenance:
// its tmpfs, the roostd in RAM that runs it, the plan. Once the caller has
// its answer, the agent hands over to that roostd, which receives the
// image (roostd maintenance receive) and writes it.
func (a *Agent) StartImageWrite(ctx context.Context, w ImageWrite) (maintenance.Started, error) {
	var rep maintenance.Started
	info, err := a.ImageInfo()
	if err != nil {
		return rep, err
	}
	b, _ := boards.Lookup(info.Board)
	if info.Trial != nil {
		return rep, fmt.Errorf("the image in %s awaits its confirmation: confirm it or let it roll back first (by %s)", info.Trial.Slot, info.Trial.Deadline.Format(time.TimeOnly))
	}
	slot, err := maintenance.Target(b, info.Running)
	if err != nil {
		return rep, err
	}
	inRAM, copyBytes, err := a.maintenanceBinary()
	if err != nil {
		return rep, err
	}
	if err := a.checkImage(b, slot, w.Want, copyBytes); err != nil {
		return rep, err
	}
	dir := filepath.Join(a.opts.Root, maintenance.Dir)
	if err := a.mountMaintenance(dir, b); err != nil {
		return rep, err
	}
	plan, err := a.writePlan(dir, b, slot, info.Running, inRAM, w)
	if err != nil {
		unix.Unmount(dir, unix.MNT_DETACH)
		return rep, err
	}
	rep = maintenance.Started{Slot: slot, Running: info.Running, Token: plan.Token, Deadline: time.Now().Add(w.Timeout), Watchdog: b.Watchdog != nil,
		Why: fmt.Sprintf("board %s boots from an image: the router runs from RAM to receive it and write it to %s, then boots it once as a trial", b.Name, slot)}
	ask := func() {
		select {
		case a.maintain <- filepath.Join(dir, "plan.json"):
		default:
		}
	}
	if !control.AfterReply(ctx, ask) {
		ask()
	}
	return rep, nil
}

// checkImage makes every refusal before anything is read or stopped.
// copyBytes is what copying roostd into the tmpfs takes (0: it is in
// RAM already).
func (a *Agent) checkImage(b boards.Board, slot string, w maintenance.Want, copyBytes int64) error {
	if _, err := image.Check(image.Config{Board: b, Partition: slot, Root: a.opts.Root}, w.Bytes); err != nil {
		return err
	}
	meminfo, err := os.ReadFile(filepath.Join(a.opts.Root, "proc/meminfo"))
	if err != nil {
		return err
	}
	err = maintenance.CheckMemory(b, bytes.NewReader(meminfo), w, uint64(copyBytes))
	if err != nil && w.Delta != nil {
		whole := w
		whole.Delta = nil
		if maintenance.CheckMemory(b, bytes.NewReader(meminfo), whole, uint64(copyBytes)) == nil {
			return fmt.Errorf("%w; the whole image fits, its delta's base does not: send the whole image (roost rebuild --full-image)", err)
		}
	}
	return err
}

// maintenanceBinary is the roostd the maintenance runs: the initramfs's
// /init, in RAM already, if it is this very binary (an image board's
// initrd carries the system's roostd), else a copy of this one to make
// in the tmpfs (copyBytes).
func (a *Agent) maintenanceBinary() (inRAM string, copyBytes int64, err error) {
	self, err := os.Open("/proc/self/exe")
	if err != nil {
		return "", 0, fmt.Errorf("roostd's own binary: %w", err)
	}
	defer self.Close()
	fi, err := self.Stat()
	if err != nil {
		return "", 0, fmt.Errorf("roostd's own binary: %w", err)
	}
	initrd := filepath.Join(a.opts.Root, "init")
	if other, err := os.Open(initrd); err == nil {
		defer other.Close()
		if ofi, err := other.Stat(); err == nil && ofi.Size() == fi.Size() && sameContent(self, other) {
			return initrd, 0, nil
		}
	}
	return "", fi.Size(), nil
}

// sameContent compares two files from their start.
func sameContent(a, b io.Reader) bool {
	ba, bb := make([]byte, 64<<10), make([]byte, 64<<10)
	for {
		na, erra := io.ReadFull(a, ba)
		nb, errb := io.ReadFull(b, bb)
		if na != nb || !bytes.Equal(ba[:na], bb[:nb]) {
			return false
		}
		if erra != nil || errb != nil {
			return erra == errb || (errors.Is(erra, io.ErrUnexpectedEOF) || errors.Is(erra, io.EOF)) && (errors.Is(errb, io.ErrUnexpectedEOF) || errors.Is(errb, io.EOF))
		}
	}
}

// mountMaintenance mounts the tmpfs the maintenance runs from, as big as
// the board's budget.
func (a *Agent) mountMaintenance(dir string, b boards.Board) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	unix.Unmount(dir, unix.MNT_DETACH) // an earlier attempt's
	opts := "mode=0700"
	if b.MaintenanceMB > 0 {
		opts += fmt.Sprintf(",size=%dm", b.MaintenanceMB)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
		return fmt.Errorf("mount the maintenance tmpfs on %s: %w", dir, err)
	}
	return nil
}

// writePlan copies this roostd into the tmpfs unless inRAM names it there
// already, and writes the plan.
func (a *Agent) writePlan(dir string, b boards.Board, slot, running, inRAM string, w ImageWrite) (maintenance.Plan, error) {
	p := maintenance.Plan{Board: b.Name, Slot: slot, Running: running, Image: filepath.Join(maintenance.Dir, "image"),
		Bytes: w.Want.Bytes, SHA256: w.Want.SHA256, System: w.System, Timeout: w.Timeout.String(), State: a.opts.State}
	p.Binary = filepath.Join(maintenance.Dir, "roostd")
	if inRAM != "" {
		p.Binary = "/init"
	} else if err := copyFile("/proc/self/exe", filepath.Join(dir, "roostd"), 0o755); err != nil {
		return p, fmt.Errorf("copy roostd into the maintenance tmpfs: %w", err)
	}
	token := make([]byte, 16)
	rand.Read(token)
	p.Token = hex.EncodeToString(token)
	if p.FromBoot = a.bootID(); p.FromBoot == "" {
		return p, errors.New("read the boot's id: /proc/sys/kernel/random/boot_id is empty or missing")
	}
	cfg := a.Config()
	if cfg == nil || cfg.SSH.Disabled {
		return p, errors.New("the config has no SSH endpoint: the maintenance could not be followed nor the image confirmed")
	}
	p.SSHAddrs = cfg.SSH.ListenAddrs()
	keys, err := a.authorizedKeys(cfg)
	if err != nil {
		return p, err
	}
	for _, k := range keys {
		p.AuthorizedKeys += string(ssh.MarshalAuthorizedKey(k))
	}
	return p, maintenance.WritePlan(filepath.Join(dir, "plan.json"), p)
}

func copyFile(src, dst string, perm os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// execMaintenance replaces this process with the maintenance copy of
// roostd (the agent has stopped), passing it the held SSH sockets. It
// returns only if the exec failed.
func (a *Agent) execMaintenance(plan string, held *handover.Held) error {
	p, err := maintenance.ReadPlan(plan)
	if err == nil {
		bin := filepath.Join(a.opts.Root, p.Binary)
		// argv[0] roostd: run as init, roostd would be PID 1's /init.
		args := []string{"roostd", "maintain", "--plan", plan, "--root", a.opts.Root}
		a.opts.Log.Info("pivot-to-maintenance: exec roostd from RAM", "roostd", bin, "plan", plan)
		err = held.Exec(bin, args, os.Environ())
	}
	a.opts.Log.Error("MAINTENANCE NOT STARTED: starting this roostd again", "err", err)
	err2 := held.Exec(a.opts.Self, a.opts.Args, os.Environ())
	held.Close()
	return fmt.Errorf("pivot-to-maintenance: %w; starting this roostd again: %v", err, err2)
}
