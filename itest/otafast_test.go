package itest

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// TestDeltaCacheSecondRouter: a second router upgraded to the same
// version gets the deltas the first one's rebuild computed, from the
// laptop's cache: no compression (real roost and roostd, real Nix).
func TestDeltaCacheSecondRouter(t *testing.T) {
	l := newLaptop(t)
	type deltas struct {
		Deltas       int `json:"deltas"`
		DeltasCached int `json:"deltasCached"`
	}
	var got []deltas
	for range 2 {
		r := startRouter(t, l)
		l.sshConfig(r.port)
		cfg := fmt.Sprintf(`{"ssh": {"listen": ["127.0.0.1:%s"], "authorizedKeys": [%q]}}`, r.port, l.key)
		l.rebuild("--system", l.nix.build(deltaSystemExpr, "version", "1.0", "config", cfg), "--accept-new-host-key")
		var d deltas
		out := l.mustRoost("rebuild", "--host", "rotuer", "--json", "--system", l.nix.build(deltaSystemExpr, "version", "2.0", "config", cfg))
		if err := json.Unmarshal([]byte(out), &d); err != nil {
			t.Fatalf("roost rebuild --json printed %q: %v", out, err)
		}
		got = append(got, d)
	}
	// The tool is the same for both routers; their systems are not (their
	// configs name their ports), so only the tool's delta is shared.
	if got[0].Deltas < 1 || got[0].DeltasCached != 0 || got[1].DeltasCached < 1 {
		t.Fatalf("deltas of the first router %+v, of the second %+v: want the second's tool from the cache", got[0], got[1])
	}
	t.Logf("first router %+v, second %+v", got[0], got[1])
}

// TestNoopRebuild: a rebuild of what the router runs, as the mode would
// leave it and confirmed, does not activate (nor confirm) again; one that
// would change the boot default or the running system does.
func TestNoopRebuild(t *testing.T) {
	l := newLaptop(t)
	r := startRouter(t, l)
	l.sshConfig(r.port)
	sysA, sysB := l.system("1.0", r.port, 1), l.system("2.0", r.port, 1)
	first := l.rebuild("--system", sysA, "--accept-new-host-key")
	activations := func() int { return strings.Count(r.log.String(), "activated, awaiting confirmation") }
	for _, step := range []struct {
		mode, system string
		activates    bool
	}{
		{"switch", sysA, false}, // already running, the boot default
		{"boot", sysA, false},   // already the boot default
		{"test", sysB, true},    // runs B, A stays the default
		{"test", sysB, false},   // already running B
		{"switch", sysB, true},  // B runs but is not the default yet
		{"switch", sysB, false},
	} {
		before := activations()
		res := l.rebuild(step.mode, "--system", step.system)
		if did := activations() > before; did != step.activates {
			t.Fatalf("rebuild %s %s: activated %v, want %v\n%s", step.mode, step.system, did, step.activates, r.log.String())
		}
		if res.Confirmed != (step.mode != "boot") || res.SentPaths != 0 && !step.activates {
			t.Fatalf("rebuild %s %s: %+v", step.mode, step.system, res)
		}
		if !step.activates && step.system == sysA && res.Generation != first.Generation {
			t.Fatalf("no-op rebuild: generation %d, want %d", res.Generation, first.Generation)
		}
	}
}
