package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/roostrouter/roost/agent"
	"github.com/roostrouter/roost/agent/control"
	"github.com/roostrouter/roost/updater/activate"
	"github.com/roostrouter/roost/updater/gc"
	"github.com/roostrouter/roost/updater/generations"
	"github.com/roostrouter/roost/updater/store"
	"github.com/roostrouter/roost/updater/storepath"
)

func printJSON(w io.Writer, v any) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func runGenerations(e *env, args []string) error {
	f := newFlags(e, "generations")
	pos, err := f.parse(args)
	if err != nil {
		return err
	}
	s := e.openStore(*f.root)
	profile := generations.System(*f.root, e.crashHook())
	if len(pos) > 0 {
		if pos[0] != "set" || len(pos) != 2 {
			return fmt.Errorf("usage: roostd generations [set PATH]")
		}
		p, err := storepath.Parse(pos[1])
		if err != nil {
			return err
		}
		t, err := e.lock(s, "roostd generations set")
		if err != nil {
			return err
		}
		defer t.Close()
		if _, ok := t.Registry().Get(p); !ok {
			return fmt.Errorf("%s is not a valid store path here: copy it to the router first", p)
		}
		g, changed, err := profile.Set(p)
		if err != nil {
			return err
		}
		if *f.json {
			printJSON(e.stdout, map[string]any{"generation": g.Number, "system": p, "newGeneration": changed})
			return nil
		}
		if !changed {
			fmt.Fprintf(e.stderr, "roostd: %s is already the current system (generation %d)\n", p, g.Number)
		} else {
			fmt.Fprintf(e.stderr, "roostd: generation %d is now current: %s\n", g.Number, p)
		}
		return nil
	}
	gens, _, err := profile.List()
	if err != nil {
		return err
	}
	if *f.json {
		if gens == nil {
			gens = []generations.Generation{}
		}
		printJSON(e.stdout, gens)
		return nil
	}
	for _, g := range gens {
		mark := ""
		if g.Current {
			mark = "   (current)"
		}
		fmt.Fprintf(e.stdout, "%4d   %s   %s%s\n", g.Number, g.Created.Format("2006-01-02 15:04:05"), g.Path, mark)
	}
	return nil
}

// runRollback runs the previous generation, through the agent; with
// --boot, or without a running agent, it only makes it the boot default.
func runRollback(e *env, args []string) error {
	f := newFlags(e, "rollback")
	boot := f.Bool("boot", false, "make the previous generation the boot default only: the running system stays until the next boot")
	if pos, err := f.parse(args); err != nil {
		return err
	} else if len(pos) > 0 {
		return errors.New("usage: roostd rollback [--boot] [--json]")
	}
	err := viaAgent(e, *f.root, append([]string{"rollback"}, args...), func(a *agent.Agent) error {
		if *boot {
			g, err := a.RollbackBoot(e.ctx)
			if err != nil {
				return err
			}
			return printRolledBack(e, *f.json, rolledBack{Generation: g.Number, System: g.Path},
				fmt.Sprintf("generation %d (%s) is the boot default, and runs at the next boot; the running system stays until then", g.Number, g.Path))
		}
		g, err := a.Rollback(e.ctx)
		if err != nil {
			return err
		}
		return printRolledBack(e, *f.json, rolledBack{Generation: g.Number, System: g.Path, Running: true},
			fmt.Sprintf("rolled back to generation %d, running: %s", g.Number, g.Path))
	})
	if !errors.Is(err, control.ErrNotRunning) {
		return err
	}
	t, err := e.lock(e.openStore(*f.root), "roostd rollback")
	if err != nil {
		return err
	}
	defer t.Close()
	g, err := generations.System(*f.root, e.crashHook()).Rollback()
	if err != nil {
		return err
	}
	why := "roostd is not running: "
	if *boot {
		why = ""
	}
	return printRolledBack(e, *f.json, rolledBack{Generation: g.Number, System: g.Path},
		fmt.Sprintf("%sgeneration %d (%s) is the boot default, and runs at the next boot", why, g.Number, g.Path))
}

func printRolledBack(e *env, asJSON bool, r rolledBack, text string) error {
	if asJSON {
		printJSON(e.stdout, r)
		return nil
	}
	fmt.Fprintln(e.stdout, text)
	return nil
}

// rolledBack is what `roostd rollback --json` prints.
type rolledBack struct {
	Generation int            `json:"generation"`
	System     storepath.Path `json:"system"`
	Running    bool           `json:"running"` // false: the boot default only (--boot, or the agent was not running)
}

