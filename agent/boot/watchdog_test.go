package boot

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/roostrouter/roost/agent/health"
	"github.com/roostrouter/roost/boards"
	"github.com/roostrouter/roost/updater/activate"
	"github.com/roostrouter/roost/updater/generations"
)

// writeHealth is the agent saying how the router is, at a time of the
// fake clock's.
func writeHealth(root string, problem error, at time.Time) {
	health.Write(root, problem)
	os.Chtimes(health.File(root), at, at)
}

// TestWatchdogRatchet: init arms the board's watchdog with its timeout
// and feeds it every third of that: whatever the health during the grace
// (counted from the kernel's start, /proc/uptime), then while the agent
// says the router is healthy, a hiccup of the health file's (a wall clock
// set forward) forgiven. Once the health has failed after the grace, it
// never feeds again.
func TestWatchdogRatchet(t *testing.T) {
	x86, err := boards.Lookup("qemu-x86_64")
	if err != nil {
		t.Fatal(err)
	}
	w := x86.Watchdog
	every := w.Timeout() / 3
	for _, tc := range []struct {
		name string
		// agent is what the agent writes at the feed after n, the
		// feed's time; nil writes nothing.
		agent func(root string, n int, now time.Time)
		// feeding: the ratchet still feeds after 5 graces.
		feeding bool
		reason  string // in the log, once it stopped
	}{
		{name: "the agent never says it runs: fed during the grace only", reason: "the agent never said it runs"},
		{name: "healthy", feeding: true, agent: func(root string, n int, now time.Time) { writeHealth(root, nil, now) }},
		{name: "unhealthy after the grace", reason: "trial of generation 2 not confirmed by 10:00:00", agent: func(root string, n int, now time.Time) {
			var problem error
			if n > 20 {
				problem = errors.New("trial of generation 2 not confirmed by 10:00:00")
			}
			writeHealth(root, problem, now)
		}},
		{name: "the wall clock set forward a year, once", feeding: true, agent: func(root string, n int, now time.Time) {
			if n == 20 {
				now = now.Add(-365 * 24 * time.Hour)
			}
			writeHealth(root, nil, now)
		}},
		{name: "stale for good after the grace", reason: "the agent has not said it runs for", agent: func(root string, n int, now time.Time) {
			if n < 20 {
				writeHealth(root, nil, now)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			write(t, root, "proc/uptime", "30.50 12.00\n", 0o444)
			clock := &fakeClock{now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
			booted := clock.Now().Add(-30500 * time.Millisecond)
			sys := newFakeSys(root, clock)
			n := 0
			sys.wd = &fakeWatchdog{sys: sys, onFeed: func(now time.Time) {
				n++ // the ratchet's goroutine only
				if tc.agent != nil {
					tc.agent(root, n, now)
				}
			}}
			log := &syncBuffer{}
			in := New(Options{Root: root, Log: slog.New(slog.NewTextHandler(log, nil)), Kernel: sys, Clock: clock})
			in.board = x86
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			in.armWatchdog(ctx)
			waitLog(t, log, "watchdog armed")
			if got, _ := sys.wd.Timeout(); got != w.Timeout() {
				t.Fatalf("timeout set to %s, want %s", got, w.Timeout())
			}
			graceEnd := booted.Add(w.Grace())
			if tc.feeding {
				waitFed(t, sys.wd, booted.Add(5*w.Grace()))
			} else {
				waitLog(t, log, "no longer fed")
			}
			if feeding := in.stopRatchet(); feeding != tc.feeding {
				t.Fatalf("feeding %v at the end, want %v; log:\n%s", feeding, tc.feeding, log.String())
			}
			feeds := sys.wd.fed()
			for i, at := range feeds {
				if i > 0 && at.Sub(feeds[i-1]) != every {
					t.Fatalf("feed %d came %s after the one before, want %s", i, at.Sub(feeds[i-1]), every)
				}
			}
			if last := feeds[len(feeds)-1]; last.Before(graceEnd.Add(-every)) {
				t.Fatalf("the last feed at %s, before the grace ended (%s)", last.Sub(booted), w.Grace())
			}
			if tc.reason != "" && !strings.Contains(log.String(), tc.reason) {
				t.Fatalf("the log does not say why (%q):\n%s", tc.reason, log.String())
			}
			if left := "graceLeft=" + (w.Grace() - 30500*time.Millisecond).Round(time.Second).String(); !strings.Contains(log.String(), left) { // the grace less 30.5 s of uptime
				t.Errorf("the log does not say the grace left:\n%s", log.String())
			}
		})
	}
}

func waitFed(t *testing.T, wd *fakeWatchdog, until time.Time) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if f := wd.fed(); len(f) > 0 && !f[len(f)-1].Before(until) {
			return
		}
	}
	t.Fatalf("not fed until %s: %d feeds", until, len(wd.fed()))
}

