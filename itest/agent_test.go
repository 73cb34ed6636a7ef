package itest

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/roostrouter/roost/itest/labnet"
)

var update = flag.Bool("update", false, "rewrite golden files")

// agentLab is a lab network with roostd running in the router namespace.
type agentLab struct {
	t      *testing.T
	net    *labnet.Net
	root   string
	state  string
	config string
	cmd    *exec.Cmd
	log    *syncBuffer
	env    []string // added to roostd's environment
}

func startAgentLab(t *testing.T, config []byte) *agentLab {
	return startAgentLabEnv(t, config, nil)
}

// startAgentLabEnv starts roostd with env added to its environment.
func startAgentLabEnv(t *testing.T, config []byte, env []string) *agentLab {
	need(t, "ip", "ping")
	n := labnet.New(fmt.Sprintf("rt%d-", os.Getpid()%100000))
	if err := n.Up(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Down)
	return startAgentLabOn(t, n, config, env)
}

// startAgentLabOn starts roostd on a lab network that is up.
func startAgentLabOn(t *testing.T, n *labnet.Net, config []byte, env []string) *agentLab {
	a := newAgentLab(t, n, config, env)
	a.start()
	t.Cleanup(a.stop)
	return a
}

// newAgentLab prepares roostd's folders and config on a lab network.
func newAgentLab(t *testing.T, n *labnet.Net, config []byte, env []string) *agentLab {
	need(t, "ip", "ping")
	a := &agentLab{t: t, net: n, root: t.TempDir(), state: t.TempDir(), config: filepath.Join(t.TempDir(), "config.json"), env: env}
	os.WriteFile(a.config, config, 0o644)
	return a
}

func (a *agentLab) start() {
	a.log = &syncBuffer{}
	a.cmd = exec.Command("ip", labnet.In(a.net.Router, roostd, "run", "--root", a.root, "--state", a.state, "--config", a.config)[1:]...)
	a.cmd.Stdout, a.cmd.Stderr = a.log, a.log
	a.cmd.Env = append(append(os.Environ(), "GOTRACEBACK=all"), a.env...)
	if err := a.cmd.Start(); err != nil {
		a.t.Fatal(err)
	}
}

// ping checks that the LAN host reaches addr through the router, allowing
// a few seconds for neighbour discovery on fresh links.
func (a *agentLab) ping(addr string) {
	a.t.Helper()
	var r result
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		if r = run(a.t, nil, nil, "ip", labnet.In(a.net.LAN, "ping", "-c", "1", "-W", "1", addr)[1:]...); r.code == 0 {
			return
		}
	}
	a.t.Fatalf("the LAN host does not reach %s:\n%s%s\nrouter:\n%s", addr, r.stdout, r.stderr,
		mustRun(a.t, nil, "ip", "-n", a.net.Router, "addr"))
}

func (a *agentLab) stop() {
	if a.cmd == nil {
		return
	}
	a.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { a.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		// A roostd that does not stop when told is a bug to see, not a
		// test run that hangs until go test's own timeout.
		a.cmd.Process.Kill()
		<-done
		a.t.Errorf("roostd did not stop within 30 s of SIGTERM; killed\n%s", a.log.String())
	}
	a.cmd = nil
}

func (a *agentLab) kill9() {
	a.cmd.Process.Signal(syscall.SIGKILL)
	a.cmd.Wait()
	a.cmd = nil
}

type serviceStatus struct {
	Name      string            `json:"name"`
	State     string            `json:"state"`
	Starts    int               `json:"starts"`
	Failures  int               `json:"failures"`
	LastError string            `json:"lastError"`
	Outputs   map[string]string `json:"outputs"`
}

func (a *agentLab) services() map[string]serviceStatus {
	a.t.Helper()
	var st struct {
		Services []serviceStatus `json:"services"`
	}
	r := run(a.t, nil, nil, "ip", labnet.In(a.net.Router, roostd, "status", "--json", "--root", a.root, "--state", a.state)[1:]...)
	out := map[string]serviceStatus{}
	if json.Unmarshal([]byte(r.stdout), &st) != nil {
		return out
	}
	for _, s := range st.Services {
		out[s.Name] = s
	}
	return out
}

// waitServices waits until check holds for the services.
func (a *agentLab) waitServices(what string, check func(map[string]serviceStatus) bool) map[string]serviceStatus {
	a.t.Helper()
	return a.waitServicesFor(15*time.Second, what, check)
}

