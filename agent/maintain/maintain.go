// Package maintain is roostd in maintenance (roostd maintain): a copy of
// the agent running from RAM that writes a new system image into the
// board's image slot, serving only its progress over the SSH endpoint it
// took over, then records the image for a trial boot and has init reboot.
//
// Invariants:
//
//   - Nothing it runs or reads is on the flash it writes: its binary, the
//     image and the plan are in the maintenance tmpfs, and it detaches the
//     store's image (/nix and /storage) before it writes. The router's
//     root is the initramfs, in RAM already: pivot_root(2) cannot leave
//     rootfs, so detaching the image is what pivoting to RAM means here.
//   - The write runs on a context no SSH connection cancels: a cut
//     connection does not stop it, and progress is asked again on a new
//     one (roostd maintenance status --follow).
//   - The health file stays fresh while it runs, so init feeds the
//     watchdog; a write that hangs past Stall stops that, and the watchdog
//     (or init's reboot) brings the router back on the running slot.
//   - The slot becomes the next boot's trial (updater/slots, one atomic
//     write) only after the image was read back and its SHA-256 compared;
//     a failed write is recorded in slots.json's last and reboots into the
//     default slot, which was never written.
package maintain

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/roostrouter/roost/agent/boot"
	"github.com/roostrouter/roost/agent/handover"
	"github.com/roostrouter/roost/agent/health"
	"github.com/roostrouter/roost/agent/sshd"
	"github.com/roostrouter/roost/boards"
	"github.com/roostrouter/roost/updater/image"
	"github.com/roostrouter/roost/updater/maintenance"
	"github.com/roostrouter/roost/updater/slots"
)

// Stall is how long the write may go without progress before the agent
// stops saying it is healthy.
const Stall = 2 * time.Minute

// ReceiveTimeout is how long the maintenance waits for its image (roostd
// maintenance receive) before it gives up and reboots.
const ReceiveTimeout = 5 * time.Minute

// Options are the maintenance's dependencies.
type Options struct {
	Root      string
	Plan      maintenance.Plan
	Log       *slog.Logger
	Inherited *handover.Inherited
	Kill      func(pid int, sig syscall.Signal) error // init's signals (boot.Ask)
	Now       func() time.Time
}

// Status is where the maintenance stands.
type Status = maintenance.Status

// Maintenance is roostd maintain; New makes it, Run runs it once.
type Maintenance struct {
	opts  Options
	board boards.Board
	mu    sync.Mutex
	st    Status
	moved time.Time // the last progress
	// changed is closed and replaced at each change of st.
	changed chan struct{}
	// receiving: a client sends the image; received is closed once it
	// is complete and verified in RAM.
	receiving bool
	received  chan struct{}
}

// New checks the plan's board and makes the maintenance.
func New(opts Options) (*Maintenance, error) {
	b, err := boards.Lookup(opts.Plan.Board)
	if err != nil {
		return nil, fmt.Errorf("maintenance: %w", err)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	now := opts.Now()
	return &Maintenance{opts: opts, board: b, changed: make(chan struct{}), moved: now, received: make(chan struct{}),
		st: Status{Slot: opts.Plan.Slot, Phase: "receive", Total: uint64(opts.Plan.Bytes), Started: now}}, nil
}

// Status is the maintenance's progress now, and a channel closed at its
// next change.
func (m *Maintenance) Status() (Status, <-chan struct{}) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.st, m.changed
}

func (m *Maintenance) set(f func(*Status)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	f(&m.st)
	m.moved = m.opts.Now()
	close(m.changed)
	m.changed = make(chan struct{})
}

