package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/roostrouter/roost/updater/nar"
	"github.com/roostrouter/roost/updater/nixexport"
	"github.com/roostrouter/roost/updater/nixhash"
	"github.com/roostrouter/roost/updater/registry"
	"github.com/roostrouter/roost/updater/storepath"
	"github.com/roostrouter/roost/updater/storetest"
)

func exportOf(t testing.TB, pkgs []storetest.Package) []byte {
	var b bytes.Buffer
	if err := storetest.WriteExport(&b, pkgs); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func importStream(t testing.TB, s *Store, stream []byte) (ImportResult, error) {
	t.Helper()
	txn, err := s.Lock(context.Background(), "test", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer txn.Close()
	return txn.ImportExport(context.Background(), bytes.NewReader(stream), nil)
}

// snapshot is what a user would look at: the valid paths and every name in
// the store folder.
func snapshot(t testing.TB, s *Store) string {
	t.Helper()
	reg, err := s.Registry()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, p := range reg.Paths() {
		b.WriteString("valid " + p.Base() + "\n")
	}
	entries, _ := os.ReadDir(s.Dir())
	for _, e := range entries {
		b.WriteString("entry " + e.Name() + "\n")
	}
	return b.String()
}

func TestImportVerifyDump(t *testing.T) {
	s := New(t.TempDir(), Options{})
	pkgs := storetest.Closure("t", 40, 3, 1000)
	res, err := importStream(t, s, exportOf(t, pkgs))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Added) != len(pkgs) {
		t.Fatalf("added %d paths, want %d", len(res.Added), len(pkgs))
	}
	reg, _ := s.Registry()
	problems, err := s.Verify(context.Background(), reg, nil)
	if err != nil || len(problems) > 0 {
		t.Fatalf("verify: %v %v", problems, err)
	}
	for _, pkg := range pkgs {
		var want, got bytes.Buffer
		storetest.WriteNAR(&want, pkg)
		if err := s.Dump(&got, reg, pkg.Path); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(want.Bytes(), got.Bytes()) {
			t.Fatalf("dump of %s differs from the NAR imported", pkg.Path)
		}
		info, _ := reg.Get(pkg.Path)
		if info.NarHash != sha256.Sum256(want.Bytes()) || info.NarSize != uint64(want.Len()) {
			t.Fatalf("registered hash or size of %s is wrong", pkg.Path)
		}
	}
	// Importing again adds nothing.
	res, err = importStream(t, s, exportOf(t, pkgs))
	if err != nil || len(res.Added) != 0 || len(res.Present) != len(pkgs) {
		t.Fatalf("second import added %d, found %d present, %v", len(res.Added), len(res.Present), err)
	}
}

func TestDumpDBFormat(t *testing.T) {
	s := New(t.TempDir(), Options{})
	pkgs := storetest.Closure("db", 3, 0, 0)
	if _, err := importStream(t, s, exportOf(t, pkgs)); err != nil {
		t.Fatal(err)
	}
	reg, _ := s.Registry()
	var b bytes.Buffer
	if err := DumpDB(&b, reg, []storepath.Path{pkgs[1].Path}); err != nil {
		t.Fatal(err)
	}
	info, _ := reg.Get(pkgs[1].Path)
	want := pkgs[1].Path.String() + "\n" + info.NarHash.Base16() + "\n" +
		itoa(info.NarSize) + "\n\n1\n" + pkgs[0].Path.String() + "\n"
	if b.String() != want {
		t.Fatalf("dump-db printed\n%s\nwant\n%s", b.String(), want)
	}
}

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }

// hostileNAR builds a one-path export stream whose NAR body is made by fill.
func hostileStream(path storepath.Path, refs []storepath.Path, fill func(*nar.Writer)) []byte {
	var b bytes.Buffer
	nixexport.WriteNext(&b, true)
	nw := nar.NewWriter(&b)
	fill(nw)
	nw.Flush()
	nixexport.WriteTrailer(&b, nixexport.Trailer{Path: path, References: refs})
	nixexport.WriteNext(&b, false)
	return b.Bytes()
}

