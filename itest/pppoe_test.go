package itest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/roostrouter/roost/itest/isp"
	"github.com/roostrouter/roost/itest/labnet"
	"github.com/roostrouter/roost/itest/vm"
)

// fakePppd stands in for pppd where the kernel has no PPP (this
// development machine): it reads the options roostd wrote, refuses a wrong
// password as pppd does (exit 19), makes a "ppp0" (a veth: the kernel has
// no PPP) with the link-local addresses IPv6CP would set, runs the ip-up
// script with pppd's arguments and DNS1/DNS2, and runs ip-down when roostd
// stops it. The same paths with the real pppd and pppoe-server run in the
// VM (TestPPPoEInVM).
const fakePppd = `#!/bin/sh
opts="$2"
script() { sed -n "s/^$1-script \"\(.*\)\"$/\1/p" "$opts"; }
ipparam=$(sed -n 's/^ipparam //p' "$opts")
grep -q '^password "s3cret"$' "$opts" || { echo "CHAP authentication failed" >&2; exit 19; }
ip link add ppp0 type veth peer name ppp0-peer
ip link set ppp0 up
ip -6 addr add fe80::7 peer fe80::1 dev ppp0 nodad
DNS1=192.0.2.53 DNS2=192.0.2.54 "$(script ip-up)" ppp0 /dev/ppp 0 198.51.100.7 198.51.100.1 "$ipparam"
trap '"$(script ip-down)" ppp0 /dev/ppp 0 198.51.100.7 198.51.100.1 "$ipparam"; ip link del ppp0; exit 5' TERM
while :; do sleep 1 & wait; done
`

func pppoeConfig(pppd, passwordFile string) string {
	return fmt.Sprintf(`{
  "board": "lab",
  "services": {
    "wan": { "kind": "link", "interface": "wan" },
    "wan-ppp": { "kind": "pppoe", "link": "wan", "user": "rotuer@isp.example", "passwordFile": %q, "pppd": %q }
  }
}`, passwordFile, pppd)
}

// TestPPPoEHooks: roostd runs pppd with the options it wrote; pppd's hooks
// (roostd hook ppp …, through the control socket) publish the session's
// outputs; hooks with missing or garbage arguments are refused with a
// clear error and change nothing; a wrong password is a clear failure in
// roostd status, retried with backoff.
func TestPPPoEHooks(t *testing.T) {
	dir := t.TempDir()
	pppd := filepath.Join(dir, "pppd")
	os.WriteFile(pppd, []byte(fakePppd), 0o755)
	secret := filepath.Join(dir, "pppoe-password")
	os.WriteFile(secret, []byte("s3cret\n"), 0o600)
	a := startAgentLab(t, []byte(pppoeConfig(pppd, secret)))
	s := a.waitServices("up with both families", func(s map[string]serviceStatus) bool {
		return s["wan-ppp"].State == "up" && s["wan-ppp"].Outputs["ipv6/local"] != "" && s["wan-ppp"].Outputs["address"] != ""
	})
	out := s["wan-ppp"].Outputs
	want := map[string]string{"ifname": "ppp0", "address": "198.51.100.7", "peer": "198.51.100.1",
		"dns": "192.0.2.53 192.0.2.54", "ipv6/local": "fe80::7", "ipv6/peer": "fe80::1"}
	for k, v := range want {
		if out[k] != v {
			t.Fatalf("output %s = %q, want %q; all: %v", k, out[k], v, out)
		}
	}
	opts, err := os.ReadFile(filepath.Join(a.state, "pppoe-wan-ppp", "options"))
	if err != nil || !strings.Contains(string(opts), "nic-wan\n") {
		t.Fatalf("options file: %v\n%s", err, opts)
	}
	if fi, _ := os.Stat(filepath.Join(a.state, "pppoe-wan-ppp", "options")); fi.Mode().Perm() != 0o600 {
		t.Fatalf("the options file holds the password but is mode %v", fi.Mode())
	}

	refuseBadHooks(t, a)

	// A wrong password: a clear error in status, retried with backoff.
	os.WriteFile(secret, []byte("wrong\n"), 0o600)
	a.stop()
	a.start()
	refusedPassword(t, a)
}

