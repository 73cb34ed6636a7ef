package transfer

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roostrouter/roost/updater/registry"
	"github.com/roostrouter/roost/updater/store"
	"github.com/roostrouter/roost/updater/storepath"
	"github.com/roostrouter/roost/updater/storetest"
)

// TestChooseByTime: the method estimated to finish first wins, from the
// link's throughput and the encoders' speeds: plain compression on a fast
// link when the delta encoder is slow, the delta on a slow link, the NAR
// as it is when the link outruns every encoder or nothing compresses.
func TestChooseByTime(t *testing.T) {
	const size = 14e6 // a Go binary
	oldRouter := [nMethods]bool{plain: true, dictDelta: true}
	newRouter := [nMethods]bool{asIs: true, plain: true, copyDelta: true}
	for _, tc := range []struct {
		name    string
		link    float64 // bytes a second; 0: not measured yet
		workers int
		allow   [nMethods]bool
		tweak   func(c *costModel)
		want    method
	}{
		{"zstd delta, 1 Gbit/s LAN", 125e6, 2, oldRouter, nil, plain},
		{"zstd delta, 20 Mbit/s uplink", 2.5e6, 2, oldRouter, nil, dictDelta},
		{"zstd delta, link not measured yet", 0, 2, oldRouter, nil, dictDelta},
		{"zstd delta, one slow core, 100 Mbit/s", 12.5e6, 1, oldRouter, nil, plain},
		{"copy delta, 1 Gbit/s LAN", 125e6, 2, newRouter, nil, copyDelta},
		{"copy delta, 20 Mbit/s uplink", 2.5e6, 2, newRouter, nil, copyDelta},
		{"copy delta measured slow, 10 Gbit/s", 1.25e9, 2, newRouter, func(c *costModel) { c.speed[copyDelta] = 100e6 }, asIs},
		{"no base, 20 Mbit/s", 2.5e6, 2, [nMethods]bool{asIs: true, plain: true}, nil, plain},
		{"no base, 10 Gbit/s", 1.25e9, 2, [nMethods]bool{asIs: true, plain: true}, nil, asIs},
		{"incompressible, 100 Mbit/s", 12.5e6, 2, [nMethods]bool{asIs: true, plain: true}, func(c *costModel) { c.ratio[plain] = 1 }, asIs},
		{"old router, nothing but zstd", 1.25e9, 2, [nMethods]bool{plain: true}, nil, plain},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCostModel(tc.workers, func() float64 { return tc.link })
			if tc.tweak != nil {
				tc.tweak(c)
			}
			if got := c.choose(size, tc.allow); got != tc.want {
				var est []string
				for m := range nMethods {
					if tc.allow[m] {
						est = append(est, m.String()+": "+time.Duration(c.estimate(m, size)*1e9).String())
					}
				}
				t.Fatalf("chose %s, want %s (%s)", got, tc.want, strings.Join(est, ", "))
			}
		})
	}
}

// TestModelLearns: what the encoders do moves the estimates, large
// samples more than small ones, so a delta encoder that turns out slow
// loses to plain compression on the next NAR.
func TestModelLearns(t *testing.T) {
	c := newCostModel(2, func() float64 { return 125e6 })
	allow := [nMethods]bool{plain: true, copyDelta: true}
	if got := c.choose(14e6, allow); got != copyDelta {
		t.Fatalf("before: %s", got)
	}
	c.observe(copyDelta, 4096, 4096, time.Second) // a tiny NAR, timed badly
	if got := c.choose(14e6, allow); got != copyDelta {
		t.Fatalf("after a tiny slow sample: %s", got)
	}
	for range 4 {
		c.observe(copyDelta, 14e6, 7e6, 2*time.Second) // 7 MB/s, half the size
	}
	if got := c.choose(14e6, allow); got != plain {
		t.Fatalf("after slow, poor deltas: %s (speed %.0f, ratio %.2f)", got, c.speed[copyDelta], c.ratio[copyDelta])
	}
}

