// Package activate switches the router to a system and keeps it only if the
// switch is confirmed in time: otherwise it rolls back by itself, whether or
// not the laptop that asked is still there.
//
// The pending activation is written to the state folder before anything is
// switched (its commit point), so a crash, or an agent that the new system
// stops, still rolls back when the agent starts again: the timer survives
// the process.
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

// Pending is an activation awaiting confirmation, as kept in the state folder.
type Pending struct {
	Token          string         `json:"token"`
	Mode           Mode           `json:"mode"`
	System         storepath.Path `json:"system"`
	Deadline       time.Time      `json:"deadline"`
	PrevSystem     storepath.Path `json:"previousSystem,omitempty"`     // what /run/current-system was
	PrevGeneration int            `json:"previousGeneration,omitempty"` // what the profile was (switch)
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
}

// Activator owns the current system.
type Activator struct {
	Store   *store.Store
	Profile *generations.Profile
	State   string // the state folder: pending.json lives here
	Log     *slog.Logger
	Now     func() time.Time
	// Reload is called after /run/current-system changed, so that the agent
	// applies the system's config.
	Reload func(ctx context.Context) error
	// Lock takes the store's writer lock.
	Lock func(ctx context.Context) (*store.Txn, error)

	mu    sync.Mutex
	timer *time.Timer
}

func (a *Activator) pendingFile() string { return filepath.Join(a.State, "pending-activation.json") }

// CurrentLink is the link to the running system below root.
func CurrentLink(root string) string { return filepath.Join(root, "run/current-system") }

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
// without etc/roost/config.json.
func (a *Activator) Check(txn *store.Txn, system storepath.Path) error {
	if !txn.Valid(system) {
		return fmt.Errorf("%s is not on the router: copy it first", system)
	}
	cfg := filepath.Join(a.Store.PhysicalPath(system), "etc/roost/config.json")
	if _, err := os.Stat(cfg); err != nil {
		return fmt.Errorf("%s is not a roost system: it has no etc/roost/config.json", system)
	}
	return nil
}

// Activate switches to system as mode says. For switch and test it returns a
// token that Confirm must receive before the timeout, or the router goes
// back to what ran before.
func (a *Activator) Activate(ctx context.Context, mode Mode, system storepath.Path, timeout time.Duration) (Result, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	res := Result{Mode: mode, System: system}
	if p, err := a.readPending(); err == nil {
		return res, fmt.Errorf("activation of %s is still awaiting confirmation until %s; confirm or wait for its rollback", p.System, p.Deadline.Format(time.TimeOnly))
	}
	txn, err := a.Lock(ctx)
	if err != nil {
		return res, err
	}
	defer txn.Close()
	if err := a.Check(txn, system); err != nil {
		return res, err
	}
	prev, _ := a.Current()
	res.Previous = prev
	cur, _, err := a.Profile.Current()
	if err != nil {
		return res, err
	}
	switch mode {
	case DryActivate:
		return res, nil
	case Boot:
		g, changed, err := a.Profile.Set(system)
		res.Generation, res.NewGen = g.Number, changed
		return res, err
	}
	if timeout <= 0 {
		return res, errors.New("a confirm timeout is required")
	}
	p := Pending{Token: newToken(), Mode: mode, System: system, Deadline: a.Now().Add(timeout),
		PrevSystem: prev, PrevGeneration: cur.Number}
	if err := a.writePending(p); err != nil {
		return res, err
	}
	if mode == Switch {
		g, changed, err := a.Profile.Set(system)
		if err != nil {
			return res, a.abort(ctx, p, err)
		}
		res.Generation, res.NewGen = g.Number, changed
	}
	if err := a.run(ctx, system); err != nil {
		return res, a.abort(ctx, p, err)
	}
	res.Token, res.Deadline = p.Token, p.Deadline
	a.arm(p)
	a.Log.Info("activated, awaiting confirmation", "mode", mode, "system", system, "deadline", p.Deadline)
	return res, nil
}

