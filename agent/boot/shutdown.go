package boot

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Request is what init is asked to end with.
type Request int

const (
	Reboot Request = iota + 1
	PowerOff
	Halt
	// Kexec boots the kernel that the agent loaded (updater/kexec), with
	// the watchdog left armed; a normal reboot if none is loaded.
	Kexec
)

// requests are every Request.
var requests = []Request{Reboot, PowerOff, Halt, Kexec}

func (r Request) String() string {
	switch r {
	case Reboot:
		return "reboot"
	case PowerOff:
		return "poweroff"
	case Halt:
		return "halt"
	case Kexec:
		return "kexec"
	}
	return "request " + strconv.Itoa(int(r))
}

// Signal is the signal that asks init for r: busybox init's convention,
// which Liminix and OpenWrt's tools follow, and for Kexec systemd's
// (SIGRTMIN+6, 40 on every Linux architecture).
func (r Request) Signal() syscall.Signal {
	switch r {
	case PowerOff:
		return syscall.SIGUSR2
	case Halt:
		return syscall.SIGUSR1
	case Kexec:
		return syscall.Signal(40)
	}
	return syscall.SIGTERM
}

// RequestFor is the request a signal to init makes.
func RequestFor(sig os.Signal) (Request, bool) {
	for _, r := range requests {
		if sig == r.Signal() {
			return r, true
		}
	}
	return 0, false
}

// cmd is r's reboot(2) command. The kernel reads it as 32 unsigned bits;
// unix.Reboot takes an int, which on 32-bit boards cannot hold HALT's
// constant, so it goes as an int32 of the same bits.
func (r Request) cmd() int {
	c := uint32(unix.LINUX_REBOOT_CMD_RESTART)
	switch r {
	case PowerOff:
		c = unix.LINUX_REBOOT_CMD_POWER_OFF
	case Halt:
		c = unix.LINUX_REBOOT_CMD_HALT
	case Kexec:
		c = unix.LINUX_REBOOT_CMD_KEXEC
	}
	return int(int32(c))
}

// MarkerFile holds init's pid, below root. roostd reboot and poweroff
// signal only that process: without it, PID 1 is another init (the lab's
// host), which the same signals would stop.
func MarkerFile(root string) string { return filepath.Join(root, "run/roostd-init.pid") }

// Ask asks roostd init, as its marker below root names it, for r.
func Ask(root string, r Request, kill func(pid int, sig syscall.Signal) error) error {
	b, err := os.ReadFile(MarkerFile(root))
	if err != nil {
		return fmt.Errorf("roostd init does not run here (%w): use this machine's own %s", err, r)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid < 1 {
		return fmt.Errorf("%s holds %q, not roostd init's pid", MarkerFile(root), b)
	}
	if err := kill(pid, r.Signal()); err != nil {
		return fmt.Errorf("ask roostd init (pid %d) to %s: %w", pid, r, err)
	}
	return nil
}

// shutdown stops every process, syncs, unmounts and does what r asks.
// The watchdog stays armed whatever r is: a reboot or power off clears it,
// the next kernel of a kexec inherits it (that is what catches a trial
// kernel that hangs), and a halted router is reset by it.
func (in *Init) shutdown(r Request) error {
	in.log.Info("shutting down", "for", r.String())
	in.stopAgent()
	in.stopAll()
	in.opts.Kernel.Sync()
	feeding := in.stopRatchet() // before /run, which holds the health file, goes
	in.unmountAll()
	in.opts.Kernel.Sync()
	if r == Kexec {
		in.lastFeed(feeding)
		in.log.Info("system down: kexec")
		err := in.opts.Kernel.Reboot(r.cmd())
		if err == nil {
			return nil
		}
		in.log.Error("KEXEC FAILED: rebooting instead", "err", err)
		r = Reboot
	}
	in.log.Info("system down: " + r.String())
	if err := in.opts.Kernel.Reboot(r.cmd()); err != nil {
		return fmt.Errorf("%s: %w", r, err)
	}
	return nil
}

// stopAgent stops the agent: SIGTERM, and SIGKILL if it is still there
// after StopTimeout.
func (in *Init) stopAgent() {
	if in.agent == 0 {
		return
	}
	pid := in.agent
	in.agent = 0
	in.opts.Kernel.Kill(pid, syscall.SIGTERM)
	if in.waitExit(pid, StopTimeout) {
		in.log.Info("agent stopped", "pid", pid)
		return
	}
	in.log.Warn("the agent did not stop in time: killing it", "pid", pid, "after", StopTimeout)
	in.opts.Kernel.Kill(pid, syscall.SIGKILL)
	in.waitExit(pid, KillGrace)
}

// waitExit waits up to d for pid to end.
func (in *Init) waitExit(pid int, d time.Duration) bool {
	timeout := in.opts.Clock.After(d)
	for {
		select {
		case e := <-in.opts.Procs.Exits():
			if e.Pid == pid {
				return true
			}
		case <-timeout:
			return false
		}
	}
}

// stopAll ends the processes the agent left (pppd, orphans): SIGTERM,
// then SIGKILL to what is still there after KillGrace.
func (in *Init) stopAll() {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		if !in.opts.Procs.Running() {
			return
		}
		in.log.Info("stopping every process", "signal", sig.String())
		in.opts.Kernel.Kill(-1, sig)
		deadline := in.opts.Clock.Now().Add(KillGrace)
		for in.opts.Procs.Running() && in.opts.Clock.Now().Before(deadline) {
			select {
			case <-in.opts.Procs.Exits():
			case <-in.opts.Clock.After(50 * time.Millisecond):
			}
		}
	}
}