// TestMeter: the link's rate is what writes take once the buffers on the
// way are full, and unknown before.
func TestMeter(t *testing.T) {
	var now time.Time
	m := &meter{w: io.Discard, now: func() time.Time { return now }}
	slow := writerFunc(func(b []byte) (int, error) {
		now = now.Add(time.Duration(float64(len(b)) / 2.5e6 * float64(time.Second))) // 20 Mbit/s
		return len(b), nil
	})
	m.w = writerFunc(func(b []byte) (int, error) { return len(b), nil }) // the buffers take it at once
	chunk := make([]byte, 256<<10)
	for range meterWarmup / len(chunk) {
		m.Write(chunk)
	}
	if r := m.rate(); r != 0 {
		t.Fatalf("rate %.0f while the buffers fill, want unknown", r)
	}
	m.w = slow
	for range 40 {
		m.Write(chunk)
	}
	if r := m.rate(); r < 2.4e6 || r > 2.6e6 {
		t.Fatalf("rate %.0f, want 2.5e6", r)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

// mapCache is a DeltaCache in memory that counts.
type mapCache struct {
	mu         sync.Mutex
	m          map[string][]byte
	gets, puts int
}

func (c *mapCache) Get(key string) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gets++
	b, ok := c.m[key]
	return b, ok
}

func (c *mapCache) Put(key string, b []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.puts++
	if c.m == nil {
		c.m = map[string][]byte{}
	}
	c.m[key] = b
	return nil
}

// upgrade is a package at two versions on the laptop, version 1 on the
// router.
type upgrade struct {
	old, new *laptop
	path     storepath.Path // the new version's
}

func newUpgrade(t *testing.T) upgrade {
	pkg := func(version string) storetest.Package {
		return storetest.Package{Path: storetest.NewPath("app-" + version), Files: 8, FileSize: 200_000, Seed: 7}
	}
	u := upgrade{old: newLaptop(t, []storetest.Package{pkg("1.0")}), new: newLaptop(t, []storetest.Package{pkg("2.0")}), path: pkg("2.0").Path}
	for p, n := range u.old.nars {
		u.new.nars[p] = n
	}
	return u
}

// run transfers over an in-memory connection with the given ends.
func run(t *testing.T, snd *Sender, srv *Server, infos []registry.Info, src NARSource) outcome {
	t.Helper()
	cli, sc := net.Pipe()
	done := make(chan outcome, 1)
	go func() {
		sum, err := srv.Serve(context.Background(), sc, sc)
		sc.Close()
		done <- outcome{sum: sum, srvErr: err}
	}()
	res, err := snd.Send(context.Background(), cli, cli, infos, src)
	cli.Close()
	o := <-done
	o.res, o.cliErr = res, err
	if o.cliErr != nil || o.srvErr != nil {
		t.Fatalf("transfer: client %v, server %v", o.cliErr, o.srvErr)
	}
	return o
}

// TestVersions: every pair of laptop and router versions still agrees,
// and a delta goes in the best kind both take: a copy delta from version
// 4, a zstd delta before.
func TestVersions(t *testing.T) {
	for _, tc := range []struct {
		laptop, router int
		kind           string
	}{
		{4, 4, `how="copy delta"`},
		{4, 3, `how="zstd delta"`},
		{3, 4, `how="zstd delta"`},
		{4, 2, `how="zstd delta"`},
		{2, 4, `how="zstd delta"`},
	} {
		t.Run(strings.ReplaceAll(strings.Join([]string{"laptop", itoa(tc.laptop), "router", itoa(tc.router)}, " "), " ", "_"), func(t *testing.T) {
			u := newUpgrade(t)
			s := store.New(t.TempDir(), store.Options{})
			srv := newServer(s)
			srv.speak = tc.router
			run(t, &Sender{speak: tc.laptop}, srv, u.old.infos, u.old.source)
			var log bytes.Buffer
			// A slow link: a zstd delta, slow under the race detector,
			// still beats sending the NAR.
			snd := &Sender{speak: tc.laptop, link: func() float64 { return 100e3 }, Log: slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelDebug}))}
			o := run(t, snd, srv, u.new.infos, u.new.source)
			if o.res.Deltas != 1 || !strings.Contains(log.String(), tc.kind) {
				t.Fatalf("%d deltas, want one, %s:\n%s", o.res.Deltas, tc.kind, log.String())
			}
			reg, _ := s.Registry()
			var got bytes.Buffer
			if err := s.Dump(&got, reg, u.path); err != nil || !bytes.Equal(got.Bytes(), u.new.nars[u.path]) {
				t.Fatalf("the path registered from a delta differs from the laptop's (%v)", err)
			}
			// A no-op: nothing missing, in one round trip from version 4.
			noop := run(t, &Sender{speak: tc.laptop}, srv, u.new.infos, u.new.source)
			if len(noop.res.Missing) != 0 {
				t.Fatalf("no-op: %d missing", len(noop.res.Missing))
			}
			validCount(t, s)
		})
	}
}