// Run writes the image and asks for the reboot, serving SSH throughout;
// it returns when ctx ends (init's SIGTERM at the reboot).
func (m *Maintenance) Run(ctx context.Context) error {
	log := m.opts.Log
	log.Info("maintenance: running from RAM, waiting for the image", "slot", m.opts.Plan.Slot, "bytes", m.opts.Plan.Bytes, "running", m.opts.Plan.Running)
	m.detach()
	serving, err := m.serveSSH(ctx)
	if err != nil {
		log.Error("maintenance: no SSH endpoint: the write goes on, unseen", "err", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		select {
		case <-m.received:
			m.writeAndCommit()
		case <-time.After(ReceiveTimeout):
			m.fail(fmt.Errorf("no image came within %s of the maintenance's start", ReceiveTimeout))
		case <-ctx.Done():
		}
	}()
	m.keepHealthy(ctx, done)
	if serving != nil {
		serving.Wait()
	}
	return nil
}

// detach unmounts the store's image, lazily: nothing uses it any more
// (the agent's services stopped with it, and this binary is the tmpfs's).
func (m *Maintenance) detach() {
	for _, dir := range []string{"/nix", boot.StorageDir} {
		if err := unix.Unmount(filepath.Join(m.opts.Root, dir), unix.MNT_DETACH); err != nil {
			m.opts.Log.Warn("maintenance: detach", "path", dir, "err", err)
		}
	}
}

// keepHealthy writes the health file until ctx ends, saying unhealthy
// once the write stalls.
func (m *Maintenance) keepHealthy(ctx context.Context, done <-chan struct{}) {
	t := time.NewTicker(health.Every)
	defer t.Stop()
	for {
		m.mu.Lock()
		var problem error
		if m.st.Phase != "reboot" && m.st.Phase != "receive" && m.opts.Now().Sub(m.moved) > Stall {
			problem = fmt.Errorf("image write stalled in %s for %s", m.st.Phase, Stall)
		}
		m.mu.Unlock()
		if err := health.Write(m.opts.Root, problem); err != nil {
			m.opts.Log.Warn("health file", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-done:
			done = nil
		}
	}
}

// receive reads the image from r into RAM (a delta against the running
// slot's image if d is set), once: a failed try may be made again.
func (m *Maintenance) receive(r io.Reader, d *maintenance.Delta) error {
	m.mu.Lock()
	busy := m.receiving
	m.receiving = true
	m.mu.Unlock()
	if busy {
		return errors.New("an image is being received, or was: only one")
	}
	p := m.opts.Plan
	w := maintenance.Want{Bytes: p.Bytes, SHA256: p.SHA256, Delta: d}
	base := func() (io.ReadCloser, error) { return maintenance.OpenSlot(m.opts.Root, p.Running) }
	err := maintenance.Receive(r, filepath.Join(m.opts.Root, p.Image), w, base, func(n int64) {
		m.set(func(s *Status) { s.Phase, s.Done, s.Total = "receive", uint64(n), uint64(p.Bytes) })
	})
	if err != nil {
		m.mu.Lock()
		m.receiving = false
		m.mu.Unlock()
		m.opts.Log.Error("maintenance: image not received", "err", err)
		return err
	}
	m.opts.Log.Info("maintenance: image received and verified", "bytes", p.Bytes, "delta", d != nil)
	close(m.received)
	return nil
}

// writeAndCommit writes the image, records the slot and asks init to
// reboot, whatever happened: a failed write leaves the default slot.
func (m *Maintenance) writeAndCommit() {
	m.opts.Log.Info("maintenance: writing the image from RAM", "slot", m.opts.Plan.Slot, "bytes", m.opts.Plan.Bytes)
	res, err := m.write()
	if err == nil {
		err = m.commit(res)
	}
	if err != nil {
		m.fail(fmt.Errorf("the image write to %s: %w", m.opts.Plan.Slot, err))
		return
	}
	m.reboot()
}

// fail records why the maintenance failed and reboots into the default
// slot, which it never wrote.
func (m *Maintenance) fail(err error) {
	m.opts.Log.Error("MAINTENANCE FAILED: rebooting into the default slot", "err", err)
	m.set(func(s *Status) { s.Phase, s.Error = "failed", err.Error() })
	m.record(func(st *slots.State) {
		st.Last = fmt.Sprintf("%v (at %s)", err, m.opts.Now().Format(time.DateTime))
	})
	m.reboot()
}

// reboot asks init to reboot, once what was written is synced.
func (m *Maintenance) reboot() {
	unix.Sync()
	m.set(func(s *Status) { s.Phase = "reboot" })
	time.Sleep(time.Second) // for the followers to see it
	if err := boot.Ask(m.opts.Root, boot.Reboot, m.opts.Kill); err != nil {
		m.opts.Log.Error("maintenance: ask init to reboot", "err", err)
	}
}

func (m *Maintenance) write() (res *image.Result, err error) {
	p := m.opts.Plan
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("image write panicked: %v", r)
		}
	}()
	sum, err := hex.DecodeString(p.SHA256)
	if err != nil {
		return nil, fmt.Errorf("plan's sha256: %w", err)
	}
	f, err := os.Open(filepath.Join(m.opts.Root, p.Image))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cfg := image.Config{Board: m.board, Partition: p.Slot, Root: m.opts.Root, Progress: func(pr image.Progress) {
		m.set(func(s *Status) { s.Phase, s.Done, s.Total = pr.Phase, pr.Done, pr.Total })
	}}
	// Not the connection's context: a cut connection does not stop it.
	return image.Write(context.Background(), cfg, image.Image{R: f, Size: p.Bytes, SHA256: sum})
}

