package itest

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/roostrouter/roost/itest/labnet"
	"github.com/roostrouter/roost/itest/vm"
)

// after says when the console first had a line holding s after t (any
// time, if t is zero), if it did.
func (c *timedConsole) after(s string, t time.Time) (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, l := range c.lines {
		if at := c.start.Add(c.at[i]); strings.Contains(l, s) && at.After(t) {
			return at, true
		}
	}
	return time.Time{}, false
}

// waitAfter waits up to d for a console line holding s after t, and says
// when it came.
func (c *timedConsole) waitAfter(s string, t time.Time, d time.Duration) (time.Time, bool) {
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if at, ok := c.after(s, t); ok {
			return at, true
		}
	}
	return time.Time{}, false
}

// rebuildMarks are the router's console lines that mark where a rebuild
// is, in the order they come: each starts the part named.
var rebuildMarks = []struct{ name, line string }{
	{"transfer", "transfer started"},
	{"gap after the transfer", "transfer done"},
	{"activation", `command="roostd activate`},
	{"hand-over", "handing over to the running system's roostd"},
	{"time after the confirmation", "activation confirmed"},
}

// cutPhases are the parts of a rebuild the power is cut in: from one mark
// (an index in rebuildMarks) to another.
var cutPhases = []struct{ from, to int }{{0, 1}, {2, 3}, {3, 4}}

// partAt names the part of a rebuild started at start that t fell in.
func partAt(c *timedConsole, start, t time.Time) string {
	name := "connection"
	for _, m := range rebuildMarks {
		if at, ok := c.after(m.line, start); ok && !at.After(t) {
			name = m.name
		}
	}
	return name
}

// powerCuts is the router VM whose power the test cuts, and what it
// knows of the rebuilds.
type powerCuts struct {
	*routerVMLab
	r       *vm.Router
	c       *timedConsole
	version map[string]string // each system's roostd
	spans   []time.Duration   // of each of cutPhases, in the first rebuild
}

