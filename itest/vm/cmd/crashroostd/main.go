// Command crashroostd is a broken roostd for the router VM tests
// (itest, TestRouterRebuildInVM): it passes the check an agent runs before
// handing over to a new roostd (`version --json`, answered as roostd
// answers it, with the hand-over protocol) and exits 1 at `run`, as a
// roostd that crashes as it starts would. roostd init must replace it
// with the previous generation's agent.
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/roostrouter/roost/agent/handover"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "version" {
		json.NewEncoder(os.Stdout).Encode(handover.Version{Version: "crash", Handover: handover.Protocol})
		return
	}
	fmt.Fprintln(os.Stderr, "crashroostd: crashing at start, as asked")
	os.Exit(1)
}
