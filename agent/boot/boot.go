// Package boot is roostd init, PID 1 of the router: it mounts the kernel's
// file systems and the persistent storage, loads kernel modules, picks the
// generation to boot, runs that system's agent (roostd run) and keeps it
// running, feeds the board's hardware watchdog while the agent says the
// router is healthy, reaps orphans, and reboots, powers off or kexecs
// cleanly on request.
//
// Invariants:
//   - The agent it runs is the running system's: the bin/roostd of
//     /run/current-system, read anew at each start, so that the agent an
//     activation brought is the one restarted.
//   - An agent that exits CrashLimit times within CrashWindow while an
//     activation awaits confirmation is replaced by the previous system's:
//     the activation is rolled back by updater/activate
//     (Activator.RollBackPending), the one rollback there is. On a trial
//     boot (roost.trial=1) of a pending trial, init reboots instead: the
//     boot default is the previous system, on its own kernel.
//   - A trial boot runs its generation or none: it never falls back to
//     another generation on the trial's kernel, it reboots.
//   - The watchdog, once open, stays open and armed until the machine
//     resets or kexecs: init never disarms it, and stops feeding it for
//     good once the agent's health (agent/health) has failed after the
//     grace (watchdog.Ratchet).
//   - Before reboot(2), the agent and every other process are stopped, the
//     disks synced, and what init mounted is unmounted, last first, or
//     remounted read-only if busy.
//   - A boot that fails (no disk, no system) is logged and ends in a reboot
//     after FailDelay: nobody may be at the router's console.
//   - On an image board (image.go) /persist is the board's data partition,
//     never the image, and /storage the image slot updater/slots chose,
//     read-only; another of the board's slots only if that one does not
//     mount, said loudly and in BootedSlotFile.
//
// Every file init touches is below Options.Root, and every system call
// that acts on the machine (mounts, modules, signals, processes, the
// watchdog, reboot) goes through Options, so that unit tests run it in a
// temporary folder.
package boot

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/roostrouter/roost/boards"
	"github.com/roostrouter/roost/updater/activate"
	"github.com/roostrouter/roost/updater/atomicfile"
	"github.com/roostrouter/roost/updater/storepath"
	"github.com/roostrouter/roost/updater/watchdog"
)

// Timings.
const (
	CrashLimit  = 3                // agent exits …
	CrashWindow = 60 * time.Second // … within this, with an activation pending, roll it back
	StableAfter = 60 * time.Second // an agent that ran this long restarts at once
	MinDelay    = time.Second      // restart backoff, doubling …
	MaxDelay    = 30 * time.Second // … up to this
	StopTimeout = 10 * time.Second // the agent's time to stop on SIGTERM
	KillGrace   = 2 * time.Second  // other processes' time to stop on SIGTERM
	DeviceWait  = 10 * time.Second // for the storage's device node
	FailDelay   = 30 * time.Second // a failed boot reboots after this
)

// Kernel is what init asks of the kernel beyond mounts: unix system calls
// as PID 1 (Linux), a fake in unit tests.
type Kernel interface {
	LoadModule(f *os.File, params string, flags int) error
	LoopbackUp() error
	Kill(pid int, sig syscall.Signal) error
	Sync()
	Reboot(cmd int) error
	// OpenWatchdog opens (arms) a watchdog device.
	OpenWatchdog(device string) (Watchdog, error)
}

// Procs starts the agent and reports the exits of init's children, which
// include every orphan (Reaper as PID 1, a fake in unit tests).
type Procs interface {
	// Start runs argv[0]; files become its fds 3, 4, …
	Start(argv, env []string, files []*os.File) (pid int, err error)
	Exits() <-chan Exit
	// Running reports whether init has a child left.
	Running() bool
	// Hold stops reaping until release is called, for init's own code
	// that waits for a child it started (a system's activate script).
	Hold() (release func())
}

// Exit is a child's end.
type Exit struct {
	Pid    int
	Status string // "exit status 2", "signal: killed"
}

// Clock is time as init sees it, and its watchdog ratchet:
// watchdog.SystemClock as PID 1.
type Clock = watchdog.Clock

// Options are init's dependencies.
type Options struct {
	Root     string // "/" as PID 1
	Log      *slog.Logger
	Mounter  Mounter
	Kernel   Kernel
	Procs    Procs
	Clock    Clock
	Requests <-chan Request // reboot, poweroff, halt, kexec (Signals as PID 1)
}

// Init is PID 1. New makes it; Run runs it, once.
type Init struct {
	opts    Options
	log     *slog.Logger
	mounted []mount
	agent   int // the agent's pid; 0 if none runs
	// trial is the generation this boot is a trial of (roost.trial=1);
	// 0 if it is not one.
	trial int
	board boards.Board // the router's; zero if unknown
	// fromImage: this boot mounts the board's flash, an image slot and
	// its data partition (image.go), not a disk.
	fromImage bool
	wd        *guard // the watchdog, once armed
}

// New makes an init.
func New(opts Options) *Init {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	return &Init{opts: opts, log: opts.Log}
}

