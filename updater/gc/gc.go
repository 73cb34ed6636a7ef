// Package gc collects garbage in the router's store: everything not
// reachable from the current and booted systems, the kept generations, pins
// and the temp roots of recent transfers.
package gc

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"time"

	"github.com/roostrouter/roost/updater/activate"
	"github.com/roostrouter/roost/updater/generations"
	"github.com/roostrouter/roost/updater/store"
	"github.com/roostrouter/roost/updater/storepath"
)

// Options say which generations go; with neither Keep nor OlderThan all are kept.
type Options struct {
	Keep      int           // keep the newest Keep generations
	OlderThan time.Duration // delete generations older than this (nix-collect-garbage --delete-older-than)
	DryRun    bool
	Now       time.Time
	// Hold are kept whatever else says, with why: the previous system of an
	// activation awaiting confirmation, where its rollback goes.
	Hold []Root
	// HoldGenerations are generations kept whatever Keep and OlderThan say,
	// by number, with why.
	HoldGenerations map[int]string
}

// Result is what a collection did, or would do with DryRun.
type Result struct {
	Generations []int            `json:"deletedGenerations"`
	Paths       []storepath.Path `json:"deletedPaths"`
	Invalid     []string         `json:"deletedInvalid,omitempty"` // unregistered leftovers in the store folder
	Bytes       int64            `json:"bytesFreed"`
	DryRun      bool             `json:"dryRun"`
	// Held is what was kept only because Options.Hold or HoldGenerations
	// said so.
	Held []Root `json:"held,omitempty"`
	// TempRoots are the transfers whose paths were kept (running, or ended
	// within their grace period).
	TempRoots []store.TempRoot `json:"tempRoots,omitempty"`
}

// Root is a reason to keep a store path.
type Root struct {
	Why  string         `json:"why"`
	Path storepath.Path `json:"path"`
}

// Collect deletes old generations as opts say, then every store path that is
// not reachable from a root. It holds the writer lock (t) throughout.
//
// Order, for crash safety: generation links first (each removal is atomic);
// then the registry forgets the dead paths in one commit (the commit point,
// after which they are invalid whatever happens to their files); then the
// files go. An interrupted run leaves only invalid files, which the next
// run or writer removes.
func Collect(ctx context.Context, t *store.Txn, profile *generations.Profile, opts Options) (Result, error) {
	res := Result{DryRun: opts.DryRun}
	gens, _, err := profile.List()
	if err != nil {
		return res, err
	}
	for _, g := range generations.ToDelete(gens, opts.Keep, opts.OlderThan, opts.Now) {
		if why, ok := opts.HoldGenerations[g.Number]; ok {
			res.Held = append(res.Held, Root{fmt.Sprintf("generation %d: %s", g.Number, why), g.Path})
			continue
		}
		res.Generations = append(res.Generations, g.Number)
		if !opts.DryRun {
			if err := profile.Delete(g.Number); err != nil {
				return res, err
			}
		}
	}
	if res.TempRoots, err = t.TempRoots(); err != nil {
		return res, err
	}
	roots, err := Roots(t, profile, res.Generations, res.TempRoots)
	if err != nil {
		return res, err
	}
	for _, h := range opts.Hold {
		roots = append(roots, h)
		if !slices.ContainsFunc(roots[:len(roots)-1], func(r Root) bool { return r.Path == h.Path }) {
			res.Held = append(res.Held, h)
		}
	}
	reg := t.Registry()
	var rootPaths []storepath.Path
	for _, r := range roots {
		if _, ok := reg.Get(r.Path); !ok {
			if _, err := os.Lstat(t.Store().PhysicalPath(r.Path)); err == nil {
				return res, fmt.Errorf("refusing to collect: root %s (%s) is in the store but not registered, so what it references is unknown; register it first with roostd store import", r.Path, r.Why)
			}
			continue // a root naming a path that is gone keeps nothing
		}
		rootPaths = append(rootPaths, r.Path)
	}
	live := store.Closure(reg, rootPaths)
	for _, p := range reg.Paths() {
		if !live[p] {
			res.Paths = append(res.Paths, p)
		}
	}
	entries, err := t.Store().Entries()
	if err != nil {
		return res, err
	}
	for _, name := range entries {
		p, err := storepath.ParseBase(name)
		if err == nil {
			if _, ok := reg.Get(p); ok || live[p] {
				continue
			}
		}
		res.Invalid = append(res.Invalid, name)
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}
	if opts.DryRun {
		for _, p := range res.Paths {
			res.Bytes += store.DiskUsage(t.Store().PhysicalPath(p))
		}
		for _, name := range res.Invalid {
			res.Bytes += store.DiskUsage(filepath.Join(t.Store().Dir(), name))
		}
		return res, nil
	}
	res.Bytes, err = t.Delete(res.Paths, res.Invalid)
	return res, err
}

// Roots lists what gc keeps: the current and booted systems, every
// generation not being deleted, pins in gcroots, and the live temp roots
// (t.TempRoots, read once by the caller, which reports them too).
func Roots(t *store.Txn, profile *generations.Profile, deleting []int, temp []store.TempRoot) ([]Root, error) {
	var roots []Root
	s := t.Store()
	for _, link := range []string{activate.CurrentLink(s.Root), activate.BootedLink(s.Root)} {
		if p, ok, err := linkedPath(link); err != nil {
			return nil, err
		} else if ok {
			roots = append(roots, Root{link, p})
		}
	}
	gens, _, err := profile.List()
	if err != nil {
		return nil, err
	}
	gone := make(map[int]bool)
	for _, n := range deleting {
		gone[n] = true
	}
	for _, g := range gens {
		if !gone[g.Number] {
			roots = append(roots, Root{fmt.Sprintf("generation %d", g.Number), g.Path})
		}
	}
	pins, err := os.ReadDir(s.GCRootsDir())
	if err != nil && !os.IsNotExist(err) {
		return nil, fmt.Errorf("read pins: %w", err)
	}
	for _, e := range pins {
		if p, ok, err := linkedPath(filepath.Join(s.GCRootsDir(), e.Name())); err != nil {
			return nil, err
		} else if ok {
			roots = append(roots, Root{"pin " + e.Name(), p})
		}
	}
	for _, tr := range temp {
		for _, p := range tr.Paths {
			roots = append(roots, Root{"recent transfer", p})
		}
	}
	sort.Slice(roots, func(i, j int) bool { return roots[i].Path < roots[j].Path })
	return roots, nil
}

// linkedPath reads a symlink to a store path; a missing link is no root.
func linkedPath(link string) (storepath.Path, bool, error) {
	target, err := os.Readlink(link)
	if err != nil {
		if os.IsNotExist(err) {
			return "", false, nil
		}
		return "", false, fmt.Errorf("read root %s: %w", link, err)
	}
	p, err := storepath.FromLink(target)
	if err != nil {
		return "", false, fmt.Errorf("root %s: %w", link, err)
	}
	return p, true, nil
}
