// Package activate switches the router to a system and keeps it only if the
// switch is confirmed in time: otherwise it rolls back by itself, whether or
// not the laptop that asked is still there.
//
// The pending activation is written to the state folder before anything is
// switched (its commit point), so a crash, or an agent that the new system
// stops, still rolls back when the agent starts again: the timer survives
// the process. Until it is confirmed or rolled back, the previous system and
// generation are gc roots (Pending.Holds), so that the rollback always has
// somewhere to go.
//
// A system is refused before anything changes unless it has every part its
// board needs (boards.json's needs: a lab system only etc/roost/config.json;
// a board that boots, its kernel, initrd, cmdline, board and bin/roostd).
//
// Every rollback of an activation is recorded in the state folder
// (RolledBackFile) before its pending activation is removed, so that a
// confirmation that comes after it, to whichever agent runs then, is told
// that and why rather than that nothing awaits confirmation.
//
// The store's writer lock is held only while the profile changes, never
// while a system runs its activate script or the agent reloads: a failed
// activation rolls back at once, in the same call, and a rollback waits for
// no more than one writer's batch.
package activate

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"github.com/roostrouter/roost/updater/atomicfile"
	"github.com/roostrouter/roost/updater/generations"
	"github.com/roostrouter/roost/updater/store"
	"github.com/roostrouter/roost/updater/storepath"
)

// Mode is nixos-rebuild's verb.
type Mode string

const (
	Switch      Mode = "switch"       // new generation, run it, keep it if confirmed
	Test        Mode = "test"         // run it, keep it if confirmed, no new generation
	Boot        Mode = "boot"         // new generation for the next boot only
	DryActivate Mode = "dry-activate" // say what would change
)

// ParseMode checks a mode name.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case Switch, Test, Boot, DryActivate:
		return m, nil
	}
	return "", fmt.Errorf("unknown mode %q: want switch, boot, test or dry-activate", s)
}

// DefaultRetryRollback is how soon a rollback that failed is tried again.
const DefaultRetryRollback = 10 * time.Second

// Pending is an activation awaiting confirmation, as kept in the state folder.
type Pending struct {
	Token          string         `json:"token"`
	Mode           Mode           `json:"mode"`
	System         storepath.Path `json:"system"`
	Deadline       time.Time      `json:"deadline"`
	PrevSystem     storepath.Path `json:"previousSystem,omitempty"`     // what /run/current-system was
	PrevGeneration int            `json:"previousGeneration,omitempty"` // what the profile was (switch)
	// ActivatedBy is the connection the activation came over: the
	// confirmation must come over another one.
	ActivatedBy string `json:"activatedBy,omitempty"`
	// RollbackError is why the rollback, due since Deadline, has not
	// happened yet (it is retried).
	RollbackError string `json:"rollbackError,omitempty"`
	// Trial: the system boots to run (trial.go).
	Trial *TrialBoot `json:"trial,omitempty"`
}

// Holds is what gc must keep while p is pending: the previous system and
// generation, where a rollback goes.
func (p Pending) Holds() (storepath.Path, int) { return p.PrevSystem, p.PrevGeneration }

// PendingFile is the pending activation in the state folder.
func PendingFile(state string) string { return filepath.Join(state, "pending-activation.json") }

// RolledBack is the last activation that was rolled back, as kept in the
// state folder.
type RolledBack struct {
	Token  string         `json:"token"`
	System storepath.Path `json:"system"`
	To     storepath.Path `json:"to,omitempty"` // the system that runs again; "" for none
	At     time.Time      `json:"at"`
	Why    string         `json:"why"`
}

// RolledBackFile is the last rollback's record in the state folder.
func RolledBackFile(state string) string { return filepath.Join(state, "rolled-back.json") }

// ReadRolledBack reads the last rollback's record; os.ErrNotExist if
// nothing was ever rolled back.
func ReadRolledBack(state string) (RolledBack, error) {
	var r RolledBack
	b, err := os.ReadFile(RolledBackFile(state))
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("read %s: %w", RolledBackFile(state), err)
	}
	return r, nil
}

// ReadPending reads the pending activation in the state folder;
// os.ErrNotExist if there is none.
func ReadPending(state string) (Pending, error) {
	var p Pending
	b, err := os.ReadFile(PendingFile(state))
	if err != nil {
		return p, err
	}
	if err := json.Unmarshal(b, &p); err != nil {
		return p, fmt.Errorf("read %s: %w", PendingFile(state), err)
	}
	return p, nil
}