// TestSettled: a problem counts once it has lasted the settling time.
func TestSettled(t *testing.T) {
	clock := &fakeClock{now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	var problem error
	check := settled(clock, 10*time.Second, func() error { return problem })
	bad := errors.New("stale")
	for i, step := range []struct {
		problem error
		advance time.Duration
		want    error
	}{
		{nil, 0, nil},
		{bad, 5 * time.Second, nil}, // since 0 s
		{nil, 5 * time.Second, nil}, // cleared
		{bad, 5 * time.Second, nil}, // since 0 s again
		{bad, 5 * time.Second, nil}, // 5 s
		{bad, 5 * time.Second, bad}, // 10 s
		{bad, time.Second, bad},     // and on
		{nil, 0, nil},
	} {
		problem = step.problem
		if got := check(); got != step.want {
			t.Fatalf("check %d: %v, want %v", i, got, step.want)
		}
		clock.mu.Lock()
		clock.now = clock.now.Add(step.advance)
		clock.mu.Unlock()
	}
}

// TestKexec: on a kexec request init shuts down as for a reboot, stops
// feeding the watchdog before it unmounts, feeds it once more right
// before reboot(KEXEC), and never disarms it. The trial's system loads
// its watchdog modules with the board's parameters after its own.
func TestKexec(t *testing.T) {
	r := newRouter(t, "console=ttyS0 roost.generation=2 roost.trial=1")
	write(t, r.root, "proc/uptime", "3.10 1.00\n", 0o444)
	old := r.system("old", false)
	r.generation(old)
	sys := r.system("new", false)
	r.generation(sys)
	if err := generations.System(r.root, nil).SwitchTo(1); err != nil {
		t.Fatal(err) // a trial's generation is not the default
	}
	write(t, r.root, filepath.Join(sys.String(), "modules"), "/lib/modules/watchdog.ko.zst\n/lib/modules/i6300esb.ko heartbeat=30\n", 0o444)
	write(t, r.root, "lib/modules/watchdog.ko.zst", "zst", 0o644)
	write(t, r.root, "lib/modules/i6300esb.ko", "elf", 0o644)
	r.sys.wd = &fakeWatchdog{sys: r.sys, onFeed: func(now time.Time) { writeHealth(r.root, nil, now) }}
	r.run()
	if s := r.sys.nextStart(t); !strings.HasPrefix(s.argv[0], sys.String()+"/") {
		t.Fatalf("started %s, want the trial's agent", s.argv[0])
	}
	waitLog(t, r.log, "agent ready")
	waitLog(t, r.log, "watchdog armed")
	r.request(Kexec)
	calls := r.sys.callsSince(0)
	for _, want := range []string{
		fmt.Sprintf(`module watchdog.ko.zst "stop_on_reboot=0" %d`, unix.MODULE_INIT_COMPRESSED_FILE),
		`module i6300esb.ko "heartbeat=30 nowayout=1" 0`,
		"watchdog open /dev/watchdog",
	} {
		if !slicesContain(calls, want) {
			t.Errorf("no %q in the calls %q", want, calls)
		}
	}
	var down []string // from the first unmount
	for i, c := range calls {
		if strings.HasPrefix(c, "umount ") {
			down = calls[i:]
			break
		}
	}
	wantEnd := []string{"umount /proc", "sync", "watchdog feed", fmt.Sprintf("reboot %#x", unix.LINUX_REBOOT_CMD_KEXEC)}
	if len(down) < len(wantEnd) || !reflect.DeepEqual(down[len(down)-len(wantEnd):], wantEnd) || strings.Count(strings.Join(down, "\n"), "watchdog feed") != 1 {
		t.Fatalf("shutdown from the first unmount: %q; want it to end %q, fed once", down, wantEnd)
	}
	log := r.log.String()
	for _, w := range []string{"generation=2", "trial=true", "module parameters from the board", "system down: kexec"} {
		if !strings.Contains(log, w) {
			t.Errorf("the log does not say %q:\n%s", w, log)
		}
	}
	if strings.Contains(log, "system down: reboot") {
		t.Errorf("a reboot after the kexec:\n%s", log)
	}
}

// TestKexecFails: with no kernel loaded, reboot(KEXEC) fails: init says
// so and reboots.
func TestKexecFails(t *testing.T) {
	r := newRouter(t, "")
	r.generation(r.system("only", false))
	r.sys.kexecErr = unix.EINVAL
	r.run()
	r.sys.nextStart(t)
	r.request(Kexec)
	calls := r.sys.callsSince(0)
	want := []string{fmt.Sprintf("reboot %#x", unix.LINUX_REBOOT_CMD_KEXEC), fmt.Sprintf("reboot %#x", unix.LINUX_REBOOT_CMD_RESTART)}
	if !reflect.DeepEqual(calls[len(calls)-2:], want) {
		t.Fatalf("calls end %q, want %q", calls[len(calls)-2:], want)
	}
	waitLog(t, r.log, "KEXEC FAILED: rebooting instead")
	waitLog(t, r.log, "system down: reboot")
}

// TestBoardModuleParams: a module the board has parameters for gets them
// after the list's own, whatever its file's compression, and with '-' and
// '_' alike in its name.
func TestBoardModuleParams(t *testing.T) {
	root := t.TempDir()
	write(t, root, "modules", "a/i6300esb.ko.xz heartbeat=30\nb/snd_hda.ko\nc/watchdog.ko.gz\nd/watchdog_core.ko\ne/softdog.ko\n", 0o644)
	for _, f := range []string{"a/i6300esb.ko.xz", "b/snd_hda.ko", "c/watchdog.ko.gz", "d/watchdog_core.ko", "e/softdog.ko"} {
		write(t, root, f, "elf", 0o644)
	}
	clock := &fakeClock{}
	sys := newFakeSys(root, clock)
	in := New(Options{Root: root, Kernel: sys, Clock: clock})
	in.board.Watchdog = &boards.Watchdog{ModuleParams: map[string]string{"i6300esb": "nowayout=1", "snd-hda": "power_save=0", "watchdog": "stop_on_reboot=0"}}
	in.loadModules("/modules")
	compressed := unix.MODULE_INIT_COMPRESSED_FILE
	want := []string{
		fmt.Sprintf(`module i6300esb.ko.xz "heartbeat=30 nowayout=1" %d`, compressed),
		`module snd_hda.ko "power_save=0" 0`,
		fmt.Sprintf(`module watchdog.ko.gz "stop_on_reboot=0" %d`, compressed),
		`module watchdog_core.ko "" 0`,
		`module softdog.ko "" 0`,
	}
	if got := sys.callsSince(0); !reflect.DeepEqual(got, want) {
		t.Fatalf("loaded:\n got %q\nwant %q", got, want)
	}
	for file, want := range map[string]string{"/nix/store/x/i6300esb.ko": "i6300esb", "/nix/store/0c6gx0zd1dl8f1yh3hkl7l1ihn2ypzp0-i6300esb.ko": "i6300esb", "snd-hda-intel.ko.zst": "snd_hda_intel", "ext4.ko.xz": "ext4", "a.ko.gz": "a"} {
		if got := moduleName(file); got != want {
			t.Errorf("moduleName(%q) = %q, want %q", file, got, want)
		}
	}
}

// TestTrialCannotBoot: a trial whose generation cannot run is not booted
// on another generation: init says so and reboots at once, into the boot
// default; nothing runs, no watchdog is armed.
func TestTrialCannotBoot(t *testing.T) {
	for _, tc := range []struct {
		name, cmdline, says string
	}{
		{"no agent", "roost.generation=2 roost.trial=1", "has no bin/roostd"},
		{"no such generation", "roost.generation=9 roost.trial=1", "generation 9 does not exist"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRouter(t, tc.cmdline)
			r.generation(r.system("good", false))
			r.generation(r.system("broken", true))
			if err := generations.System(r.root, nil).SwitchTo(1); err != nil {
				t.Fatal(err)
			}
			start := r.clock.Now()
			r.run()
			r.ended("rebooting")
			calls := r.sys.callsSince(0)
			if last := calls[len(calls)-1]; last != fmt.Sprintf("reboot %#x", unix.LINUX_REBOOT_CMD_RESTART) || slicesContain(calls, "watchdog open /dev/watchdog") {
				t.Fatalf("calls: %q", calls)
			}
			if waited := r.clock.Now().Sub(start); waited >= FailDelay {
				t.Errorf("rebooted after %s, want at once", waited)
			}
			n := strings.TrimPrefix(strings.Fields(tc.cmdline)[0], "roost.generation=")
			log := r.log.String()
			if !strings.Contains(log, "TRIAL GENERATION "+n+" CANNOT BOOT") || !strings.Contains(log, tc.says) || strings.Contains(log, "BOOT FAILED") {
				t.Fatalf("log:\n%s", log)
			}
			if len(r.sys.starts) != 0 {
				t.Fatal("an agent was started")
			}
		})
	}
}

