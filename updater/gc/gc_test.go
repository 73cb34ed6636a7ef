package gc

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/roostrouter/roost/updater/generations"
	"github.com/roostrouter/roost/updater/store"
	"github.com/roostrouter/roost/updater/storepath"
	"github.com/roostrouter/roost/updater/storetest"
)

// router is a store with two systems (generations 1 and 2), junk, and a
// clock that can be moved past the temp roots' lifetime.
type router struct {
	root    string
	now     time.Time
	s       *store.Store
	profile *generations.Profile
	sys1    []storetest.Package
	sys2    []storetest.Package
	junk    []storetest.Package
}

func newRouter(t *testing.T) *router {
	r := &router{root: t.TempDir(), now: time.Unix(1_800_000_000, 0)}
	r.s = store.New(r.root, store.Options{Now: func() time.Time { return r.now }, TempRootTTL: time.Hour})
	r.profile = generations.System(r.root, nil)
	r.sys1 = storetest.Closure("one", 12, 1, 64)
	r.sys2 = append(append([]storetest.Package(nil), r.sys1[:5]...), storetest.Closure("two", 8, 1, 64)...)
	sys2 := &r.sys2[len(r.sys2)-1]
	sys2.Refs = append(sys2.Refs, paths(r.sys1[:5])...) // shared with sys1
	r.junk = storetest.Closure("junk", 3, 1, 64)
	for _, c := range [][]storetest.Package{r.sys1, r.sys2, r.junk} {
		r.importPkgs(t, c)
	}
	r.profile.Set(last(r.sys1))
	r.profile.Set(last(r.sys2))
	r.now = r.now.Add(2 * time.Hour) // the imports' temp roots have expired
	return r
}

func last(pkgs []storetest.Package) storepath.Path { return pkgs[len(pkgs)-1].Path }