// Result is what Activate did.
type Result struct {
	Mode       Mode           `json:"mode"`
	System     storepath.Path `json:"system"`
	Generation int            `json:"generation,omitempty"`
	NewGen     bool           `json:"newGeneration"`
	Previous   storepath.Path `json:"previousSystem,omitempty"`
	Token      string         `json:"token,omitempty"` // confirm with this
	Deadline   time.Time      `json:"deadline,omitempty"`
	// Trial: the system boots to run (trial.go); confirm once it is back.
	Trial *TrialBoot `json:"trial,omitempty"`
}

// Activator owns the current system.
type Activator struct {
	Store   *store.Store
	Profile *generations.Profile
	State   string // the state folder: pending-activation.json lives here
	Log     *slog.Logger
	Now     func() time.Time
	// Reload is called after /run/current-system changed, so that the agent
	// applies the system's config; an error fails the activation.
	Reload func(ctx context.Context) error
	// Lock takes the store's writer lock.
	Lock func(ctx context.Context) (*store.Txn, error)
	// Crash, if set, is called at each named step of an activation, so that
	// tests can kill the agent there (see store.Options).
	Crash func(point string)
	// RetryRollback is how soon a rollback that failed is tried again
	// (DefaultRetryRollback if zero).
	RetryRollback time.Duration
	// BootID is the kernel's id of this boot (default: /proc's).
	BootID func() (string, error)
	// PrepareBoot readies a trial boot of system (loads its kernel for
	// kexec, or writes the bootloader's one-shot entry); an error undoes
	// the activation. The boot itself is the caller's, once answered.
	PrepareBoot func(ctx context.Context, system storepath.Path, t TrialBoot) error
	// TrialFailed is told when a trial boot passed its deadline
	// unconfirmed: stop feeding the watchdog, or reboot without one.
	TrialFailed func(why error, watchdog bool)

	mu    sync.Mutex
	timer *time.Timer
}

// The router's layout below its root, as far as systems go: the rest of
// roost asks these for the paths rather than spell them.

// CurrentLink is the link to the running system below root.
func CurrentLink(root string) string { return filepath.Join(root, "run/current-system") }

// BootedLink is the link to the system the router booted, below root: gc
// keeps it, as NixOS does.
func BootedLink(root string) string { return filepath.Join(root, "run/booted-system") }

// configPath is where a system keeps its config, below its store path.
const configPath = "etc/roost/config.json"

// ConfigFile is the config of system in s.
func ConfigFile(s *store.Store, system storepath.Path) string {
	return filepath.Join(s.PhysicalPath(system), configPath)
}

// Current returns the running system, if any.
func (a *Activator) Current() (storepath.Path, bool) {
	target, err := os.Readlink(CurrentLink(a.Store.Root))
	if err != nil {
		return "", false
	}
	p, err := storepath.FromLink(target)
	return p, err == nil
}

// Check refuses a path that is not a valid system: not registered, or
// without a part its board needs (etc/roost/config.json at least).
func (a *Activator) Check(txn *store.Txn, system storepath.Path) error {
	if !txn.Valid(system) {
		return fmt.Errorf("%s is not on the router: copy it first", system)
	}
	return checkParts(a.Store.PhysicalPath(system), system)
}

// Request is an activation.
type Request struct {
	Mode    Mode
	System  storepath.Path
	Timeout time.Duration // to confirm (switch, test)
	By      string        // the connection it came over
	// BootMethod is how a switch that must boot does: BootKexec,
	// BootReboot, or "" for the board's choice.
	BootMethod string
}

// Activate switches to system as mode says (see Do).
func (a *Activator) Activate(ctx context.Context, mode Mode, system storepath.Path, timeout time.Duration, by string) (Result, error) {
	return a.Do(ctx, Request{Mode: mode, System: system, Timeout: timeout, By: by})
}

