package serve

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
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

// serveAll runs a server on s over everything c wrote, and returns what
// it answered.
func serveAll(t *testing.T, s *store.Store, c *client) []byte {
	t.Helper()
	var out bytes.Buffer
	if err := server(s).Serve(context.Background(), &c.b, &out); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// greeting is the server's answer to hello: a test appends the answers it
// wants after it.
func greeting() *client {
	want := &client{}
	want.u64(magic2)
	want.u64(Version)
	return want
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
	out := serveAll(t, s, c)
	// magic2, version, three acks, one valid path, then the NAR.
	want := greeting()
	for range pkgs {
		want.u64(1)
	}
	want.strs(pkgs[0].Path.String())
	want.b.Write(nars[1])
	if !bytes.Equal(out, want.b.Bytes()) {
		t.Fatalf("the server's answers differ from what Nix expects (%d vs %d bytes)", len(out), want.b.Len())
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
		{"major 3", func() *client { c := &client{}; c.u64(magic1); c.u64(0x300); return c }, "the client speaks serve protocol 3.0"},
		{"cut build request", func() *client { c := hello(); c.u64(cmdBuildPaths); c.strs("/nix/store/x"); return c }, "read build options"},
		{"huge derivation string", func() *client {
			c := hello()
			c.u64(cmdBuildDerivation)
			c.u64(1 << 40)
			return c
		}, "derivation path of 1099511627776 bytes"},
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

// helloAt is the greeting of a client that speaks version v.
func helloAt(v uint64) *client {
	c := &client{}
	c.u64(magic1)
	c.u64(v)
	return c
}

// pathInfo is QueryPathInfos' answer for one path, as Nix's
// ServeProto::Serialise<UnkeyedValidPathInfo>::write puts it for minor:
// path, deriver, references, download size, NAR size, and from 2.4 the
// NAR hash as sha256:<nix32> (the client's Hash::parseAnyPrefixed needs
// the prefix), the content address and the signatures.
func (c *client) pathInfo(minor uint64, pkg storetest.Package, hash nixhash.SHA256, size int, sigs ...string) {
	c.str(pkg.Path.String())
	c.str("")
	var refs []string
	for _, r := range pkg.Refs {
		refs = append(refs, r.String())
	}
	c.strs(refs...)
	c.u64(uint64(size))
	c.u64(uint64(size))
	if minor >= 4 {
		c.str("sha256:" + nixhash.EncodeNix32(hash[:]))
		c.str("")
		c.strs(sigs...)
	}
}

// TestNewerClient replays what Nix 2.35 (protocol 2.8) sends for nix copy
// --to and --from (src/libstore/legacy-ssh-store.cc, serve-protocol*.cc at
// NixOS/nix 2.35.0): the server announces 2.7 and both sides speak 2.7.
func TestNewerClient(t *testing.T) {
	s := store.New(t.TempDir(), store.Options{})
	pkgs := storetest.Closure("nc", 2, 1, 100)
	nars := make([][]byte, len(pkgs))
	hashes := make([]nixhash.SHA256, len(pkgs))
	for i, p := range pkgs {
		var n bytes.Buffer
		storetest.WriteNAR(&n, p)
		nars[i], hashes[i] = n.Bytes(), sha256.Sum256(n.Bytes())
	}
	sig := "cache.example.org-1:" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 64))

	c := helloAt(0x208)
	// copyPaths: which are there already (lock 0, substitute 0)?
	c.u64(cmdQueryValidPaths)
	c.u64(0)
	c.u64(0)
	c.strs(pkgs[0].Path.String(), pkgs[1].Path.String())
	// addToStore for each, references first: path, deriver, base16 hash
	// without prefix, references, registration time, NAR size, ultimate,
	// signatures, content address, the NAR.
	for i, p := range pkgs {
		c.u64(cmdAddToStoreNar)
		c.str(p.Path.String())
		c.str("/nix/store/2z9jcpb39xj6dcmsfyrp4v9q8yk7bi9r-" + p.Path.Name() + ".drv")
		c.str(hashes[i].Base16())
		var refs []string
		for _, r := range p.Refs {
			refs = append(refs, r.String())
		}
		c.strs(refs...)
		c.u64(1700000000)
		c.u64(uint64(len(nars[i])))
		c.u64(1)
		c.strs(sig)
		c.str("")
		c.b.Write(nars[i])
	}
	// nix copy --from: the infos, then the NAR.
	c.u64(cmdQueryPathInfos)
	c.strs(pkgs[1].Path.String(), storetest.NewPath("absent").String())
	c.u64(cmdDumpStorePath)
	c.str(pkgs[1].Path.String())

	out := serveAll(t, s, c)
	want := &client{}
	want.u64(magic2)
	want.u64(0x207)
	want.strs() // none valid yet
	want.u64(1)
	want.u64(1)
	// The deriver goes back as it came.
	want.str(pkgs[1].Path.String())
	want.str("/nix/store/2z9jcpb39xj6dcmsfyrp4v9q8yk7bi9r-" + pkgs[1].Path.Name() + ".drv")
	var refs []string
	for _, r := range pkgs[1].Refs {
		refs = append(refs, r.String())
	}
	want.strs(refs...)
	want.u64(uint64(len(nars[1])))
	want.u64(uint64(len(nars[1])))
	want.str("sha256:" + nixhash.EncodeNix32(hashes[1][:]))
	want.str("")
	want.strs(sig)
	want.str("") // end of infos: the absent path is left out
	want.b.Write(nars[1])
	if diff := firstDiff(out, want.b.Bytes()); diff != "" {
		t.Fatal(diff)
	}
}

// firstDiff says where two byte streams part, in 8-byte words.
func firstDiff(got, want []byte) string {
	for i := 0; i < max(len(got), len(want)); i += 8 {
		g, w := got[min(i, len(got)):min(i+8, len(got))], want[min(i, len(want)):min(i+8, len(want))]
		if !bytes.Equal(g, w) {
			return fmt.Sprintf("answer differs at byte %d of %d (want %d): got %q, want %q", i, len(got), len(want), g, w)
		}
	}
	return ""
}

// TestVersions: whatever a client announces, the answer uses the lower of
// its version and 2.7, as the client expects.
func TestVersions(t *testing.T) {
	for _, tc := range []struct {
		name   string
		client uint64
		minor  uint64 // the negotiated minor version
	}{
		{"before 2.4 (no hashes)", 0x203, 3},
		{"Nix 2.3", 0x205, 5},
		{"Nix 2.4 to 2.34, Lix", 0x207, 7},
		{"Nix 2.35", 0x208, 7},
		{"a future 2.x", 0x2ff, 7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := store.New(t.TempDir(), store.Options{})
			pkg := storetest.Closure("v", 1, 1, 10)[0]
			var n bytes.Buffer
			storetest.WriteNAR(&n, pkg)
			hash := nixhash.SHA256(sha256.Sum256(n.Bytes()))
			// Put the path there through the same protocol at 2.7.
			add := hello()
			add.addToStoreNar(pkg, hash, n.Bytes())
			if err := server(s).Serve(context.Background(), &add.b, io.Discard); err != nil {
				t.Fatal(err)
			}

			c := helloAt(tc.client)
			c.u64(cmdQueryPathInfos)
			c.strs(pkg.Path.String())
			out := serveAll(t, s, c)
			want := greeting()
			want.pathInfo(tc.minor, pkg, hash, n.Len())
			want.str("")
			if diff := firstDiff(out, want.b.Bytes()); diff != "" {
				t.Fatal(diff)
			}
		})
	}
}

