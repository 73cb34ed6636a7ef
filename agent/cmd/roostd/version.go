package main

import (
	"fmt"

	"github.com/roostrouter/roost/agent/handover"
)

// runVersion says which roostd this is. An agent about to hand over to a
// new roostd runs this first (handover.Probe): a binary that cannot print
// it, for another architecture or crashing at start, is not handed over to.
func runVersion(e *env, args []string) error {
	f := newFlags(e, "version")
	if _, err := f.parse(args); err != nil {
		return err
	}
	if *f.json {
		printJSON(e.stdout, handover.Version{Version: version, Handover: handover.Protocol})
		return nil
	}
	fmt.Fprintln(e.stdout, "roostd", version)
	return nil
}
