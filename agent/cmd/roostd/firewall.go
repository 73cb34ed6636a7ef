package main

import (
	"fmt"

	"github.com/roostrouter/roost/firewall"
)

// runFirewall prints the live ruleset of this network namespace.
func runFirewall(e *env, args []string) error {
	f := newFlags(e, "firewall")
	pos, err := f.parse(args)
	if err != nil {
		return err
	}
	if len(pos) != 1 || pos[0] != "show" {
		return fmt.Errorf("usage: roostd firewall show")
	}
	c, err := firewall.NewConn()
	if err != nil {
		return err
	}
	return firewall.Show(c, e.stdout)
}