func itoa(i int) string { return string(rune('0' + i)) }

// TestNoopOneRoundTrip: with nothing missing, the laptop sends one frame
// (its hello, the closure inside) and the router answers with its hello,
// the missing paths (none, and what it runs) and its summary.
func TestNoopOneRoundTrip(t *testing.T) {
	u := newUpgrade(t)
	s := store.New(t.TempDir(), store.Options{})
	srv := newServer(s)
	running := &Running{System: u.path, Default: u.path, Generation: 3, Settled: true}
	srv.Running = func() *Running { return running }
	run(t, &Sender{}, srv, u.new.infos, u.new.source)
	cli, sc := net.Pipe()
	var fromLaptop, fromRouter bytes.Buffer
	served := make(chan struct{})
	go func() {
		defer close(served)
		srv.Serve(context.Background(), io.TeeReader(sc, &fromLaptop), io.MultiWriter(&fromRouter, sc))
		sc.Close()
	}()
	res, err := (&Sender{}).Send(context.Background(), cli, cli, u.new.infos, u.new.source)
	cli.Close()
	<-served
	if err != nil || res.Running == nil || *res.Running != *running {
		t.Fatalf("no-op: %v, running %+v", err, res.Running)
	}
	if got := frameTypes(parseFrames(t, fromLaptop.Bytes())); got != "H" {
		t.Errorf("the laptop sent %q, want H alone", got)
	}
	if got := frameTypes(parseFrames(t, fromRouter.Bytes())); got != "hMS" {
		t.Errorf("the router sent %q, want hMS", got)
	}
}

// TestDeltaCacheSecondRouter: a second router at the same version costs
// no compression: the delta comes from the cache, and the laptop reads
// neither NAR.
func TestDeltaCacheSecondRouter(t *testing.T) {
	u := newUpgrade(t)
	cache := &mapCache{}
	var mu sync.Mutex
	var read []storepath.Path
	src := func(p storepath.Path, w io.Writer) error {
		mu.Lock()
		read = append(read, p)
		mu.Unlock()
		return u.new.source(p, w)
	}
	for i, wantCached := range []int{0, 1} {
		s := store.New(t.TempDir(), store.Options{})
		run(t, &Sender{}, newServer(s), u.old.infos, u.old.source)
		read = nil
		o := run(t, &Sender{Cache: cache}, newServer(s), u.new.infos, src)
		if o.res.Deltas != 1 || o.res.DeltasCached != wantCached || cache.puts != 1 {
			t.Fatalf("router %d: %d deltas, %d from the cache, %d kept; want 1, %d, 1", i+1, o.res.Deltas, o.res.DeltasCached, cache.puts, wantCached)
		}
		if wantCached == 1 && len(read) != 0 {
			t.Fatalf("router %d: the laptop read %v for a cached delta", i+1, read)
		}
		reg, _ := s.Registry()
		var got bytes.Buffer
		if err := s.Dump(&got, reg, u.path); err != nil || !bytes.Equal(got.Bytes(), u.new.nars[u.path]) {
			t.Fatalf("router %d: the path registered differs from the laptop's (%v)", i+1, err)
		}
	}
}

