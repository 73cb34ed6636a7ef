package activate

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roostrouter/roost/updater/atomicfile"
	"github.com/roostrouter/roost/updater/generations"
	"github.com/roostrouter/roost/updater/store"
	"github.com/roostrouter/roost/updater/storepath"
	"github.com/roostrouter/roost/updater/storetest"
)

// trialRouter is a qemu-x86_64 router that booted system old (generation
// 1), with systems that differ from it: same boots with the same kernel
// and command line, cmdline with another command line, kernel with another
// kernel. Each boot is an Activator with its own boot id, as each start
// of the agent after a boot is.
type trialRouter struct {
	t        *testing.T
	root     string
	state    string
	s        *store.Store
	old      storepath.Path
	systems  map[string]storepath.Path
	prepared []TrialBoot

	mu     sync.Mutex
	failed []string // what TrialFailed was told
}

func newTrialRouter(t *testing.T) *trialRouter {
	root := t.TempDir()
	r := &trialRouter{t: t, root: root, state: t.TempDir(), s: store.New(root, store.Options{}), systems: map[string]storepath.Path{}}
	parts := map[string]map[string]string{
		"old":     {"kernel": "->/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-linux/bzImage", "cmdline": "console=ttyS0\n"},
		"same":    {"kernel": "->/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-linux/bzImage", "cmdline": "console=ttyS0"},
		"cmdline": {"kernel": "->/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-linux/bzImage", "cmdline": "console=ttyS0 roost.test=2\n"},
		"kernel":  {"kernel": "->/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-linux/bzImage", "cmdline": "console=ttyS0\n"},
	}
	for name, files := range parts {
		pkgs := storetest.Closure(name, 1, 0, 0)
		pkgs[0].Config = `{"board": "qemu-x86_64", "hostname": "` + name + `"}`
		importPackages(t, r.s, pkgs)
		sys := pkgs[0].Path
		dir := r.s.PhysicalPath(sys)
		os.Chmod(dir, 0o755)
		files["board"] = "qemu-x86_64\n"
		files["initrd"] = "->/nix/store/cccccccccccccccccccccccccccccccc-initrd/initrd"
		files["bin/roostd"] = "->/nix/store/dddddddddddddddddddddddddddddddd-roostd/bin/roostd"
		writeTree(t, dir, files)
		r.systems[name] = sys
	}
	r.old = r.systems["old"]
	a := r.boot("boot-1", r.old)
	res, err := a.Activate(context.Background(), Switch, r.old, time.Minute, "ssh one")
	if err != nil || a.Confirm(res.Token, "ssh two") != nil {
		t.Fatalf("first system: %+v, %v", res, err)
	}
	a.stop()
	return r
}

// boot is the agent's start after a boot with id that booted system.
func (r *trialRouter) boot(id string, system storepath.Path) *Activator {
	r.t.Helper()
	for _, link := range []string{BootedLink(r.root), CurrentLink(r.root)} {
		os.MkdirAll(filepath.Dir(link), 0o755)
		if err := atomicfile.Symlink(system.String(), link); err != nil {
			r.t.Fatal(err)
		}
	}
	a := &Activator{Store: r.s, Profile: generations.System(r.root, nil), State: r.state,
		Log: slog.New(slog.DiscardHandler), Now: time.Now,
		Lock:   func(ctx context.Context) (*store.Txn, error) { return r.s.Lock(ctx, "activator", nil) },
		BootID: func() (string, error) { return id, nil },
		PrepareBoot: func(_ context.Context, _ storepath.Path, tb TrialBoot) error {
			r.prepared = append(r.prepared, tb)
			return nil
		},
		TrialFailed: func(why error, watchdog bool) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.failed = append(r.failed, why.Error())
		},
	}
	r.t.Cleanup(a.stop)
	return a
}

func (a *Activator) stop() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.timer != nil {
		a.timer.Stop()
	}
}

// defaultGen is the profile's default generation, and whether gen exists.
func (r *trialRouter) defaultGen(gen int) (int, bool) {
	gens, cur, err := generations.System(r.root, nil).List()
	if err != nil {
		r.t.Fatal(err)
	}
	exists := false
	for _, g := range gens {
		exists = exists || g.Number == gen
	}
	return cur, exists
}

// trial activates system as a trial from boot-1, and checks what it says.
func (r *trialRouter) trial(name string, timeout time.Duration) (*Activator, Result) {
	r.t.Helper()
	a := r.boot("boot-1", r.old)
	res, err := a.Activate(context.Background(), Switch, r.systems[name], timeout, "ssh one")
	if err != nil {
		r.t.Fatalf("activate %s: %v", name, err)
	}
	if res.Trial == nil || res.Token == "" || res.Generation != 2 || res.Trial.Method != BootKexec || !res.Trial.Watchdog {
		r.t.Fatalf("activate %s: %+v, want a kexec trial of generation 2", name, res)
	}
	if cur, exists := r.defaultGen(2); cur != 1 || !exists {
		r.t.Fatalf("after the trial's activation the default is %d (generation 2 exists: %v), want 1", cur, exists)
	}
	if sys, _ := a.Current(); sys != r.old {
		r.t.Fatalf("the trial runs in place: current system %s", sys)
	}
	return a, res
}

