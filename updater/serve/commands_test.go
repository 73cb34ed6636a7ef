package serve

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/roostrouter/roost/updater/nixhash"
	"github.com/roostrouter/roost/updater/store"
	"github.com/roostrouter/roost/updater/storepath"
	"github.com/roostrouter/roost/updater/storetest"
)

// TestHandshake: the server answers Nix's magic with its own and its
// version, and both sides speak the lower minor version.
func TestHandshake(t *testing.T) {
	for _, tc := range []struct {
		name      string
		in        func() *client
		wantMinor uint64
		wantErr   string
		wantReply bool // magic2 and the version went out
	}{
		{"2.0", func() *client { return helloAt(0x200) }, 0, "", true},
		{"2.6", func() *client { return helloAt(0x206) }, 6, "", true},
		{"2.9", func() *client { return helloAt(0x209) }, 7, "", true},
		{"1.x", func() *client { return helloAt(0x105) }, 0, "the client speaks serve protocol 1.5", true},
		{"no version", func() *client { c := &client{}; c.u64(magic1); return c }, 0, "read client version", true},
		{"wrong magic", func() *client { c := &client{}; c.u64(magic2); return c }, 0, "protocol mismatch", false},
		{"nothing", func() *client { return &client{} }, 0, "read greeting", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			c := &conn{r: bufio.NewReader(&tc.in().b), w: bufio.NewWriter(&out)}
			minor, err := handshake(c)
			if tc.wantErr == "" && (err != nil || minor != tc.wantMinor) {
				t.Fatalf("handshake: minor %d, %v; want %d", minor, err, tc.wantMinor)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("handshake: %v, want %q", err, tc.wantErr)
			}
			c.w.Flush()
			want := &client{}
			if tc.wantReply {
				want.u64(magic2)
				want.u64(Version)
			}
			if diff := firstDiff(out.Bytes(), want.b.Bytes()); diff != "" {
				t.Fatal(diff)
			}
		})
	}
}