// waitServicesFor is waitServices with a deadline of its own, for what
// takes longer (a PPP session under software emulation).
func (a *agentLab) waitServicesFor(d time.Duration, what string, check func(map[string]serviceStatus) bool) map[string]serviceStatus {
	a.t.Helper()
	deadline := time.Now().Add(d)
	var s map[string]serviceStatus
	for time.Now().Before(deadline) {
		if s = a.services(); len(s) > 0 && check(s) {
			return s
		}
		time.Sleep(50 * time.Millisecond)
	}
	a.dumpGoroutines()
	a.t.Fatalf("services never %s: %+v\n%s", what, s, a.log.String())
	return nil
}

// waitDefaultRoute waits a few seconds for the router's default route of
// family (-4 or -6) to show want (ip route show default), and fails the
// test with the routes and roostd's log if it does not.
func (a *agentLab) waitDefaultRoute(family, want, when string) {
	a.t.Helper()
	var routes string
	if labnet.Wait(5*time.Second, 50*time.Millisecond, func() bool {
		routes = mustRun(a.t, nil, "ip", "-n", a.net.Router, family, "route", "show", "default")
		return strings.Contains(routes, want)
	}) != nil {
		a.t.Fatalf("%s: no default route (%s) %s:\n%s\nroostd's log:\n%s", when, family, want, routes, a.log.String())
	}
}

// dumpGoroutines makes roostd print where each goroutine waits (SIGQUIT),
// so that a service stuck in starting or stopping shows what it waits for.
func (a *agentLab) dumpGoroutines() {
	if a.cmd == nil || a.cmd.Process == nil {
		return
	}
	a.cmd.Process.Signal(syscall.SIGQUIT)
	done := make(chan struct{})
	go func() { a.cmd.Wait(); close(done) }()
	select {
	case <-done:
		a.cmd = nil
	case <-time.After(3 * time.Second):
	}
}

func allUp(s map[string]serviceStatus) bool {
	for name, st := range s {
		if st.State != "up" && name != "lan1" { // lan1 is an unplugged port: no carrier
			return false
		}
	}
	return true
}

