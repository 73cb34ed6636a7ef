package itest

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// storeEntries lists the names in the router's store folder.
func storeEntries(t *testing.T, root string) []string {
	entries, err := os.ReadDir(filepath.Join(root, "nix/store"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// TestNixRoundTrip: a closure built by real Nix, exported by Nix, imported
// by roostd, dumped by roostd: byte-identical to nix-store --dump, with the
// same registration as nix-store --dump-db.
func TestNixRoundTrip(t *testing.T) {
	n := newNixStore(t)
	system := n.build(systemExpr)
	paths := n.closure(system)
	if len(paths) < 60 {
		t.Fatalf("closure has %d paths, want the 60 leaves and more", len(paths))
	}
	root := t.TempDir()
	mustRun(t, n.export(paths), roostd, "store", "import", "--root", root)

	valid := strings.Fields(mustRun(t, nil, roostd, append([]string{"store", "query-valid", "--root", root}, paths...)...))
	if strings.Join(sortedCopy(valid), " ") != strings.Join(sortedCopy(paths), " ") {
		t.Fatalf("query-valid lists %d of the %d imported paths", len(valid), len(paths))
	}
	for _, p := range paths {
		ours := mustRun(t, nil, roostd, "store", "dump", "--root", root, p)
		theirs := mustRun(t, nil, "nix-store", "--dump", n.physical(p))
		if ours != theirs {
			t.Errorf("roostd store dump %s differs from nix-store --dump (%d vs %d bytes)", p, len(ours), len(theirs))
		}
	}
	ours := mustRun(t, nil, roostd, append([]string{"store", "dump-db", "--root", root}, paths...)...)
	theirs := mustRun(t, nil, "nix-store", append(append(n.opts(), "--dump-db"), paths...)...)
	if ours != theirs {
		t.Errorf("dump-db differs from nix-store --dump-db:\n--- roostd\n%s\n--- nix\n%s", ours, theirs)
	}
	mustRun(t, nil, roostd, "store", "verify", "--root", root)

	// A second import of the same stream changes nothing.
	before := storeEntries(t, root)
	out := mustRun(t, n.export(paths), roostd, "store", "import", "--root", root)
	if strings.TrimSpace(out) != "" {
		t.Errorf("a second import added paths: %s", out)
	}
	if got := storeEntries(t, root); len(got) != len(before) {
		t.Errorf("a second import changed the store folder")
	}
}

// TestRefusedImportsChangeNothing feeds roostd broken versions of a real
// export stream: each is refused with an error that names the problem, and
// the store is as it was.
func TestRefusedImportsChangeNothing(t *testing.T) {
	n := newNixStore(t)
	system := n.build(systemExpr)
	paths := n.closure(system)
	good := n.export(paths)
	onlySystem := n.export([]string{system}) // its references are not on the router

	tampered := bytes.Clone(good)
	// Swap two entry names' first letters: "bin" and "etc" in the system path.
	i := bytes.LastIndex(tampered, []byte("\x03\x00\x00\x00\x00\x00\x00\x00bin\x00"))
	j := bytes.LastIndex(tampered, []byte("\x03\x00\x00\x00\x00\x00\x00\x00etc\x00"))
	if i < 0 || j < 0 {
		t.Fatal("test stream has no bin and etc entries to swap")
	}
	copy(tampered[i+8:], "etc")
	copy(tampered[j+8:], "bin")

	for _, tc := range []struct {
		name    string
		stream  []byte
		wantErr string
	}{
		{"truncated", good[:len(good)*2/3], "truncated"},
		{"garbage", []byte("#!/bin/sh\nrm -rf /\n"), "not a nix-store --export stream"},
		{"unsorted entries", tampered, "must be sorted and unique"},
		{"missing reference", onlySystem, "is not valid (send references first)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			r := run(t, tc.stream, nil, roostd, "store", "import", "--root", root)
			if r.code == 0 || !strings.Contains(r.stderr, tc.wantErr) {
				t.Fatalf("import: exit %d, stderr %q; want a failure naming %q", r.code, r.stderr, tc.wantErr)
			}
			if entries := storeEntries(t, root); len(entries) != 0 {
				t.Fatalf("refused import left %v in the store", entries)
			}
			q := run(t, nil, nil, roostd, append([]string{"store", "query-valid", "--root", root}, paths...)...)
			if q.code != 1 || q.stdout != "" {
				t.Fatalf("query-valid after a refused import: exit %d, %q", q.code, q.stdout)
			}
		})
	}
}

type gcResult struct {
	Generations []int    `json:"deletedGenerations"`
	Paths       []string `json:"deletedPaths"`
	Bytes       int64    `json:"bytesFreed"`
}

func gcJSON(t *testing.T, root string, args ...string) gcResult {
	t.Helper()
	var res gcResult
	out := mustRun(t, nil, roostd, append([]string{"gc", "--json", "--root", root}, args...)...)
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("gc --json printed %q: %v", out, err)
	}
	return res
}

func without(all, drop []string) []string {
	gone := map[string]bool{}
	for _, d := range drop {
		gone[d] = true
	}
	var out []string
	for _, a := range all {
		if !gone[a] {
			out = append(out, a)
		}
	}
	return out
}

// TestGCKeepsSystems: two real systems that differ in one package, the old
// one still booted, and a third just received: gc deletes only what none of
// them reaches.
func TestGCKeepsSystems(t *testing.T) {
	n := newNixStore(t)
	sys1 := n.build(systemExpr, "version", "1.0")
	sys2 := n.build(systemExpr, "version", "2.0")
	sys3 := n.build(systemExpr, "version", "3.0")
	c1, c2, c3 := n.closure(sys1), n.closure(sys2), n.closure(sys3)
	root := t.TempDir()
	mustRun(t, n.export(c1), roostd, "store", "import", "--root", root)
	mustRun(t, n.export(without(c2, c1)), roostd, "store", "import", "--root", root)
	mustRun(t, nil, roostd, "generations", "set", sys1, "--root", root)
	mustRun(t, nil, roostd, "generations", "set", sys2, "--root", root)
	os.MkdirAll(filepath.Join(root, "run"), 0o755)
	os.Symlink(sys2, filepath.Join(root, "run/current-system"))
	os.Symlink(sys1, filepath.Join(root, "run/booted-system"))
	// Stand-in for a day passing: the temp roots of the two imports expire.
	os.RemoveAll(filepath.Join(root, "nix/var/roost/temproots"))
	// sys3 arrives and is not activated yet: its temp root protects it.
	mustRun(t, n.export(without(c3, append(c1, c2...))), roostd, "store", "import", "--root", root)

	res := gcJSON(t, root, "--keep", "1")
	if len(res.Generations) != 1 || res.Generations[0] != 1 || len(res.Paths) != 0 {
		t.Fatalf("gc --keep 1 with sys1 booted: deleted generations %v and paths %v, want generation 1 only", res.Generations, res.Paths)
	}
	// Reboot into sys2; sys3's temp root is still live.
	os.Remove(filepath.Join(root, "run/booted-system"))
	os.Symlink(sys2, filepath.Join(root, "run/booted-system"))
	dry := gcJSON(t, root, "--dry-run")
	res = gcJSON(t, root)
	onlyIn1 := without(c1, append(c2, c3...))
	if len(onlyIn1) < 2 {
		t.Fatalf("sys1 has %d paths of its own, want its app and system at least", len(onlyIn1))
	}
	if strings.Join(sortedCopy(res.Paths), " ") != strings.Join(sortedCopy(onlyIn1), " ") || res.Bytes <= 0 {
		t.Fatalf("gc deleted %v (%d bytes), want exactly sys1's own paths %v", res.Paths, res.Bytes, onlyIn1)
	}
	if strings.Join(dry.Paths, " ") != strings.Join(res.Paths, " ") {
		t.Fatalf("--dry-run listed %v, gc deleted %v", dry.Paths, res.Paths)
	}
	q := run(t, nil, nil, roostd, append([]string{"store", "query-valid", "--root", root}, append(c2, c3...)...)...)
	if q.code != 0 {
		t.Fatalf("gc deleted part of the current or the just-received system: %s", q.stderr)
	}
	mustRun(t, nil, roostd, "store", "verify", "--root", root)
}
