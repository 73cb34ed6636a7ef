package store

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/roostrouter/roost/updater/registry"
	"github.com/roostrouter/roost/updater/storepath"
	"github.com/roostrouter/roost/updater/storetest"
)

func newSession(t *testing.T, s *Store) *Session {
	t.Helper()
	ss, err := s.NewSession(func(ctx context.Context) (*Txn, error) { return s.Lock(ctx, "session", nil) })
	if err != nil {
		t.Fatal(err)
	}
	return ss
}

func narOf(t *testing.T, pkg storetest.Package) *bytes.Buffer {
	var b bytes.Buffer
	if err := storetest.WriteNAR(&b, pkg); err != nil {
		t.Fatal(err)
	}
	return &b
}

func tempRootIDs(t *testing.T, s *Store) map[string]TempRoot {
	t.Helper()
	txn, err := s.Lock(context.Background(), "check", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer txn.Close()
	roots, err := txn.TempRoots()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]TempRoot{}
	for _, r := range roots {
		out[r.ID] = r
	}
	return out
}

// A session restores without the lock: another writer taking the lock
// meanwhile leaves its temporary names alone, and its temp root holds
// its paths while it runs and for the grace period after.
func TestSessionRestoresWithoutTheLock(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	s := New(t.TempDir(), Options{Now: func() time.Time { return now }, TempRootTTL: 10 * time.Minute})
	pkgs := storetest.Closure("sess", 2, 1, 64)
	ss := newSession(t, s)
	st, err := ss.Restore(narOf(t, pkgs[0]), Expect{})
	if err != nil {
		t.Fatal(err)
	}
	// Another writer comes and goes: the lock is free, and it must not
	// take the running session's restore for a crash's leftover.
	other, err := s.Lock(context.Background(), "other", nil)
	if err != nil {
		t.Fatalf("the lock is held while a session restores: %v", err)
	}
	other.Close()
	if _, err := os.Stat(st.tmp); err != nil {
		t.Fatalf("another writer removed the session's restore: %v", err)
	}
	added, err := ss.Commit(context.Background(), []Item{{Staged: st, Info: registry.Info{Path: pkgs[0].Path}}})
	if err != nil || len(added) != 1 {
		t.Fatalf("commit: %v, %v", added, err)
	}
	roots := tempRootIDs(t, s)
	if len(roots) != 1 {
		t.Fatalf("temp roots %v, want the session's", roots)
	}
	for _, r := range roots {
		if !r.Running || len(r.Paths) != 1 || r.Paths[0] != pkgs[0].Path {
			t.Fatalf("running session's temp root %+v", r)
		}
	}
	now = now.Add(time.Hour) // a running session's root does not expire
	if len(tempRootIDs(t, s)) != 1 {
		t.Fatal("a running session's temp root expired")
	}
	ss.Close()
	for _, r := range tempRootIDs(t, s) {
		if r.Running || !r.Expires.Equal(now.Add(10*time.Minute).Truncate(time.Second)) {
			t.Fatalf("ended session's root %+v: want it kept for the grace period", r)
		}
	}
	now = now.Add(11 * time.Minute)
	if roots := tempRootIDs(t, s); len(roots) != 0 {
		t.Fatalf("temp roots after the grace period: %v", roots)
	}
}

// A crashed session's restores are removed by the next writer: its temp
// root is no longer locked.
func TestCrashedSessionLeftoversGo(t *testing.T) {
	s := New(t.TempDir(), Options{})
	ss := newSession(t, s)
	st, err := ss.Restore(narOf(t, storetest.Closure("crash", 1, 1, 16)[0]), Expect{})
	if err != nil {
		t.Fatal(err)
	}
	ss.file.Close() // as a crash does: the flock goes with the process
	txn, err := s.Lock(context.Background(), "next", nil)
	if err != nil {
		t.Fatal(err)
	}
	txn.Close()
	if _, err := os.Stat(st.tmp); !os.IsNotExist(err) {
		t.Fatalf("a dead session's restore is still there: %v", err)
	}
}

func TestReleaseTempRoots(t *testing.T) {
	s := New(t.TempDir(), Options{})
	pkgs := storetest.Closure("rel", 3, 0, 0)
	importStream(t, s, exportOf(t, pkgs)) // an ended writer's root: all three
	running := newSession(t, s)
	defer running.Close()
	if err := running.Hold(pkgs[0].Path); err != nil {
		t.Fatal(err)
	}
	txn, err := s.Lock(context.Background(), "activate", nil)
	if err != nil {
		t.Fatal(err)
	}
	taken := map[storepath.Path]bool{pkgs[0].Path: true, pkgs[1].Path: true}
	if err := txn.ReleaseTempRoots(taken); err != nil {
		t.Fatal(err)
	}
	txn.Close()
	var held []string
	for _, r := range tempRootIDs(t, s) {
		for _, p := range r.Paths {
			held = append(held, p.Name())
		}
	}
	// The running session keeps its hold; the ended root keeps what the
	// activation did not take.
	if got := strings.Join(held, " "); !strings.Contains(got, pkgs[2].Path.Name()) || strings.Contains(got, pkgs[1].Path.Name()) || !strings.Contains(got, pkgs[0].Path.Name()) {
		t.Fatalf("temp roots hold %q", got)
	}
}
