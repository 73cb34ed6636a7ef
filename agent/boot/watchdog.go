package boot

import (
	"context"
	"errors"
	"time"

	"github.com/roostrouter/roost/agent/health"
	"github.com/roostrouter/roost/updater/watchdog"
)

// Watchdog is an open watchdog device: a *watchdog.Device as PID 1, a
// fake in unit tests.
type Watchdog interface {
	Feed() error
	SetTimeout(time.Duration) (time.Duration, error)
	Timeout() (time.Duration, error)
}

// healthSettle is how long the agent's health must have failed before the
// ratchet hears of it. The health file's age is read on the wall clock,
// which a router without a battery-backed clock sets forward by years
// when NTP first answers: a file the agent wrote a second before looks
// stale until it writes the next, within health.Every.
const healthSettle = 2 * health.Every

// guard is the board's watchdog as init holds it: open from the boot
// until the machine resets or kexecs, fed by a ratchet.
type guard struct {
	dev    Watchdog
	device string
	stop   context.CancelFunc
	done   chan error // the ratchet's end
}

// armWatchdog opens the board's watchdog, if it has one, sets its timeout
// and feeds it from a ratchet until ctx ends or stopRatchet: during the
// board's grace after the kernel started, then while the agent says the
// router is healthy. A watchdog that does not open is logged loudly and
// the boot goes on without it.
func (in *Init) armWatchdog(ctx context.Context) {
	w := in.board.Watchdog
	if w == nil {
		return
	}
	dev, err := in.opts.Kernel.OpenWatchdog(in.path(w.Device))
	if err != nil {
		in.log.Error("WATCHDOG NOT ARMED: booting without it", "device", w.Device, "err", err)
		return
	}
	timeout, err := dev.SetTimeout(w.Timeout())
	if err != nil {
		in.log.Warn("watchdog timeout not set: the driver's stays", "device", w.Device, "want", w.Timeout(), "err", err)
		timeout, err = dev.Timeout()
	}
	if err != nil || timeout <= 0 {
		timeout = w.Timeout() // feeding for it is the best guess
	}
	booted, err := watchdog.Booted(in.opts.Clock, in.path("/proc/uptime"))
	if err != nil {
		in.log.Warn("no uptime: the watchdog's grace counts from now", "err", err)
		booted = in.opts.Clock.Now()
	}
	cfg := watchdog.RatchetConfig{Booted: booted, Grace: w.Grace(), Every: timeout / 3, Log: in.log,
		Healthy: settled(in.opts.Clock, healthSettle, func() error { return health.Check(in.opts.Root, in.opts.Clock.Now()) })}
	r, err := watchdog.NewRatchet(dev, in.opts.Clock, cfg)
	if err != nil { // not with a board's validated timeout and grace
		in.log.Error("WATCHDOG NOT FED: it resets the router", "device", w.Device, "err", err)
		return
	}
	ctx, stop := context.WithCancel(ctx)
	g := &guard{dev: dev, device: w.Device, stop: stop, done: make(chan error, 1)}
	in.wd = g
	in.log.Info("watchdog armed", "device", w.Device, "timeout", timeout, "grace", w.Grace(),
		"graceLeft", max(booted.Add(w.Grace()).Sub(in.opts.Clock.Now()), 0).Round(time.Second), "every", cfg.Every)
	go func() { g.done <- r.Run(ctx) }()
}

// stopRatchet stops feeding the watchdog, which stays armed. It reports
// whether the ratchet was still feeding it (it had not found the router
// unhealthy). Safe to call when none runs, and twice.
func (in *Init) stopRatchet() (feeding bool) {
	if in.wd == nil || in.wd.stop == nil {
		return false
	}
	in.wd.stop()
	in.wd.stop = nil
	return !errors.Is(<-in.wd.done, watchdog.ErrUnhealthy)
}

// lastFeed feeds the watchdog before kexec, so that the next kernel has
// its whole timeout to come up (nowayout keeps it counting): unless the
// ratchet had stopped feeding it, whose verdict stands.
func (in *Init) lastFeed(feeding bool) {
	switch {
	case in.wd == nil:
	case !feeding:
		in.log.Warn("the watchdog is no longer fed: it resets the router while the next kernel boots", "device", in.wd.device)
	default:
		if err := in.wd.dev.Feed(); err != nil {
			in.log.Warn("watchdog: the last feed failed", "device", in.wd.device, "err", err)
		}
	}
}

// settled reports check's problem only once it has lasted settle on
// clock: a problem that clears by then was a hiccup.
func settled(clock Clock, settle time.Duration, check func() error) func() error {
	var since time.Time // of the problem; zero while there is none
	return func() error {
		err := check()
		now := clock.Now()
		switch {
		case err == nil:
			since = time.Time{}
			return nil
		case since.IsZero():
			since = now
		}
		if now.Sub(since) < settle {
			return nil
		}
		return err
	}
}
