package itest

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/roostrouter/roost/updater/storetest"
)

func exportStream(t *testing.T, pkgs []storetest.Package) []byte {
	var b bytes.Buffer
	if err := storetest.WriteExport(&b, pkgs); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func fullPaths(pkgs []storetest.Package) []string {
	var out []string
	for _, p := range pkgs {
		out = append(out, p.Path.String())
	}
	return out
}

// crashAt runs roostd with ROOST_CRASH_AT=point and insists that it was
// killed there: a point never reached would make the test prove nothing.
func crashAt(t *testing.T, point string, stdin []byte, args ...string) {
	t.Helper()
	r := run(t, stdin, []string{"ROOST_CRASH_AT=" + point}, roostd, args...)
	if !r.killed {
		t.Fatalf("roostd %v was not killed at %s (exit %d): %s", args, point, r.code, r.stderr)
	}
}

// checkStore asserts what must hold after any crash: every registered path
// verifies, and the valid ones among want are all or none of them.
func checkStore(t *testing.T, root string, want []string) (allValid bool) {
	t.Helper()
	mustRun(t, nil, roostd, "store", "verify", "--root", root)
	q := run(t, nil, nil, roostd, append([]string{"store", "query-valid", "--root", root}, want...)...)
	n := len(strings.Fields(q.stdout))
	if n != 0 && n != len(want) {
		t.Fatalf("after the crash %d of %d paths are valid: an import is all or nothing", n, len(want))
	}
	return n == len(want)
}

// noLeftovers asserts that the store folder holds only valid paths.
func noLeftovers(t *testing.T, root string) {
	t.Helper()
	valid := strings.Fields(mustRun(t, nil, roostd, "store", "dump-db", "--root", root))
	validSet := map[string]bool{}
	for _, l := range valid {
		validSet[l] = true
	}
	for _, e := range storeEntries(t, root) {
		if !validSet["/nix/store/"+e] {
			t.Fatalf("store folder holds %s, which is not valid", e)
		}
	}
}

func TestCrashDuringImport(t *testing.T) {
	need(t)
	pkgs := storetest.Closure("crash", 30, 2, 2000)
	stream := exportStream(t, pkgs)
	paths := fullPaths(pkgs)
	for _, point := range []string{"restored:1", "restored:17", "synced", "renamed:1", "renamed:29", "before-register", "registered"} {
		t.Run(point, func(t *testing.T) {
			root := t.TempDir()
			crashAt(t, point, stream, "store", "import", "--root", root)
			allValid := checkStore(t, root, paths)
			if point == "registered" && !allValid {
				t.Fatal("killed after the commit point, but the paths are not valid")
			}
			if point != "registered" && allValid {
				t.Fatal("killed before the commit point, but the paths are valid")
			}
			// The next writer cleans up and the import completes.
			mustRun(t, stream, roostd, "store", "import", "--root", root)
			if !checkStore(t, root, paths) {
				t.Fatal("re-import after the crash did not make the paths valid")
			}
			noLeftovers(t, root)
		})
	}
}

type generation struct {
	Number  int    `json:"number"`
	Path    string `json:"path"`
	Current bool   `json:"current"`
}

func currentGeneration(t *testing.T, root string) generation {
	t.Helper()
	var gens []generation
	if err := json.Unmarshal([]byte(mustRun(t, nil, roostd, "generations", "--json", "--root", root)), &gens); err != nil {
		t.Fatal(err)
	}
	for _, g := range gens {
		if g.Current {
			return g
		}
	}
	t.Fatalf("no current generation among %+v", gens)
	return generation{}
}

func TestCrashDuringGenerationSwitch(t *testing.T) {
	need(t)
	one := storetest.Closure("gen-one", 3, 1, 100)
	two := storetest.Closure("gen-two", 3, 1, 100)
	for _, point := range []string{"generation-linked", "generation-switched"} {
		t.Run(point, func(t *testing.T) {
			root := t.TempDir()
			mustRun(t, exportStream(t, append(append([]storetest.Package(nil), one...), two...)), roostd, "store", "import", "--root", root)
			sys1, sys2 := one[2].Path.String(), two[2].Path.String()
			mustRun(t, nil, roostd, "generations", "set", sys1, "--root", root)
			crashAt(t, point, nil, "generations", "set", sys2, "--root", root)
			g := currentGeneration(t, root)
			want := sys1
			if point == "generation-switched" {
				want = sys2
			}
			if g.Path != want {
				t.Fatalf("after a crash at %s the current system is %s, want %s", point, g.Path, want)
			}
			mustRun(t, nil, roostd, "generations", "set", sys2, "--root", root)
			if g := currentGeneration(t, root); g.Path != sys2 {
				t.Fatalf("switch after the crash: current is %s", g.Path)
			}
		})
	}
}

func TestCrashDuringGC(t *testing.T) {
	need(t)
	sys := storetest.Closure("gc-sys", 10, 1, 500)
	junk := storetest.Closure("gc-junk", 10, 2, 500)
	for _, point := range []string{"unregistered", "trashed", "removed:1", "removed:9"} {
		t.Run(point, func(t *testing.T) {
			root := t.TempDir()
			mustRun(t, exportStream(t, append(append([]storetest.Package(nil), sys...), junk...)), roostd, "store", "import", "--root", root)
			mustRun(t, nil, roostd, "generations", "set", sys[9].Path.String(), "--root", root)
			// Stand-in for the temp roots' expiry: a day has passed.
			tempRoots := filepath.Join(root, "nix/var/roost/temproots")
			os.RemoveAll(tempRoots)
			os.MkdirAll(tempRoots, 0o755)

			crashAt(t, point, nil, "gc", "--root", root)
			if !checkStore(t, root, fullPaths(sys)) {
				t.Fatal("gc, killed, lost part of the current system")
			}
			mustRun(t, nil, roostd, "gc", "--root", root)
			noLeftovers(t, root)
			q := run(t, nil, nil, roostd, append([]string{"store", "query-valid", "--root", root}, fullPaths(junk)...)...)
			if q.stdout != "" {
				t.Fatalf("garbage still valid after the second gc: %s", q.stdout)
			}
		})
	}
}
