// Package generations manages system generations in Nix's profile layout:
// system-N-link symlinks to store paths, and a relative system symlink to
// the current one, switched by an atomic rename.
package generations

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/roostrouter/roost/updater/atomicfile"
	"github.com/roostrouter/roost/updater/storepath"
)

// Generation is one system-N-link.
type Generation struct {
	Number  int            `json:"number"`
	Path    storepath.Path `json:"path"`
	Created time.Time      `json:"created"`
	Current bool           `json:"current"`
}

// Profile is a Nix profile such as $ROOT/nix/var/nix/profiles/system.
type Profile struct {
	Dir  string
	Name string
	// Crash, if set, is called at each step of a switch (see store.Options).
	Crash func(point string)
}

// System returns the system profile below root.
func System(root string, crash func(string)) *Profile {
	if crash == nil {
		crash = func(string) {}
	}
	return &Profile{Dir: filepath.Join(root, "nix/var/nix/profiles"), Name: "system", Crash: crash}
}

func (p *Profile) linkName(n int) string { return fmt.Sprintf("%s-%d-link", p.Name, n) }

// List returns the generations, oldest first, and the current number (0 if none).
func (p *Profile) List() ([]Generation, int, error) {
	entries, err := os.ReadDir(p.Dir)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, 0, nil
		}
		return nil, 0, fmt.Errorf("list generations: %w", err)
	}
	cur, err := p.current()
	if err != nil {
		return nil, 0, err
	}
	var gens []Generation
	for _, e := range entries {
		num, ok := strings.CutPrefix(e.Name(), p.Name+"-")
		if !ok {
			continue
		}
		num, ok = strings.CutSuffix(num, "-link")
		n, err := strconv.Atoi(num)
		if !ok || err != nil || n <= 0 {
			continue
		}
		link := filepath.Join(p.Dir, e.Name())
		target, err := os.Readlink(link)
		if err != nil {
			return nil, 0, fmt.Errorf("read generation %d: %w", n, err)
		}
		sp, err := storepath.FromLink(target)
		if err != nil {
			return nil, 0, fmt.Errorf("generation %d: %w", n, err)
		}
		fi, err := os.Lstat(link)
		if err != nil {
			return nil, 0, err
		}
		gens = append(gens, Generation{Number: n, Path: sp, Created: fi.ModTime(), Current: n == cur})
	}
	sort.Slice(gens, func(i, j int) bool { return gens[i].Number < gens[j].Number })
	return gens, cur, nil
}

// current returns the number the profile link points to, 0 if none.
func (p *Profile) current() (int, error) {
	target, err := os.Readlink(filepath.Join(p.Dir, p.Name))
	if err != nil {
		if os.IsNotExist(err) {
			return 0, nil
		}
		return 0, fmt.Errorf("read profile %s: %w", p.Name, err)
	}
	num, ok := strings.CutPrefix(filepath.Base(target), p.Name+"-")
	num, ok2 := strings.CutSuffix(num, "-link")
	n, err := strconv.Atoi(num)
	if !ok || !ok2 || err != nil {
		return 0, fmt.Errorf("profile %s points to %q, not to a generation", p.Name, target)
	}
	return n, nil
}

// Current returns the current generation.
func (p *Profile) Current() (Generation, bool, error) {
	gens, cur, err := p.List()
	if err != nil {
		return Generation{}, false, err
	}
	for _, g := range gens {
		if g.Number == cur {
			return g, true, nil
		}
	}
	return Generation{}, false, nil
}

// Add makes path a new generation without making it current: a trial
// boot's, which becomes the default only once confirmed.
func (p *Profile) Add(path storepath.Path) (Generation, error) {
	if err := os.MkdirAll(p.Dir, 0o755); err != nil {
		return Generation{}, fmt.Errorf("create profiles folder: %w", err)
	}
	atomicfile.Clean(p.Dir)
	gens, _, err := p.List()
	if err != nil {
		return Generation{}, err
	}
	n := 1
	if len(gens) > 0 {
		n = gens[len(gens)-1].Number + 1
	}
	if err := atomicfile.Symlink(path.String(), filepath.Join(p.Dir, p.linkName(n))); err != nil {
		return Generation{}, fmt.Errorf("add generation %d: %w", n, err)
	}
	return Generation{Number: n, Path: path}, nil
}