// added is a store holding pkgs, put there through AddToStoreNar.
func added(t *testing.T, pkgs []storetest.Package) *store.Store {
	t.Helper()
	s := store.New(t.TempDir(), store.Options{})
	c := hello()
	for _, p := range pkgs {
		var n bytes.Buffer
		storetest.WriteNAR(&n, p)
		c.addToStoreNar(p, sha256.Sum256(n.Bytes()), n.Bytes())
	}
	if err := server(s).Serve(context.Background(), &c.b, io.Discard); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestQueryClosure: the answer is the valid paths of the closure, sorted
// as Nix's StorePathSet is; a path that is not there is left out.
func TestQueryClosure(t *testing.T) {
	pkgs := storetest.Closure("qc", 3, 1, 10) // pkg0, pkg1 → pkg0, system → both
	s := added(t, pkgs)
	c := hello()
	c.u64(cmdQueryClosure)
	c.u64(0)
	c.strs(pkgs[1].Path.String(), storetest.NewPath("absent").String())
	out := serveAll(t, s, c)
	closure := []string{pkgs[0].Path.String(), pkgs[1].Path.String()}
	slices.Sort(closure)
	want := greeting()
	want.strs(closure...)
	if diff := firstDiff(out, want.b.Bytes()); diff != "" {
		t.Fatal(diff)
	}
}

// TestExportImport: ExportPaths answers with a nix-store --export stream,
// references first, that ImportPaths on another router takes (answer 1);
// exporting a path that is not there fails saying so.
func TestExportImport(t *testing.T) {
	pkgs := storetest.Closure("ex", 3, 2, 100)
	from := added(t, pkgs)
	c := hello()
	c.u64(cmdExportPaths)
	c.u64(0)
	c.strs(pkgs[2].Path.String(), pkgs[0].Path.String(), pkgs[1].Path.String())
	var out bytes.Buffer
	if err := server(from).Serve(context.Background(), &c.b, &out); err != nil {
		t.Fatal(err)
	}
	var want bytes.Buffer
	storetest.WriteExport(&want, pkgs)
	exported := out.Bytes()[16:] // after magic2 and the version
	if !bytes.Equal(exported, want.Bytes()) {
		t.Fatalf("the export stream differs from nix-store --export's (%d vs %d bytes)", len(exported), want.Len())
	}

	to := store.New(t.TempDir(), store.Options{})
	imp := hello()
	imp.u64(cmdImportPaths)
	imp.b.Write(exported)
	out.Reset()
	if err := server(to).Serve(context.Background(), &imp.b, &out); err != nil {
		t.Fatal(err)
	}
	if ack := out.Bytes()[16:]; !bytes.Equal(ack, []byte{1, 0, 0, 0, 0, 0, 0, 0}) {
		t.Fatalf("ImportPaths answered %x, want 1", ack)
	}
	reg, _ := to.Registry()
	for _, p := range pkgs {
		if _, ok := reg.Get(p.Path); !ok {
			t.Errorf("%s was not imported", p.Path)
		}
	}

	absent := hello()
	absent.u64(cmdExportPaths)
	absent.u64(0)
	absent.strs(storetest.NewPath("absent").String())
	err := server(from).Serve(context.Background(), &absent.b, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "not a valid store path") {
		t.Fatalf("export of an absent path: %v", err)
	}
}

// TestReadOnly: without --write, imports are refused and nothing is
// registered; queries still work.
func TestReadOnly(t *testing.T) {
	pkg := storetest.Closure("ro", 1, 1, 10)[0]
	var n bytes.Buffer
	storetest.WriteNAR(&n, pkg)
	for name, cmd := range map[string]func(c *client){
		"AddToStoreNar": func(c *client) { c.addToStoreNar(pkg, sha256.Sum256(n.Bytes()), n.Bytes()) },
		"ImportPaths": func(c *client) {
			c.u64(cmdImportPaths)
			storetest.WriteExport(&c.b, []storetest.Package{pkg})
		},
	} {
		t.Run(name, func(t *testing.T) {
			s := store.New(t.TempDir(), store.Options{})
			srv := server(s)
			srv.Write = false
			c := hello()
			cmd(c)
			err := srv.Serve(context.Background(), &c.b, io.Discard)
			if err == nil || !strings.Contains(err.Error(), "without --write") {
				t.Fatalf("%s without --write: %v", name, err)
			}
			if reg, _ := s.Registry(); reg.Len() != 0 {
				t.Fatalf("%d paths registered without --write", reg.Len())
			}
		})
	}
}

// TestAddToStoreNarAgain: a path that is already there is read through
// and kept; the connection stays in step for the next command.
func TestAddToStoreNarAgain(t *testing.T) {
	pkg := storetest.Closure("again", 1, 1, 100)[0]
	s := added(t, []storetest.Package{pkg})
	var n bytes.Buffer
	storetest.WriteNAR(&n, pkg)
	c := hello()
	c.addToStoreNar(pkg, sha256.Sum256(n.Bytes()), n.Bytes())
	c.u64(cmdQueryValidPaths)
	c.u64(0)
	c.u64(0)
	c.strs(pkg.Path.String())
	out := serveAll(t, s, c)
	want := greeting()
	want.u64(1)
	want.strs(pkg.Path.String())
	if diff := firstDiff(out, want.b.Bytes()); diff != "" {
		t.Fatal(diff)
	}
}

// TestReadAddToStoreNar: the arguments of AddToStoreNar as Nix sends them,
// and the ones that are refused before any NAR byte is read.
func TestReadAddToStoreNar(t *testing.T) {
	path := storetest.NewPath("arg")
	ref := storetest.NewPath("ref")
	drv := "/nix/store/2z9jcpb39xj6dcmsfyrp4v9q8yk7bi9r-arg.drv"
	hash := nixhash.SHA256(sha256.Sum256([]byte("nar")))
	args := func(path, deriver, hash string, size uint64) *client {
		c := &client{}
		c.str(path)
		c.str(deriver)
		c.str(hash)
		c.strs(ref.String())
		c.u64(1700000000)
		c.u64(size)
		c.u64(1)
		c.strs("k:c2ln")
		c.str("")
		return c
	}
	for _, tc := range []struct {
		name    string
		in      *client
		wantErr string
	}{
		{"good", args(path.String(), drv, hash.Base16(), 1000), ""},
		{"nix32 hash", args(path.String(), "", "sha256:"+nixhash.EncodeNix32(hash[:]), 1000), ""},
		{"not a store path", args("/etc/passwd", "", hash.Base16(), 1000), "not in /nix/store"},
		{"bad hash", args(path.String(), "", "md5:00", 1000), path.String()},
		{"bad deriver", args(path.String(), "/tmp/x.drv", hash.Base16(), 1000), "not in /nix/store"},
		{"empty NAR", args(path.String(), "", hash.Base16(), 0), "NAR size 0 is not acceptable"},
		{"huge NAR", args(path.String(), "", hash.Base16(), 1<<41), "is not acceptable"},
		{"cut", func() *client { c := &client{}; c.str(path.String()); return c }(), "read deriver"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ss := &session{c: &conn{r: bufio.NewReader(&tc.in.b)}}
			info, err := ss.readAddToStoreNar()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("readAddToStoreNar: %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if info.Path != path || info.NarHash != hash || info.NarSize != 1000 ||
				!slices.Equal(info.References, []storepath.Path{ref}) || !slices.Equal(info.Signatures, []string{"k:c2ln"}) {
				t.Errorf("info %+v", info)
			}
			if tc.name == "good" && info.Deriver.String() != drv {
				t.Errorf("deriver %q, want %q", info.Deriver, drv)
			}
		})
	}
}
