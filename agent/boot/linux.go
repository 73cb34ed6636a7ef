package boot

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/roostrouter/roost/updater/watchdog"
)

// Linux is the kernel as PID 1 has it: Mounter and Kernel.
type Linux struct{}

func (Linux) Mount(source, target, fstype string, flags uintptr, data string) error {
	return unix.Mount(source, target, fstype, flags, data)
}

func (Linux) Unmount(target string, flags int) error { return unix.Unmount(target, flags) }

func (Linux) LoadModule(f *os.File, params string, flags int) error {
	return unix.FinitModule(int(f.Fd()), params, flags)
}

// LoopbackUp brings lo up: nothing else would, and the router's own
// services talk over it.
func (Linux) LoopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("lo: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("set lo up: %w", err)
	}
	return nil
}

// OpenWatchdog opens a watchdog device, which arms it.
func (Linux) OpenWatchdog(device string) (Watchdog, error) {
	d, err := watchdog.Open(device)
	if err != nil {
		return nil, err // not a nil *Device in an interface
	}
	return d, nil
}

func (Linux) Kill(pid int, sig syscall.Signal) error { return unix.Kill(pid, sig) }
func (Linux) Sync()                                  { unix.Sync() }
func (Linux) Reboot(cmd int) error                   { return unix.Reboot(cmd) }

// Signals turns the signals that ask PID 1 to end (Request.Signal) into
// requests.
func Signals() <-chan Request {
	sigs := make(chan os.Signal, 4)
	for _, r := range requests {
		signal.Notify(sigs, r.Signal())
	}
	reqs := make(chan Request, 4)
	go func() {
		for s := range sigs {
			if r, ok := RequestFor(s); ok {
				reqs <- r
			}
		}
	}()
	return reqs
}

// Reaper starts processes and reaps every child of this process (as PID 1:
// every orphan too) on SIGCHLD, reporting each on Exits. There is one in
// a process, and nothing else in it may wait for a child except under
// Hold.
type Reaper struct {
	mu    sync.Mutex // held while reaping, and by Hold
	exits chan Exit
	kick  chan struct{}
}

// NewReaper starts reaping, until ctx ends.
func NewReaper(ctx context.Context) *Reaper {
	r := &Reaper{exits: make(chan Exit, 64), kick: make(chan struct{}, 1)}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGCHLD)
	go func() {
		defer signal.Stop(sigs)
		for {
			select {
			case <-sigs:
			case <-r.kick:
			case <-ctx.Done():
				return
			}
			// Sent after the lock is let go: a full channel must not
			// block Hold.
			for _, e := range r.reap() {
				r.exits <- e
			}
		}
	}()
	r.kick <- struct{}{} // children that ended before Notify
	return r
}

func (r *Reaper) reap() []Exit {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Exit
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return out
		}
		out = append(out, Exit{Pid: pid, Status: describe(ws)})
	}
}

func describe(ws unix.WaitStatus) string {
	if ws.Signaled() {
		return "signal: " + ws.Signal().String()
	}
	return fmt.Sprintf("exit status %d", ws.ExitStatus())
}

func (r *Reaper) Exits() <-chan Exit { return r.exits }

// Start starts argv[0] with stdin, stdout and stderr this process's, and
// files after them. It is never waited for but reaped.
func (r *Reaper) Start(argv, env []string, files []*os.File) (int, error) {
	p, err := os.StartProcess(argv[0], argv, &os.ProcAttr{Env: env,
		Files: append([]*os.File{os.Stdin, os.Stdout, os.Stderr}, files...)})
	if err != nil {
		return 0, err
	}
	pid := p.Pid
	p.Release()
	return pid, nil
}

// Running reports whether this process has a child, ended or not.
func (r *Reaper) Running() bool {
	var info unix.Siginfo
	return unix.Waitid(unix.P_ALL, 0, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil) == nil
}

// Hold stops reaping until release is called.
func (r *Reaper) Hold() (release func()) {
	r.mu.Lock()
	return func() {
		r.mu.Unlock()
		select {
		case r.kick <- struct{}{}: // what ended meanwhile
		default:
		}
	}
}