func exampleConfig(t *testing.T) []byte {
	b, err := os.ReadFile("../docs/rotuer.json")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// ipState is what ip -j says of the router, with what varies between runs
// (indexes, MAC addresses, link-local addresses, lifetimes) removed.
func (a *agentLab) ipState() string {
	a.t.Helper()
	var parts []string
	for _, args := range [][]string{
		{"-j", "link", "show"},
		{"-j", "addr", "show"},
		{"-j", "-4", "route", "show"},
		{"-j", "-6", "route", "show"},
	} {
		out := mustRun(a.t, nil, "ip", append([]string{"-n", a.net.Router}, args...)...)
		var v any
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			a.t.Fatalf("ip %v: %v", args, err)
		}
		parts = append(parts, string(must(json.MarshalIndent(normalize(v), "", " "))))
	}
	return strings.Join(parts, "\n") + "\n"
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

var varying = map[string]bool{"ifindex": true, "address": true, "broadcast": true, "link_index": true, "link_netnsid": true,
	"valid_life_time": true, "preferred_life_time": true, "qdisc": true, "txqlen": true, "group": true, "link": true, "master": false}

// normalize drops fields that differ between runs and link-local addresses.
func normalize(v any) any {
	switch x := v.(type) {
	case []any:
		var out []any
		for _, e := range x {
			if m, ok := e.(map[string]any); ok {
				if local, _ := m["local"].(string); strings.HasPrefix(local, "fe80:") {
					continue
				}
				if dst, _ := m["dst"].(string); strings.HasPrefix(dst, "fe80:") || strings.HasPrefix(dst, "ff00:") || dst == "multicast" {
					continue
				}
				if t, _ := m["type"].(string); t == "multicast" || t == "local" {
					continue
				}
			}
			out = append(out, normalize(e))
		}
		return out
	case map[string]any:
		out := map[string]any{}
		for k, e := range x {
			if !varying[k] {
				out[k] = normalize(e)
			}
		}
		// A port without carrier (the unplugged lan1) says either, by timing.
		if out["operstate"] == "LOWERLAYERDOWN" {
			out["operstate"] = "DOWN"
		}
		return out
	}
	return v
}

var peerIndex = regexp.MustCompile(`@if\d+`)

// TestExampleConfigState applies docs/rotuer.json in a namespace: the state
// matches the golden ip -j output, the LAN host reaches the ISP, and a
// restarted roostd (killed with SIGKILL) makes no netlink change at all.
func TestExampleConfigState(t *testing.T) {
	a := startAgentLab(t, exampleConfig(t))
	a.waitServices("up", allUp)
	golden := "testdata/rotuer-ip.golden"
	want, err := os.ReadFile(golden)
	if err != nil && !*update {
		t.Fatalf("%v (go test ./itest -run TestExampleConfigState -update writes it)", err)
	}
	// The kernel finishes some work (prefix routes, carrier on the bridge)
	// just after the services are up: compare the settled state.
	var got string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if got = peerIndex.ReplaceAllString(a.ipState(), ""); got == string(want) {
			break
		}
	}
	if *update {
		os.MkdirAll("testdata", 0o755)
		os.WriteFile(golden, []byte(got), 0o644)
	} else if got != string(want) {
		t.Errorf("ip state differs from %s:\n%s", golden, lineDiff(string(want), got))
	}
	a.ping("198.51.100.1")
	a.ping("2001:db8:0:1::1")
	// Outputs, one value a file, where Liminix's scripts look for them.
	for file, want := range map[string]string{"wan-addr/address": "192.0.2.2", "lan/ifname": "br-lan", "default/gateway": "192.0.2.1"} {
		if b, err := os.ReadFile(filepath.Join(a.root, "run/services/outputs", file)); err != nil || string(b) != want {
			t.Errorf("output %s = %q, %v; want %q", file, b, err, want)
		}
	}
	// A link the config does not name is never touched.
	mustRun(t, nil, "ip", "-n", a.net.Router, "link", "add", "stray0", "type", "veth", "peer", "name", "stray1")
	mustRun(t, nil, "ip", "-n", a.net.Router, "addr", "add", "10.7.7.7/24", "dev", "stray0")
	strayBefore := mustRun(t, nil, "ip", "-n", a.net.Router, "-d", "addr", "show", "dev", "stray0")

	// Applying again changes nothing: watch every link, address and route
	// message while roostd is killed and starts over.
	mon := exec.Command("ip", "-n", a.net.Router, "monitor", "link", "address", "route")
	var events bytes.Buffer
	mon.Stdout = &events
	if err := mon.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	a.kill9()
	a.start()
	a.waitServices("up again", func(s map[string]serviceStatus) bool { return allUp(s) && s["default"].Starts == 1 })
	time.Sleep(300 * time.Millisecond)
	mon.Process.Kill()
	mon.Wait()
	if strings.TrimSpace(events.String()) != "" {
		t.Errorf("a restarted roostd changed the network:\n%s", events.String())
	}
	if strayAfter := mustRun(t, nil, "ip", "-n", a.net.Router, "-d", "addr", "show", "dev", "stray0"); strayAfter != strayBefore {
		t.Errorf("roostd touched a link it does not manage:\n%s", strayAfter)
	}
	mustRun(t, nil, "ip", "-n", a.net.Router, "link", "del", "stray0")
	if after := peerIndex.ReplaceAllString(a.ipState(), ""); after != got {
		t.Errorf("state after a restart differs:\n%s", after)
	}
}

// TestReadinessNotify: roostd tells its init it is ready with a newline on
// --notify-fd, as s6 expects.
func TestReadinessNotify(t *testing.T) {
	need(t, "ip")
	n := labnet.New(fmt.Sprintf("rn%d-", os.Getpid()%100000))
	if err := n.Up(); err != nil {
		t.Fatal(err)
	}
	defer n.Down()
	a := &agentLab{t: t, net: n, root: t.TempDir(), state: t.TempDir(), config: filepath.Join(t.TempDir(), "config.json"), log: &syncBuffer{}}
	os.WriteFile(a.config, exampleConfig(t), 0o644)
	r, w, _ := os.Pipe()
	a.cmd = exec.Command("ip", labnet.In(n.Router, roostd, "run", "--root", a.root, "--state", a.state, "--config", a.config, "--notify-fd", "3")[1:]...)
	a.cmd.Stdout, a.cmd.Stderr = a.log, a.log
	a.cmd.ExtraFiles = []*os.File{w}
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer a.stop()
	w.Close()
	line := make([]byte, 1)
	r.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := r.Read(line); n != 1 || line[0] != '\n' {
		t.Fatalf("no readiness newline on --notify-fd: %v\n%s", err, a.log.String())
	}
}

