package transfer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/roostrouter/roost/updater/registry"
	"github.com/roostrouter/roost/updater/store"
	"github.com/roostrouter/roost/updater/storepath"
	"github.com/roostrouter/roost/updater/storetest"
)

// laptop holds a closure's NARs and infos, as the laptop's Nix store would.
type laptop struct {
	infos []registry.Info
	nars  map[storepath.Path][]byte
}

func newLaptop(t testing.TB, pkgs []storetest.Package) *laptop {
	l := &laptop{nars: map[storepath.Path][]byte{}}
	for _, pkg := range pkgs {
		var b bytes.Buffer
		if err := storetest.WriteNAR(&b, pkg); err != nil {
			t.Fatal(err)
		}
		l.nars[pkg.Path] = b.Bytes()
		l.infos = append(l.infos, registry.Info{Path: pkg.Path, NarHash: sha256.Sum256(b.Bytes()), NarSize: uint64(b.Len()), References: pkg.Refs})
	}
	return l
}

func (l *laptop) source(p storepath.Path, w io.Writer) error {
	_, err := w.Write(l.nars[p])
	return err
}

func newServer(s *store.Store) *Server {
	return &Server{Store: s, Log: slog.New(slog.DiscardHandler), Agent: "roostd test",
		Lock: func(ctx context.Context) (*store.Txn, error) { return s.Lock(ctx, "receive", nil) }}
}

type outcome struct {
	res    Result
	sum    Summary
	cliErr error
	srvErr error
}

// transfer runs a sender against a server over an in-memory connection.
func transfer(t testing.TB, s *store.Store, infos []registry.Info, src NARSource) outcome {
	cli, srv := net.Pipe()
	done := make(chan outcome, 1)
	go func() {
		sum, err := newServer(s).Serve(context.Background(), srv, srv)
		srv.Close()
		done <- outcome{sum: sum, srvErr: err}
	}()
	res, err := (&Sender{Agent: "roost test"}).Send(context.Background(), cli, cli, infos, src)
	cli.Close()
	o := <-done
	o.res, o.cliErr = res, err
	return o
}

func validCount(t testing.TB, s *store.Store) int {
	reg, err := s.Registry()
	if err != nil {
		t.Fatal(err)
	}
	if problems, _ := s.Verify(context.Background(), reg, nil); len(problems) > 0 {
		t.Fatalf("verify: %v", problems)
	}
	return reg.Len()
}

func TestTransferThenNoop(t *testing.T) {
	s := store.New(t.TempDir(), store.Options{})
	l := newLaptop(t, storetest.Closure("xfer", 100, 2, 3000))
	o := transfer(t, s, l.infos, l.source)
	if o.cliErr != nil || o.srvErr != nil {
		t.Fatalf("transfer: client %v, server %v", o.cliErr, o.srvErr)
	}
	if len(o.res.Missing) != 100 || o.res.Summary.Received != 100 || validCount(t, s) != 100 {
		t.Fatalf("missing %d, received %d, want 100", len(o.res.Missing), o.res.Summary.Received)
	}
	if o.res.WireBytes >= int64(o.res.NARBytes) {
		t.Errorf("sent %d bytes on the wire for %d of NAR: not compressed", o.res.WireBytes, o.res.NARBytes)
	}
	again := transfer(t, s, l.infos, func(p storepath.Path, w io.Writer) error {
		t.Errorf("a no-op transfer asked for %s", p)
		return nil
	})
	if again.cliErr != nil || len(again.res.Missing) != 0 || again.res.NARBytes != 0 {
		t.Fatalf("no-op transfer: %v, missing %d", again.cliErr, len(again.res.Missing))
	}
}

func TestTransferResumesAfterCut(t *testing.T) {
	s := store.New(t.TempDir(), store.Options{})
	l := newLaptop(t, storetest.Closure("cut", 200, 1, 2000))
	cutAfter := int32(120)
	var sent atomic.Int32 // NARs are read from several goroutines
	o := transfer(t, s, l.infos, func(p storepath.Path, w io.Writer) error {
		if sent.Add(1) > cutAfter {
			return errors.New("laptop unplugged")
		}
		return l.source(p, w)
	})
	if o.cliErr == nil || o.srvErr == nil {
		t.Fatalf("cut transfer succeeded: client %v, server %v", o.cliErr, o.srvErr)
	}
	kept := validCount(t, s)
	if kept == 0 || kept > int(cutAfter) {
		t.Fatalf("after the cut %d paths are valid, want some of the %d sent", kept, cutAfter)
	}
	var asked atomic.Int32
	o = transfer(t, s, l.infos, func(p storepath.Path, w io.Writer) error {
		asked.Add(1)
		return l.source(p, w)
	})
	if o.cliErr != nil || int(asked.Load()) != 200-kept || validCount(t, s) != 200 {
		t.Fatalf("resume: %v; sent %d paths with %d already there", o.cliErr, asked.Load(), kept)
	}
}