func (r *router) importPkgs(t *testing.T, pkgs []storetest.Package) {
	t.Helper()
	var b bytes.Buffer
	storetest.WriteExport(&b, pkgs)
	txn, err := r.s.Lock(context.Background(), "test", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer txn.Close()
	if _, err := txn.ImportExport(context.Background(), &b, nil); err != nil {
		t.Fatal(err)
	}
}

func (r *router) link(t *testing.T, name string, p storepath.Path) {
	full := filepath.Join(r.root, name)
	os.MkdirAll(filepath.Dir(full), 0o755)
	os.Remove(full)
	if err := os.Symlink(p.String(), full); err != nil {
		t.Fatal(err)
	}
}

func (r *router) collect(t *testing.T, opts Options) Result {
	t.Helper()
	txn, err := r.s.Lock(context.Background(), "gc", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer txn.Close()
	opts.Now = r.now
	res, err := Collect(context.Background(), txn, r.profile, opts)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func (r *router) valid(t *testing.T) map[storepath.Path]bool {
	reg, err := r.s.Registry()
	if err != nil {
		t.Fatal(err)
	}
	out := map[storepath.Path]bool{}
	for _, p := range reg.Paths() {
		out[p] = true
	}
	// Every valid path is whole, and every store entry is valid.
	if problems, _ := r.s.Verify(context.Background(), reg, nil); len(problems) > 0 {
		t.Fatalf("verify: %v", problems)
	}
	entries, _ := os.ReadDir(r.s.Dir())
	if len(entries) != len(out) {
		t.Fatalf("%d entries in the store folder, %d valid paths", len(entries), len(out))
	}
	return out
}

func paths(pkgs ...[]storetest.Package) []storepath.Path {
	var out []storepath.Path
	for _, c := range pkgs {
		for _, p := range c {
			out = append(out, p.Path)
		}
	}
	return out
}

func sorted(ps []storepath.Path) string {
	var s []string
	for _, p := range ps {
		s = append(s, p.Name())
	}
	sort.Strings(s)
	return strings.Join(s, " ")
}

func TestCollectOnlyGarbage(t *testing.T) {
	r := newRouter(t)
	r.link(t, "run/current-system", last(r.sys2))
	r.link(t, "run/booted-system", last(r.sys1))
	dry := r.collect(t, Options{DryRun: true})
	if got, want := sorted(dry.Paths), sorted(paths(r.junk)); got != want {
		t.Fatalf("dry run would delete %s, want %s", got, want)
	}
	if len(r.valid(t)) != len(paths(r.sys1, r.sys2, r.junk))-5 {
		t.Fatal("a dry run deleted something")
	}
	res := r.collect(t, Options{})
	if got, want := sorted(res.Paths), sorted(paths(r.junk)); got != want || res.Bytes <= 0 {
		t.Fatalf("deleted %s (%d bytes), want %s", got, res.Bytes, want)
	}
	valid := r.valid(t)
	for _, p := range paths(r.sys1, r.sys2) {
		if !valid[p] {
			t.Fatalf("gc deleted %s, reachable from a system", p)
		}
	}
}

func TestCollectOldGenerations(t *testing.T) {
	r := newRouter(t)
	r.link(t, "run/current-system", last(r.sys2))
	r.link(t, "run/booted-system", last(r.sys1))
	// Generation 1 goes, but sys1 is still the booted system: kept.
	res := r.collect(t, Options{Keep: 1})
	if len(res.Generations) != 1 || res.Generations[0] != 1 {
		t.Fatalf("deleted generations %v, want [1]", res.Generations)
	}
	if !r.valid(t)[last(r.sys1)] {
		t.Fatal("gc deleted the booted system")
	}
	// After a reboot into sys2, sys1's own paths go, the shared ones stay.
	r.link(t, "run/booted-system", last(r.sys2))
	res = r.collect(t, Options{Keep: 1})
	if got, want := sorted(res.Paths), sorted(paths(r.sys1[5:])); got != want {
		t.Fatalf("deleted %s, want %s", got, want)
	}
	valid := r.valid(t)
	for _, p := range paths(r.sys2) {
		if !valid[p] {
			t.Fatalf("gc deleted %s of the current system", p)
		}
	}
}

func TestPinsTempRootsAndLeftovers(t *testing.T) {
	r := newRouter(t)
	r.link(t, "nix/var/roost/gcroots/keep-me", r.junk[0].Path)
	fresh := storetest.Closure("fresh", 2, 1, 64)
	r.importPkgs(t, fresh) // received, not activated: its temp root is live
	os.MkdirAll(filepath.Join(r.s.Dir(), storetest.NewPath("unregistered").Base(), "x"), 0o555)
	res := r.collect(t, Options{})
	if got, want := sorted(res.Paths), sorted(paths(r.junk[1:])); got != want {
		t.Fatalf("deleted %s, want %s", got, want)
	}
	if len(res.Invalid) != 1 {
		t.Fatalf("deleted unregistered entries %v, want the one left over", res.Invalid)
	}
	valid := r.valid(t)
	for _, p := range paths(fresh) {
		if !valid[p] {
			t.Fatalf("gc deleted %s, just received", p)
		}
	}
	// Once the temp root expires, the unactivated transfer is garbage.
	r.now = r.now.Add(2 * time.Hour)
	res = r.collect(t, Options{})
	if got, want := sorted(res.Paths), sorted(paths(fresh)); got != want {
		t.Fatalf("after expiry deleted %s, want %s", got, want)
	}
}

func TestRefusesUnregisteredRoot(t *testing.T) {
	r := newRouter(t)
	flashed := storetest.NewPath("flashed-system")
	os.MkdirAll(r.s.PhysicalPath(flashed), 0o755)
	r.link(t, "run/current-system", flashed)
	txn, _ := r.s.Lock(context.Background(), "gc", nil)
	defer txn.Close()
	_, err := Collect(context.Background(), txn, r.profile, Options{Now: r.now})
	if err == nil || !strings.Contains(err.Error(), "is in the store but not registered") {
		t.Fatalf("gc with an unregistered current system: %v", err)
	}
	if _, err := os.Stat(r.s.PhysicalPath(flashed)); err != nil {
		t.Fatal("gc deleted the unregistered running system")
	}
}

// What an activation awaiting confirmation holds (its previous system and
// generation) is kept whatever --keep says, and the result says why.
func TestHoldKeepsRollbackTarget(t *testing.T) {
	r := newRouter(t)
	r.link(t, "run/current-system", last(r.sys2))
	why := "previous system of the activation awaiting confirmation"
	res := r.collect(t, Options{Keep: 1, Hold: []Root{{Why: why, Path: last(r.sys1)}}, HoldGenerations: map[int]string{1: why}})
	if len(res.Generations) != 0 {
		t.Fatalf("deleted generations %v: generation 1 is held", res.Generations)
	}
	if len(res.Held) == 0 || !strings.Contains(res.Held[0].Why, "generation 1: "+why) {
		t.Fatalf("held %+v: want generation 1 with the reason", res.Held)
	}
	valid := r.valid(t)
	for _, p := range paths(r.sys1) {
		if !valid[p] {
			t.Fatalf("%s of the held system was deleted", p)
		}
	}
	// Without the hold, the same collection deletes generation 1.
	if res := r.collect(t, Options{Keep: 1}); len(res.Generations) != 1 || res.Generations[0] != 1 {
		t.Fatalf("deleted generations %v, want [1]", res.Generations)
	}
}
