package boot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/roostrouter/roost/updater/activate"
	"github.com/roostrouter/roost/updater/generations"
	"github.com/roostrouter/roost/updater/store"
	"github.com/roostrouter/roost/updater/storepath"
)

// agentRun is one run of the agent.
type agentRun struct {
	pid     int
	started time.Time
	ready   <-chan struct{} // closed once it says it serves (--notify-fd)
}

// supervise runs the agent until a request comes (or ctx ends): it
// restarts it with backoff when it exits, and rolls back an activation
// whose agent keeps exiting, or, on the boot that tries it, reboots out
// of a trial whose agent keeps exiting.
func (in *Init) supervise(ctx context.Context) Request {
	var exits []time.Time // the agent's, within CrashWindow
	var delay time.Duration
	for {
		ran := time.Duration(0)
		run, err := in.startAgent()
		if err != nil {
			in.log.Error("AGENT NOT STARTED", "err", err)
		} else {
			if req := in.watch(ctx, run); req != 0 || ctx.Err() != nil {
				return req
			}
			ran = in.opts.Clock.Now().Sub(run.started)
		}
		now := in.opts.Clock.Now()
		exits = append(recent(exits, now), now)
		delay = nextDelay(delay, ran)
		if crashLooping(exits, now) && in.trialPending() {
			// The previous agent on the trial's kernel is no way back:
			// the boot default is, and the next boot's agent records
			// the trial as failed.
			in.log.Error("TRIAL FAILED: its agent keeps exiting: rebooting into the boot default", "generation", in.trial, "exits", len(exits))
			return Reboot
		}
		if crashLooping(exits, now) && in.rollBack(ctx, len(exits)) {
			exits, delay = nil, 0 // the previous system's agent, at once
		}
		if delay > 0 {
			in.log.Info("restarting the agent", "in", delay)
		}
		if req := in.wait(ctx, delay); req != 0 || ctx.Err() != nil {
			return req
		}
	}
}

// watch waits for the agent to end, or a request. It returns the request,
// 0 once the agent ended.
func (in *Init) watch(ctx context.Context, run *agentRun) Request {
	ready := run.ready
	for {
		select {
		case <-ready:
			// MemAvailable then: what a small router has left to run in,
			// for its owner at the console.
			in.log.Info("agent ready", "pid", run.pid, "after", in.opts.Clock.Now().Sub(run.started).Round(time.Millisecond),
				"memAvailableKiB", in.memAvailable())
			ready = nil
		case e := <-in.opts.Procs.Exits():
			if e.Pid != run.pid {
				continue // an orphan, reaped
			}
			in.agent = 0
			in.log.Error("AGENT EXITED", "pid", e.Pid, "status", e.Status, "ran", in.opts.Clock.Now().Sub(run.started).Round(time.Millisecond))
			return 0
		case r := <-in.opts.Requests:
			return r
		case <-ctx.Done():
			return 0
		}
	}
}

// wait lets d pass, reaping, unless a request or the end of ctx comes
// first: it returns the request, 0 if none came.
func (in *Init) wait(ctx context.Context, d time.Duration) Request {
	timer := in.opts.Clock.After(d)
	for {
		select {
		case <-timer:
			return 0
		case <-in.opts.Procs.Exits():
		case r := <-in.opts.Requests:
			return r
		case <-ctx.Done():
			return 0
		}
	}
}

// recent drops the exits older than CrashWindow.
func recent(exits []time.Time, now time.Time) []time.Time {
	for len(exits) > 0 && now.Sub(exits[0]) >= CrashWindow {
		exits = exits[1:]
	}
	return exits
}

// crashLooping says whether exits (oldest first) are CrashLimit or more
// within CrashWindow of now.
func crashLooping(exits []time.Time, now time.Time) bool {
	return len(recent(exits, now)) >= CrashLimit
}