func TestLyingPeer(t *testing.T) {
	pkgs := storetest.Closure("lie", 5, 1, 500)
	for _, tc := range []struct {
		name    string
		lie     func(l *laptop) ([]registry.Info, NARSource)
		wantErr string
	}{
		{"wrong hash", func(l *laptop) ([]registry.Info, NARSource) {
			infos := append([]registry.Info(nil), l.infos...)
			infos[3].NarHash[0] ^= 1
			return infos, l.source
		}, "the sender declared"},
		{"wrong size", func(l *laptop) ([]registry.Info, NARSource) {
			infos := append([]registry.Info(nil), l.infos...)
			infos[3].NarSize -= 8
			return infos, l.source
		}, "longer than the expected"},
		{"other contents", func(l *laptop) ([]registry.Info, NARSource) {
			return l.infos, func(p storepath.Path, w io.Writer) error {
				if p == l.infos[3].Path {
					p = l.infos[2].Path
				}
				return l.source(p, w)
			}
		}, "the sender declared"},
		{"trailing data", func(l *laptop) ([]registry.Info, NARSource) {
			return l.infos, func(p storepath.Path, w io.Writer) error {
				l.source(p, w)
				_, err := w.Write([]byte("more"))
				return err
			}
		}, "data after the end of the NAR"},
		{"not closed", func(l *laptop) ([]registry.Info, NARSource) {
			return l.infos[1:], l.source
		}, "closure is not closed"},
		{"empty", func(l *laptop) ([]registry.Info, NARSource) { return nil, l.source }, "closure is empty"},
		{"duplicate", func(l *laptop) ([]registry.Info, NARSource) {
			return append(l.infos, l.infos[0]), l.source
		}, "twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := store.New(t.TempDir(), store.Options{})
			infos, src := tc.lie(newLaptop(t, pkgs))
			o := transfer(t, s, infos, src)
			if o.srvErr == nil || !strings.Contains(o.srvErr.Error(), tc.wantErr) {
				t.Fatalf("server error %v, want %q", o.srvErr, tc.wantErr)
			}
			if o.cliErr == nil || !strings.Contains(o.cliErr.Error(), "the router refused the transfer") {
				t.Fatalf("client error %v, want the router's refusal", o.cliErr)
			}
			// Nothing of the lie is registered; what came before it may be.
			reg, _ := s.Registry()
			if _, ok := reg.Get(pkgs[3].Path); ok {
				t.Fatal("the lied-about path was registered")
			}
			validCount(t, s)
		})
	}
}

func TestNotAPeer(t *testing.T) {
	s := store.New(t.TempDir(), store.Options{})
	in := strings.NewReader("SSH-2.0-OpenSSH_9.2\r\n")
	var out bytes.Buffer
	_, err := newServer(s).Serve(context.Background(), in, &out)
	if err == nil || !strings.Contains(err.Error(), "not a roost transfer peer") {
		t.Fatalf("Serve on garbage: %v", err)
	}
}

func infoMap(infos []registry.Info) map[storepath.Path]*registry.Info {
	m := map[storepath.Path]*registry.Info{}
	for i := range infos {
		m[infos[i].Path] = &infos[i]
	}
	return m
}

func paths(infos []registry.Info) []storepath.Path {
	var ps []storepath.Path
	for _, i := range infos {
		ps = append(ps, i.Path)
	}
	return ps
}

func FuzzServe(f *testing.F) {
	// A recorded good session, as a seed.
	l := newLaptop(f, storetest.Closure("fz", 2, 1, 64))
	var rec bytes.Buffer
	c := newConn(nil, &rec)
	c.writeJSON(frameHello, hello{Protocol: Protocol, Version: Version})
	c.writeJSON(frameClosure, closureMsg{Paths: l.infos})
	f.Add(rec.Bytes())
	// Version 4: the closure in the hello, NARs as they are.
	rec.Reset()
	c = newConn(nil, &rec)
	z, _ := compressJSON(closureMsg{Paths: l.infos})
	c.writeJSON(frameHello, hello{Protocol: Protocol, Version: Version, Closure: z})
	for _, p := range registry.TopoSort(infoMap(l.infos), paths(l.infos)) {
		c.writeJSON(frameNAR, narMsg{Path: p, Compression: compNone})
		c.write(frameData, l.nars[p], false)
		c.write(frameEnd, nil, false)
	}
	c.write(frameFinish, nil, true)
	f.Add(rec.Bytes())
	f.Fuzz(func(t *testing.T, in []byte) {
		s := store.New(t.TempDir(), store.Options{})
		newServer(s).Serve(context.Background(), bytes.NewReader(in), io.Discard)
		validCount(t, s)
	})
}