func TestHostileImports(t *testing.T) {
	good := storetest.Closure("good", 2, 1, 100)
	goodStream := exportOf(t, good)
	p := storetest.NewPath("evil-1.0")
	dirWith := func(names ...string) func(*nar.Writer) {
		return func(w *nar.Writer) {
			w.StartDirectory()
			for _, n := range names {
				w.Entry(n)
				w.Regular(false, 1, strings.NewReader("x"))
				w.EndEntry()
			}
			w.EndDirectory()
		}
	}
	badName := hostileStream(p, nil, dirWith("a"))
	badName = bytes.Replace(badName, []byte(p.Base()), []byte(strings.Replace(p.Base(), "-evil", "/evil", 1)), 1)
	absurd := hostileStream(p, nil, dirWith("a"))
	// Declare a file of 2^62 bytes where the one-byte file's size stands.
	one := []byte{1, 0, 0, 0, 0, 0, 0, 0, 'x'}
	absurd = bytes.Replace(absurd, one, []byte{0, 0, 0, 0, 0, 0, 0, 0x40, 'x'}, 1)
	for _, tc := range []struct {
		name    string
		stream  []byte
		wantErr string
	}{
		{"garbage", []byte("GET / HTTP/1.1\r\nHost: rotuer\r\n\r\n"), "not a nix-store --export stream"},
		{"empty", nil, "truncated"},
		{"truncated", goodStream[:len(goodStream)/2], "truncated"},
		{"no end marker", goodStream[:len(goodStream)-8], "without its end marker"},
		{"unsorted", hostileStream(p, nil, dirWith("b", "a")), "must be sorted and unique"},
		{"duplicate", hostileStream(p, nil, dirWith("a", "a")), "must be sorted and unique"},
		{"dotdot", hostileStream(p, nil, dirWith("..")), "invalid entry name \"..\""},
		{"slash", hostileStream(p, nil, dirWith("../../etc/passwd")), "invalid entry name"},
		{"missing reference", hostileStream(p, []storepath.Path{storetest.NewPath("absent")}, dirWith("a")), "is not valid"},
		{"invalid store path", badName, "export trailer: store path"},
		{"absurd size", absurd, "truncated"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := New(t.TempDir(), Options{})
			before := snapshot(t, s)
			_, err := importStream(t, s, tc.stream)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("import error = %v, want it to contain %q", err, tc.wantErr)
			}
			if after := snapshot(t, s); after != before {
				t.Fatalf("a refused import changed the store:\n%s", after)
			}
		})
	}
}