// buildOptions writes ServeProto::BuildOptions as a client at minor
// does: maxSilentTime, buildTimeout; 2.2 maxLogSize; 2.3 nrRepeats,
// enforceDeterminism; 2.7 keepFailed.
func (c *client) buildOptions(minor uint64) {
	c.u64(3600)
	c.u64(7200)
	if minor >= 2 {
		c.u64(64 << 20)
	}
	if minor >= 3 {
		c.u64(0)
		c.u64(0)
	}
	if minor >= 7 {
		c.u64(1)
	}
}

// TestBuildRefused: builds (nix build --store ssh://, --builders
// ssh://) get an answer in the protocol, a failed build that says why,
// and the connection stays in step: the command after it is answered.
func TestBuildRefused(t *testing.T) {
	for _, tc := range []struct {
		client, minor uint64
	}{{0x202, 2}, {0x203, 3}, {0x205, 5}, {0x206, 6}, {0x207, 7}, {0x208, 7}} {
		t.Run(fmt.Sprintf("%#x", tc.client), func(t *testing.T) {
			s := store.New(t.TempDir(), store.Options{})
			drv := "/nix/store/2z9jcpb39xj6dcmsfyrp4v9q8yk7bi9r-hello.drv"
			c := helloAt(tc.client)
			// BuildPaths: paths with outputs, then the options.
			c.u64(cmdBuildPaths)
			c.strs(drv+"!out", drv+"!dev")
			c.buildOptions(tc.minor)
			// BuildDerivation: its path, the derivation as
			// derivation::write puts it, then the options.
			c.u64(cmdBuildDerivation)
			c.str(drv)
			c.u64(2) // outputs: name, path, hash algorithm, hash
			c.str("dev")
			c.str("/nix/store/3z9jcpb39xj6dcmsfyrp4v9q8yk7bi9r-hello-dev")
			c.str("")
			c.str("")
			c.str("out")
			c.str("/nix/store/4z9jcpb39xj6dcmsfyrp4v9q8yk7bi9r-hello")
			c.str("")
			c.str("")
			c.strs("/nix/store/5z9jcpb39xj6dcmsfyrp4v9q8yk7bi9r-builder.sh")
			c.str("x86_64-linux")
			c.str("/nix/store/6z9jcpb39xj6dcmsfyrp4v9q8yk7bi9r-bash/bin/bash")
			c.strs("-e", "/nix/store/5z9jcpb39xj6dcmsfyrp4v9q8yk7bi9r-builder.sh")
			c.u64(2) // environment: key, value
			c.str("buildCommand")
			c.str(strings.Repeat("echo a long script; ", 1000))
			c.str("out")
			c.str("/nix/store/4z9jcpb39xj6dcmsfyrp4v9q8yk7bi9r-hello")
			c.buildOptions(tc.minor)
			c.u64(cmdQueryValidPaths)
			c.u64(0)
			c.u64(0)
			c.strs(drv)

			out := serveAll(t, s, c)
			want := greeting()
			// BuildPaths: the status, and with a failure the message.
			want.u64(statusMiscFailure)
			want.str(noBuilds)
			// BuildDerivation: a BuildResult as the version has it.
			want.u64(statusMiscFailure)
			want.str(noBuilds)
			if tc.minor >= 3 {
				want.u64(0) // timesBuilt
				want.u64(0) // isNonDeterministic
				want.u64(0) // startTime
				want.u64(0) // stopTime
			}
			if tc.minor >= 6 {
				want.u64(0) // built outputs
			}
			want.strs() // QueryValidPaths, in step
			if diff := firstDiff(out, want.b.Bytes()); diff != "" {
				t.Fatal(diff)
			}
		})
	}
}

