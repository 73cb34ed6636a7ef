package watchdog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"
)

// Clock is the time the ratchet runs on.
type Clock interface {
	Now() time.Time
	After(time.Duration) <-chan time.Time
}

// SystemClock is the real clock.
type SystemClock struct{}

func (SystemClock) Now() time.Time                         { return time.Now() }
func (SystemClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Feeder is what a Ratchet feeds: a *Device.
type Feeder interface{ Feed() error }

// ErrUnhealthy is what Run returns when it stopped feeding: the watchdog
// resets the machine once its timeout passes.
var ErrUnhealthy = errors.New("watchdog no longer fed")

// RatchetConfig says when a Ratchet feeds.
type RatchetConfig struct {
	// Booted is when this boot began; the grace counts from it, so that a
	// kernel or init that hangs before the agent starts is not fed for
	// long (see Booted).
	Booted time.Time
	// Grace: until Booted+Grace the watchdog is fed whatever the health.
	Grace time.Duration
	// Every is how often it is fed: well under the timeout (a third).
	Every time.Duration
	// Healthy says, after the grace, whether the router still deserves
	// to be fed: nil while healthy, else why not. It must itself tolerate
	// brief hiccups (e.g. "the agent loop ticked in the last 30 s").
	Healthy func() error
	Log     *slog.Logger
}

// Ratchet feeds a watchdog while the router is healthy: always during the
// grace after boot, then only while Healthy says so. It turns one way:
// once Healthy has failed after the grace, it never feeds again.
type Ratchet struct {
	dev   Feeder
	clock Clock
	c     RatchetConfig
}

// NewRatchet checks c and makes a Ratchet that feeds dev on clock.
func NewRatchet(dev Feeder, clock Clock, c RatchetConfig) (*Ratchet, error) {
	switch {
	case dev == nil || clock == nil:
		return nil, errors.New("watchdog ratchet: no device or clock")
	case c.Every <= 0 || c.Grace < 0:
		return nil, fmt.Errorf("watchdog ratchet: feeding every %s with a grace of %s: want both positive", c.Every, c.Grace)
	case c.Healthy == nil:
		return nil, errors.New("watchdog ratchet: no health check")
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	return &Ratchet{dev: dev, clock: clock, c: c}, nil
}

// Run feeds until the health check fails after the grace (it returns an
// error wrapping ErrUnhealthy and the check's) or ctx ends (ctx.Err()).
// Either way the watchdog stays armed: disarming is the caller's call.
func (r *Ratchet) Run(ctx context.Context) error {
	graceEnd := r.c.Booted.Add(r.c.Grace)
	failing := false
	for {
		now := r.clock.Now()
		if !now.Before(graceEnd) {
			if err := r.c.Healthy(); err != nil {
				r.c.Log.Error("watchdog: no longer fed, the machine resets when it runs out", "reason", err, "sinceBoot", now.Sub(r.c.Booted).Round(time.Millisecond))
				return fmt.Errorf("%w: %w", ErrUnhealthy, err)
			}
		}
		if err := r.dev.Feed(); err != nil {
			if !failing {
				r.c.Log.Warn("watchdog: feeding failed", "err", err)
			}
			failing = true
		} else {
			failing = false
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-r.clock.After(r.c.Every):
		}
	}
}

// Trial is a health check for a trial boot: healthy while confirmed says
// so, or before deadline; unconfirmed after it.
func Trial(clock Clock, deadline time.Time, confirmed func() bool) func() error {
	return func() error {
		if confirmed() || clock.Now().Before(deadline) {
			return nil
		}
		return fmt.Errorf("trial boot not confirmed by %s", deadline.Format(time.RFC3339))
	}
}

// All is healthy while every check is.
func All(checks ...func() error) func() error {
	return func() error {
		for _, c := range checks {
			if err := c(); err != nil {
				return err
			}
		}
		return nil
	}
}

// Booted is when this boot began, on clock: now less the uptime that
// uptimeFile (/proc/uptime) gives.
func Booted(clock Clock, uptimeFile string) (time.Time, error) {
	b, err := os.ReadFile(uptimeFile)
	if err != nil {
		return time.Time{}, err
	}
	up, err := strconv.ParseFloat(strings.Fields(string(b) + " x")[0], 64)
	if err != nil || up < 0 {
		return time.Time{}, fmt.Errorf("%s: %q is no uptime", uptimeFile, b)
	}
	return clock.Now().Add(-time.Duration(up * float64(time.Second))), nil
}
