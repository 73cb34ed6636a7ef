package main

import (
	"errors"
	"io/fs"
	"os"

	"github.com/roostrouter/roost/updater/activate"
	"github.com/roostrouter/roost/updater/generations"
	"github.com/roostrouter/roost/updater/storepath"
	"github.com/roostrouter/roost/updater/transfer"
)

// running says what the router runs, for roost's transfer: a rebuild of
// the system that runs, as the boot default, with no activation awaiting
// confirmation and its config in force, has nothing to activate.
func running(e *env, root string) *transfer.Running {
	r := &transfer.Running{}
	if t, err := os.Readlink(activate.CurrentLink(root)); err == nil {
		r.System, _ = storepath.FromLink(t)
	}
	if gens, cur, err := generations.System(root, nil).List(); err == nil {
		for _, g := range gens {
			if g.Number == cur {
				r.Default, r.Generation = g.Path, cur
			}
		}
	}
	// Outside the agent (under another sshd) the state folder is not
	// known for sure: never settled, so roost activates as before.
	if e.agent != nil {
		_, err := activate.ReadPending(e.agent.State())
		r.Settled = errors.Is(err, fs.ErrNotExist) && e.agent.ConfigProblem() == ""
	}
	return r
}
