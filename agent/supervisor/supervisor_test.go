package supervisor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// journal records what services did, in order.
type journal struct {
	mu    sync.Mutex
	lines []string
}

func (j *journal) add(format string, args ...any) {
	j.mu.Lock()
	j.lines = append(j.lines, fmt.Sprintf(format, args...))
	j.mu.Unlock()
}

func (j *journal) String() string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return strings.Join(j.lines, " ")
}

// fake is a service whose behaviour a test controls.
type fake struct {
	name    string
	j       *journal
	fail    func() error      // nil: run until stopped
	outputs map[string]string // published before Ready
	reads   []Ref
	control chan func(env *Env) // run on the service's goroutine
	stopped chan<- *Stopped     // gets StoppedBy when it stops, if set
}

func (f *fake) Run(ctx context.Context, env *Env) error {
	vals := ""
	for _, r := range f.reads {
		v, _ := env.Input(r)
		vals += v
	}
	f.j.add("start:%s%s", f.name, vals)
	defer f.j.add("stop:%s", f.name)
	if f.fail != nil {
		if err := f.fail(); err != nil {
			return err
		}
	}
	for k, v := range f.outputs {
		env.SetOutput(k, v)
	}
	env.Ready()
	for {
		select {
		case <-ctx.Done():
			if f.stopped != nil {
				f.stopped <- StoppedBy(ctx)
			}
			return nil
		case fn := <-f.control:
			fn(env)
		}
	}
}

func (f *fake) Remove(context.Context) error { f.j.add("remove:%s", f.name); return nil }

type harness struct {
	t      *testing.T
	s      *Supervisor
	j      *journal
	ctrl   map[string]chan func(*Env)
	cancel context.CancelFunc
	done   chan struct{}
}

func newHarness(t *testing.T, backoff func(int) time.Duration) *harness {
	h := &harness{t: t, j: &journal{}, ctrl: map[string]chan func(*Env){}}
	h.s = New(Options{OutputsDir: t.TempDir(), Backoff: backoff})
	return h
}

func (h *harness) spec(name string, deps []string, fp string, mod func(*fake)) Spec {
	if h.ctrl[name] == nil {
		h.ctrl[name] = make(chan func(*Env))
	}
	f := fake{name: name, j: h.j, control: h.ctrl[name]}
	if mod != nil {
		mod(&f)
	}
	return Spec{Name: name, Kind: "fake", Deps: deps, Reads: f.reads, Fingerprint: fp,
		New: func() Service { c := f; return &c }}
}

func (h *harness) run(specs []Spec) {
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel, h.done = cancel, make(chan struct{})
	go func() {
		defer close(h.done)
		if err := h.s.Run(ctx, specs); err != nil {
			h.t.Error(err)
		}
	}()
}

func (h *harness) stop() {
	h.cancel()
	<-h.done
}