// TestPowerCutInVM: the router VM loses power (QEMU killed with SIGKILL)
// at random points of rebuilds, in each of their phases: the transfer of
// a new system (a new roostd, sent as a delta), its activation, and the
// hand-over to its roostd. After each cut the VM boots the generation that
// ran before or the new one, SSH answers with the router's host key, an
// activation that was awaiting confirmation rolls back at its deadline
// (nobody confirms it), roostd store verify is clean and every generation
// names a valid path; gc then keeps the store small. Each delay is random
// within its phase's span as a first rebuild, not cut, measured it; the
// seed is printed (ROOST_POWERCUT_SEED repeats a run).
func TestPowerCutInVM(t *testing.T) {
	need(t, "go")
	const cuts = 10
	const budget = 15 * time.Minute // for the cuts
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("ROOST_POWERCUT_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("ROOST_POWERCUT_SEED=%q: %v", s, err)
		}
	}
	t.Logf("seed %d (ROOST_POWERCUT_SEED=%d repeats it)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 0))

	p := &powerCuts{routerVMLab: startRouterVMLab(t), version: map[string]string{}}
	systems := newVMSystems(t, p.lap.nix)
	// Each rebuild brings a roostd of its own: a transfer, an activation
	// and a hand-over.
	var next []string
	for i := range cuts + 1 {
		v := fmt.Sprintf("cut-%d", i)
		next = append(next, systems.build("roost-system-"+v, p.config(), buildRoostd(t, v, "")))
		p.version[next[i]] = v
	}
	first := systems.build("roost-system-dev", p.config(), roostd)
	p.version[first] = "dev"
	p.disk = systems.disk(first)
	p.r, p.c = p.boot()
	p.c.waitFor(t, "agent ready", 0, 2*time.Minute)
	p.lanAddresses()
	p.waitAllUp(false) // known_hosts learns the host key
	p.measure(next[0])

	began := time.Now()
	for i := range cuts {
		if time.Since(began) > budget {
			t.Fatalf("%d cuts took more than %s", i, budget)
		}
		phase := cutPhases[i%len(cutPhases)]
		delay := time.Duration(rng.Float64() * float64(p.spans[i%len(cutPhases)]))
		p.cut(i+1, next[i+1], phase.from, delay)
	}
	t.Logf("%d cuts in %s", cuts, time.Since(began).Round(time.Second))

	if res := p.ssh(true, "roostd", "poweroff"); res.code != 0 && res.code != 255 {
		t.Fatalf("roostd poweroff: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	if err := p.r.Wait(time.Minute); err != nil {
		t.Fatalf("the VM after roostd poweroff: %v", err)
	}
}

// measure rebuilds to sys, not cut, and measures the phases' spans from
// the router's console.
func (p *powerCuts) measure(sys string) {
	t := p.t
	start := time.Now()
	res, took := p.rebuild("--system", sys)
	if !res.Confirmed || res.System != sys {
		t.Fatalf("the first rebuild: %+v", res)
	}
	var marks []time.Time
	for _, m := range rebuildMarks {
		at, ok := p.c.after(m.line, start)
		if !ok {
			t.Fatalf("the console never said %q in the first rebuild:\n%s", m.line, p.c.String())
		}
		marks = append(marks, at)
	}
	var spans []string
	for _, ph := range cutPhases {
		p.spans = append(p.spans, marks[ph.to].Sub(marks[ph.from]))
		spans = append(spans, fmt.Sprintf("%s %.2fs", rebuildMarks[ph.from].name, marks[ph.to].Sub(marks[ph.from]).Seconds()))
	}
	t.Logf("the first rebuild, not cut: %.1fs; %s (from the router's console)", took.Seconds(), strings.Join(spans, ", "))
}

// cut rebuilds to target and cuts the power delay into the part that mark
// (an index in rebuildMarks) starts; then it boots the VM again and checks
// what it runs.
func (p *powerCuts) cut(n int, target string, mark int, delay time.Duration) {
	t := p.t
	before := p.settled()
	cmd := exec.Command("ip", labnet.In(p.net.LAN, roost, "rebuild", "--host", "rotuer", "--system", target, "--confirm-timeout", "15s")[1:]...)
	cmd.Env = append(os.Environ(), p.lap.env()...)
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	from, ok := p.c.waitAfter(rebuildMarks[mark].line, start, time.Minute)
	if !ok {
		cmd.Process.Kill()
		t.Fatalf("cut %d: the rebuild never reached its %s:\n%s", n, rebuildMarks[mark].name, p.c.String())
	}
	time.Sleep(time.Until(from.Add(delay)))
	at := time.Now()
	p.r.Kill() // SIGKILL: the power goes
	cmd.Process.Kill()
	cmd.Wait()
	landed := partAt(p.c, start, at)

	p.r, p.c = p.boot()
	_, up := p.c.waitFor(t, "agent ready", 0, 2*time.Minute)
	for _, bad := range []string{"BOOT FAILED", "GENERATION SKIPPED", "AGENT EXITED"} {
		if _, ok := p.c.after(bad, time.Time{}); ok {
			t.Fatalf("cut %d: the boot after the cut says %s:\n%s", n, bad, p.c.String())
		}
	}
	st := p.status(true) // SSH answers, with the host key known_hosts holds
	booted := map[string]string{before.Current: "the previous system", target: "the new system"}[st.Booted]
	if booted == "" {
		t.Fatalf("cut %d: booted %s; want %s, which ran, or %s, the new one", n, st.Booted, before.Current, target)
	}
	outcome := p.pendingOutcome(n, st)
	st = p.settled()
	if st.Current != before.Current && (st.Current != target || st.LastRollback != nil && st.LastRollback.System == target) {
		t.Fatalf("cut %d: the router settled on %s; want %s, or %s confirmed", n, st.Current, before.Current, target)
	}
	p.checkStore(n)
	t.Logf("cut %d: %.2fs into the %s (%.2fs into the rebuild), landed in the %s; booted %s (agent ready %.1fs after QEMU started); %s; runs generation %d; store verified",
		n, delay.Seconds(), rebuildMarks[mark].name, at.Sub(start).Seconds(), landed, booted, up.Seconds(), outcome, st.Generation)
}

// pendingOutcome waits, if the status after a boot shows an activation
// awaiting confirmation, for its rollback at its deadline (nobody
// confirms it), and says what happened to the activation.
func (p *powerCuts) pendingOutcome(n int, st vmStatus) string {
	t := p.t
	pend := st.Pending
	switch {
	case pend == nil && st.Current != st.Booted:
		return "its agent rolled the activation back as it started (the deadline had passed)"
	case pend == nil:
		return "no activation pending"
	}
	if labnet.Wait(time.Until(pend.Deadline)+30*time.Second, 500*time.Millisecond, func() bool {
		var ok bool
		st, ok = p.tryStatus()
		return ok && st.Pending == nil
	}) != nil {
		t.Fatalf("cut %d: the activation of %s still awaits confirmation after its deadline %s: %+v", n, pend.System, pend.Deadline, st)
	}
	if st.Current != pend.PrevSystem || st.Generation != pend.PrevGeneration {
		t.Fatalf("cut %d: after the deadline the router runs %s (generation %d), want %s (generation %d)", n, st.Current, st.Generation, pend.PrevSystem, pend.PrevGeneration)
	}
	return "the pending activation rolled back at its deadline"
}

// checkStore checks the router's store after a cut: every valid path
// hashes to its registration, every generation names a valid path; then
// gc keeps the last two generations, so that the checks stay quick.
func (p *powerCuts) checkStore(n int) {
	t := p.t
	if v := p.ssh(true, "roostd", "store", "verify"); v.code != 0 {
		t.Fatalf("cut %d: roostd store verify: exit %d\n%s%s", n, v.code, v.stdout, v.stderr)
	}
	if v := p.ssh(true, append([]string{"roostd", "store", "query-valid"}, p.generations()...)...); v.code != 0 {
		t.Fatalf("cut %d: a generation names a path that is not valid: exit %d\n%s%s", n, v.code, v.stdout, v.stderr)
	}
	if v := p.ssh(true, "roostd", "gc", "--keep", "2"); v.code != 0 {
		t.Fatalf("cut %d: roostd gc: exit %d\n%s%s", n, v.code, v.stdout, v.stderr)
	}
}

// settled waits until the router runs its current system's roostd (a
// rollback hands over to it), with no activation pending.
func (p *powerCuts) settled() vmStatus {
	p.t.Helper()
	var st vmStatus
	if labnet.Wait(30*time.Second, 300*time.Millisecond, func() bool {
		var ok bool
		st, ok = p.tryStatus()
		return ok && st.Pending == nil && st.Version == p.version[st.Current]
	}) != nil {
		p.t.Fatalf("the router never settled on its current system's roostd: %+v", st)
	}
	return st
}

// tryStatus is status, for polls across a hand-over, which ends the SSH
// sessions open then: false if it did not answer.
func (l *routerVMLab) tryStatus() (vmStatus, bool) {
	l.t.Helper()
	r := l.ssh(true, "roostd", "status", "--json")
	var st vmStatus
	return st, r.code == 0 && json.Unmarshal([]byte(r.stdout), &st) == nil
}

// generations lists the store paths of the router's generations.
func (l *routerVMLab) generations() []string {
	l.t.Helper()
	r := l.ssh(true, "roostd", "generations", "--json")
	var gens []struct {
		Path string `json:"path"`
	}
	mustJSON(l.t, "roostd generations --json", r.stdout, &gens)
	var out []string
	for _, g := range gens {
		out = append(out, g.Path)
	}
	return out
}