// Run boots and supervises the agent until a request comes, then shuts
// down and reboots, powers off or halts as asked. As PID 1 it does not
// return unless reboot(2) fails; it returns when ctx ends (tests).
func (in *Init) Run(ctx context.Context) error {
	var req Request
	err := in.boot()
	switch {
	case errors.Is(err, errTrial):
		// At once: the default, on its own kernel, is what the router
		// runs, and the pending trial says what happened to the next
		// boot's agent.
		in.log.Error(fmt.Sprintf("TRIAL GENERATION %d CANNOT BOOT: rebooting into the boot default", in.trial), "err", err)
		req = Reboot
	case err != nil:
		in.log.Error("BOOT FAILED: rebooting", "in", FailDelay, "err", err)
		if req = in.wait(ctx, FailDelay); req == 0 {
			req = Reboot
		}
	default:
		in.armWatchdog(ctx)
		req = in.supervise(ctx)
	}
	if ctx.Err() != nil {
		in.stopRatchet()
		in.stopAgent()
		return ctx.Err()
	}
	return in.shutdown(req)
}

// boot makes the router's file system and picks the system to run.
func (in *Init) boot() error {
	if err := in.mountAll(earlyMounts); err != nil {
		return err
	}
	p := in.cmdline()
	if p.Trial {
		in.trial = p.Generation
	}
	if _, b, err := in.lookupBoard(p); err == nil {
		in.board = b
		in.fromImage = imageBoot(b, p)
	}
	if err := in.opts.Kernel.LoopbackUp(); err != nil {
		in.log.Warn("loopback interface", "err", err)
	}
	in.loadModules("/modules") // the initrd's: what reaching the storage takes
	if err := in.mountStorage(p); err != nil {
		return err
	}
	c, skipped, err := in.choose(p)
	for _, s := range skipped {
		in.log.Error("GENERATION SKIPPED", "err", s)
	}
	if err != nil {
		return err
	}
	in.log.Info("booting", "system", c.System, "generation", c.Generation, "chosen", c.Why, "trial", p.Trial)
	in.loadModules(filepath.Join(c.System.String(), "modules"))
	return in.links(c.System)
}

// cmdline reads the kernel command line's roost.* parameters.
func (in *Init) cmdline() Params {
	b, err := os.ReadFile(in.path("/proc/cmdline"))
	if err != nil {
		in.log.Warn("no kernel command line: booting on the defaults", "err", err)
	}
	p, errs := ParseCmdline(string(b))
	for _, err := range errs {
		in.log.Warn("kernel command line", "err", err)
	}
	if p.Trial && p.Generation == 0 {
		in.log.Warn("kernel command line: roost.trial=1 without roost.generation=N: not a trial boot")
		p.Trial = false
	}
	return p
}

// mountStorage mounts the persistent storage that the command line names,
// else the board's: its disk, or on an image board its flash.
func (in *Init) mountStorage(p Params) error {
	if in.fromImage {
		return in.mountImage()
	}
	st, err := in.storage(p)
	if err != nil {
		return err
	}
	if err := in.waitDevice(st.Device, DeviceWait); err != nil {
		return err
	}
	if err := in.mountAll(storageMounts(st.Device, st.FSType)); err != nil {
		return err
	}
	in.log.Info("storage mounted", "device", st.Device, "fstype", st.FSType, "on", StorageDir)
	return nil
}

// DefaultFSType is the file system of a disk that roost.disk= names on a
// board without storage of its own, unless roost.fstype= says.
const DefaultFSType = "ext4"

// storage is the disk to mount: the board's (boards.json's storage),
// with roost.disk= and roost.fstype= taking precedence. The board is
// roost.board=, else the initrd's /board.
func (in *Init) storage(p Params) (boards.Storage, error) {
	board, b, err := in.lookupBoard(p)
	var st boards.Storage
	if err != nil {
		if p.Disk == "" {
			return st, fmt.Errorf("no persistent storage: the initrd's /board (or roost.board=) names no known board (%v); put roost.disk=/dev/... on the kernel command line", err)
		}
		in.log.Warn("unknown board: using the command line's disk", "err", err)
	} else if b.Storage != nil {
		st = *b.Storage
	}
	if p.Disk != "" {
		st.Device = p.Disk
	}
	if p.FSType != "" {
		st.FSType = p.FSType
	}
	if st.FSType == "" {
		st.FSType = DefaultFSType
	}
	if st.Device == "" {
		return st, fmt.Errorf("no persistent storage: board %q has none in boards.json; put roost.disk=/dev/... on the kernel command line", board)
	}
	return st, nil
}

// lookupBoard finds the board: roost.board=, else the initrd's /board.
func (in *Init) lookupBoard(p Params) (string, boards.Board, error) {
	name := p.Board
	if name == "" {
		name = readWord(in.path("/board"))
	}
	b, err := boards.Lookup(name)
	return name, b, err
}

// links makes /run/booted-system and /run/current-system the system, and
// the marker that roostd reboot and poweroff look for.
func (in *Init) links(system storepath.Path) error {
	if err := os.MkdirAll(in.path("/run"), 0o755); err != nil {
		return err
	}
	for _, link := range []string{activate.BootedLink(in.opts.Root), activate.CurrentLink(in.opts.Root)} {
		if err := atomicfile.Symlink(system.String(), link); err != nil {
			return fmt.Errorf("link the booted system: %w", err)
		}
	}
	return os.WriteFile(MarkerFile(in.opts.Root), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644)
}