// Do activates as r says. For switch and test it returns a token that
// Confirm must receive before the timeout, over another connection than
// r.By, or the router goes back to what ran before. A switch whose kernel
// changed returns a Trial instead of running the system: the caller boots
// it. An activation that fails is undone before Do returns.
func (a *Activator) Do(ctx context.Context, r Request) (Result, error) {
	mode, system, timeout, by := r.Mode, r.System, r.Timeout, r.By
	a.mu.Lock()
	defer a.mu.Unlock()
	res := Result{Mode: mode, System: system}
	if p, err := ReadPending(a.State); err == nil {
		return res, fmt.Errorf("activation of %s is still awaiting confirmation until %s; confirm or wait for its rollback", p.System, p.Deadline.Format(time.TimeOnly))
	}
	if (mode == Switch || mode == Test) && timeout <= 0 {
		return res, errors.New("a confirm timeout is required")
	}
	prev, _ := a.Current()
	res.Previous = prev
	var p Pending
	written := false // a pending activation is on disk: a failure rolls back
	err := a.withLock(ctx, func(txn *store.Txn) error {
		if err := a.Check(txn, system); err != nil {
			return err
		}
		cur, _, err := a.Profile.Current()
		if err != nil {
			return err
		}
		switch mode {
		case DryActivate:
			return nil
		case Boot:
			g, changed, err := a.Profile.Set(system)
			res.Generation, res.NewGen = g.Number, changed
			return a.release(txn, system, err)
		}
		p = Pending{Token: newToken(), Mode: mode, System: system, Deadline: a.Now().Add(timeout),
			PrevSystem: prev, PrevGeneration: cur.Number, ActivatedBy: by}
		if why := a.needsBoot(system); why != "" {
			if mode == Test {
				return fmt.Errorf("%s: test cannot boot it; use switch (a trial boot) or boot", why)
			}
			err := a.startTrial(txn, &p, r.BootMethod, why)
			written = err == nil
			return err
		}
		if err := a.writePending(p); err != nil {
			return err
		}
		written = true
		if mode == Switch {
			g, changed, err := a.Profile.Set(system)
			if err != nil {
				return err
			}
			res.Generation, res.NewGen = g.Number, changed
		}
		return a.release(txn, system, nil)
	})
	switch {
	case err == nil && p.Trial != nil:
		if a.PrepareBoot != nil {
			err = a.PrepareBoot(ctx, system, *p.Trial)
		}
		res.Generation, res.NewGen, res.Trial = p.Trial.Generation, true, p.Trial
	case err == nil && (mode == Switch || mode == Test):
		err = a.run(ctx, system)
	}
	if err != nil && written {
		return res, a.abort(ctx, p, err)
	}
	if err != nil || mode == DryActivate || mode == Boot {
		return res, err
	}
	res.Token, res.Deadline = p.Token, p.Deadline
	a.arm(p)
	a.Log.Info("activated, awaiting confirmation", "mode", mode, "system", system, "deadline", p.Deadline)
	return res, nil
}

// release hands the paths of system's closure over from the temp roots of
// ended transfers to the generation or the running system that now keeps
// them.
func (a *Activator) release(txn *store.Txn, system storepath.Path, err error) error {
	if err != nil {
		return err
	}
	if err := txn.ReleaseTempRoots(store.Closure(txn.Registry(), []storepath.Path{system})); err != nil {
		a.Log.Warn("release temp roots", "system", system, "err", err)
	}
	return nil
}

// withLock runs f holding the store's writer lock.
func (a *Activator) withLock(ctx context.Context, f func(*store.Txn) error) error {
	txn, err := a.Lock(ctx)
	if err != nil {
		return err
	}
	defer txn.Close()
	return f(txn)
}

// abort rolls back at once after a failed activation.
func (a *Activator) abort(ctx context.Context, p Pending, cause error) error {
	a.Log.Error("activation failed: rolling back", "system", p.System, "err", cause)
	if err := a.rollback(ctx, p, "its activation failed: "+cause.Error()); err != nil {
		a.failedRollback(p, err)
		return fmt.Errorf("%w; rolling back also failed: %v", cause, err)
	}
	return fmt.Errorf("%w (rolled back to %s)", cause, orNone(p.PrevSystem))
}

func orNone(p storepath.Path) string {
	if p == "" {
		return "no system"
	}
	return p.String()
}