// nextDelay is the backoff before a restart: at once after a run of
// StableAfter or more, else MinDelay doubling up to MaxDelay.
func nextDelay(prev, ran time.Duration) time.Duration {
	switch {
	case ran >= StableAfter:
		return 0
	case prev == 0:
		return MinDelay
	}
	return min(2*prev, MaxDelay)
}

// startAgent runs the current system's agent.
func (in *Init) startAgent() (*agentRun, error) {
	sys, err := in.runningSystem()
	if err != nil {
		return nil, err
	}
	bin := filepath.Join(sys.String(), "bin/roostd")
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer w.Close() // the agent has its own
	argv := []string{bin, "run", "--root", in.opts.Root, "--state", in.path(stateDir), "--notify-fd", "3"}
	env := []string{"PATH=/run/current-system/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HOME=/"}
	started := in.opts.Clock.Now()
	pid, err := in.opts.Procs.Start(argv, env, []*os.File{w})
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	in.agent = pid
	in.log.Info("agent started", "pid", pid, "bin", bin)
	ready := make(chan struct{})
	go func() {
		defer r.Close()
		if n, _ := r.Read(make([]byte, 1)); n > 0 {
			close(ready)
		}
		io.Copy(io.Discard, r)
	}()
	return &agentRun{pid: pid, started: started, ready: ready}, nil
}

// runningSystem is /run/current-system, else /run/booted-system: a
// rollback to no system leaves only the booted one's agent to run.
func (in *Init) runningSystem() (storepath.Path, error) {
	var errs []error
	for _, link := range []string{activate.CurrentLink(in.opts.Root), activate.BootedLink(in.opts.Root)} {
		target, err := os.Readlink(link)
		if err == nil {
			var sys storepath.Path
			if sys, err = storepath.FromLink(target); err == nil {
				return sys, nil
			}
		}
		errs = append(errs, err)
	}
	return "", fmt.Errorf("no system to run the agent of: %w", errors.Join(errs...))
}

// trialPending says whether this boot is a trial whose activation awaits
// confirmation. A trial boot whose trial was confirmed is the default's
// boot: a later activation on it rolls back as any other.
func (in *Init) trialPending() bool {
	if in.trial == 0 {
		return false
	}
	p, err := activate.ReadPending(in.path(stateDir))
	return err == nil && p.Trial != nil
}

// rollBack rolls back the activation awaiting confirmation, if there is
// one, because its agent exited n times in a row. It reports whether it
// did.
func (in *Init) rollBack(ctx context.Context, n int) bool {
	state := in.path(stateDir)
	if _, err := activate.ReadPending(state); err != nil {
		return false
	}
	// The previous system's activate script runs as init's child: init
	// must not reap it under os/exec's feet.
	release := in.opts.Procs.Hold()
	defer release()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	s := store.New(in.opts.Root, store.Options{Log: in.log})
	a := &activate.Activator{Store: s, Profile: generations.System(in.opts.Root, nil), State: state, Log: in.log, Now: in.opts.Clock.Now,
		Lock: func(ctx context.Context) (*store.Txn, error) {
			return s.Lock(ctx, "roostd init", func(holder string) { in.log.Info("waiting for the store lock", "holder", holder) })
		},
		// A rollback that fails is retried by the next agent's Recover,
		// not by a timer in init, which the agent would race.
		RetryRollback: 100 * 365 * 24 * time.Hour,
	}
	why := fmt.Errorf("its agent exited %d times within %s", n, CrashWindow)
	rolled, err := a.RollBackPending(ctx, why)
	if err != nil {
		in.log.Error("ROLLBACK FAILED: the agent will retry it", "err", err)
		return false
	}
	if rolled {
		in.log.Error("ROLLED BACK: the new system's agent kept exiting before its activation was confirmed", "exits", n)
	}
	return rolled
}

// memAvailable is /proc/meminfo's MemAvailable in KiB, -1 if unknown.
func (in *Init) memAvailable() int {
	b, err := os.ReadFile(in.path("/proc/meminfo"))
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "MemAvailable:"); ok {
			if n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB")); err == nil {
				return n
			}
		}
	}
	return -1
}
