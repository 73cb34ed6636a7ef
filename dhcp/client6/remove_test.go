package client6

import (
	"testing"

	"github.com/roostrouter/roost/agent/supervisor"
)

// A client that never ran has no link record: Remove touches nothing.
func TestRemoveNeverRan(t *testing.T) {
	c := &Client{StateDir: t.TempDir(), LinkRef: supervisor.Ref{Service: "wan", Key: "ifname"}, ProcSys: t.TempDir()}
	if err := c.Remove(t.Context()); err != nil {
		t.Fatal(err)
	}
}