// commit names the written slot for the next boot only, as a trial (or,
// on a board with one slot, the only slot it has).
func (m *Maintenance) commit(res *image.Result) error {
	p := m.opts.Plan
	m.set(func(s *Status) { s.Phase = "commit" })
	timeout, err := time.ParseDuration(p.Timeout)
	if err != nil || timeout <= 0 {
		timeout = 5 * time.Minute
	}
	now := m.opts.Now()
	var outcome string
	err = m.record(func(st *slots.State) {
		if st.Images == nil {
			st.Images = map[string]slots.Image{}
		}
		st.Images[p.Slot] = slots.Image{SHA256: hex.EncodeToString(res.SHA256[:]), Bytes: res.Bytes, System: p.System, Written: now}
		if p.Slot == p.Running {
			st.Default, st.Trial = p.Slot, nil
			outcome = fmt.Sprintf("%s, the board's only slot, holds the new image: it boots next, with no trial", p.Slot)
			return
		}
		st.Once = p.Slot
		st.Trial = &slots.Trial{Slot: p.Slot, Previous: p.Running, Token: p.Token, Deadline: now.Add(timeout),
			FromBoot: p.FromBoot, Watchdog: m.board.Watchdog != nil}
		outcome = fmt.Sprintf("%s boots next, once, as a trial; unconfirmed by %s, the router comes back on %s", p.Slot, now.Add(timeout).Format(time.TimeOnly), p.Running)
	})
	if err != nil {
		return fmt.Errorf("record the new image in %s: %w", p.Slot, err)
	}
	m.opts.Log.Info("maintenance: image written and verified", "slot", p.Slot, "bytes", res.Bytes, "next", outcome)
	m.set(func(s *Status) { s.Outcome = outcome })
	return nil
}

func (m *Maintenance) record(f func(*slots.State)) error {
	st, err := slots.Load(m.opts.Plan.State)
	if err != nil {
		return err
	}
	f(&st)
	return slots.Save(m.opts.Plan.State, st)
}

// serveSSH serves the handed-over SSH sockets (or new ones) with the
// router's host key and the plan's keys, answering only Commands.
func (m *Maintenance) serveSSH(ctx context.Context) (*sync.WaitGroup, error) {
	p := m.opts.Plan
	key, err := sshd.LoadHostKey(filepath.Join(p.State, "ssh_host_ed25519_key"))
	if err != nil {
		return nil, err
	}
	keys, err := sshd.ParseAuthorizedKeys([]byte(p.AuthorizedKeys))
	if err != nil {
		return nil, err
	}
	srv := &sshd.Server{Log: m.opts.Log, Exec: m.exec}
	srv.SetHostKey(key)
	srv.SetAuthorizedKeys(keys)
	var wg sync.WaitGroup
	var errs []error
	for _, addr := range p.SSHAddrs {
		l, ok := m.opts.Inherited.Take("tcp", addr)
		if !ok {
			var err error
			if l, err = net.Listen("tcp", addr); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer l.Close()
			go func() { <-ctx.Done(); l.Close() }()
			srv.Accept(ctx, ctx, l)
		}()
	}
	m.opts.Inherited.CloseRest("tcp")
	m.opts.Inherited.CloseRest("unix")
	return &wg, errors.Join(errs...)
}
