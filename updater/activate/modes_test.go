package activate

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/roostrouter/roost/updater/storepath"
	"github.com/roostrouter/roost/updater/storetest"
)

func TestParseMode(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    Mode
		wantErr bool
	}{
		{"switch", Switch, false},
		{"test", Test, false},
		{"boot", Boot, false},
		{"dry-activate", DryActivate, false},
		{"Switch", "", true},
		{"", "", true},
		{"rollback", "", true},
	} {
		got, err := ParseMode(tc.in)
		if got != tc.want || (err != nil) != tc.wantErr {
			t.Errorf("ParseMode(%q) = %q, %v; want %q, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
		if err != nil && !strings.Contains(err.Error(), "want switch, boot, test or dry-activate") {
			t.Errorf("ParseMode(%q): %v does not list the modes", tc.in, err)
		}
	}
}

// TestModes: what each of nixos-rebuild's verbs leaves running, in the
// profile, and awaiting confirmation.
func TestModes(t *testing.T) {
	for _, tc := range []struct {
		mode        Mode
		wantRunning func(r *router) string
		wantGen     int
		wantPending bool
		wantNewGen  bool
	}{
		{Switch, func(r *router) string { return r.new.String() }, 2, true, true},
		{Test, func(r *router) string { return r.new.String() }, 1, true, false},
		{Boot, func(r *router) string { return r.old.String() }, 2, false, true},
		{DryActivate, func(r *router) string { return r.old.String() }, 1, false, false},
	} {
		t.Run(string(tc.mode), func(t *testing.T) {
			r := newRouter(t)
			res, err := r.a.Activate(context.Background(), tc.mode, r.new, time.Minute, "ssh x")
			if err != nil {
				t.Fatal(err)
			}
			if cur, _ := r.a.Current(); cur.String() != tc.wantRunning(r) {
				t.Errorf("running %s, want %s", cur, tc.wantRunning(r))
			}
			if g, _, _ := r.a.Profile.Current(); g.Number != tc.wantGen {
				t.Errorf("profile at generation %d, want %d", g.Number, tc.wantGen)
			}
			if res.NewGen != tc.wantNewGen || tc.wantNewGen && res.Generation != 2 {
				t.Errorf("result: generation %d, new %v; want new %v", res.Generation, res.NewGen, tc.wantNewGen)
			}
			p, err := ReadPending(r.a.State)
			if (err == nil) != tc.wantPending || (res.Token != "") != tc.wantPending {
				t.Fatalf("pending %v, token %q; want pending %v", err, res.Token, tc.wantPending)
			}
			if res.Previous != r.old {
				t.Errorf("previous system %s, want %s", res.Previous, r.old)
			}
			if !tc.wantPending {
				return
			}
			// Until confirmed, gc keeps where a rollback goes.
			if sys, gen := p.Holds(); sys != r.old || gen != 1 || p.Token != res.Token || !p.Deadline.Equal(res.Deadline) {
				t.Errorf("pending holds %s generation %d (token %v), want %s generation 1", sys, gen, p.Token == res.Token, r.old)
			}
		})
	}
}

// TestActivateRefusals: what cannot be activated is refused before
// anything changes, saying what to do.
func TestActivateRefusals(t *testing.T) {
	r := newRouter(t)
	notSystem := storetest.Closure("new", 3, 1, 32)[0].Path // in the store, but no config
	for _, tc := range []struct {
		name    string
		mode    Mode
		system  storepath.Path
		timeout time.Duration
		want    string
	}{
		{"not copied", Switch, storetest.NewPath("absent"), time.Minute, "is not on the router: copy it first"},
		{"not a system", Switch, notSystem, time.Minute, "is not a roost system: it has no etc/roost/config.json"},
		{"no timeout", Switch, r.new, 0, "a confirm timeout is required"},
		{"no timeout for test", Test, r.new, 0, "a confirm timeout is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := r.a.Activate(context.Background(), tc.mode, tc.system, tc.timeout, "ssh x")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Activate: %v, want %q", err, tc.want)
			}
			r.running(r.old, 1, false)
		})
	}
	// One activation at a time: a second waits for the first's outcome.
	r.activate(Test, r.new, time.Minute, "ssh x", func(Result) {})
	_, err := r.a.Activate(context.Background(), Switch, r.old, time.Minute, "ssh y")
	if err == nil || !strings.Contains(err.Error(), "still awaiting confirmation") {
		t.Fatalf("a second activation: %v", err)
	}
	r.running(r.new, 1, true)
}

// TestRollbackByRequest: Rollback goes to the generation before and runs
// it, but not while an activation awaits confirmation (it rolls back by
// itself).
func TestRollbackByRequest(t *testing.T) {
	r := newRouter(t)
	var res Result
	r.activate(Switch, r.new, time.Minute, "ssh one", func(x Result) { res = x })
	if _, err := r.a.Rollback(context.Background()); err == nil || !strings.Contains(err.Error(), "awaits confirmation") {
		t.Fatalf("Rollback while pending: %v", err)
	}
	r.running(r.new, 2, true)
	r.confirm(res.Token, "ssh two")
	g, err := r.a.Rollback(context.Background())
	if err != nil || g.Number != 1 || g.Path != r.old {
		t.Fatalf("Rollback = generation %d %s, %v; want 1 %s", g.Number, g.Path, err, r.old)
	}
	r.running(r.old, 1, false)
}

// TestConfirmTwice: a confirmation of nothing says so.
func TestConfirmTwice(t *testing.T) {
	r := newRouter(t)
	var res Result
	r.activate(Test, r.new, time.Minute, "ssh one", func(x Result) { res = x })
	r.confirm(res.Token, "ssh two")
	if err := r.a.Confirm(res.Token, "ssh three"); err == nil || !strings.Contains(err.Error(), "nothing awaits confirmation") {
		t.Fatalf("a second Confirm: %v", err)
	}
	r.running(r.new, 1, false)
}