// waitState waits until every named service is in state.
func (h *harness) waitState(state State, names ...string) map[string]Status {
	h.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		by := map[string]Status{}
		for _, st := range h.s.Status() {
			by[st.Name] = st
		}
		ok := true
		for _, n := range names {
			ok = ok && by[n].State == state
		}
		if ok {
			return by
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("services %v not %s: %+v\njournal: %s", names, state, by, h.j)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestOrderAndStop(t *testing.T) {
	h := newHarness(t, nil)
	h.run([]Spec{
		h.spec("route", []string{"addr"}, "1", nil),
		h.spec("addr", []string{"link"}, "1", nil),
		h.spec("link", nil, "1", nil),
	})
	h.waitState(Up, "link", "addr", "route")
	h.stop()
	if got := h.j.String(); got != "start:link start:addr start:route stop:route stop:addr stop:link" {
		t.Fatalf("journal: %s", got)
	}
}

func TestNotReadyStopsDependents(t *testing.T) {
	h := newHarness(t, nil)
	h.run([]Spec{h.spec("link", nil, "1", nil), h.spec("addr", []string{"link"}, "1", nil), h.spec("route", []string{"addr"}, "1", nil)})
	h.waitState(Up, "route")
	h.ctrl["link"] <- func(e *Env) { e.NotReady() } // carrier lost
	h.waitState(Down, "addr", "route")
	h.ctrl["link"] <- func(e *Env) { e.Ready() } // carrier back
	st := h.waitState(Up, "addr", "route")
	h.stop()
	if st["addr"].Starts != 2 || st["route"].Starts != 2 || st["link"].Starts != 1 {
		t.Fatalf("starts: link %d addr %d route %d", st["link"].Starts, st["addr"].Starts, st["route"].Starts)
	}
	if got := h.j.String(); !strings.Contains(got, "stop:route stop:addr start:addr start:route") {
		t.Fatalf("dependents did not stop and start in order: %s", got)
	}
}

func TestBackoff(t *testing.T) {
	var mu sync.Mutex
	var waits []int
	h := newHarness(t, func(n int) time.Duration {
		mu.Lock()
		waits = append(waits, n)
		mu.Unlock()
		return time.Duration(n) * 20 * time.Millisecond
	})
	attempts := 0
	var times []time.Time
	h.run([]Spec{h.spec("flaky", nil, "1", func(f *fake) {
		f.fail = func() error {
			attempts++
			times = append(times, time.Now())
			if attempts < 4 {
				return errors.New("no carrier yet")
			}
			return nil
		}
	}), h.spec("after", []string{"flaky"}, "1", nil)})
	st := h.waitState(Up, "flaky", "after")
	h.stop()
	if st["flaky"].Failures != 3 || st["flaky"].LastError != "no carrier yet" || st["after"].Starts != 1 {
		t.Fatalf("status: %+v", st)
	}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(waits) != "[1 2 3]" {
		t.Fatalf("backoff asked for failures %v", waits)
	}
	for i := 1; i < len(times); i++ {
		if gap := times[i].Sub(times[i-1]); gap < time.Duration(i)*20*time.Millisecond {
			t.Fatalf("restart %d came after %v, before its backoff", i, gap)
		}
	}
}

// TestRetrySoon: a failure marked RetrySoon is retried within its bound
// however long the backoff has grown; a plain failure waits the backoff.
func TestRetrySoon(t *testing.T) {
	h := newHarness(t, func(int) time.Duration { return time.Hour })
	var mu sync.Mutex
	attempts := map[string]int{}
	failing := func(name string, err func(n int) error) func(*fake) {
		return func(f *fake) {
			f.fail = func() error {
				mu.Lock()
				defer mu.Unlock()
				attempts[name]++
				return err(attempts[name])
			}
		}
	}
	h.run([]Spec{
		h.spec("pppoe", nil, "1", failing("pppoe", func(n int) error {
			if n < 4 {
				return &RetrySoon{Err: errors.New("no PPPoE server answered"), Within: 10 * time.Millisecond}
			}
			return nil
		})),
		h.spec("misconfigured", nil, "1", failing("misconfigured", func(int) error { return errors.New("bad options") })),
	})
	st := h.waitState(Up, "pppoe")
	time.Sleep(50 * time.Millisecond)
	h.stop()
	if st["pppoe"].Failures != 3 || st["pppoe"].LastError != "no PPPoE server answered" {
		t.Fatalf("status: %+v", st["pppoe"])
	}
	mu.Lock()
	defer mu.Unlock()
	if attempts["misconfigured"] != 1 {
		t.Fatalf("a plain failure was retried %d times within its hour of backoff", attempts["misconfigured"]-1)
	}
}

func TestOutputChangeReruns(t *testing.T) {
	h := newHarness(t, nil)
	h.run([]Spec{
		h.spec("dhcp", nil, "1", func(f *fake) { f.outputs = map[string]string{"router": "192.0.2.1", "dns": "192.0.2.53"} }),
		h.spec("route", []string{"dhcp"}, "1", func(f *fake) { f.reads = []Ref{{"dhcp", "router"}} }),
		h.spec("other", []string{"dhcp"}, "1", nil),
	})
	h.waitState(Up, "route", "other")
	b, err := os.ReadFile(filepath.Join(h.s.opts.OutputsDir, "dhcp", "router"))
	if err != nil || string(b) != "192.0.2.1" {
		t.Fatalf("output file: %q, %v", b, err)
	}
	h.ctrl["dhcp"] <- func(e *Env) { e.SetOutput("dns", "192.0.2.54") } // not read by route
	h.ctrl["dhcp"] <- func(e *Env) { e.SetOutput("router", "192.0.2.9") }
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(h.j.String(), "start:route192.0.2.9") && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	st := h.waitState(Up, "route")
	h.stop()
	if st["route"].Starts != 2 || st["other"].Starts != 1 || st["dhcp"].Starts != 1 {
		t.Fatalf("starts after an output change: %+v; journal %s", st, h.j)
	}
	if _, err := os.Stat(filepath.Join(h.s.opts.OutputsDir, "dhcp")); !os.IsNotExist(err) {
		t.Fatal("outputs remain after the service stopped")
	}
}

func TestReloadRestartsOnlyWhatChanged(t *testing.T) {
	h := newHarness(t, nil)
	specs := func(addrFP string, withExtra bool) []Spec {
		s := []Spec{
			h.spec("link", nil, "1", nil),
			h.spec("addr", []string{"link"}, addrFP, nil),
			h.spec("route", []string{"addr"}, "1", nil),
			h.spec("other", []string{"link"}, "1", nil),
		}
		if withExtra {
			s = append(s, h.spec("extra", nil, "1", nil))
		}
		return s
	}
	h.run(specs("1", true))
	h.waitState(Up, "route", "other", "extra")
	if err := h.s.Reload(specs("2", false)); err != nil {
		t.Fatal(err)
	}
	st := h.waitState(Up, "link", "addr", "route", "other")
	h.stop()
	got := map[string]int{}
	for n, s := range st {
		got[n] = s.Starts
	}
	if got["link"] != 1 || got["other"] != 1 || got["addr"] != 2 || got["route"] != 2 {
		t.Fatalf("starts after reload: %v; journal %s", got, h.j)
	}
	if _, ok := st["extra"]; ok {
		t.Fatal("a dropped service is still there")
	}
	j := h.j.String()
	if !strings.Contains(j, "remove:extra") || !strings.Contains(j, "remove:addr") || strings.Contains(j, "remove:route") {
		t.Fatalf("journal: %s", j)
	}
}

func TestBadGraphs(t *testing.T) {
	h := newHarness(t, nil)
	for _, tc := range []struct {
		specs []Spec
		want  string
	}{
		{[]Spec{h.spec("a", []string{"b"}, "1", nil), h.spec("b", []string{"a"}, "1", nil)}, "dependency cycle: a → b → a"},
		{[]Spec{h.spec("a", []string{"ghost"}, "1", nil)}, `depends on "ghost"`},
		{[]Spec{h.spec("a", nil, "1", nil), h.spec("a", nil, "1", nil)}, "declared twice"},
	} {
		if _, err := order(tc.specs); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("order: %v, want %q", err, tc.want)
		}
	}
}

// inPlace is a fake that applies changes over itself, as the firewall does.
type inPlace struct{ fake }

func (inPlace) ReplacesInPlace() bool { return true }

func TestInPlaceServicesAreRemovedOnlyWhenDropped(t *testing.T) {
	h := newHarness(t, nil)
	spec := func(fp string) Spec {
		sp := h.spec("fw", nil, fp, nil)
		sp.New = func() Service { return &inPlace{fake{name: "fw", j: h.j, control: h.ctrl["fw"]}} }
		return sp
	}
	h.run([]Spec{spec("1")})
	h.waitState(Up, "fw")
	if err := h.s.Reload([]Spec{spec("2")}); err != nil {
		t.Fatal(err)
	}
	h.waitState(Up, "fw")
	if strings.Contains(h.j.String(), "remove:fw") {
		t.Fatalf("a changed in-place service was removed first: %s", h.j)
	}
	if err := h.s.Reload(nil); err != nil {
		t.Fatal(err)
	}
	h.stop()
	if !strings.Contains(h.j.String(), "remove:fw") {
		t.Fatalf("a dropped in-place service was not removed: %s", h.j)
	}
}

// TestWatchSignalsWithoutRestart: a change of a watched output reaches the
// running service as a signal; it is not restarted.
func TestWatchSignalsWithoutRestart(t *testing.T) {
	h := newHarness(t, nil)
	ra := h.spec("ra", []string{"dhcp6"}, "1", nil)
	ra.Watches = []Ref{{"dhcp6", "renewed"}}
	h.run([]Spec{h.spec("dhcp6", nil, "1", func(f *fake) { f.outputs = map[string]string{"renewed": "1"} }), ra})
	h.waitState(Up, "ra")
	// Drain the signal the first value may have given, then change it.
	h.ctrl["ra"] <- func(e *Env) {
		select {
		case <-e.Changed():
		default:
		}
	}
	h.ctrl["dhcp6"] <- func(e *Env) { e.SetOutput("renewed", "2") }
	got := make(chan string, 1)
	h.ctrl["ra"] <- func(e *Env) {
		select {
		case <-e.Changed():
			v, _ := e.Input(Ref{"dhcp6", "renewed"})
			got <- v
		case <-time.After(5 * time.Second):
			got <- "no signal"
		}
	}
	if v := <-got; v != "2" {
		t.Fatalf("the watcher saw %q, want the new value 2", v)
	}
	st := h.waitState(Up, "ra")
	h.stop()
	if st["ra"].Starts != 1 {
		t.Fatalf("the watcher was restarted: %d starts", st["ra"].Starts)
	}
}

// TestWatchSignalsWhenTheServiceStops: a watcher hears of a watched
// service's outputs withdrawn as it stops, and reads them gone.
func TestWatchSignalsWhenTheServiceStops(t *testing.T) {
	h := newHarness(t, nil)
	dns := h.spec("dns", nil, "1", nil)
	dns.Watches = []Ref{{"wan", "dns"}}
	wan := h.spec("wan", nil, "1", func(f *fake) { f.outputs = map[string]string{"dns": "192.0.2.53"} })
	h.run([]Spec{wan, dns})
	h.waitState(Up, "wan", "dns")
	h.ctrl["dns"] <- func(e *Env) {
		select {
		case <-e.Changed():
		default:
		}
	}
	// The WAN client is dropped (as it would stop for any reason).
	if err := h.s.Reload([]Spec{dns}); err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	h.ctrl["dns"] <- func(e *Env) {
		select {
		case <-e.Changed():
			v, ok := e.Input(Ref{"wan", "dns"})
			got <- fmt.Sprintf("%q %v", v, ok)
		case <-time.After(5 * time.Second):
			got <- "no signal"
		}
	}
	if v := <-got; v != `"" false` {
		t.Fatalf("the watcher saw %q, want the output gone", v)
	}
	h.stop()
}

// Dropped together, dependents are removed before what they ran on (an
// RA's last advertisement goes out before its bridge is deleted), however
// the names sort.
func TestDroppedDependentsRemovedFirst(t *testing.T) {
	for range 5 { // an order that came from a map would show within a few runs
		h := newHarness(t, nil)
		h.run([]Spec{
			h.spec("a-bridge", nil, "1", nil),
			h.spec("m-address", []string{"a-bridge"}, "1", nil),
			h.spec("z-ra", []string{"m-address"}, "1", nil),
			h.spec("keep", nil, "1", nil),
		})
		h.waitState(Up, "z-ra", "keep")
		if err := h.s.Reload([]Spec{h.spec("keep", nil, "1", nil)}); err != nil {
			t.Fatal(err)
		}
		h.waitState(Up, "keep")
		h.stop()
		var removes []string
		for _, l := range strings.Fields(h.j.String()) {
			if strings.HasPrefix(l, "remove:") {
				removes = append(removes, l)
			}
		}
		if got := strings.Join(removes, " "); got != "remove:z-ra remove:m-address remove:a-bridge" {
			t.Fatalf("removed in the order %s", got)
		}
	}
}

// TestStoppedSeesWhatWentWithNotReady: a dependency that withdraws an
// output as it goes not ready (a DHCPv6 binding lost) stops its reader
// with the output already gone, every time; roostd stopping, or the output
// replaced, stops it with the value the loop held then.
func TestStoppedSeesWhatWentWithNotReady(t *testing.T) {
	h := newHarness(t, nil)
	stops := make(chan *Stopped, 1)
	prefix := Ref{"dhcp6", "prefix/0/prefix"}
	h.run([]Spec{
		h.spec("dhcp6", nil, "1", func(f *fake) { f.outputs = map[string]string{"prefix/0/prefix": "2001:db8:0::", "dns": "2001:db8::53"} }),
		h.spec("ra", []string{"dhcp6"}, "1", func(f *fake) { f.reads, f.stopped = []Ref{prefix}, stops }),
	})
	h.waitState(Up, "ra")
	for i := range 50 {
		h.ctrl["dhcp6"] <- func(e *Env) { e.NotReady("prefix", "dns") }
		st := <-stops
		if st == nil {
			t.Fatal("the supervisor stopped the reader without a Stopped cause")
		}
		if v, ok := st.Input(prefix); ok {
			t.Fatalf("round %d: the reader, stopped as its dependency withdrew the prefix, saw %q", i, v)
		}
		h.waitState(Down, "ra")
		if out := h.s.Status()[0].Outputs; len(out) != 0 {
			t.Fatalf("round %d: outputs left after NotReady withdrew them: %v", i, out)
		}
		h.ctrl["dhcp6"] <- func(e *Env) {
			e.SetOutput("prefix/0/prefix", fmt.Sprintf("2001:db8:%x::", i+1))
			e.Ready()
		}
		h.waitState(Up, "ra")
	}
	// Replaced: the reader sees the new value.
	h.ctrl["dhcp6"] <- func(e *Env) { e.SetOutput("prefix/0/prefix", "2001:db8:ff::") }
	if st := <-stops; st == nil {
		t.Fatal("no Stopped cause")
	} else if v, _ := st.Input(prefix); v != "2001:db8:ff::" {
		t.Fatalf("the reader, stopped for a new prefix, saw %q", v)
	}
	h.waitState(Up, "ra")
	// roostd stopping: the prefix is still there.
	h.stop()
	if st := <-stops; st == nil {
		t.Fatal("no Stopped cause")
	} else if v, _ := st.Input(prefix); v != "2001:db8:ff::" {
		t.Fatalf("the reader, stopped with roostd, saw %q", v)
	}
}

// TestAfterRun: once Run has returned, Status and Reload answer at once
// (roostd's status request as it exits must not hang).
func TestAfterRun(t *testing.T) {
	h := newHarness(t, nil)
	a := h.spec("a", nil, "1", nil)
	h.run([]Spec{a})
	h.waitState(Up, "a")
	h.stop()
	done := make(chan struct{})
	go func() {
		defer close(done)
		if st := h.s.Status(); st != nil {
			t.Errorf("status after Run: %+v", st)
		}
		if err := h.s.Reload([]Spec{a}); !errors.Is(err, ErrStopped) {
			t.Errorf("reload after Run: %v", err)
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Status or Reload hung after Run returned")
	}
}