// run makes system the running one: the link, its activate script, the
// agent's config.
func (a *Activator) run(ctx context.Context, system storepath.Path) error {
	if err := os.MkdirAll(filepath.Dir(CurrentLink(a.Store.Root)), 0o755); err != nil {
		return err
	}
	if err := atomicfile.Symlink(system.String(), CurrentLink(a.Store.Root)); err != nil {
		return err
	}
	if a.Crash != nil {
		a.Crash("activate-switched")
	}
	script := filepath.Join(a.Store.PhysicalPath(system), "activate")
	if _, err := os.Stat(script); err == nil {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(cctx, script)
		cmd.Env = append(os.Environ(), "ROOST_ROOT="+a.Store.Root, "ROOST_STATE="+a.State, "ROOST_SYSTEM="+system.String())
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s/activate failed: %v: %s", system, err, out)
		}
	}
	if a.Reload != nil {
		return a.Reload(ctx)
	}
	return nil
}

// Confirm keeps a pending activation. by is the connection the
// confirmation came over: it must not be the one that activated, which
// would prove nothing about reaching the new system anew.
func (a *Activator) Confirm(token, by string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	p, err := ReadPending(a.State)
	if err != nil {
		if r, err := ReadRolledBack(a.State); err == nil && r.Token == token {
			return fmt.Errorf("the activation of %s was rolled back at %s, before this confirmation: %s; the router runs %s", r.System, r.At.Format(time.TimeOnly), r.Why, orNone(r.To))
		}
		return errors.New("nothing awaits confirmation (already confirmed, or rolled back)")
	}
	if p.Token != token {
		return errors.New("wrong confirmation token")
	}
	if p.ActivatedBy != "" && by == p.ActivatedBy {
		return errors.New("confirmation refused: it came over the connection that activated the system; confirm over a new connection, which shows that the new system can be reached")
	}
	if p.Trial != nil {
		if err := a.confirmTrial(p); err != nil {
			return err
		}
	}
	if a.timer != nil {
		a.timer.Stop()
	}
	if err := os.Remove(PendingFile(a.State)); err != nil {
		return err
	}
	if err := atomicfile.SyncDir(a.State); err != nil {
		return err
	}
	a.Log.Info("activation confirmed", "system", p.System)
	return nil
}

// Recover, called when the agent starts and before it loads a config,
// re-arms the timer of an activation that was pending when the agent
// stopped, or rolls back at once if its deadline has passed.
func (a *Activator) Recover(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	p, err := ReadPending(a.State)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		a.Log.Error("unreadable pending activation: rolling back is impossible, keeping the current system", "err", err)
		return nil
	}
	if p.Trial != nil {
		return a.recoverTrial(ctx, p)
	}
	if a.Now().After(p.Deadline) {
		a.Log.Warn("activation was not confirmed before the agent stopped: rolling back", "system", p.System)
		if err := a.rollback(ctx, p, "it was not confirmed by its deadline, "+p.Deadline.Format(time.TimeOnly)); err != nil {
			a.failedRollback(p, err)
			return err
		}
		return nil
	}
	a.arm(p)
	return nil
}

// RollBackPending rolls back an activation awaiting confirmation now,
// because its system cannot run (its config does not load). It reports
// whether there was one.
func (a *Activator) RollBackPending(ctx context.Context, why error) (bool, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	p, err := ReadPending(a.State)
	if err != nil {
		return false, nil
	}
	a.Log.Error("the system awaiting confirmation cannot run: rolling back now", "system", p.System, "err", why)
	if err := a.rollback(ctx, p, why.Error()); err != nil {
		a.failedRollback(p, err)
		return true, err
	}
	return true, nil
}

func (a *Activator) arm(p Pending) {
	a.armIn(p, p.Deadline.Sub(a.Now()))
}

func (a *Activator) armIn(p Pending, d time.Duration) {
	if a.timer != nil {
		a.timer.Stop()
	}
	a.timer = time.AfterFunc(d, func() {
		a.mu.Lock()
		defer a.mu.Unlock()
		cur, err := ReadPending(a.State)
		if err != nil || cur.Token != p.Token {
			return // confirmed meanwhile
		}
		if cur.Trial != nil && cur.RollbackError == "" {
			a.trialExpired(cur)
			return
		}
		a.Log.Warn("activation not confirmed in time: rolling back", "system", p.System, "to", orNone(p.PrevSystem))
		why := "it was not confirmed by its deadline, " + p.Deadline.Format(time.TimeOnly)
		if cur.RollbackError != "" {
			why = "a rollback that failed before (" + cur.RollbackError + "), retried"
		}
		a.rollbackNow(cur, why)
	})
}

