package main

import (
	"context"

	"github.com/roostrouter/roost/hosttool/deltacache"
	"github.com/roostrouter/roost/hosttool/nixlocal"
	"github.com/roostrouter/roost/updater/activate"
	"github.com/roostrouter/roost/updater/nixsig"
	"github.com/roostrouter/roost/updater/registry"
	"github.com/roostrouter/roost/updater/storepath"
	"github.com/roostrouter/roost/updater/transfer"
)

// closureQuery is the laptop's Nix asked for a closure while the SSH
// connection is made: neither waits for the other.
type closureQuery struct {
	roots []storepath.Path
	infos []registry.Info
	err   error
	done  chan struct{}
}

func startClosure(ctx context.Context, nix *nixlocal.Nix, paths []storepath.Path) *closureQuery {
	q := &closureQuery{roots: paths, done: make(chan struct{})}
	go func() {
		defer close(q.done)
		q.infos, q.err = nix.Closure(ctx, paths...)
	}()
	return q
}

func (q *closureQuery) wait() ([]registry.Info, error) {
	<-q.done
	return q.infos, q.err
}

// offer is the closure to offer the router: its roots at once, its infos
// (signed with key, if any) once Nix has them, counted into res and
// indexed in byPath as they come. A router that holds the roots answers
// before Nix does.
func (q *closureQuery) offer(key *nixsig.SecretKey, res *copyResult, byPath map[storepath.Path]registry.Info) transfer.Offer {
	return transfer.Offer{Roots: q.roots, Ready: q.done, Infos: func() ([]registry.Info, error) {
		infos, err := q.wait()
		if err != nil {
			return nil, err
		}
		if key != nil {
			for i := range infos {
				infos[i].Signatures = append(infos[i].Signatures, nixsig.Sign(&infos[i], *key))
			}
		}
		res.ClosurePaths = len(infos)
		for _, i := range infos {
			res.ClosureNARBytes += i.NarSize
			byPath[i.Path] = i
		}
		return infos, nil
	}}
}

// deltaCache is where roost keeps the deltas it computed
// (deltacache.Dir), or nil if there is no such folder.
func (e *env) deltaCache() transfer.DeltaCache {
	dir, err := deltacache.Dir(e.getenv)
	if err != nil {
		return nil
	}
	return deltacache.Open(dir, 0)
}

// nothingToActivate says whether the router already runs system as mode
// would leave it, with nothing awaiting confirmation: this connection
// has just shown that SSH reaches it, so there is nothing to confirm
// either. dry-activate always asks the router.
func nothingToActivate(mode activate.Mode, system storepath.Path, r *transfer.Running) bool {
	if r == nil || !r.Settled {
		return false
	}
	switch mode {
	case activate.Switch:
		return r.System == system && r.Default == system
	case activate.Test:
		return r.System == system
	case activate.Boot:
		return r.Default == system
	}
	return false
}