// TestDeltaBaseDiffers: a laptop whose copy of the base is not the
// router's sends the NAR compressed, not a delta that would not apply.
func TestDeltaBaseDiffers(t *testing.T) {
	u := newUpgrade(t)
	s := store.New(t.TempDir(), store.Options{})
	run(t, &Sender{}, newServer(s), u.old.infos, u.old.source)
	src := func(p storepath.Path, w io.Writer) error {
		if _, ok := u.old.nars[p]; ok {
			_, err := w.Write(append(bytes.Clone(u.old.nars[p]), 'x'))
			return err
		}
		return u.new.source(p, w)
	}
	o := run(t, &Sender{}, newServer(s), u.new.infos, src)
	if o.res.Deltas != 0 || o.res.Summary.Received != 1 {
		t.Fatalf("%d deltas, %d received; want the NAR, whole", o.res.Deltas, o.res.Summary.Received)
	}
}

// TestAsIs: on a link faster than any encoder, NARs go as they are, both
// those prepared ahead and those too large to hold (streamed), and the
// router restores them like any other.
func TestAsIs(t *testing.T) {
	for _, tc := range []struct {
		name  string
		limit uint64
	}{{"prepared", 0}, {"streamed", 1}} {
		t.Run(tc.name, func(t *testing.T) {
			s := store.New(t.TempDir(), store.Options{})
			l := newLaptop(t, storetest.Closure("asis", 20, 2, 50_000))
			snd := &Sender{link: func() float64 { return 10e9 }, prepareLimit: tc.limit}
			o := run(t, snd, newServer(s), l.infos, l.source)
			if o.res.Uncompressed != 20 || o.res.Summary.Received != 20 {
				t.Fatalf("%d of %d sent as they are, %d received", o.res.Uncompressed, len(o.res.Missing), o.res.Summary.Received)
			}
			if validCount(t, s) != 20 {
				t.Fatal("not every path is valid")
			}
		})
	}
}

// TestRoots: while the laptop's Nix is still computing the closure, the
// hello names the roots: a router that holds them answers at once that
// nothing is missing (the laptop never waits for its Nix), one that does
// not waits for the closure, and an older router gets the closure after
// the hellos, as before.
func TestRoots(t *testing.T) {
	u := newUpgrade(t)
	for _, tc := range []struct {
		name   string
		router int
		holds  bool
	}{
		{"router holds the roots", Version, true},
		{"router lacks a root", Version, false},
		{"router of version 3", 3, false},
		{"router of version 3 holding the roots", 3, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := store.New(t.TempDir(), store.Options{})
			srv := newServer(s)
			srv.speak = tc.router
			if tc.holds {
				run(t, &Sender{}, srv, u.new.infos, u.new.source)
			}
			ready := make(chan struct{})
			asked := false
			o := Offer{Roots: []storepath.Path{u.path}, Ready: ready, Infos: func() ([]registry.Info, error) {
				asked = true
				<-ready
				return u.new.infos, nil
			}}
			time.AfterFunc(50*time.Millisecond, func() { close(ready) })
			cli, sc := net.Pipe()
			var fromLaptop bytes.Buffer
			served := make(chan error, 1)
			go func() {
				_, err := srv.Serve(context.Background(), io.TeeReader(sc, &fromLaptop), sc)
				sc.Close()
				served <- err
			}()
			res, err := (&Sender{}).SendOffer(context.Background(), cli, cli, o, u.new.source)
			cli.Close()
			if srvErr := <-served; err != nil || srvErr != nil {
				t.Fatalf("transfer: client %v, server %v", err, srvErr)
			}
			byRoots := tc.holds && tc.router >= 4
			if asked == byRoots {
				t.Errorf("the laptop's Nix was asked: %v, want %v", asked, !byRoots)
			}
			if byRoots && (res.Closure == nil || res.Closure.Paths != 1 || res.Closure.NARBytes != u.new.infos[0].NarSize || len(res.Missing) != 0) {
				t.Errorf("answer by the roots: closure %+v, missing %v", res.Closure, res.Missing)
			}
			if byRoots && frameTypes(parseFrames(t, fromLaptop.Bytes())) != "H" {
				t.Errorf("the laptop sent %q, want its hello alone", frameTypes(parseFrames(t, fromLaptop.Bytes())))
			}
			if !tc.holds && res.Summary.Received != 1 {
				t.Errorf("received %d, want the new path", res.Summary.Received)
			}
			validCount(t, s)
		})
	}
}
