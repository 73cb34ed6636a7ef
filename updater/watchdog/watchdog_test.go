package watchdog

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestCommands checks the computed ioctl numbers against the kernel
// headers' values for each architecture (as golang.org/x/sys/unix
// generates them from include/uapi/linux/watchdog.h per architecture).
func TestCommands(t *testing.T) {
	generic := commands{getSupport: 0x80285700, getStatus: 0x80045701, getBootStatus: 0x80045702, setOptions: 0x80045704,
		keepAlive: 0x80045705, setTimeout: 0xc0045706, getTimeout: 0x80045707, getTimeLeft: 0x8004570a}
	mips := commands{getSupport: 0x40285700, getStatus: 0x40045701, getBootStatus: 0x40045702, setOptions: 0x40045704,
		keepAlive: 0x40045705, setTimeout: 0xc0045706, getTimeout: 0x40045707, getTimeLeft: 0x4004570a}
	for _, tc := range []struct {
		goarch string
		want   commands
	}{
		{"amd64", generic}, {"386", generic}, {"arm", generic}, {"arm64", generic}, {"riscv64", generic},
		{"mips", mips}, {"mipsle", mips}, {"mips64", mips}, {"mips64le", mips}, {"ppc64le", mips},
	} {
		if got := commandsFor(tc.goarch); got != tc.want {
			t.Errorf("%s: %#x, want %#x", tc.goarch, got, tc.want)
		}
	}
	// And this architecture's, straight from x/sys/unix.
	got := commandsFor(runtime.GOARCH)
	want := commands{unix.WDIOC_GETSUPPORT, unix.WDIOC_GETSTATUS, unix.WDIOC_GETBOOTSTATUS, unix.WDIOC_SETOPTIONS,
		unix.WDIOC_KEEPALIVE, unix.WDIOC_SETTIMEOUT, unix.WDIOC_GETTIMEOUT, unix.WDIOC_GETTIMELEFT}
	if got != want {
		t.Errorf("%s: %#x, x/sys/unix has %#x", runtime.GOARCH, got, want)
	}
}

func TestOpenMissing(t *testing.T) {
	_, err := Open(filepath.Join(t.TempDir(), "watchdog"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Open of a missing device: %v", err)
	}
}

// fakeClock is a clock that moves only when the test says so.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []fakeWaiter
	added   chan struct{}
}

type fakeWaiter struct {
	at time.Time
	ch chan time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), added: make(chan struct{}, 1000)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	c.waiters = append(c.waiters, fakeWaiter{c.now.Add(d), ch})
	c.added <- struct{}{}
	return ch
}

// step waits until the ratchet sleeps, then moves the clock to its wake-up.
func (c *fakeClock) step(t *testing.T) {
	t.Helper()
	select {
	case <-c.added:
	case <-time.After(5 * time.Second):
		t.Fatal("the ratchet never went to sleep")
	}
	c.fire()
}

// fire wakes the first sleeper, moving the clock to its time.
func (c *fakeClock) fire() {
	c.mu.Lock()
	defer c.mu.Unlock()
	w := c.waiters[0]
	c.waiters = c.waiters[1:]
	c.now = w.at
	w.ch <- w.at
}

// fakeDevice records when it was fed.
type fakeDevice struct {
	clock *fakeClock
	mu    sync.Mutex
	fed   []time.Time
	fail  bool
}

func (d *fakeDevice) Feed() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fail {
		return errors.New("EIO")
	}
	d.fed = append(d.fed, d.clock.Now())
	return nil
}

func (d *fakeDevice) feeds() []time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]time.Time(nil), d.fed...)
}