// TestRecoverRearms: an activation pending when the agent stopped, whose
// deadline is still ahead, rolls back when it passes.
func TestRecoverRearms(t *testing.T) {
	r := newRouter(t)
	r.activate(Switch, r.new, 300*time.Millisecond, "", func(Result) {})
	r.stopTimer() // the agent stops
	if err := r.a.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	r.running(r.new, 2, true)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if _, err := ReadPending(r.a.State); os.IsNotExist(err) {
			break
		}
	}
	r.running(r.old, 1, false)
}

// TestRecoverWithoutPending: nothing pending, or a pending file that
// cannot be read, leaves the running system alone.
func TestRecoverWithoutPending(t *testing.T) {
	r := newRouter(t)
	if err := r.a.Recover(context.Background()); err != nil {
		t.Fatalf("Recover with nothing pending: %v", err)
	}
	if err := os.WriteFile(PendingFile(r.a.State), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := r.a.Recover(context.Background()); err != nil {
		t.Fatalf("Recover with a broken pending file: %v", err)
	}
	if cur, _ := r.a.Current(); cur != r.old {
		t.Fatalf("running %s after Recover, want %s", cur, r.old)
	}
	if rolled, err := r.a.RollBackPending(context.Background(), nil); rolled || err != nil {
		t.Fatalf("RollBackPending with a broken pending file = %v, %v", rolled, err)
	}
}

// TestActivateScriptEnv: a system's activate script learns the root, the
// state folder and the system from its environment.
func TestActivateScriptEnv(t *testing.T) {
	r := newRouter(t)
	script := filepath.Join(r.s.PhysicalPath(r.new), "activate")
	os.Chmod(filepath.Dir(script), 0o755)
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho \"$ROOST_ROOT $ROOST_STATE $ROOST_SYSTEM\" > \"$ROOST_STATE/env\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	r.activate(Test, r.new, time.Minute, "", func(Result) {})
	b, err := os.ReadFile(filepath.Join(r.a.State, "env"))
	if err != nil {
		t.Fatalf("the activate script did not run: %v", err)
	}
	if got, want := strings.TrimSpace(string(b)), r.s.Root+" "+r.a.State+" "+r.new.String(); got != want {
		t.Errorf("the script saw %q, want %q", got, want)
	}
}

// TestRollbackBoot: RollbackBoot makes the generation before the boot
// default and runs nothing; not while an activation awaits confirmation,
// and not past the first generation.
func TestRollbackBoot(t *testing.T) {
	r := newRouter(t)
	var res Result
	r.activate(Switch, r.new, time.Minute, "ssh one", func(x Result) { res = x })
	if _, err := r.a.RollbackBoot(context.Background()); err == nil || !strings.Contains(err.Error(), "awaits confirmation") {
		t.Fatalf("RollbackBoot while pending: %v", err)
	}
	r.confirm(res.Token, "ssh two")
	g, err := r.a.RollbackBoot(context.Background())
	if err != nil || g.Number != 1 || g.Path != r.old {
		t.Fatalf("RollbackBoot = generation %d %s, %v; want 1 %s", g.Number, g.Path, err, r.old)
	}
	if cur, _ := r.a.Current(); cur != r.new {
		t.Fatalf("running %s after RollbackBoot, want %s still", cur, r.new)
	}
	if p, _, _ := r.a.Profile.Current(); p.Number != 1 {
		t.Fatalf("the boot default is generation %d, want 1", p.Number)
	}
	if _, err := r.a.RollbackBoot(context.Background()); err == nil || !strings.Contains(err.Error(), "no earlier generation") {
		t.Fatalf("RollbackBoot from generation 1: %v", err)
	}
}

// TestConfirmAfterRollback: a confirmation that comes after its
// activation was rolled back is told so and why, whoever rolled back;
// another token is not.
func TestConfirmAfterRollback(t *testing.T) {
	for _, tc := range []struct {
		name string
		roll func(r *router)
		why  string
	}{
		{"its agent kept exiting", func(r *router) {
			if rolled, err := r.a.RollBackPending(context.Background(), errors.New("its agent exited 3 times within 1m0s")); !rolled || err != nil {
				r.t.Fatalf("RollBackPending = %v, %v", rolled, err)
			}
		}, "its agent exited 3 times within 1m0s"},
		{"its deadline passed", func(r *router) {
			for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
				if _, err := ReadPending(r.a.State); os.IsNotExist(err) {
					return
				}
			}
			r.t.Fatal("no rollback at the deadline")
		}, "it was not confirmed by its deadline"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRouter(t)
			var res Result
			r.activate(Switch, r.new, 200*time.Millisecond, "ssh one", func(x Result) { res = x })
			tc.roll(r)
			r.running(r.old, 1, false)
			err := r.a.Confirm(res.Token, "ssh two")
			for _, want := range []string{"the activation of " + r.new.String() + " was rolled back at", tc.why, "the router runs " + r.old.String()} {
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Fatalf("Confirm after the rollback: %v; want %q", err, want)
				}
			}
			if rb, err := ReadRolledBack(r.a.State); err != nil || rb.Token != res.Token || rb.System != r.new || rb.To != r.old {
				t.Fatalf("the rollback's record: %+v, %v", rb, err)
			}
			if err := r.a.Confirm("another", "ssh two"); err == nil || !strings.Contains(err.Error(), "nothing awaits confirmation") {
				t.Fatalf("Confirm with another token: %v", err)
			}
		})
	}
}