// TestSignaturesNewerClientsParse: a signature an older client sent that
// is not name:base64 is not passed on, since Nix 2.34 and later drop the
// connection on one; the good ones are.
func TestSignaturesNewerClientsParse(t *testing.T) {
	s := store.New(t.TempDir(), store.Options{})
	pkg := storetest.Closure("sig", 1, 1, 10)[0]
	var n bytes.Buffer
	storetest.WriteNAR(&n, pkg)
	hash := nixhash.SHA256(sha256.Sum256(n.Bytes()))
	good := "cache.example.org-1:" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1}, 64))
	c := helloAt(0x205)
	c.u64(cmdAddToStoreNar)
	c.str(pkg.Path.String())
	c.str("")
	c.str(hash.Base16())
	c.strs()
	c.u64(0)
	c.u64(uint64(n.Len()))
	c.u64(0)
	c.strs("garbage", good, "empty:", ":AAAA", "name:not base64!")
	c.str("")
	c.b.Write(n.Bytes())
	c.u64(cmdQueryPathInfos)
	c.strs(pkg.Path.String())
	out := serveAll(t, s, c)
	want := greeting()
	want.u64(1)
	want.pathInfo(5, pkg, hash, n.Len(), good)
	want.str("")
	if diff := firstDiff(out, want.b.Bytes()); diff != "" {
		t.Fatal(diff)
	}
}