func TestRatchet(t *testing.T) {
	const every, grace = 5 * time.Second, 30 * time.Second
	tests := []struct {
		name string
		// healthy is the health at t since boot; confirmedAt < 0: never.
		healthy     func(since time.Duration) error
		trial       bool
		confirmedAt time.Duration
		steps       int
		lastFeed    time.Duration // -1: still feeding after steps
		reason      string
	}{
		{name: "unhealthy from the start: fed through the grace only",
			healthy: func(time.Duration) error { return errors.New("agent not started") }, steps: 20,
			lastFeed: 27 * time.Second, reason: "agent not started"},
		{name: "healthy: fed on",
			healthy: func(time.Duration) error { return nil }, steps: 40, lastFeed: -1},
		{name: "agent loop stalls at 62 s: fed until then, never again",
			healthy: func(s time.Duration) error {
				if s >= 62*time.Second && s < 80*time.Second {
					return errors.New("agent loop stalled")
				}
				return nil
			}, steps: 30, lastFeed: 57 * time.Second, reason: "agent loop stalled"},
		{name: "trial confirmed at 40 s: fed past the deadline",
			healthy: func(time.Duration) error { return nil }, trial: true, confirmedAt: 40 * time.Second, steps: 40, lastFeed: -1},
		{name: "trial never confirmed: fed until the deadline (90 s)",
			healthy: func(time.Duration) error { return nil }, trial: true, confirmedAt: -1, steps: 40,
			lastFeed: 87 * time.Second, reason: "not confirmed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock()
			booted := clock.Now().Add(-2 * time.Second) // the agent starts 2 s into the boot, and feeds at 2, 7, 12, … s
			dev := &fakeDevice{clock: clock}
			since := func() time.Duration { return clock.Now().Sub(booted) }
			health := func() error { return tc.healthy(since()) }
			if tc.trial {
				confirmed := func() bool { return tc.confirmedAt >= 0 && since() >= tc.confirmedAt }
				health = All(health, Trial(clock, booted.Add(90*time.Second), confirmed))
			}
			r, err := NewRatchet(dev, clock, RatchetConfig{Booted: booted, Grace: grace, Every: every, Healthy: health, Log: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- r.Run(ctx) }()
			var runErr error
			stopped := false
			for i := 0; i < tc.steps && !stopped; i++ {
				select {
				case <-clock.added:
					clock.fire()
				case runErr = <-done:
					stopped = true
				case <-time.After(5 * time.Second):
					t.Fatal("the ratchet neither slept nor returned")
				}
			}
			cancel()
			if !stopped {
				runErr = <-done
			}
			fed := dev.feeds()
			last := fed[len(fed)-1].Sub(booted)
			t.Logf("%d feeds, the last %s after boot; Run: %v", len(fed), last, runErr)
			if tc.lastFeed < 0 {
				if !errors.Is(runErr, context.Canceled) {
					t.Fatalf("Run: %v, want it feeding until cancelled", runErr)
				}
				return
			}
			if !errors.Is(runErr, ErrUnhealthy) || !strings.Contains(runErr.Error(), tc.reason) {
				t.Fatalf("Run: %v, want ErrUnhealthy naming %q", runErr, tc.reason)
			}
			if last != tc.lastFeed {
				t.Fatalf("last feed %s after boot, want %s", last, tc.lastFeed)
			}
		})
	}
}

func TestRatchetFeedErrorsGoOn(t *testing.T) {
	clock := newFakeClock()
	dev := &fakeDevice{clock: clock, fail: true}
	r, err := NewRatchet(dev, clock, RatchetConfig{Booted: clock.Now(), Grace: time.Minute, Every: time.Second, Healthy: func() error { return nil }, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	clock.step(t)
	clock.step(t)
	dev.mu.Lock()
	dev.fail = false
	dev.mu.Unlock()
	clock.step(t)
	clock.step(t)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v", err)
	}
	if n := len(dev.feeds()); n < 2 {
		t.Fatalf("%d feeds after the device recovered, want 2 or more", n)
	}
}

func TestNewRatchetRefuses(t *testing.T) {
	clock := newFakeClock()
	ok := func() error { return nil }
	for _, c := range []RatchetConfig{{Every: 0, Healthy: ok}, {Every: time.Second, Grace: -1, Healthy: ok}, {Every: time.Second}} {
		if _, err := NewRatchet(&fakeDevice{clock: clock}, clock, c); err == nil {
			t.Errorf("NewRatchet(%+v) took it", c)
		}
	}
	if _, err := NewRatchet(nil, clock, RatchetConfig{Every: time.Second, Healthy: ok}); err == nil {
		t.Error("NewRatchet without a device took it")
	}
}

func TestBooted(t *testing.T) {
	clock := newFakeClock()
	f := filepath.Join(t.TempDir(), "uptime")
	if err := os.WriteFile(f, []byte("123.45 456.78\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := Booted(clock, f)
	if err != nil || clock.Now().Sub(b) != 123450*time.Millisecond {
		t.Fatalf("Booted: %v %v", clock.Now().Sub(b), err)
	}
	if err := os.WriteFile(f, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Booted(clock, f); err == nil {
		t.Fatal("Booted took garbage")
	}
	if _, err := Booted(SystemClock{}, "/proc/uptime"); err != nil {
		t.Fatal(err)
	}
}