// TestChooseTrial: a trial boots its generation or none.
func TestChooseTrial(t *testing.T) {
	r := newRouter(t, "")
	s1 := r.generation(r.system("one", false))
	r.generation(r.system("two", true))
	in := New(Options{Root: r.root})
	if c, _, err := in.choose(Params{Generation: s1, Trial: true}); err != nil || c.Generation != s1 {
		t.Fatalf("choose a trial of generation 1: %+v, %v", c, err)
	}
	for _, p := range []Params{{Generation: 2, Trial: true}, {Generation: 3, Trial: true}, {Generation: 2, System: r.system("loose", false), Trial: true}} {
		if c, _, err := in.choose(p); !errors.Is(err, errTrial) {
			t.Errorf("choose(%+v) = %+v, %v; want the trial's error", p, c, err)
		}
	}
}

// TestTrialCrashLoopReboots: on the boot that tries a trial, an agent
// that keeps exiting ends in a reboot into the boot default, not in the
// previous system's agent on the trial's kernel; the pending trial stays
// for the next boot's agent to record.
func TestTrialCrashLoopReboots(t *testing.T) {
	r := newRouter(t, "roost.generation=2 roost.trial=1")
	old := r.system("old", false)
	r.generation(old)
	bad := r.system("bad", false)
	r.generation(bad)
	if err := generations.System(r.root, nil).SwitchTo(1); err != nil {
		t.Fatal(err)
	}
	p := activate.Pending{Token: "t", Mode: activate.Switch, System: bad, Deadline: r.clock.Now().Add(time.Hour), PrevSystem: old, PrevGeneration: 1,
		Trial: &activate.TrialBoot{Generation: 2, Method: activate.BootKexec}}
	b, _ := json.Marshal(p)
	write(t, r.root, "persist/roost/pending-activation.json", string(b), 0o600)
	r.sys.crash = func([]string) bool { return true }
	r.run()
	r.ended("rebooting")
	if len(r.sys.starts) != CrashLimit {
		t.Fatalf("%d agents started, want %d", len(r.sys.starts), CrashLimit)
	}
	for range CrashLimit {
		if s := <-r.sys.starts; !strings.HasPrefix(s.argv[0], bad.String()+"/") {
			t.Fatalf("started %s, want the trial's agent", s.argv[0])
		}
	}
	calls := r.sys.callsSince(0)
	if last := calls[len(calls)-1]; last != fmt.Sprintf("reboot %#x", unix.LINUX_REBOOT_CMD_RESTART) || slicesContain(calls, "hold") {
		t.Fatalf("calls: %q; want a reboot, no rollback", calls)
	}
	if _, err := activate.ReadPending(filepath.Join(r.root, "persist/roost")); err != nil {
		t.Fatalf("the pending trial is gone: %v", err)
	}
	if gens, cur, _ := generations.System(r.root, nil).List(); cur != 1 || len(gens) != 2 {
		t.Fatalf("profile: default %d, %d generations; want 1 of 2", cur, len(gens))
	}
	if log := r.log.String(); !strings.Contains(log, "TRIAL FAILED: its agent keeps exiting") || strings.Contains(log, "ROLLED BACK") {
		t.Fatalf("log:\n%s", log)
	}
}