// Set makes path the current system in a new generation, unless it already
// is current. The new system-N-link is made first (a crash then leaves an
// extra generation, as with Nix); the rename of the profile link is the
// commit point.
func (p *Profile) Set(path storepath.Path) (Generation, bool, error) {
	if gens, cur, err := p.List(); err == nil {
		for _, g := range gens {
			if g.Number == cur && g.Path == path {
				return g, false, nil
			}
		}
	}
	g, err := p.Add(path)
	if err != nil {
		return Generation{}, false, err
	}
	p.Crash("generation-linked")
	if err := p.switchTo(g.Number); err != nil {
		return Generation{}, false, err
	}
	g, _, err = p.Current()
	return g, true, err
}

func (p *Profile) switchTo(n int) error {
	if err := atomicfile.Symlink(p.linkName(n), filepath.Join(p.Dir, p.Name)); err != nil {
		return fmt.Errorf("switch to generation %d: %w", n, err)
	}
	p.Crash("generation-switched")
	return nil
}

// ErrNoPrevious means there is no generation to roll back to.
var ErrNoPrevious = errors.New("no earlier generation to roll back to")

// Rollback switches to the newest generation older than the current one,
// as nix-env --rollback does; the current one stays.
func (p *Profile) Rollback() (Generation, error) {
	gens, cur, err := p.List()
	if err != nil {
		return Generation{}, err
	}
	for i := len(gens) - 1; i >= 0; i-- {
		if gens[i].Number < cur {
			if err := p.switchTo(gens[i].Number); err != nil {
				return Generation{}, err
			}
			gens[i].Current = true
			return gens[i], nil
		}
	}
	return Generation{}, fmt.Errorf("generation %d: %w", cur, ErrNoPrevious)
}

// SwitchTo makes generation n current.
func (p *Profile) SwitchTo(n int) error {
	if _, err := os.Lstat(filepath.Join(p.Dir, p.linkName(n))); err != nil {
		return fmt.Errorf("generation %d does not exist", n)
	}
	return p.switchTo(n)
}

// Delete removes generation n, which must not be current.
func (p *Profile) Delete(n int) error {
	cur, err := p.current()
	if err != nil {
		return err
	}
	if n == cur {
		return fmt.Errorf("generation %d is current and cannot be deleted", n)
	}
	if err := os.Remove(filepath.Join(p.Dir, p.linkName(n))); err != nil {
		return fmt.Errorf("delete generation %d: %w", n, err)
	}
	return atomicfile.SyncDir(p.Dir)
}

// ToDelete chooses the generations that keep and olderThan allow deleting,
// with nix-collect-garbage's rules: never the current one; with keep > 0
// the newest keep are kept; with olderThan > 0, those created since
// now-olderThan are kept, and so is the newest one created before (it was
// the system at that moment). With both, a generation either rule keeps is
// kept. With neither, none is deleted.
func ToDelete(gens []Generation, keep int, olderThan time.Duration, now time.Time) []Generation {
	if keep <= 0 && olderThan <= 0 {
		return nil
	}
	kept := make(map[int]bool)
	if keep > 0 {
		for i := len(gens) - 1; i >= 0 && i >= len(gens)-keep; i-- {
			kept[gens[i].Number] = true
		}
	}
	if olderThan > 0 {
		cutoff := now.Add(-olderThan)
		seenOlder := false
		for i := len(gens) - 1; i >= 0; i-- {
			if !gens[i].Created.Before(cutoff) {
				kept[gens[i].Number] = true
			} else if !seenOlder {
				kept[gens[i].Number] = true
				seenOlder = true
			}
		}
	}
	var out []Generation
	for _, g := range gens {
		if !g.Current && !kept[g.Number] {
			out = append(out, g)
		}
	}
	return out
}