// TestDeclaredHashAndSize is the path roost's own transfers take: the sender
// declares the NAR's hash and size, and a NAR that differs is refused.
func TestDeclaredHashAndSize(t *testing.T) {
	pkg := storetest.Closure("decl", 1, 1, 100)[0]
	var n bytes.Buffer
	storetest.WriteNAR(&n, pkg)
	right := nixhash.SHA256(sha256.Sum256(n.Bytes()))
	wrong := right
	wrong[0] ^= 1
	for _, tc := range []struct {
		name    string
		want    Expect
		wantErr string
	}{
		{"right", Expect{Path: pkg.Path, NarHash: &right, NarSize: uint64(n.Len())}, ""},
		{"wrong hash", Expect{Path: pkg.Path, NarHash: &wrong, NarSize: uint64(n.Len())}, "its hash is " + right.String()},
		{"wrong size, larger", Expect{Path: pkg.Path, NarSize: uint64(n.Len()) + 8}, "the sender declared"},
		{"wrong size, smaller", Expect{Path: pkg.Path, NarSize: uint64(n.Len()) - 8}, "longer than the expected"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := New(t.TempDir(), Options{})
			txn, err := s.Lock(context.Background(), "test", nil)
			if err != nil {
				t.Fatal(err)
			}
			defer txn.Close()
			st, err := txn.Restore(bytes.NewReader(n.Bytes()), tc.want)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Restore error = %v, want %q", err, tc.wantErr)
				}
				if entries, _ := os.ReadDir(s.Dir()); len(entries) != 0 {
					t.Fatalf("a refused NAR left %d entries in the store", len(entries))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := txn.Add(st, registry.Info{Path: pkg.Path}); err != nil {
				t.Fatal(err)
			}
			if err := txn.Commit(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestLockWaitsForWriter(t *testing.T) {
	s := New(t.TempDir(), Options{})
	first, err := s.Lock(context.Background(), "first writer", nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	var told string
	_, err = s.Lock(ctx, "second", func(holder string) { told = holder })
	if err == nil || !strings.Contains(err.Error(), "store is locked by pid") || !strings.Contains(told, "first writer") {
		t.Fatalf("second Lock: err %v, told %q", err, told)
	}
	done := make(chan error)
	go func() {
		txn, err := s.Lock(context.Background(), "third", nil)
		if err == nil {
			txn.Close()
		}
		done <- err
	}()
	time.Sleep(150 * time.Millisecond)
	first.Close()
	if err := <-done; err != nil {
		t.Fatalf("a waiting writer did not get the lock: %v", err)
	}
}

func TestLeftoversAndStaleFinalNames(t *testing.T) {
	s := New(t.TempDir(), Options{})
	pkgs := storetest.Closure("left", 2, 1, 10)
	// What a crash leaves: a temporary restore with a read-only folder, a
	// half-removed trash folder, and a final name renamed but not registered
	// (with the wrong content).
	tmp := filepath.Join(s.Dir(), tmpPrefix+"dead")
	os.MkdirAll(filepath.Join(tmp, "sub"), 0o755)
	os.Chmod(filepath.Join(tmp, "sub"), 0o555)
	os.MkdirAll(filepath.Join(s.Dir(), trashPrefix+"x"), 0o555)
	stale := s.PhysicalPath(pkgs[0].Path)
	os.MkdirAll(stale, 0o755)
	os.WriteFile(filepath.Join(stale, "wrong"), []byte("half"), 0o644)
	if _, err := importStream(t, s, exportOf(t, pkgs)); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(s.Dir())
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	want := []string{pkgs[0].Path.Base(), pkgs[1].Path.Base()}
	sort.Strings(want)
	if !reflect.DeepEqual(names, want) {
		t.Fatalf("store holds %v, want %v", names, want)
	}
	reg, _ := s.Registry()
	if problems, _ := s.Verify(context.Background(), reg, nil); len(problems) > 0 {
		t.Fatalf("verify: %v", problems)
	}
}

func TestTempRootsExpire(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	s := New(t.TempDir(), Options{Now: func() time.Time { return now }, TempRootTTL: time.Hour})
	pkgs := storetest.Closure("tr", 2, 0, 0)
	importStream(t, s, exportOf(t, pkgs))
	txn, _ := s.Lock(context.Background(), "test", nil)
	defer txn.Close()
	live, err := txn.TempRoots()
	if err != nil || len(live) != 1 || len(live[0].Paths) != 2 {
		t.Fatalf("live temp roots %v, %v; want both imported paths", live, err)
	}
	now = now.Add(2 * time.Hour)
	if live, _ := txn.TempRoots(); len(live) != 0 {
		t.Fatalf("temp roots after expiry: %v", live)
	}
	if entries, _ := os.ReadDir(s.tempRootsDir()); len(entries) != 0 {
		t.Fatalf("expired temp root files remain: %d", len(entries))
	}
}

func FuzzImportExport(f *testing.F) {
	f.Add(exportOf(f, storetest.Closure("fz", 2, 1, 16)))
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, in []byte) {
		s := New(t.TempDir(), Options{})
		importStream(t, s, in)
		// Whatever was accepted verifies, and nothing temporary is left.
		reg, err := s.Registry()
		if err != nil {
			t.Fatal(err)
		}
		if problems, _ := s.Verify(context.Background(), reg, nil); len(problems) > 0 {
			t.Fatalf("verify after import: %v", problems)
		}
		entries, _ := os.ReadDir(s.Dir())
		if len(entries) != reg.Len() {
			t.Fatalf("%d store entries for %d valid paths", len(entries), reg.Len())
		}
	})
}

// TestReadOnly: a write refused by a read-only file system (an image
// board's squashfs) is ErrReadOnly, saying why; other errors stay as
// they are.
func TestReadOnly(t *testing.T) {
	ro := readOnly(&os.PathError{Op: "open", Path: "/nix/var/roost/lock", Err: syscall.EROFS})
	if !errors.Is(ro, ErrReadOnly) || !errors.Is(ro, syscall.EROFS) || !strings.Contains(ro.Error(), "boots from an image") {
		t.Errorf("readOnly(EROFS) = %v", ro)
	}
	other := &os.PathError{Op: "open", Path: "/nix/var/roost/lock", Err: syscall.EACCES}
	if err := readOnly(other); err != other {
		t.Errorf("readOnly(EACCES) = %v", err)
	}
}
