package itest

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// deltaSystemExpr is a system with a tool holding a real 2 MB binary
// (busybox) and its version: a new version differs in a few bytes.
const deltaSystemExpr = `
{ version, config }:
let
` + nixMk + `  tool = mk "tool-${version}" [] ''
    ${bb} mkdir -p $out/bin
    ${bb} cp ${bb} $out/bin/tool
    echo ${version} > $out/VERSION
  '';
in mk "system" [ tool ] ''
  ${bb} mkdir -p $out/etc/roost $out/bin
  ${bb} cp ${builtins.toFile "config.json" config} $out/etc/roost/config.json
  ${bb} ln -s ${tool}/bin/tool $out/bin/tool
''
`

func TestDeltaRebuild(t *testing.T) {
	l := newLaptop(t)
	r := startRouter(t, l)
	l.sshConfig(r.port)
	cfg := fmt.Sprintf(`{"ssh": {"listen": ["127.0.0.1:%s"], "authorizedKeys": [%q]}}`, r.port, l.key)
	sys1 := l.nix.build(deltaSystemExpr, "version", "1.0", "config", cfg)
	sys2 := l.nix.build(deltaSystemExpr, "version", "2.0", "config", cfg)
	l.rebuild("--system", sys1, "--accept-new-host-key")

	var res struct {
		SentPaths    int   `json:"sentPaths"`
		SentNARBytes int64 `json:"sentNarBytes"`
		WireBytes    int64 `json:"wireBytes"`
		Deltas       int   `json:"deltas"`
	}
	out := l.mustRoost("rebuild", "--host", "rotuer", "--system", sys2, "--json")
	json.Unmarshal([]byte(out), &res)
	if res.Deltas < 1 || res.WireBytes > res.SentNARBytes/10 {
		t.Fatalf("rebuild after a version change: %+v; want a delta, a tenth of the NAR on the wire at most", res)
	}
	for _, p := range l.nix.closure(sys2) {
		if !strings.Contains(p, "-tool-2.0") {
			continue
		}
		ours := mustRun(t, nil, roostd, "store", "dump", "--root", r.root, p)
		theirs := mustRun(t, nil, "nix-store", "--dump", l.nix.physical(p))
		if ours != theirs {
			t.Fatalf("%s from a delta differs from the laptop's", p)
		}
	}
	mustRun(t, nil, roostd, "store", "verify", "--root", r.root)
	t.Logf("delta rebuild: %d paths, %d bytes of NAR, %d bytes on the wire, %d deltas", res.SentPaths, res.SentNARBytes, res.WireBytes, res.Deltas)
}
