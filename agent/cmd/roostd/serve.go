package main

import (
	"context"
	"errors"
	"slices"

	"github.com/roostrouter/roost/updater/serve"
	"github.com/roostrouter/roost/updater/store"
)

// runNixStore is roostd invoked as nix-store, by nix copy and
// nix-copy-closure over SSH: only --serve [--write] is offered.
func runNixStore(e *env, args []string) error {
	if !slices.Contains(args, "--serve") {
		return errors.New("this nix-store is roostd: it offers only --serve [--write] (for nix copy and nix-copy-closure)")
	}
	for _, a := range args {
		if a != "--serve" && a != "--write" {
			return errors.New("nix-store --serve: unknown flag " + a)
		}
	}
	s := e.openStore(e.defaultRoot)
	srv := &serve.Server{Store: s, Write: slices.Contains(args, "--write"), Log: e.log,
		Lock: func(ctx context.Context) (*store.Txn, error) { return e.lock(s, "nix-store --serve") }}
	return srv.Serve(e.ctx, e.stdin, e.stdout)
}
