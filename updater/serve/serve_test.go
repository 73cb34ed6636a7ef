package serve

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/roostrouter/roost/updater/nixhash"
	"github.com/roostrouter/roost/updater/store"
	"github.com/roostrouter/roost/updater/storetest"
)

// client writes the frames a Nix client would.
type client struct{ b bytes.Buffer }

func (c *client) u64(n uint64) { binary.Write(&c.b, binary.LittleEndian, n) }
func (c *client) str(s string) {
	c.u64(uint64(len(s)))
	c.b.WriteString(s)
	c.b.Write(make([]byte, (8-len(s)%8)%8))
}
func (c *client) strs(ss ...string) {
	c.u64(uint64(len(ss)))
	for _, s := range ss {
		c.str(s)
	}
}

func hello() *client {
	c := &client{}
	c.u64(magic1)
	c.u64(0x206)
	return c
}

func server(s *store.Store) *Server {
	return &Server{Store: s, Write: true, Log: slog.New(slog.DiscardHandler),
		Lock: func(ctx context.Context) (*store.Txn, error) { return s.Lock(ctx, "serve", nil) }}
}

func (c *client) addToStoreNar(pkg storetest.Package, hash nixhash.SHA256, nar []byte) {
	c.u64(cmdAddToStoreNar)
	c.str(pkg.Path.String())
	c.str("")
	c.str(hash.Base16())
	var refs []string
	for _, r := range pkg.Refs {
		refs = append(refs, r.String())
	}
	c.strs(refs...)
	c.u64(0)
	c.u64(uint64(len(nar)))
	c.u64(0)
	c.strs()
	c.str("")
	c.b.Write(nar)
}

func TestAddQueryDump(t *testing.T) {
	s := store.New(t.TempDir(), store.Options{})
	pkgs := storetest.Closure("sv", 3, 1, 100)
	c := hello()
	nars := map[int][]byte{}
	for i, p := range pkgs {
		var n bytes.Buffer
		storetest.WriteNAR(&n, p)
		nars[i] = n.Bytes()
		c.addToStoreNar(p, sha256.Sum256(n.Bytes()), n.Bytes())
	}
	c.u64(cmdQueryValidPaths)
	c.u64(0)
	c.u64(0)
	c.strs(pkgs[0].Path.String(), storetest.NewPath("absent").String())
	c.u64(cmdDumpStorePath)
	c.str(pkgs[1].Path.String())
	var out bytes.Buffer
	if err := server(s).Serve(context.Background(), &c.b, &out); err != nil {
		t.Fatal(err)
	}
	// magic2, version, three acks, one valid path, then the NAR.
	want := &client{}
	want.u64(magic2)
	want.u64(Version)
	for range pkgs {
		want.u64(1)
	}
	want.strs(pkgs[0].Path.String())
	want.b.Write(nars[1])
	if !bytes.Equal(out.Bytes(), want.b.Bytes()) {
		t.Fatalf("the server's answers differ from what Nix expects (%d vs %d bytes)", out.Len(), want.b.Len())
	}
}

func TestLyingNAR(t *testing.T) {
	s := store.New(t.TempDir(), store.Options{})
	pkg := storetest.Closure("lie", 1, 1, 100)[0]
	var n bytes.Buffer
	storetest.WriteNAR(&n, pkg)
	wrong := nixhash.SHA256(sha256.Sum256([]byte("something else")))
	c := hello()
	c.addToStoreNar(pkg, wrong, n.Bytes())
	err := server(s).Serve(context.Background(), &c.b, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "the sender declared") {
		t.Fatalf("Serve of a lying NAR: %v", err)
	}
	reg, _ := s.Registry()
	if reg.Len() != 0 {
		t.Fatal("a lying NAR was registered")
	}
}

func TestRefusals(t *testing.T) {
	s := store.New(t.TempDir(), store.Options{})
	for _, tc := range []struct {
		name string
		in   func() *client
		want string
	}{
		{"not nix", func() *client { c := &client{}; c.b.WriteString("GET / HTTP/1.0\r\n\r\n"); return c }, "protocol mismatch"},
		{"build", func() *client { c := hello(); c.u64(cmdBuildPaths); return c }, "roostd does not build"},
		{"unknown", func() *client { c := hello(); c.u64(77); return c }, "unknown serve command 77"},
		{"huge list", func() *client {
			c := hello()
			c.u64(cmdQueryValidPaths)
			c.u64(0)
			c.u64(0)
			c.u64(1 << 40)
			return c
		}, "more than the"},
		{"bad path", func() *client { c := hello(); c.u64(cmdDumpStorePath); c.str("/etc/shadow"); return c }, "is not in /nix/store"},
	} {
		err := server(s).Serve(context.Background(), &tc.in().b, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}

func FuzzServe(f *testing.F) {
	pkg := storetest.Closure("fz", 1, 1, 16)[0]
	var n bytes.Buffer
	storetest.WriteNAR(&n, pkg)
	c := hello()
	c.addToStoreNar(pkg, sha256.Sum256(n.Bytes()), n.Bytes())
	f.Add(c.b.Bytes())
	f.Fuzz(func(t *testing.T, in []byte) {
		s := store.New(t.TempDir(), store.Options{})
		server(s).Serve(context.Background(), bytes.NewReader(in), io.Discard)
		reg, err := s.Registry()
		if err != nil {
			t.Fatal(err)
		}
		if problems, _ := s.Verify(context.Background(), reg, nil); len(problems) > 0 {
			t.Fatalf("verify: %v", problems)
		}
	})
}