// rollbackNow rolls p back, and tries again later if that fails. The
// caller holds a.mu.
func (a *Activator) rollbackNow(p Pending, why string) {
	if err := a.rollback(context.Background(), p, why); err != nil {
		a.failedRollback(p, err)
	}
}

// failedRollback records why a due rollback failed, for roostd status, and
// tries again soon. The caller holds a.mu.
func (a *Activator) failedRollback(p Pending, err error) {
	retry := a.RetryRollback
	if retry == 0 {
		retry = DefaultRetryRollback
	}
	a.Log.Error("rollback failed: trying again", "system", p.System, "in", retry, "err", err)
	p.RollbackError = err.Error()
	if werr := a.writePending(p); werr != nil {
		a.Log.Error("record the failed rollback", "err", werr)
	}
	a.armIn(p, retry)
}

// rollback returns to what ran before p, because of why, and records it
// (RolledBackFile) before p is gone. The caller holds a.mu, not the
// store's lock.
func (a *Activator) rollback(ctx context.Context, p Pending, why string) error {
	switch {
	case p.Trial != nil:
		// The default never moved and the previous system runs (or will,
		// once the router is back): the trial's generation goes.
		err := a.withLock(ctx, func(*store.Txn) error {
			if err := a.Profile.Delete(p.Trial.Generation); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
			return nil
		})
		if err != nil {
			return err
		}
	case p.Mode == Switch && p.PrevGeneration > 0:
		err := a.withLock(ctx, func(*store.Txn) error { return a.Profile.SwitchTo(p.PrevGeneration) })
		if err != nil {
			return fmt.Errorf("switch back to generation %d: %w", p.PrevGeneration, err)
		}
	}
	switch {
	case p.Trial != nil:
		// Nothing to run: the previous system is what this boot runs.
	case p.PrevSystem != "":
		if err := a.run(ctx, p.PrevSystem); err != nil {
			return err
		}
	default:
		os.Remove(CurrentLink(a.Store.Root))
		if a.Reload != nil {
			if err := a.Reload(ctx); err != nil {
				a.Log.Warn("reload without a system", "err", err)
			}
		}
	}
	r := RolledBack{Token: p.Token, System: p.System, To: p.PrevSystem, At: a.Now(), Why: why}
	if b, err := json.MarshalIndent(r, "", "  "); err == nil {
		if err := atomicfile.WriteFile(RolledBackFile(a.State), b, 0o600); err != nil {
			a.Log.Warn("record the rollback", "err", err) // the rollback itself stands
		}
	}
	if err := os.Remove(PendingFile(a.State)); err != nil && !os.IsNotExist(err) {
		return err
	}
	a.Log.Info("rolled back", "system", orNone(p.PrevSystem), "why", why)
	return atomicfile.SyncDir(a.State)
}

func (a *Activator) writePending(p Pending) error {
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(a.State, 0o700); err != nil {
		return err
	}
	return atomicfile.WriteFile(PendingFile(a.State), b, 0o600)
}

func newToken() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Rollback switches to the generation before the current one and runs it,
// as nixos-rebuild switch --rollback does. There is nothing to confirm: it
// goes back to a system that ran before.
func (a *Activator) Rollback(ctx context.Context) (generations.Generation, error) {
	return a.rollBackProfile(ctx, true)
}

// RollbackBoot makes the generation before the current one the boot
// default and runs nothing: the running system stays until the next boot,
// which runs that generation.
func (a *Activator) RollbackBoot(ctx context.Context) (generations.Generation, error) {
	return a.rollBackProfile(ctx, false)
}

// rollBackProfile points the profile at the generation before the current
// one and, with now, runs it.
func (a *Activator) rollBackProfile(ctx context.Context, now bool) (generations.Generation, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if p, err := ReadPending(a.State); err == nil {
		return generations.Generation{}, fmt.Errorf("activation of %s awaits confirmation: it rolls back by itself at %s", p.System, p.Deadline.Format(time.TimeOnly))
	}
	var g generations.Generation
	err := a.withLock(ctx, func(*store.Txn) (err error) {
		g, err = a.Profile.Rollback()
		return err
	})
	if err != nil {
		return g, err
	}
	if !now {
		a.Log.Info("rolled back for the next boot", "generation", g.Number, "system", g.Path)
		return g, nil
	}
	if err := a.run(ctx, g.Path); err != nil {
		return g, err
	}
	a.Log.Info("rolled back by request", "generation", g.Number, "system", g.Path)
	return g, nil
}
