// Package supervisor runs the agent's services: it starts them in dependency
// order, restarts a failed one with exponential backoff, re-runs a service
// when an output it reads changes, stops dependents before what they depend
// on, and on a config reload restarts only what changed and its dependents.
//
// All state belongs to one goroutine, the loop; services talk to it through
// their Env, which sends events. Every event comes from one run of a
// service (its generation): a late event of a run that ended is dropped.
// A stopped service learns from its context's cause (Stopped) what it read
// as of the moment the loop stopped it, never from files that change under
// it while it stops.
package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/roostrouter/roost/updater/atomicfile"
)

// State is where a service is in its life.
type State string

// The states, as roostd status shows them.
const (
	Down     State = "down"     // not running: waiting for dependencies, or stopped
	Starting State = "starting" // running, not ready yet (or no longer: a link without carrier)
	Up       State = "up"       // running and ready: dependents may start
	Failed   State = "failed"   // its last run failed; it restarts after a backoff
)

// Ref names one output of a service.
type Ref struct{ Service, Key string }

// Service is a running piece of configuration.
type Service interface {
	// Run applies the service, calls env.Ready when it is in effect, and
	// stays until ctx ends (returning nil) or it fails (returning why).
	Run(ctx context.Context, env *Env) error
	// Remove undoes what the service configured; it is called only when the
	// config drops or changes the service, never when roostd stops, so that
	// a restarted roostd adopts the live state.
	Remove(ctx context.Context) error
}

// InPlace is implemented by services whose Run applies a changed
// declaration atomically over the old one (the firewall): on a change they
// are not removed first, only when the config drops them.
type InPlace interface {
	ReplacesInPlace() bool
}

// Spec is a service as the config declares it.
type Spec struct {
	Name        string
	Kind        string
	Deps        []string // must be up before it starts
	Reads       []Ref    // outputs it reads: a change re-runs it
	Watches     []Ref    // outputs it follows while running: a change signals Env.Changed
	Fingerprint string   // changes whenever the declaration does
	New         func() Service
}

// Options are the supervisor's dependencies.
type Options struct {
	Log        *slog.Logger
	OutputsDir string // /run/services/outputs below the root
	// Backoff is the wait before the nth restart of a failing service.
	Backoff func(failures int) time.Duration
	Now     func() time.Time
}

// DefaultBackoff doubles from 1 s up to a minute.
func DefaultBackoff(failures int) time.Duration {
	d := time.Second << min(failures-1, 6)
	return min(d, time.Minute)
}

// RetrySoon is a failure whose cause is outside the router and goes away
// by itself (the ISP's server gone for a while): the supervisor retries it
// within Within however often it failed, so that the service is back soon
// after its peer, rather than up to a minute later.
type RetrySoon struct {
	Err    error
	Within time.Duration
}

func (e *RetrySoon) Error() string { return e.Err.Error() }
func (e *RetrySoon) Unwrap() error { return e.Err }

// Status is a service as roostd status shows it.
type Status struct {
	Name      string            `json:"name"`
	Kind      string            `json:"kind"`
	State     State             `json:"state"`
	Deps      []string          `json:"deps,omitempty"`
	Outputs   map[string]string `json:"outputs,omitempty"`
	Starts    int               `json:"starts"`
	Failures  int               `json:"failures,omitempty"`
	LastError string            `json:"lastError,omitempty"`
	RetryIn   string            `json:"retryIn,omitempty"`
}

// Supervisor runs services.
type Supervisor struct {
	opts   Options
	events chan event
	ready  chan struct{}
	ended  chan struct{} // closed when Run returns: nothing reads events then

	// Owned by the loop.
	order    []string // dependency order
	insts    map[string]*instance
	outputs  map[string]map[string]string
	deferred []reloadEv // reloads that arrived while a stop was under way
}

type instance struct {
	spec     Spec
	state    State
	running  bool
	stopping bool
	restart  bool // an output it reads changed
	changed  chan struct{}
	gen      int
	cancel   context.CancelCauseFunc
	done     chan struct{}
	starts   int
	failures int
	lastErr  string
	retryAt  time.Time
	upSince  time.Time
}

