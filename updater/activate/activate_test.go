package activate

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roostrouter/roost/updater/generations"
	"github.com/roostrouter/roost/updater/store"
	"github.com/roostrouter/roost/updater/storepath"
	"github.com/roostrouter/roost/updater/storetest"
)

// router is a store with two systems, the first running and confirmed.
type router struct {
	t          *testing.T
	a          *Activator
	s          *store.Store
	old, new   storepath.Path
	reloadFail atomic.Pointer[storepath.Path] // a system whose config "does not load"
	lockFails  atomic.Int32                   // Lock fails this many more times
}

func newRouter(t *testing.T) *router {
	root := t.TempDir()
	r := &router{t: t, s: store.New(root, store.Options{})}
	old := storetest.Closure("old", 3, 1, 32)
	old[len(old)-1].Config = `{"hostname":"old"}`
	nw := storetest.Closure("new", 3, 1, 32)
	nw[len(nw)-1].Config = `{"hostname":"new"}`
	importPackages(t, r.s, old)
	importPackages(t, r.s, nw)
	r.old, r.new = old[len(old)-1].Path, nw[len(nw)-1].Path
	r.a = &Activator{
		Store: r.s, Profile: generations.System(root, nil), State: t.TempDir(),
		Log: slog.New(slog.DiscardHandler), Now: time.Now, RetryRollback: 50 * time.Millisecond,
		Reload: func(context.Context) error {
			cur, _ := r.a.Current()
			if p := r.reloadFail.Load(); p != nil && *p == cur {
				return errors.New("config does not load")
			}
			return nil
		},
		Lock: func(ctx context.Context) (*store.Txn, error) {
			if r.lockFails.Add(-1) >= 0 {
				return nil, errors.New("lock refused for the test")
			}
			return r.s.Lock(ctx, "activator", nil)
		},
	}
	t.Cleanup(r.stopTimer)
	r.activate(Switch, r.old, time.Minute, "ssh one", func(res Result) { r.confirm(res.Token, "ssh two") })
	return r
}

// importPackages puts pkgs into s, as a transfer would.
func importPackages(t *testing.T, s *store.Store, pkgs []storetest.Package) {
	t.Helper()
	var b bytes.Buffer
	if err := storetest.WriteExport(&b, pkgs); err != nil {
		t.Fatal(err)
	}
	txn, err := s.Lock(context.Background(), "test", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer txn.Close()
	if _, err := txn.ImportExport(context.Background(), &b, nil); err != nil {
		t.Fatal(err)
	}
}

// stopTimer stops the rollback timer, as a stopped agent would.
func (r *router) stopTimer() {
	r.a.mu.Lock()
	defer r.a.mu.Unlock()
	if r.a.timer != nil {
		r.a.timer.Stop()
	}
}

func (r *router) activate(mode Mode, sys storepath.Path, timeout time.Duration, by string, then func(Result)) {
	r.t.Helper()
	res, err := r.a.Activate(context.Background(), mode, sys, timeout, by)
	if err != nil {
		r.t.Fatalf("activate %s %s: %v", mode, sys, err)
	}
	then(res)
}

func (r *router) confirm(token, by string) {
	r.t.Helper()
	if err := r.a.Confirm(token, by); err != nil {
		r.t.Fatal(err)
	}
}

// running checks the running system, the profile's and the pending file.
func (r *router) running(want storepath.Path, wantGen int, pending bool) {
	r.t.Helper()
	if cur, _ := r.a.Current(); cur != want {
		r.t.Errorf("running %s, want %s", cur, want)
	}
	if g, _, _ := r.a.Profile.Current(); g.Number != wantGen {
		r.t.Errorf("profile at generation %d, want %d", g.Number, wantGen)
	}
	if _, err := ReadPending(r.a.State); (err == nil) != pending {
		r.t.Errorf("pending activation: %v, want pending=%v", err, pending)
	}
}

// withDeadline fails the test if f does not return in time: a deadlock.
func withDeadline(t *testing.T, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not return within 10 s: deadlock", what)
	}
}