// refuseBadHooks calls roostd hook ppp with missing, garbage and foreign
// arguments against the running wan-ppp service: each is refused with a
// clear error, and the service's outputs and starts stay as they were.
func refuseBadHooks(t *testing.T, a *agentLab) {
	t.Helper()
	before := a.services()["wan-ppp"]
	hook := func(args ...string) result {
		return run(t, nil, nil, "ip", labnet.In(a.net.Router, append([]string{roostd, "hook", "ppp"}, append(args, "--root", a.root)...)...)[1:]...)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"ip-up"}, "got 0 arguments"},
		{[]string{"ip-down", "ppp0", "/dev/ppp", "0", "198.51.100.7"}, "got 4 arguments"},
		{[]string{"ip-up", "ppp0;reboot", "/dev/ppp", "0", "198.51.100.9", "198.51.100.1", "wan-ppp"}, "not an interface name"},
		{[]string{"ip-up", "ppp0", "/dev/ppp", "0", "not-an-address", "198.51.100.1", "wan-ppp"}, "local address"},
		{[]string{"ipv6-up", "ppp0", "/dev/ppp", "0", "198.51.100.9", "fe80::1", "wan-ppp"}, "not IPv6"},
		{[]string{"ip-down", "ppp0", "/dev/ppp", "0", "198.51.100.7", "198.51.100.1", "someone-else"}, `no PPPoE service "someone-else"`},
		{[]string{"ip-sideways", "ppp0"}, "unknown ppp event"},
	} {
		r := hook(tc.args...)
		if r.code == 0 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("roostd hook ppp %v: exit %d, %q; want a refusal saying %q", tc.args, r.code, r.stderr, tc.want)
		}
	}
	after := a.services()["wan-ppp"]
	if fmt.Sprint(after.Outputs) != fmt.Sprint(before.Outputs) || after.Starts != before.Starts {
		t.Fatalf("refused hooks changed the service: %+v, was %+v", after, before)
	}
}

// refusedPassword: with a password the ISP refuses, wan-ppp fails with a
// clear error in roostd status and is retried with backoff, not in a loop.
func refusedPassword(t *testing.T, a *agentLab) {
	t.Helper()
	s := a.waitServicesFor(60*time.Second, "failing", func(s map[string]serviceStatus) bool { return s["wan-ppp"].Failures >= 2 })
	if st := s["wan-ppp"]; !strings.Contains(st.LastError, "refused the username or password") || !strings.Contains(st.LastError, "exit status 19") {
		t.Fatalf("status after a wrong password: %+v", st)
	}
	time.Sleep(3 * time.Second)
	if n := a.services()["wan-ppp"].Failures; n > s["wan-ppp"].Failures+2 {
		t.Fatalf("%d failures, %d of them in 3 s: a crash loop, not a backoff", n, n-s["wan-ppp"].Failures)
	}
	status := run(t, nil, nil, "ip", labnet.In(a.net.Router, roostd, "status", "--root", a.root)[1:]...)
	if !strings.Contains(status.stdout, "refused the username or password") {
		t.Fatalf("roostd status does not say why:\n%s", status.stdout)
	}
}