// TestLinkFlap: the ISP side of the WAN goes down and up; the WAN's
// dependents stop and run again, in order.
func TestLinkFlap(t *testing.T) {
	a := startAgentLab(t, exampleConfig(t))
	a.waitServices("up", allUp)
	mustRun(t, nil, "ip", "-n", a.net.ISP, "link", "set", "isp0", "down")
	a.waitServices("down after carrier loss", func(s map[string]serviceStatus) bool {
		return s["wan"].State == "starting" && s["wan-addr"].State == "down" && s["default"].State == "down" && s["lan-addr"].State == "up"
	})
	mustRun(t, nil, "ip", "-n", a.net.ISP, "link", "set", "isp0", "up")
	// The ISP's own route back went with its link; it puts it back, as an
	// ISP's router would. The router's side is roostd's business.
	mustRun(t, nil, "ip", "-n", a.net.ISP, "route", "replace", "192.168.1.0/24", "via", "192.0.2.2")
	s := a.waitServices("up after the carrier is back", allUp)
	if s["wan-addr"].Starts != 2 || s["default"].Starts != 2 || s["wan"].Starts != 1 || s["lan-addr"].Starts != 1 {
		t.Fatalf("starts after a flap: wan %d wan-addr %d default %d lan-addr %d", s["wan"].Starts, s["wan-addr"].Starts, s["default"].Starts, s["lan-addr"].Starts)
	}
	log := a.log.String()
	if i, j := strings.LastIndex(log, `service starting" service=wan-addr `), strings.LastIndex(log, `service starting" service=default `); i < 0 || j < i {
		t.Fatalf("the default route did not start after its address:\n%s", log)
	}
	a.ping("198.51.100.1")
}

// TestRouteKeptInPlace: a route roostd manages that goes away, deleted by
// hand or dropped by the kernel with the link's last IPv4 address, is put
// back at once, without a restart of the service.
func TestRouteKeptInPlace(t *testing.T) {
	a := startAgentLab(t, exampleConfig(t))
	before := a.waitServices("up", allUp)
	for _, family := range []string{"-4", "-6"} {
		mustRun(t, nil, "ip", "-n", a.net.Router, family, "route", "del", "default")
	}
	a.waitDefaultRoute("-4", "via 192.0.2.1 dev wan", "deleted by hand")
	a.waitDefaultRoute("-6", "via 2001:db8:0:1::1 dev wan", "deleted by hand")
	after := a.services()
	for _, name := range []string{"default", "default6"} {
		if after[name].Starts != before[name].Starts || after[name].State != "up" {
			t.Errorf("%s: %+v, was %+v", name, after[name], before[name])
		}
	}
	if n := strings.Count(a.log.String(), "route gone; put back"); n != 2 {
		t.Errorf("%d log lines say a route was put back, want 2:\n%s", n, a.log.String())
	}

	// As pppd does to ppp0: the link's only IPv4 address taken off and put
	// on again. The kernel drops the link's IPv4 routes, announcing none.
	mustRun(t, nil, "ip", "-n", a.net.Router, "addr", "del", "192.0.2.2/24", "dev", "wan")
	mustRun(t, nil, "ip", "-n", a.net.Router, "addr", "add", "192.0.2.2/24", "dev", "wan")
	a.waitDefaultRoute("-4", "via 192.0.2.1 dev wan", "the link's address off and on")
	a.ping("198.51.100.1")
}