// TestDelta: a new version of a package the router holds goes as a zstd
// delta against the old one, and what is registered is the new NAR, byte
// for byte.
func TestDelta(t *testing.T) {
	s := store.New(t.TempDir(), store.Options{})
	pkg := func(version string) storetest.Package {
		return storetest.Package{Path: storetest.NewPath("app-" + version), Files: 8, FileSize: 100_000, Seed: 7}
	}
	old := newLaptop(t, []storetest.Package{pkg("1.0")})
	if o := transfer(t, s, old.infos, old.source); o.cliErr != nil {
		t.Fatal(o.cliErr)
	}
	// The laptop has both versions (it built the old one too).
	l := newLaptop(t, []storetest.Package{pkg("2.0")})
	for p, n := range old.nars {
		l.nars[p] = n
	}
	o := transfer(t, s, l.infos, l.source)
	if o.cliErr != nil || o.srvErr != nil {
		t.Fatalf("client %v, server %v", o.cliErr, o.srvErr)
	}
	if o.res.Deltas != 1 || o.res.WireBytes > int64(o.res.NARBytes)/20 {
		t.Fatalf("%d deltas, %d bytes on the wire for %d of NAR: want one small delta", o.res.Deltas, o.res.WireBytes, o.res.NARBytes)
	}
	reg, _ := s.Registry()
	var got bytes.Buffer
	if err := s.Dump(&got, reg, pkg("2.0").Path); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), l.nars[pkg("2.0").Path]) {
		t.Fatal("the path registered from a delta differs from the laptop's")
	}
	validCount(t, s)

	// A laptop without the base sends the whole NAR.
	s2 := store.New(t.TempDir(), store.Options{})
	transfer(t, s2, old.infos, old.source)
	l2 := newLaptop(t, []storetest.Package{pkg("2.0")})
	if o := transfer(t, s2, l2.infos, l2.source); o.cliErr != nil || o.res.Deltas != 0 {
		t.Fatalf("without the base: %v, %d deltas", o.cliErr, o.res.Deltas)
	}
}

// TestDeltaAgainstALargeBase: a 12 MB file with a few bytes changed
// crosses as a delta of a few KB, not as the megabytes the default level
// leaves when its tables cannot index the whole base.
func TestDeltaAgainstALargeBase(t *testing.T) {
	base := make([]byte, 12<<20)
	rand.NewChaCha8([32]byte{1}).Read(base)
	changed := bytes.Clone(base)
	copy(changed[6<<20:], "version 1.2")
	out, err := compress(changed, base, deltaLevel(len(base)))
	if err != nil {
		t.Fatal(err)
	}
	if len(out) > 64<<10 {
		t.Fatalf("a 12 MB file with 11 bytes changed: a %d-byte delta", len(out))
	}
}

// TestClosureMessage: a version-2 laptop's plain closure is still read; a
// version-3 one's is compressed (a 512-path closure: under a quarter of
// the JSON); a compressed closure that expands past the limit is refused.
func TestClosureMessage(t *testing.T) {
	l := newLaptop(t, storetest.Closure("cm", 512, 1, 64))
	readBack := func(frame func(c *conn) error) (closureMsg, error) {
		var rec bytes.Buffer
		c := newConn(nil, &rec)
		if err := frame(c); err != nil {
			t.Fatal(err)
		}
		var got closureMsg
		err := newConn(&rec, io.Discard).readClosure(&got)
		return got, err
	}
	plain, err := readBack(func(c *conn) error { return c.writeJSON(frameClosure, closureMsg{Paths: l.infos}) })
	if err != nil || len(plain.Paths) != 512 {
		t.Fatalf("plain closure: %d paths, %v", len(plain.Paths), err)
	}
	var z bytes.Buffer
	newConn(nil, &z).writeJSONZ(frameClosureZ, closureMsg{Paths: l.infos})
	js, _ := json.Marshal(closureMsg{Paths: l.infos})
	if z.Len() > len(js)/4 {
		t.Fatalf("compressed closure frame: %d bytes for %d of JSON", z.Len(), len(js))
	}
	compressed, err := readBack(func(c *conn) error { return c.writeJSONZ(frameClosureZ, closureMsg{Paths: l.infos}) })
	if err != nil || len(compressed.Paths) != 512 || compressed.Paths[7].Path != l.infos[7].Path {
		t.Fatalf("compressed closure: %d paths, %v", len(compressed.Paths), err)
	}
	// A bomb: a few KB that expand past the limit.
	var bomb bytes.Buffer
	enc, _ := zstd.NewWriter(&bomb)
	chunk := bytes.Repeat([]byte(" "), 1<<20)
	for i := 0; i <= maxClosureJSON>>20; i++ {
		enc.Write(chunk)
	}
	enc.Close()
	_, err = readBack(func(c *conn) error { return c.write(frameClosureZ, bomb.Bytes(), true) })
	if err == nil || !strings.Contains(err.Error(), "over") {
		t.Fatalf("a closure message that expands to %d MiB: %v", maxClosureJSON>>20+1, err)
	}
}