// rolledBack checks the record of the trial's rollback and the profile.
func (r *trialRouter) rolledBack(want string) {
	r.t.Helper()
	rb, err := ReadRolledBack(r.state)
	if err != nil || !strings.Contains(rb.Why, want) || rb.To != r.old {
		r.t.Fatalf("rollback record %+v, %v; want %q", rb, err, want)
	}
	if _, err := ReadPending(r.state); !errors.Is(err, os.ErrNotExist) {
		r.t.Fatalf("the trial is still pending: %v", err)
	}
	if cur, exists := r.defaultGen(2); cur != 1 || exists {
		r.t.Fatalf("after the failed trial the default is %d and generation 2 exists: %v; want 1 and gone", cur, exists)
	}
}

func TestTrialBoot(t *testing.T) {
	t.Run("same kernel and command line run in place", func(t *testing.T) {
		r := newTrialRouter(t)
		a := r.boot("boot-1", r.old)
		res, err := a.Activate(context.Background(), Switch, r.systems["same"], time.Minute, "ssh one")
		if err != nil || res.Trial != nil {
			t.Fatalf("activate: %+v, %v; want a switch in place", res, err)
		}
	})
	t.Run("test cannot boot", func(t *testing.T) {
		r := newTrialRouter(t)
		_, err := r.boot("boot-1", r.old).Activate(context.Background(), Test, r.systems["kernel"], time.Minute, "ssh one")
		if err == nil || !strings.Contains(err.Error(), "its kernel differs from the booted system's: test cannot boot it") {
			t.Fatalf("test with another kernel: %v", err)
		}
	})
	t.Run("confirmed on the trial boot", func(t *testing.T) {
		r := newTrialRouter(t)
		a, res := r.trial("cmdline", time.Minute)
		if want := "console=ttyS0 roost.test=2 roost.generation=2 roost.trial=1"; res.Trial.Cmdline != want || len(r.prepared) != 1 {
			t.Fatalf("trial command line %q (prepared %d times), want %q once", res.Trial.Cmdline, len(r.prepared), want)
		}
		if err := a.Confirm(res.Token, "ssh two"); err == nil || !strings.Contains(err.Error(), "has not booted yet") {
			t.Fatalf("confirm before the boot: %v", err)
		}
		a.stop()
		b := r.boot("boot-2", r.systems["cmdline"])
		if err := b.Recover(context.Background()); err != nil {
			t.Fatal(err)
		}
		if p, err := ReadPending(r.state); err != nil || p.Trial.Booted != "boot-2" {
			t.Fatalf("pending on the trial boot: %+v, %v", p, err)
		}
		if err := b.Confirm(res.Token, "ssh two"); err != nil {
			t.Fatalf("confirm on the trial boot: %v", err)
		}
		if cur, _ := r.defaultGen(2); cur != 2 {
			t.Fatalf("after the confirmation the default is %d, want 2", cur)
		}
	})
	t.Run("never came up", func(t *testing.T) {
		r := newTrialRouter(t)
		a, _ := r.trial("kernel", time.Minute)
		a.stop()
		if err := r.boot("boot-2", r.old).Recover(context.Background()); err != nil {
			t.Fatal(err)
		}
		r.rolledBack("trial of generation 2 failed: rolled back by the watchdog: its agent never started")
	})
	t.Run("not confirmed", func(t *testing.T) {
		r := newTrialRouter(t)
		a, res := r.trial("kernel", 300*time.Millisecond)
		a.stop()
		b := r.boot("boot-2", r.systems["kernel"])
		if err := b.Recover(context.Background()); err != nil {
			t.Fatal(err)
		}
		time.Sleep(600 * time.Millisecond)
		r.mu.Lock()
		failed := strings.Join(r.failed, "; ")
		r.mu.Unlock()
		if !strings.Contains(failed, "trial of generation 2 not confirmed by") {
			t.Fatalf("TrialFailed was told %q", failed)
		}
		if err := b.Confirm(res.Token, "ssh two"); err == nil || !strings.Contains(err.Error(), "too late") {
			t.Fatalf("a confirmation after the deadline: %v", err)
		}
		b.stop()
		if err := r.boot("boot-3", r.old).Recover(context.Background()); err != nil {
			t.Fatal(err)
		}
		r.rolledBack("trial of generation 2 failed: rolled back by the watchdog: its agent ran, but no confirmation came by")
	})
	t.Run("agent restarted before the boot", func(t *testing.T) {
		r := newTrialRouter(t)
		a, _ := r.trial("kernel", time.Minute)
		a.stop()
		if err := r.boot("boot-1", r.old).Recover(context.Background()); err != nil {
			t.Fatal(err)
		}
		r.rolledBack("the trial boot of generation 2 did not happen")
	})
}
