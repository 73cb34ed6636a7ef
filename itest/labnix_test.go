package itest

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// TestLabConfigInNix: docs/rotuer.nix, the lab's router written for the
// Nix library, has the configs of docs/rotuer-dhcp.json (wan = "dhcp") and
// docs/rotuer.json (wan = "static"), which the other tests run: the lab
// and the tests stay on the same router. Evaluated only (the config that
// mkSystem would write), nothing built.
func TestLabConfigInNix(t *testing.T) {
	n := newNixStore(t)
	repo := repoRoot(t)
	for wan, file := range map[string]string{"dhcp": "docs/rotuer-dhcp.json", "static": "docs/rotuer.json"} {
		t.Run(wan, func(t *testing.T) {
			expr := fmt.Sprintf(`(import %s/docs/rotuer.nix { roostd = "/roostd"; wan = %q; }).configJSON`, repo, wan)
			out := mustRun(t, nil, "nix-instantiate", append(n.opts(), "--eval", "--json", "-E", expr)...)
			var text string
			var got, want any
			if err := json.Unmarshal([]byte(out), &text); err != nil {
				t.Fatalf("nix-instantiate: %v: %s", err, out)
			}
			if err := json.Unmarshal([]byte(text), &got); err != nil {
				t.Fatalf("the config docs/rotuer.nix writes: %v: %s", err, text)
			}
			if err := json.Unmarshal(must(os.ReadFile(filepath.Join(repo, file))), &want); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				g, _ := json.MarshalIndent(got, "", "  ")
				w, _ := json.MarshalIndent(want, "", "  ")
				t.Errorf("docs/rotuer.nix with wan = %q writes\n%s\nbut %s is\n%s", wan, g, file, w)
			}
		})
	}
}