// TestReload: a config change touching one service restarts only it and its
// dependents; a bad config is refused and the running state stays.
func TestReload(t *testing.T) {
	a := startAgentLab(t, exampleConfig(t))
	a.waitServices("up", allUp)
	time.Sleep(300 * time.Millisecond) // let the firewall's zone updates settle
	before := a.services()
	changed := strings.Replace(string(exampleConfig(t)), `"address": "fd00:1::1/64"`, `"address": "fd00:2::1/64"`, 1)
	os.WriteFile(a.config, []byte(changed), 0o644)
	a.cmd.Process.Signal(syscall.SIGHUP)
	s := a.waitServices("reloaded", func(s map[string]serviceStatus) bool {
		return allUp(s) && s["lan-addr6"].Outputs["address"] == "fd00:2::1"
	})
	for name, st := range s {
		want := 0
		if name == "lan-addr6" {
			want = 1
		}
		if got := st.Starts - before[name].Starts; got != want {
			t.Errorf("%s started %d more times across the reload, want %d", name, got, want)
		}
	}
	addrs := mustRun(t, nil, "ip", "-n", a.net.Router, "-6", "addr", "show", "dev", "br-lan")
	if strings.Contains(addrs, "fd00:1::1/64") || !strings.Contains(addrs, "fd00:2::1/64") {
		t.Fatalf("after the reload br-lan has:\n%s", addrs)
	}

	os.WriteFile(a.config, []byte(`{"services": {"x": {"kind": "teleport"}}}`), 0o644)
	a.cmd.Process.Signal(syscall.SIGHUP)
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(a.log.String(), "config refused") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(a.log.String(), `unknown kind \"teleport\"`) {
		t.Fatalf("a bad reload was not reported:\n%s", a.log.String())
	}
	after := a.services()
	if len(after) != len(s) || !allUp(after) {
		t.Fatalf("a bad reload changed the services: %+v", after)
	}
}

// TestFailingServiceBacksOff: a route whose gateway is not reachable fails,
// and is retried with a growing wait, without touching the rest.
func TestFailingServiceBacksOff(t *testing.T) {
	cfg := strings.Replace(string(exampleConfig(t)), `"forwarding":`,
		`"bad": { "kind": "route", "link": "wan", "destination": "203.0.113.0/24", "gateway": "10.9.9.9" },
    "forwarding":`, 1)
	a := startAgentLab(t, []byte(cfg))
	s := a.waitServices("failing twice", func(s map[string]serviceStatus) bool { return s["bad"].Failures >= 2 })
	if !strings.Contains(s["bad"].LastError, "add route 203.0.113.0/24 via 10.9.9.9") {
		t.Fatalf("last error: %q", s["bad"].LastError)
	}
	if !strings.Contains(a.log.String(), "retryIn=2s") {
		t.Fatalf("no growing backoff in the log:\n%s", a.log.String())
	}
	delete(s, "bad")
	a.waitServices("up, but for the failing one", func(s map[string]serviceStatus) bool {
		delete(s, "bad")
		return allUp(s)
	})
}

// TestRestartLosesNoPacket: a ping flood from the LAN host through the
// router loses nothing while roostd is killed with SIGKILL and restarted.
func TestRestartLosesNoPacket(t *testing.T) {
	a := startAgentLab(t, exampleConfig(t))
	a.waitServices("up", allUp)
	// A flood for 3 seconds; the kill and the restart fall inside it.
	ping := exec.Command("ip", labnet.In(a.net.LAN, "ping", "-f", "-w", "3", "-W", "1", "198.51.100.1")[1:]...)
	var out bytes.Buffer
	ping.Stdout, ping.Stderr = &out, &out
	if err := ping.Start(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	time.Sleep(500 * time.Millisecond)
	a.kill9()
	a.start()
	a.waitServices("up again", allUp)
	if time.Since(start) > 2500*time.Millisecond {
		t.Fatal("the restart did not happen inside the flood")
	}
	if err := ping.Wait(); err != nil {
		t.Fatalf("ping: %v\n%s", err, out.String())
	}
	var sent, received int
	fmt.Sscanf(out.String()[strings.Index(out.String(), "---\n")+4:], "%d packets transmitted, %d received", &sent, &received)
	if sent < 1000 || received != sent {
		t.Fatalf("ping flood across the restart: %d sent, %d received\n%s", sent, received, out.String())
	}
	t.Logf("ping flood across a kill -9 and restart of roostd: %d sent, %d received", sent, received)
}

// lineDiff shows the lines only in want (-) and only in got (+).
func lineDiff(want, got string) string {
	count := map[string]int{}
	for _, l := range strings.Split(want, "\n") {
		count[l]++
	}
	for _, l := range strings.Split(got, "\n") {
		count[l]--
	}
	var out []string
	for l, n := range count {
		for ; n > 0; n-- {
			out = append(out, "- "+l)
		}
		for ; n < 0; n++ {
			out = append(out, "+ "+l)
		}
	}
	sort.Strings(out)
	return strings.Join(out, "\n")
}