// pppoeISP starts the ISP's PPPoE server for the test.
func pppoeISP(t *testing.T, ns string) (stop func()) {
	t.Helper()
	srv, err := isp.StartPPPoEServer(ns, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return srv.Stop
}

// TestPPPoEInVM, in the QEMU test bed (Debian's kernel has PPP): a
// password pppoe-server refuses is a clear failure retried with backoff;
// with the right one the router's ppp0 comes up (CHAP), the outputs
// appear, the default route is via ppp0 and the LAN host reaches the ISP
// through NAT; kea-dhcp6 over ppp0 delegates a prefix, the LAN gets its
// /64 and the LAN host reaches the ISP over IPv6 through ppp0; the server
// killed and restarted, the router reconnects and its outputs, default
// route and firewall zone follow. Garbage hooks against
// the live session are refused and change nothing.
func TestPPPoEInVM(t *testing.T) {
	if !vm.Inside() {
		runInVM(t, isp.PPPoEModules...)
		return
	}
	need(t, "pppd", "pppoe-server")
	dir := t.TempDir()
	secret := filepath.Join(dir, "pppoe-password")
	os.WriteFile(secret, []byte("not-the-password\n"), 0o600)
	cfg, err := isp.PPPoEConfig(string(exampleConfig(t)), secret)
	if err != nil {
		t.Fatal(err)
	}
	a := startAgentLab(t, []byte(cfg))
	stop := pppoeISP(t, a.net.ISP)
	defer func() { stop() }()

	// pppoe-server refuses the password (CHAP); once the file is right,
	// the next retry connects, with no restart of roostd.
	refusedPassword(t, a)
	os.WriteFile(secret, []byte(isp.PPPoEPassword+"\n"), 0o600)
	up := func(what string) serviceStatus {
		var st map[string]serviceStatus
		for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			if st = a.services(); st["wan-ppp"].State == "up" && st["default"].State == "up" && st["wan-ppp"].Outputs["address"] != "" {
				return st["wan-ppp"]
			}
		}
		t.Fatalf("%s: PPPoE not up: %+v\n%s", what, st["wan-ppp"], a.log.String())
		return serviceStatus{}
	}
	s := up("first session")
	if s.Outputs["ifname"] != "ppp0" || !strings.HasPrefix(s.Outputs["address"], "198.51.100.") || s.Outputs["address"] == isp.PPPoELocal || s.Outputs["peer"] != "198.51.100.1" || s.Outputs["dns"] != "192.0.2.53" {
		t.Fatalf("outputs: %v", s.Outputs)
	}
	a.waitDefaultRoute("-4", "dev ppp0", "the first session")
	if mtu := mustRun(t, nil, "ip", "-n", a.net.Router, "link", "show", "dev", "ppp0"); !strings.Contains(mtu, "mtu 1492") {
		t.Fatalf("ppp0:\n%s", mtu)
	}
	a.ping("198.51.100.1")
	if zone := a.services()["firewall"].Outputs["zone/wan"]; zone != "[ppp0 wan]" {
		t.Fatalf("the firewall's wan zone with the session up: %s", zone)
	}
	// The PPPoE header takes 8 bytes: TCP's MSS is clamped to the route's MTU.
	if fwd := mustRun(t, nil, "ip", "netns", "exec", a.net.Router, "nft", "list", "chain", "inet", "roost", "forward"); !strings.Contains(fwd, "tcp option maxseg size set rt mtu") {
		t.Fatalf("no MSS clamping in the forward chain:\n%s", fwd)
	}
	refuseBadHooks(t, a)

	// Over ppp0, kea-dhcp6 at the ISP delegates a /56; the LAN gets its /64.
	waitLinkLocal(t, a.net.ISP, "ppp0")
	if err := isp.PlainLinkLocal(a.net.ISP, "ppp0"); err != nil {
		t.Fatal(err)
	}
	startKea(t, a.net.ISP, "kea-dhcp6", isp.Kea6ConfigOn("ppp0", isp.Short6, "2001:db8:100::"))
	ra := a.waitServices("announcing the delegated prefix", func(s map[string]serviceStatus) bool { return s["lan-ra"].State == "up" })
	if got := ra["lan-ra"].Outputs["prefix"]; got != "2001:db8:100:1::/64" {
		t.Fatalf("the LAN's prefix over PPPoE: %q", got)
	}
	hostAddr6(t, a.net.LAN, "eth0", "2001:db8:100:1:", func(flags string) bool { return !strings.Contains(flags, "tentative") })
	a.waitDefaultRoute("-6", "dev ppp0", "the first session")
	if err := isp.RouteDelegations(a.net.ISP, "ppp0", labnet.DelegationPool); err != nil {
		t.Fatal(err)
	}
	a.ping("2001:db8:0:1::1") // from the LAN host's address in the delegated prefix, over ppp0

	// The ISP's server goes away and comes back: the router reconnects.
	stop()
	deadline := time.Now().Add(30 * time.Second)
	for a.services()["wan-ppp"].Outputs["address"] != "" && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	if out := a.services()["wan-ppp"].Outputs; out["address"] != "" {
		t.Fatalf("outputs left stale after the session died: %v", out)
	}
	a.waitServices("following the session down", func(s map[string]serviceStatus) bool {
		return s["firewall"].Outputs["zone/wan"] == "[wan]" && s["default"].State != "up"
	})
	reconnect := time.Now()
	stop = pppoeISP(t, a.net.ISP)
	up("after the server came back")
	took := time.Since(reconnect)
	t.Logf("reconnected %.1fs after the server returned", took.Seconds())
	// Bounded by the supervisor's backoff after the failed attempts while
	// the server was away (1, 2, 4 s …) and a session's few seconds under
	// software emulation.
	if took > 45*time.Second {
		t.Errorf("reconnected only %.0fs after the server returned", took.Seconds())
	}
	a.waitDefaultRoute("-4", "dev ppp0", "after reconnecting")
	a.waitServices("the firewall following ppp0 back", func(s map[string]serviceStatus) bool { return s["firewall"].Outputs["zone/wan"] == "[ppp0 wan]" })
	a.ping("198.51.100.1")
}
