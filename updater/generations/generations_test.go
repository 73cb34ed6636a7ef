package generations

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/roostrouter/roost/updater/storetest"
)

func TestSetRollbackDelete(t *testing.T) {
	root := t.TempDir()
	p := System(root, nil)
	a, b := storetest.NewPath("sys-a"), storetest.NewPath("sys-b")
	if _, err := p.Rollback(); err == nil {
		t.Fatal("rollback with no generations succeeded")
	}
	g, changed, err := p.Set(a)
	if err != nil || !changed || g.Number != 1 {
		t.Fatalf("Set(a) = %+v, %v, %v", g, changed, err)
	}
	if _, changed, _ := p.Set(a); changed {
		t.Fatal("setting the current system again made a new generation")
	}
	if g, _, _ := p.Set(b); g.Number != 2 || g.Path != b {
		t.Fatalf("Set(b) = %+v", g)
	}
	// Nix's layout: a relative profile link and absolute generation links.
	if target, _ := os.Readlink(filepath.Join(root, "nix/var/nix/profiles/system")); target != "system-2-link" {
		t.Fatalf("system -> %q", target)
	}
	if target, _ := os.Readlink(filepath.Join(root, "nix/var/nix/profiles/system-1-link")); target != a.String() {
		t.Fatalf("system-1-link -> %q", target)
	}
	g, err = p.Rollback()
	if err != nil || g.Number != 1 || g.Path != a {
		t.Fatalf("Rollback = %+v, %v", g, err)
	}
	if _, err := p.Rollback(); !errors.Is(err, ErrNoPrevious) {
		t.Fatalf("second rollback: %v", err)
	}
	if err := p.Delete(1); err == nil {
		t.Fatal("deleting the current generation succeeded")
	}
	if err := p.Delete(2); err != nil {
		t.Fatal(err)
	}
	// After a rollback and a delete, a new system still gets a new number.
	if g, _, _ := p.Set(b); g.Number != 2 {
		t.Fatalf("new generation after delete is %d, want 2", g.Number)
	}
	gens, cur, _ := p.List()
	if len(gens) != 2 || cur != 2 {
		t.Fatalf("List = %+v, current %d", gens, cur)
	}
}

func TestToDelete(t *testing.T) {
	now := time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	gens := []Generation{
		{Number: 1, Created: now.Add(-40 * day)},
		{Number: 2, Created: now.Add(-35 * day)},
		{Number: 3, Created: now.Add(-31 * day), Current: true},
		{Number: 4, Created: now.Add(-10 * day)},
		{Number: 5, Created: now.Add(-1 * day)},
	}
	numbers := func(gs []Generation) []int {
		var out []int
		for _, g := range gs {
			out = append(out, g.Number)
		}
		return out
	}
	for _, tc := range []struct {
		name  string
		keep  int
		older time.Duration
		want  []int
	}{
		{"nothing asked", 0, 0, nil},
		{"keep 2", 2, 0, []int{1, 2}},
		{"keep 1 never deletes the current", 1, 0, []int{1, 2, 4}},
		// 30d: 4 and 5 are newer; 3 was the system 30 days ago, so it stays.
		{"older than 30d", 0, 30 * day, []int{1, 2}},
		{"older than 5d", 0, 5 * day, []int{1, 2}},
		{"older than 36d", 0, 36 * day, nil},
		{"keep 1 or newer than 5d", 1, 5 * day, []int{1, 2}},
	} {
		if got := numbers(ToDelete(gens, tc.keep, tc.older, now)); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: ToDelete = %v, want %v", tc.name, got, tc.want)
		}
	}
}