func runGC(e *env, args []string) error {
	f := newFlags(e, "gc")
	keep := f.Int("keep", 0, "keep the newest `N` generations (0: keep all, unless --older-than)")
	older := f.String("older-than", "", "delete generations older than this, like 30d or 12h (nix-collect-garbage --delete-older-than)")
	dry := f.Bool("dry-run", false, "print what would be deleted, delete nothing")
	state := f.String("state", e.defaultState, "the agent's state `folder`, for when it is not running")
	if _, err := f.parse(args); err != nil {
		return err
	}
	opts := gc.Options{Keep: *keep, DryRun: *dry, Now: time.Now()}
	if *older != "" {
		d, err := parseAge(*older)
		if err != nil {
			return err
		}
		opts.OlderThan = d
	}
	// In the agent when it runs: it knows the activation awaiting
	// confirmation, whose rollback gc must leave somewhere to go.
	if e.agent == nil {
		err := viaAgent(e, *f.root, append([]string{"gc"}, args...), nil)
		if !errors.Is(err, control.ErrNotRunning) {
			return err
		}
	} else {
		*state = e.agent.State()
	}
	if p, err := activate.ReadPending(*state); err == nil {
		sys, gen := p.Holds()
		why := fmt.Sprintf("previous system of the activation of %s awaiting confirmation until %s", p.System, p.Deadline.Format(time.TimeOnly))
		if sys != "" {
			opts.Hold = append(opts.Hold, gc.Root{Why: why, Path: sys})
		}
		if gen > 0 {
			opts.HoldGenerations = map[int]string{gen: why}
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("refusing to collect: %w; remove the file only if no activation is awaiting confirmation", err)
	}
	var res gc.Result
	t, err := e.lock(e.openStore(*f.root), "roostd gc")
	switch {
	case errors.Is(err, store.ErrReadOnly):
		// An image board's store is the image it booted, replaced whole:
		// nothing in it is garbage.
		if !*f.json {
			fmt.Fprintln(e.stdout, "the store is the booted image's, read-only: nothing to collect")
		}
		res.DryRun = *dry
	case err != nil:
		return err
	default:
		defer t.Close()
		if res, err = gc.Collect(e.ctx, t, generations.System(*f.root, e.crashHook()), opts); err != nil {
			return err
		}
	}
	if *f.json {
		if res.Paths == nil {
			res.Paths = []storepath.Path{}
		}
		if res.Generations == nil {
			res.Generations = []int{}
		}
		printJSON(e.stdout, res)
		return nil
	}
	verb := "deleted"
	if res.DryRun {
		verb = "would delete"
	}
	for _, n := range res.Generations {
		fmt.Fprintf(e.stdout, "%s generation %d\n", verb, n)
	}
	for _, p := range res.Paths {
		fmt.Fprintf(e.stdout, "%s %s\n", verb, p)
	}
	for _, name := range res.Invalid {
		fmt.Fprintf(e.stdout, "%s %s/%s (not registered)\n", verb, storepath.Dir, name)
	}
	for _, h := range res.Held {
		fmt.Fprintf(e.stdout, "kept %s: %s\n", h.Path, h.Why)
	}
	for _, r := range res.TempRoots {
		until := "while it runs"
		if !r.Running {
			until = "until " + r.Expires.Format(time.TimeOnly)
		}
		fmt.Fprintf(e.stdout, "kept %d paths received by transfer %s %s\n", len(r.Paths), r.ID, until)
	}
	n := len(res.Paths) + len(res.Invalid)
	if res.DryRun {
		fmt.Fprintf(e.stdout, "%d store paths would be deleted, freeing %s\n", n, humanBytes(res.Bytes))
	} else {
		fmt.Fprintf(e.stdout, "%d store paths deleted, %s freed\n", n, humanBytes(res.Bytes))
	}
	return nil
}

// parseAge reads a duration in Nix's form (30d) or Go's (12h, 90m).
func parseAge(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		var days int
		if _, err := fmt.Sscanf(n, "%d", &days); err != nil || days < 0 || fmt.Sprint(days) != n {
			return 0, fmt.Errorf("--older-than %q: want a number of days like 30d, or a duration like 12h", s)
		}
		return time.Duration(days) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("--older-than %q: want a number of days like 30d, or a duration like 12h", s)
	}
	return d, nil
}
