package registry

import (
	"crypto/sha256"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/roostrouter/roost/updater/nixhash"
	"github.com/roostrouter/roost/updater/storepath"
)

func path(t testing.TB, name string) storepath.Path {
	h := nixhash.EncodeNix32(sha256.New().Sum([]byte(name))[:20])
	p, err := storepath.ParseBase(h + "-" + name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func info(p storepath.Path, refs ...storepath.Path) *Info {
	return &Info{Path: p, NarHash: sha256.Sum256([]byte(p)), NarSize: 120, References: refs, RegistrationTime: 1700000000}
}

func TestCommitAndReload(t *testing.T) {
	file := filepath.Join(t.TempDir(), "registry.log")
	r, err := OpenWritable(file)
	if err != nil {
		t.Fatal(err)
	}
	a, b, c := path(t, "a"), path(t, "b"), path(t, "c")
	if err := r.Commit([]*Info{info(a, a), info(b, a), info(c, b, c)}, nil); err != nil {
		t.Fatal(err)
	}
	if err := r.Commit(nil, []storepath.Path{b, c}); err != nil {
		t.Fatal(err)
	}
	r.Close()
	back, err := Load(file)
	if err != nil {
		t.Fatal(err)
	}
	if got := back.Paths(); len(got) != 1 || got[0] != a {
		t.Fatalf("after reload valid paths are %v, want [%s]", got, a)
	}
	if i, _ := back.Get(a); i.NarHash != sha256.Sum256([]byte(a)) || i.NarSize != 120 {
		t.Fatalf("info of %s changed in the round trip: %+v", a, i)
	}
}

func TestInvariants(t *testing.T) {
	file := filepath.Join(t.TempDir(), "registry.log")
	r, err := OpenWritable(file)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	a, b := path(t, "a"), path(t, "b")
	for _, tc := range []struct {
		name    string
		adds    []*Info
		dels    []storepath.Path
		wantErr string
	}{
		{"missing reference", []*Info{info(b, a)}, nil, "before its reference"},
		{"references out of order", []*Info{info(b, a), info(a)}, nil, "before its reference"},
		{"delete unknown", nil, []storepath.Path{a}, "not valid"},
	} {
		if err := r.Commit(tc.adds, tc.dels); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%s: Commit error = %v, want %q", tc.name, err, tc.wantErr)
		}
	}
	if err := r.Commit([]*Info{info(a), info(b, a)}, nil); err != nil {
		t.Fatal(err)
	}
	if err := r.Commit(nil, []storepath.Path{a}); err == nil || !strings.Contains(err.Error(), "still references it") {
		t.Errorf("deleting a referenced path: %v", err)
	}
	if err := r.Commit([]*Info{info(a)}, nil); err == nil || !strings.Contains(err.Error(), "already valid") {
		t.Errorf("adding a valid path again: %v", err)
	}
	if r.Len() != 2 {
		t.Fatalf("refused commits changed the registry: %d paths", r.Len())
	}
}

// TestTornTail simulates a crash in the middle of an append: every cut of
// the last commit's bytes loads as the state before it, or after it.
func TestTornTail(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "registry.log")
	r, _ := OpenWritable(file)
	a, b, c := path(t, "a"), path(t, "b"), path(t, "c")
	r.Commit([]*Info{info(a)}, nil)
	before, _ := os.ReadFile(file)
	r.Commit([]*Info{info(b, a), info(c, b)}, nil)
	r.Close()
	after, _ := os.ReadFile(file)
	for cut := len(before); cut <= len(after); cut++ {
		os.WriteFile(file, after[:cut], 0o644)
		w, err := OpenWritable(file)
		if err != nil {
			t.Fatalf("cut at %d: %v", cut, err)
		}
		n := w.Len()
		// Every prefix is consistent: c is never valid without b.
		_, hasB := w.Get(b)
		_, hasC := w.Get(c)
		if hasC && !hasB || n < 1 || n > 3 {
			t.Fatalf("cut at %d: %d paths, b=%v c=%v", cut, n, hasB, hasC)
		}
		// The writer cut the torn record off, so appending works.
		if err := w.Commit(nil, nil); err != nil {
			t.Fatal(err)
		}
		w.Close()
		if fi, _ := os.Stat(file); fi.Size() > int64(cut) {
			t.Fatalf("cut at %d: file grew to %d", cut, fi.Size())
		}
	}
}

func TestCorruptMiddle(t *testing.T) {
	file := filepath.Join(t.TempDir(), "registry.log")
	r, _ := OpenWritable(file)
	a, b := path(t, "a"), path(t, "b")
	r.Commit([]*Info{info(a)}, nil)
	r.Commit([]*Info{info(b)}, nil)
	r.Close()
	data, _ := os.ReadFile(file)
	data[20] ^= 0x01
	os.WriteFile(file, data, 0o644)
	if _, err := Load(file); err == nil || !strings.Contains(err.Error(), "record 1") {
		t.Fatalf("Load of a damaged registry: %v, want an error naming record 1", err)
	}
}

func TestCompact(t *testing.T) {
	file := filepath.Join(t.TempDir(), "registry.log")
	r, _ := OpenWritable(file)
	var keep []storepath.Path
	for i := 0; i < 50; i++ {
		p := path(t, strings.Repeat("x", i+1))
		r.Commit([]*Info{info(p)}, nil)
		if i%5 == 0 {
			keep = append(keep, p)
		} else {
			r.Commit(nil, []storepath.Path{p})
		}
	}
	// A chain, to check that compaction writes references first.
	c1 := path(t, "chain1")
	c2 := path(t, "chain2")
	r.Commit([]*Info{info(c1), info(c2, c1)}, nil)
	if err := r.Compact(); err != nil {
		t.Fatal(err)
	}
	if err := r.Commit([]*Info{info(path(t, "after"))}, nil); err != nil {
		t.Fatal(err)
	}
	r.Close()
	back, err := Load(file)
	if err != nil {
		t.Fatal(err)
	}
	if back.Len() != len(keep)+3 || back.records != back.Len() {
		t.Fatalf("after compaction: %d paths in %d records, want %d in as many", back.Len(), back.records, len(keep)+3)
	}
}

func FuzzParse(f *testing.F) {
	dir := f.TempDir()
	file := filepath.Join(dir, "r")
	r, _ := OpenWritable(file)
	a, b := path(f, "a"), path(f, "b")
	r.Commit([]*Info{info(a), info(b, a)}, nil)
	r.Commit(nil, []storepath.Path{b})
	r.Close()
	seed, _ := os.ReadFile(file)
	f.Add(seed)
	f.Add([]byte("00000000 {}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		paths, n, _, err := Parse(data)
		if err != nil {
			return
		}
		if n > int64(len(data)) {
			t.Fatalf("whole records %d > input %d", n, len(data))
		}
		for p, i := range paths {
			for _, ref := range i.References {
				if _, ok := paths[ref]; !ok && ref != p {
					t.Fatalf("accepted %s with invalid reference %s", p, ref)
				}
			}
		}
	})
}