func TestFailedActivationRollsBackAtOnce(t *testing.T) {
	for _, mode := range []Mode{Switch, Test} {
		t.Run(string(mode), func(t *testing.T) {
			r := newRouter(t)
			r.reloadFail.Store(&r.new)
			var err error
			withDeadline(t, "a failed activation", func() {
				_, err = r.a.Activate(context.Background(), mode, r.new, time.Minute, "ssh x")
			})
			if err == nil || !strings.Contains(err.Error(), "config does not load") || !strings.Contains(err.Error(), "rolled back to "+r.old.String()) {
				t.Fatalf("error %v: want the reason and the rollback", err)
			}
			r.running(r.old, 1, false)
			withDeadline(t, "a rollback after it", func() { r.a.Rollback(context.Background()) })
		})
	}
}

func TestFailedActivateScript(t *testing.T) {
	r := newRouter(t)
	script := filepath.Join(r.s.PhysicalPath(r.new), "activate")
	os.Chmod(filepath.Dir(script), 0o755)
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho broken >&2\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := r.a.Activate(context.Background(), Switch, r.new, time.Minute, "")
	if err == nil || !strings.Contains(err.Error(), "broken") {
		t.Fatalf("error %v: want the script's output", err)
	}
	r.running(r.old, 1, false)
}

func TestConfirmOverANewConnection(t *testing.T) {
	r := newRouter(t)
	var res Result
	r.activate(Switch, r.new, time.Minute, "ssh aaaa", func(x Result) { res = x })
	for _, c := range []struct {
		token, by, want string
	}{
		{res.Token, "ssh aaaa", "came over the connection that activated"},
		{"bad", "ssh bbbb", "wrong confirmation token"},
	} {
		if err := r.a.Confirm(c.token, c.by); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Confirm(%q, %q) = %v, want %q", c.token, c.by, err, c.want)
		}
	}
	r.confirm(res.Token, "ssh bbbb")
	r.running(r.new, 2, false)
}

func TestRollbackWhenNotConfirmed(t *testing.T) {
	r := newRouter(t)
	r.activate(Switch, r.new, 200*time.Millisecond, "", func(Result) {})
	r.running(r.new, 2, true)
	time.Sleep(time.Second)
	r.running(r.old, 1, false)
}

// A rollback that fails is retried, and the pending file says why meanwhile.
func TestFailedRollbackIsRetried(t *testing.T) {
	r := newRouter(t)
	r.activate(Switch, r.new, 100*time.Millisecond, "", func(Result) {})
	r.lockFails.Store(2)
	deadline := time.Now().Add(5 * time.Second)
	sawError := false
	for time.Now().Before(deadline) {
		p, err := ReadPending(r.a.State)
		if errors.Is(err, os.ErrNotExist) {
			break
		}
		sawError = sawError || strings.Contains(p.RollbackError, "lock refused")
		time.Sleep(10 * time.Millisecond)
	}
	if !sawError {
		t.Error("the pending activation never said why its rollback failed")
	}
	r.running(r.old, 1, false)
}

// Recover rolls back an activation whose deadline passed while the agent
// was down, and RollBackPending one whose system cannot run.
func TestRecover(t *testing.T) {
	r := newRouter(t)
	r.activate(Switch, r.new, time.Minute, "", func(Result) {})
	r.stopTimer()
	r.a.Now = func() time.Time { return time.Now().Add(2 * time.Minute) }
	if err := r.a.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	r.running(r.old, 1, false)

	r.a.Now = time.Now
	r.activate(Test, r.new, time.Minute, "", func(Result) {})
	r.stopTimer()
	if err := r.a.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	r.running(r.new, 1, true)
	rolled, err := r.a.RollBackPending(context.Background(), errors.New("bad config"))
	if !rolled || err != nil {
		t.Fatalf("RollBackPending = %v, %v", rolled, err)
	}
	r.running(r.old, 1, false)
}

// A transfer session that stalls mid-NAR does not hold the store lock, so
// the rollback is not delayed by it.
func TestRollbackNotDelayedByStalledTransfer(t *testing.T) {
	r := newRouter(t)
	r.activate(Switch, r.new, 300*time.Millisecond, "", func(Result) {})
	ss, err := r.s.NewSession(func(ctx context.Context) (*store.Txn, error) { return r.s.Lock(ctx, "transfer", nil) })
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Close()
	pr, pw := io.Pipe()
	defer pw.Close()
	go func() {
		var b bytes.Buffer
		storetest.WriteNAR(&b, storetest.Closure("stall", 1, 1, 4096)[0])
		pw.Write(b.Bytes()[:b.Len()/2]) // then nothing: the peer stalls
	}()
	go ss.Restore(pr, store.Expect{})
	time.Sleep(time.Second)
	r.running(r.old, 1, false)
}
