package boot

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/roostrouter/roost/updater/generations"
	"github.com/roostrouter/roost/updater/storepath"
)

// choice is a system to boot and why it was chosen.
type choice struct {
	System     storepath.Path
	Generation int    // 0: a system no generation names (roost.system=)
	Why        string // "the profile's default", "roost.generation=3", …
}

// errTrial is a trial generation that cannot boot.
var errTrial = errors.New("the trial generation cannot boot")

// choose picks the system to boot: the first of candidates that can run
// (it has bin/roostd). Each one passed over is reported in skipped, to be
// logged loudly. On a trial boot the trial's generation is the only
// candidate: if it cannot run, the error wraps errTrial.
func (in *Init) choose(p Params) (c choice, skipped []error, err error) {
	gens, cur, err := generations.System(in.opts.Root, nil).List()
	if err != nil {
		skipped = append(skipped, err) // the command line's system may still boot
	}
	for _, c := range candidates(p, gens, cur) {
		if err := in.canRun(c); err != nil {
			skipped = append(skipped, fmt.Errorf("not booting %s: %w", c.Why, err))
			continue
		}
		return c, skipped, nil
	}
	if p.Trial {
		return choice{}, skipped, fmt.Errorf("%w: no fallback on a trial's kernel", errTrial)
	}
	return choice{}, skipped, fmt.Errorf("no system to boot in %s: install one (roost rebuild boot, or a disk image with a generation)", in.path("nix/var/nix/profiles"))
}

// candidates lists what may boot, best first: the system the command line
// names, the profile's default (cur), then the other generations, newest
// first, so that a router whose default cannot run still comes up. A
// trial boot has one: its generation. The other generations were built
// for other kernels, and a failed trial goes back to the default by a
// reboot, on the default's kernel.
func candidates(p Params, gens []generations.Generation, cur int) []choice {
	var cands []choice
	if p.System != "" && !p.Trial {
		c := choice{System: p.System, Why: "roost.system=" + p.System.String()}
		for _, g := range gens {
			if g.Path == p.System {
				c.Generation = g.Number
			}
		}
		cands = append(cands, c)
	}
	if p.Generation > 0 {
		c := choice{Generation: p.Generation, Why: fmt.Sprintf("roost.generation=%d", p.Generation)}
		for _, g := range gens {
			if g.Number == p.Generation {
				c.System = g.Path
			}
		}
		cands = append(cands, c)
	}
	if p.Trial {
		return cands
	}
	for _, g := range gens {
		if g.Number == cur {
			cands = append(cands, choice{g.Path, g.Number, "the profile's default"})
		}
	}
	for i := len(gens) - 1; i >= 0; i-- {
		if g := gens[i]; g.Number != cur {
			cands = append(cands, choice{g.Path, g.Number, fmt.Sprintf("generation %d, as a fallback", g.Number)})
		}
	}
	return cands
}

// canRun checks that c is a system with an agent.
func (in *Init) canRun(c choice) error {
	if c.System == "" {
		return fmt.Errorf("generation %d does not exist", c.Generation)
	}
	agent := in.resolve(filepath.Join(c.System.String(), "bin/roostd"))
	fi, err := os.Stat(agent)
	if err != nil {
		return fmt.Errorf("%s has no bin/roostd: %w", c.System, err)
	}
	if fi.Mode()&0o111 == 0 {
		return fmt.Errorf("%s/bin/roostd is not executable", c.System)
	}
	return nil
}

// resolve is where p, as the router sees it, is below the root, with the
// symlinks at its end followed inside the root: a system's bin/roostd and
// modules are links to absolute store paths. The folders on the way must
// be real ones, as a store path's are.
func (in *Init) resolve(p string) string {
	full := in.path(p)
	for range 16 {
		target, err := os.Readlink(full)
		if err != nil {
			return full
		}
		if filepath.IsAbs(target) {
			full = in.path(target)
		} else {
			full = filepath.Join(filepath.Dir(full), target)
		}
	}
	return full
}

// readWord reads a file that holds one word (a board's name), "" if none.
func readWord(file string) string {
	b, err := os.ReadFile(file)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