// abort rolls back at once after a failed activation.
func (a *Activator) abort(ctx context.Context, p Pending, cause error) error {
	if err := a.rollback(ctx, p); err != nil {
		return fmt.Errorf("%w; rolling back also failed: %v", cause, err)
	}
	return fmt.Errorf("%w (rolled back to %s)", cause, p.PrevSystem)
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

// Confirm keeps a pending activation.
func (a *Activator) Confirm(token string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	p, err := a.readPending()
	if err != nil {
		return errors.New("nothing awaits confirmation (already confirmed, or rolled back)")
	}
	if p.Token != token {
		return errors.New("wrong confirmation token")
	}
	if a.timer != nil {
		a.timer.Stop()
	}
	if err := os.Remove(a.pendingFile()); err != nil {
		return err
	}
	if err := atomicfile.SyncDir(a.State); err != nil {
		return err
	}
	a.Log.Info("activation confirmed", "system", p.System)
	return nil
}

// Recover, called when the agent starts, re-arms the timer of an activation
// that was pending when the agent stopped, or rolls back at once if its
// deadline has passed.
func (a *Activator) Recover(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	p, err := a.readPending()
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		a.Log.Error("unreadable pending activation: rolling back is impossible, keeping the current system", "err", err)
		return nil
	}
	if a.Now().After(p.Deadline) {
		a.Log.Warn("activation was not confirmed before the agent stopped: rolling back", "system", p.System)
		return a.rollback(ctx, p)
	}
	a.arm(p)
	return nil
}

func (a *Activator) arm(p Pending) {
	if a.timer != nil {
		a.timer.Stop()
	}
	a.timer = time.AfterFunc(p.Deadline.Sub(a.Now()), func() {
		a.mu.Lock()
		defer a.mu.Unlock()
		cur, err := a.readPending()
		if err != nil || cur.Token != p.Token {
			return // confirmed meanwhile
		}
		a.Log.Warn("activation not confirmed in time: rolling back", "system", p.System, "to", p.PrevSystem)
		if err := a.rollback(context.Background(), p); err != nil {
			a.Log.Error("rollback failed", "err", err)
		}
	})
}

// rollback returns to what ran before p. The caller holds a.mu.
func (a *Activator) rollback(ctx context.Context, p Pending) error {
	if p.Mode == Switch && p.PrevGeneration > 0 {
		txn, err := a.Lock(ctx)
		if err != nil {
			return err
		}
		err = a.Profile.SwitchTo(p.PrevGeneration)
		txn.Close()
		if err != nil {
			return err
		}
	}
	if p.PrevSystem != "" {
		if err := a.run(ctx, p.PrevSystem); err != nil {
			return err
		}
	} else {
		os.Remove(CurrentLink(a.Store.Root))
		if a.Reload != nil {
			a.Reload(ctx)
		}
	}
	if err := os.Remove(a.pendingFile()); err != nil && !os.IsNotExist(err) {
		return err
	}
	a.Log.Info("rolled back", "system", p.PrevSystem)
	return atomicfile.SyncDir(a.State)
}

func (a *Activator) readPending() (Pending, error) {
	var p Pending
	b, err := os.ReadFile(a.pendingFile())
	if err != nil {
		return p, err
	}
	if err := json.Unmarshal(b, &p); err != nil {
		return p, fmt.Errorf("read %s: %w", a.pendingFile(), err)
	}
	return p, nil
}

func (a *Activator) writePending(p Pending) error {
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(a.State, 0o700); err != nil {
		return err
	}
	return atomicfile.WriteFile(a.pendingFile(), b, 0o600)
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
	a.mu.Lock()
	defer a.mu.Unlock()
	if p, err := a.readPending(); err == nil {
		return generations.Generation{}, fmt.Errorf("activation of %s awaits confirmation: it rolls back by itself at %s", p.System, p.Deadline.Format(time.TimeOnly))
	}
	txn, err := a.Lock(ctx)
	if err != nil {
		return generations.Generation{}, err
	}
	g, err := a.Profile.Rollback()
	txn.Close()
	if err != nil {
		return g, err
	}
	if err := a.run(ctx, g.Path); err != nil {
		return g, err
	}
	a.Log.Info("rolled back by request", "generation", g.Number, "system", g.Path)
	return g, nil
}