// New returns a supervisor; Run starts it.
func New(opts Options) *Supervisor {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Backoff == nil {
		opts.Backoff = DefaultBackoff
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Supervisor{opts: opts, events: make(chan event, 256), ready: make(chan struct{}), ended: make(chan struct{}),
		insts: map[string]*instance{}, outputs: map[string]map[string]string{}}
}

type event interface{}

type (
	readyEv struct {
		name     string
		gen      int
		ready    bool
		withdraw []string // outputs that go in the same step (NotReady)
	}
	outputEv struct {
		name       string
		gen        int
		key, value string
		del        bool
	}
	exitedEv struct {
		name string
		gen  int
		err  error
	}
	reloadEv struct {
		specs []Spec
		reply chan error
	}
	statusEv struct{ reply chan []Status }
)

// Env is a running service's link to the supervisor.
type Env struct {
	s       *Supervisor
	name    string
	gen     int
	Log     *slog.Logger
	changed chan struct{}
}

// Changed receives when an output the service watches (Spec.Watches) has
// changed; the service reads it again with Input.
func (e *Env) Changed() <-chan struct{} { return e.changed }

// Ready says the service is in effect: its dependents may start.
func (e *Env) Ready() { e.s.send(readyEv{e.name, e.gen, true, nil}) }

// NotReady says it no longer is (a link lost its carrier, a DHCP binding
// ended): its dependents stop. The outputs named in withdraw (keys or
// tables, as DeleteOutput takes them) go in the same step, so that a
// dependent stopped for it sees them gone in its Stopped, never their last
// values.
func (e *Env) NotReady(withdraw ...string) {
	e.s.send(readyEv{e.name, e.gen, false, withdraw})
}

// SetOutput publishes a value; "/" in key makes nested folders (tables).
func (e *Env) SetOutput(key, value string) { e.s.send(outputEv{e.name, e.gen, key, value, false}) }

// DeleteOutput withdraws a value or a table.
func (e *Env) DeleteOutput(key string) { e.s.send(outputEv{e.name, e.gen, key, "", true}) }

// Input reads another service's output, from the files, which the loop
// writes before it re-runs readers.
func (e *Env) Input(r Ref) (string, bool) {
	b, err := os.ReadFile(filepath.Join(e.s.opts.OutputsDir, r.Service, filepath.FromSlash(r.Key)))
	if err != nil {
		return "", false
	}
	return string(b), true
}

// Stopped is the cause of a service's context (context.Cause) when the
// supervisor stops it: roostd stopping, a reload, a dependency down, or an
// output it reads changed or withdrawn. It holds the outputs the service
// reads (Spec.Reads) as the loop had them when it decided to stop it, so
// that a service can tell a lost input (an RA whose delegated prefix went)
// from a mere restart (the prefix still there) without racing the loop,
// which goes on changing the output files while the service stops.
type Stopped struct {
	// Inputs are those of its Reads that had a value; one withdrawn, or
	// whose service was not running, is absent.
	Inputs map[Ref]string
}

func (s *Stopped) Error() string { return "stopped by the supervisor" }

// Input is r's value when the service was stopped, as Env.Input gives it
// while it runs; false if it had none then. Only the service's Reads are
// kept: any other r is false too.
func (s *Stopped) Input(r Ref) (string, bool) {
	v, ok := s.Inputs[r]
	return v, ok
}

// StoppedBy is the Stopped that ended ctx, or nil if ctx ended otherwise
// (a test that runs a service by itself).
func StoppedBy(ctx context.Context) *Stopped {
	var st *Stopped
	if errors.As(context.Cause(ctx), &st) {
		return st
	}
	return nil
}

// Require is Input for an output the service cannot run without.
func (e *Env) Require(r Ref) (string, error) {
	v, ok := e.Input(r)
	if !ok {
		return "", fmt.Errorf("%s has no %s output", r.Service, r.Key)
	}
	return v, nil
}

// Reload replaces the services: only those whose declaration changed, and
// their dependents, restart; those dropped are removed.
func (s *Supervisor) Reload(specs []Spec) error {
	if _, err := order(specs); err != nil {
		return err
	}
	reply := make(chan error, 1)
	if !s.send(reloadEv{specs, reply}) {
		return ErrStopped
	}
	select {
	case err := <-reply:
		return err
	case <-s.ended:
		return ErrStopped
	}
}

// Status lists the services in dependency order; none once Run returned.
func (s *Supervisor) Status() []Status {
	reply := make(chan []Status, 1)
	if !s.send(statusEv{reply}) {
		return nil
	}
	select {
	case st := <-reply:
		return st
	case <-s.ended:
		return nil
	}
}

// ErrStopped is what Reload says once Run has returned.
var ErrStopped = errors.New("the supervisor has stopped")

// send hands ev to the loop; false if Run has returned, so that a late
// caller (a service that outlived its stop, a status request as roostd
// exits) never blocks forever.
func (s *Supervisor) send(ev event) bool {
	select {
	case s.events <- ev:
		return true
	case <-s.ended:
		return false
	}
}

// Run supervises until ctx ends, then stops every service, dependents first.
func (s *Supervisor) Run(ctx context.Context, specs []Spec) error {
	defer close(s.ended)
	if err := s.reload(specs); err != nil {
		return err
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		for len(s.deferred) > 0 {
			ev := s.deferred[0]
			s.deferred = s.deferred[1:]
			ev.reply <- s.reload(ev.specs)
		}
		next := s.reconcile()
		timer.Reset(max(time.Until(next), time.Millisecond))
		select {
		case ev := <-s.events:
			s.handle(ev)
		case <-timer.C:
		case <-ctx.Done():
			for i := len(s.order) - 1; i >= 0; i-- {
				s.stop(s.insts[s.order[i]])
			}
			return nil
		}
	}
}

func (s *Supervisor) handle(ev event) {
	switch ev := ev.(type) {
	case readyEv:
		inst := s.insts[ev.name]
		if inst == nil || inst.gen != ev.gen || !inst.running {
			return
		}
		for _, k := range ev.withdraw {
			s.setOutput(ev.name, k, "", true)
		}
		if inst.stopping {
			return
		}
		if ev.ready && inst.state != Up {
			inst.state, inst.upSince = Up, s.opts.Now()
			s.opts.Log.Info("service up", "service", ev.name)
		} else if !ev.ready && inst.state == Up {
			inst.state = Starting
			s.opts.Log.Info("service no longer ready", "service", ev.name)
		}
	case outputEv:
		inst := s.insts[ev.name]
		if inst == nil || inst.gen != ev.gen || !inst.running {
			return
		}
		s.setOutput(ev.name, ev.key, ev.value, ev.del)
	case exitedEv:
		inst := s.insts[ev.name]
		if inst == nil || inst.gen != ev.gen {
			return
		}
		inst.running = false
		s.clearOutputs(ev.name)
		if inst.stopping {
			inst.stopping = false
			inst.state = Down
			return
		}
		if ev.err == nil {
			ev.err = errors.New("exited by itself")
		}
		if !inst.upSince.IsZero() && s.opts.Now().Sub(inst.upSince) > time.Minute {
			inst.failures = 0 // it ran well for a while: start the backoff over
		}
		inst.failures++
		inst.lastErr = ev.err.Error()
		inst.state = Failed
		wait := s.opts.Backoff(inst.failures)
		if soon := (*RetrySoon)(nil); errors.As(ev.err, &soon) {
			wait = min(wait, soon.Within)
		}
		inst.retryAt = s.opts.Now().Add(wait)
		s.opts.Log.Warn("service failed", "service", ev.name, "err", ev.err, "failures", inst.failures, "retryIn", wait)
	case reloadEv:
		ev.reply <- s.reload(ev.specs)
	case statusEv:
		ev.reply <- s.status()
	}
}

func (s *Supervisor) setOutput(name, key, value string, del bool) {
	clean := filepath.ToSlash(filepath.Clean("/" + key))[1:]
	if clean == "" || clean != key {
		s.opts.Log.Error("service published an output with a bad name", "service", name, "key", key)
		return
	}
	outs := s.outputs[name]
	if outs == nil {
		outs = map[string]string{}
		s.outputs[name] = outs
	}
	changed := map[string]bool{}
	file := filepath.Join(s.opts.OutputsDir, name, filepath.FromSlash(key))
	if del {
		for k := range outs {
			if k == key || strings.HasPrefix(k, key+"/") {
				delete(outs, k)
				changed[k] = true
			}
		}
		os.RemoveAll(file)
	} else {
		if old, ok := outs[key]; ok && old == value {
			return
		}
		outs[key] = value
		changed[key] = true
		if err := os.MkdirAll(filepath.Dir(file), 0o755); err == nil {
			if err := atomicfile.WriteFile(file, []byte(value), 0o644); err != nil {
				s.opts.Log.Error("write output", "service", name, "key", key, "err", err)
			}
		}
	}
	s.touched(name, func(key string) bool { return changed[key] || hasPrefixKey(changed, key) })
}

// touched tells the running services that follow name's outputs that the
// keys changed says changed (already in the files): readers re-run,
// watchers are signalled.
func (s *Supervisor) touched(name string, changed func(key string) bool) {
	for _, n := range s.order {
		inst := s.insts[n]
		if !inst.running {
			continue
		}
		for _, r := range inst.spec.Reads {
			if r.Service == name && changed(r.Key) {
				inst.restart = true
			}
		}
		for _, r := range inst.spec.Watches {
			if r.Service == name && changed(r.Key) {
				select {
				case inst.changed <- struct{}{}:
				default: // one pending signal covers any number of changes
				}
			}
		}
	}
}

func hasPrefixKey(changed map[string]bool, prefix string) bool {
	for k := range changed {
		if strings.HasPrefix(k, prefix+"/") {
			return true
		}
	}
	return false
}

// clearOutputs withdraws a stopped service's outputs: its running readers
// re-run (and wait for it to be back), its watchers are signalled (a LAN
// stops being handed the DNS servers of a WAN client that went down).
func (s *Supervisor) clearOutputs(name string) {
	had := len(s.outputs[name]) > 0
	delete(s.outputs, name)
	os.RemoveAll(filepath.Join(s.opts.OutputsDir, name))
	if had {
		s.touched(name, func(string) bool { return true })
	}
}

// reconcile stops what lost a dependency or must re-run, starts what can
// start, and returns when it next needs to look (a pending retry).
func (s *Supervisor) reconcile() time.Time {
	next := s.opts.Now().Add(time.Hour)
	// What must stop, found in dependency order so that it is transitive,
	// then stopped in reverse: dependents always before what they need.
	stopping := map[string]bool{}
	for _, n := range s.order {
		inst := s.insts[n]
		if !inst.running {
			continue
		}
		stop := inst.restart || !s.depsUp(inst)
		for _, d := range inst.spec.Deps {
			stop = stop || stopping[d]
		}
		stopping[n] = stop
	}
	for i := len(s.order) - 1; i >= 0; i-- {
		if stopping[s.order[i]] {
			s.stop(s.insts[s.order[i]])
		}
	}
	for _, n := range s.order {
		inst := s.insts[n]
		if inst.running || !s.depsUp(inst) {
			continue
		}
		if inst.state == Failed && s.opts.Now().Before(inst.retryAt) {
			next = minTime(next, inst.retryAt)
			continue
		}
		s.start(inst)
	}
	return next
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func (s *Supervisor) depsUp(inst *instance) bool {
	for _, d := range inst.spec.Deps {
		if dep := s.insts[d]; dep == nil || dep.state != Up || !dep.running {
			return false
		}
	}
	return true
}

func (s *Supervisor) start(inst *instance) {
	inst.gen++
	inst.starts++
	inst.running, inst.stopping, inst.restart = true, false, false
	inst.state = Starting
	inst.upSince = time.Time{}
	ctx, cancel := context.WithCancelCause(context.Background())
	inst.cancel = cancel
	inst.done = make(chan struct{})
	inst.changed = make(chan struct{}, 1)
	env := &Env{s: s, name: inst.spec.Name, gen: inst.gen, Log: s.opts.Log.With("service", inst.spec.Name), changed: inst.changed}
	svc := inst.spec.New()
	gen, done := inst.gen, inst.done
	s.opts.Log.Info("service starting", "service", inst.spec.Name, "kind", inst.spec.Kind)
	go func() {
		err := svc.Run(ctx, env)
		if ctx.Err() != nil {
			err = nil
		}
		s.send(exitedEv{inst.spec.Name, gen, err})
		close(done)
	}()
}

// stop cancels a service, with what it reads as of now for its Stopped,
// and waits for it, handling other events meanwhile.
func (s *Supervisor) stop(inst *instance) {
	if inst == nil || !inst.running {
		return
	}
	inst.stopping = true
	st := &Stopped{Inputs: map[Ref]string{}}
	for _, r := range inst.spec.Reads {
		if v, ok := s.outputs[r.Service][r.Key]; ok {
			st.Inputs[r] = v
		}
	}
	inst.cancel(st)
	s.opts.Log.Info("service stopping", "service", inst.spec.Name)
	for inst.running {
		switch ev := (<-s.events).(type) {
		case reloadEv:
			s.deferred = append(s.deferred, ev)
		default:
			s.handle(ev)
		}
	}
}

func (s *Supervisor) reload(specs []Spec) error {
	ord, err := order(specs)
	if err != nil {
		return err
	}
	next := map[string]Spec{}
	for _, sp := range specs {
		next[sp.Name] = sp
	}
	// Dependents of what changes stop first, in reverse order.
	changed := map[string]bool{}
	for name, inst := range s.insts {
		sp, ok := next[name]
		if !ok || sp.Fingerprint != inst.spec.Fingerprint || sp.Kind != inst.spec.Kind {
			changed[name] = true
		}
	}
	for i := len(s.order) - 1; i >= 0; i-- {
		name := s.order[i]
		if s.dependsOnAny(name, changed) || changed[name] {
			s.stop(s.insts[name])
		}
	}
	carried := map[string]int{} // a changed service's starts go on counting
	// Removed dependents first, in reverse order, as they stopped: an RA's
	// last advertisement or a DHCP release must go out before the bridge
	// it went out on is deleted.
	for i := len(s.order) - 1; i >= 0; i-- {
		name := s.order[i]
		if !changed[name] {
			continue
		}
		inst := s.insts[name]
		carried[name] = inst.starts
		old := inst.spec.New()
		_, kept := next[name]
		if ip, ok := old.(InPlace); !kept || !ok || !ip.ReplacesInPlace() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			if err := old.Remove(ctx); err != nil {
				s.opts.Log.Warn("removing a service's configuration", "service", name, "err", err)
			}
			cancel()
		}
		delete(s.insts, name)
		s.opts.Log.Info("service removed", "service", name)
	}
	for _, name := range ord {
		if inst, ok := s.insts[name]; ok {
			inst.spec = next[name] // same fingerprint; take the new constructor
			continue
		}
		s.insts[name] = &instance{spec: next[name], state: Down, starts: carried[name]}
	}
	s.order = ord
	return nil
}

// dependsOnAny reports whether name depends, directly or not, on one of set.
func (s *Supervisor) dependsOnAny(name string, set map[string]bool) bool {
	seen := map[string]bool{}
	var walk func(n string) bool
	walk = func(n string) bool {
		if seen[n] {
			return false
		}
		seen[n] = true
		inst := s.insts[n]
		if inst == nil {
			return false
		}
		for _, d := range inst.spec.Deps {
			if set[d] || walk(d) {
				return true
			}
		}
		return false
	}
	return walk(name)
}

func (s *Supervisor) status() []Status {
	var out []Status
	for _, n := range s.order {
		inst := s.insts[n]
		st := Status{Name: n, Kind: inst.spec.Kind, State: inst.state, Deps: inst.spec.Deps,
			Starts: inst.starts, Failures: inst.failures, LastError: inst.lastErr}
		if len(s.outputs[n]) > 0 {
			st.Outputs = map[string]string{}
			for k, v := range s.outputs[n] {
				st.Outputs[k] = v
			}
		}
		if inst.state == Failed {
			st.RetryIn = time.Until(inst.retryAt).Round(time.Second).String()
		}
		out = append(out, st)
	}
	return out
}
