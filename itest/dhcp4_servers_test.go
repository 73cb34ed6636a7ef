package itest

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/roostrouter/roost/itest/isp"
	"github.com/roostrouter/roost/itest/labnet"
)

// The router's DHCPv4 client against the ISP servers from Debian other
// than kea, each with timers of seconds: renewals (unicast, from the
// leased address), rebinds, a restart that lost the leases, and a
// renumbering, all within a test. docs/dhcp-servers.md sums up what each
// server does differently.

// server4Impl is a DHCPv4 server implementation at the ISP, and how it
// behaves where implementations differ.
type server4Impl struct {
	name  string
	tool  string // the binary need looks for
	new   func(dir, ns string) *isp.Server4
	times isp.Times
	lease int // the lease time the router gets (dnsmasq raises short ones to 2 min)
	// ack is how the server logs an ACK it sends, release how it logs a
	// release it takes ("": it does not say).
	ack, release string
	// forgotten is what a line of roostd's log says when this server,
	// restarted without its leases, gets the router's unicast renewal: a
	// NAK, a renewal (the server takes the lease back), or the lease's
	// end (the server stays silent to a lease it does not know, until the
	// router starts over).
	forgotten []string
}

var servers4 = []server4Impl{
	{
		name: "dnsmasq", tool: "dnsmasq", new: isp.NewDnsmasq4,
		times: isp.Times{Renew: 6, Rebind: 12, Valid: 120}, lease: 120,
		ack: "DHCPACK(isp0)", release: "DHCPRELEASE(isp0)",
		// Not authoritative: a unicast renewal of a lease it does not
		// hold is NAKed ("lease not found"), a broadcast one ignored.
		forgotten: []string{"dhcp4: lease lost", "said NAK (renewing)"},
	},
	{
		name: "ISC dhcpd", tool: "dhcpd", new: isp.NewDhcpd4,
		times: isp.Times{Valid: 16}, lease: 16,
		ack: "DHCPACK on", release: "DHCPRELEASE of",
		// Authoritative: it ACKs the renewal of a free address in its
		// range, taking the lease back.
		forgotten: []string{"dhcp4: lease renewed", "rebinding=false"},
	},
	{
		name: "busybox udhcpd", tool: "/bin/busybox", new: isp.NewUdhcpd,
		times: isp.Times{Valid: 16}, lease: 16,
		ack: "sending ACK",
		// It answers a RENEWING or REBINDING request only for a lease it
		// holds.
		forgotten: []string{"dhcp4: lease lost", "the lease expired"},
	},
}

// nft applies an nft script in namespace ns.
func nft(t *testing.T, ns, script string) {
	t.Helper()
	mustRun(t, []byte(script), "ip", "netns", "exec", ns, "nft", "-f", "-")
}

// nftCounter is the packets a named counter of table ip itest in ns saw.
func nftCounter(t *testing.T, ns, name string) int { return nftCounterIn(t, ns, "ip", "itest", name) }

// nftCounterIn is the packets counter name of table family table in ns saw.
func nftCounterIn(t *testing.T, ns, family, table, name string) int {
	t.Helper()
	out := mustRun(t, nil, "ip", "netns", "exec", ns, "nft", "-j", "list", "counter", family, table, name)
	var v struct {
		Nftables []struct {
			Counter *struct {
				Packets int `json:"packets"`
			} `json:"counter"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("nft counter %s in %s: %v\n%s", name, ns, err, out)
	}
	for _, o := range v.Nftables {
		if o.Counter != nil {
			return o.Counter.Packets
		}
	}
	t.Fatalf("no counter %s in %s:\n%s", name, ns, out)
	return 0
}

// probeISP4 counts, at the ISP's kernel, the DHCP requests it delivers
// that came unicast from a leased address: a renewal from 0.0.0.0 never
// gets that far (a martian), and a broadcast is not one.
func probeISP4(t *testing.T, ns string) {
	nft(t, ns, `table ip itest {
	counter unicast_requests {}
	chain in {
		type filter hook input priority 0; policy accept;
		ip saddr != 0.0.0.0 ip daddr != 255.255.255.255 udp sport 68 udp dport 67 counter name unicast_requests
	}
}
`)
}

// probeRouter4 counts the DHCP replies reaching the router's WAN, by how
// they were sent, and has an output chain (block) where a test stops the
// router's unicast requests from leaving: the broadcasts from its raw
// socket do not pass through netfilter.
func probeRouter4(t *testing.T, ns string) {
	nft(t, ns, `table ip itest {
	counter replies_broadcast {}
	counter replies_unicast {}
	counter replies_not_from_67 {}
	chain pre {
		type filter hook prerouting priority -300; policy accept;
		iifname "wan" udp dport 68 ip daddr 255.255.255.255 counter name replies_broadcast
		iifname "wan" udp dport 68 ip daddr != 255.255.255.255 counter name replies_unicast
		iifname "wan" udp dport 68 udp sport != 67 counter name replies_not_from_67
	}
	chain block {
		type filter hook output priority 0; policy accept;
	}
}
`)
}

// replyCounts is what probeRouter4 counted so far.
type replyCounts struct{ broadcast, unicast, notFrom67 int }

func routerReplies(t *testing.T, ns string) replyCounts {
	return replyCounts{nftCounter(t, ns, "replies_broadcast"), nftCounter(t, ns, "replies_unicast"), nftCounter(t, ns, "replies_not_from_67")}
}

func (r replyCounts) minus(o replyCounts) replyCounts {
	return replyCounts{r.broadcast - o.broadcast, r.unicast - o.unicast, r.notFrom67 - o.notFrom67}
}

// timers4 are the lease's renew and rebind times as wan-dhcp publishes
// them.
func timers4(s map[string]serviceStatus) (t1, t2 time.Duration) {
	r, _ := strconv.Atoi(s["wan-dhcp"].Outputs["renew-time"])
	b, _ := strconv.Atoi(s["wan-dhcp"].Outputs["rebind-time"])
	return time.Duration(r) * time.Second, time.Duration(b) * time.Second
}

// savedACK is the ACK roostd keeps in its state folder, to tell what the
// server put in it.
func (a *agentLab) savedACK() *dhcpv4.DHCPv4 {
	a.t.Helper()
	m, err := dhcpv4.FromBytes(a.savedMessage("dhcp4-wan.json", "ack"))
	if err != nil {
		a.t.Fatal(err)
	}
	return m
}

// savedMessage is the server's message a DHCP client keeps in field of its
// state file (file in the state folder).
func (a *agentLab) savedMessage(file, field string) []byte {
	a.t.Helper()
	b, err := os.ReadFile(filepath.Join(a.state, file))
	if err != nil {
		a.t.Fatal(err)
	}
	var s map[string]json.RawMessage
	var msg []byte
	if err := json.Unmarshal(b, &s); err != nil {
		a.t.Fatalf("%s: %v", file, err)
	}
	if err := json.Unmarshal(s[field], &msg); err != nil || len(msg) == 0 {
		a.t.Fatalf("%s has no %s: %v", file, field, err)
	}
	return msg
}

// TestDHCP4Servers: the router behind each ISP server, with the LAN host
// behind NAT. It gets a lease with the server's router, DNS and domain;
// renews it at T1 with a unicast from its address, which the ISP's kernel
// delivers and the server ACKs; when its unicasts cannot leave, rebinds at
// T2 by broadcast; through both, its address, default route and the LAN
// host's way out stay. When the server restarts without its leases, and
// when the ISP renumbers, the router is back on a lease the server holds
// (the log says whether through a NAK or after the lease expired), with
// its default route, and the LAN host reaches the ISP again. Dropped from
// the config, it releases the lease with a unicast the server sees.
func TestDHCP4Servers(t *testing.T) {
	for _, impl := range servers4 {
		t.Run(strings.ReplaceAll(impl.name, " ", "_"), func(t *testing.T) { testServer4(t, impl) })
	}
}

func testServer4(t *testing.T, impl server4Impl) {
	need(t, "ip", "ping", "nft", impl.tool)
	n := labnet.New(fmt.Sprintf("rs%d-", os.Getpid()%100000))
	if err := n.Up(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Down)
	probeISP4(t, n.ISP)
	probeRouter4(t, n.Router)
	srv, err := isp.StartServer4(impl.new(t.TempDir(), n.ISP), isp.V4{Times: impl.times})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		srv.Stop()
		if t.Failed() {
			lines := strings.Split(strings.TrimSpace(srv.Log()), "\n")
			t.Logf("%s's log, last lines:\n%s", impl.name, strings.Join(lines[max(0, len(lines)-60):], "\n"))
		}
	})
	a := startAgentLabOn(t, n, []byte(dhcp4NATConfig), nil)

	// The lease, and what the server put in it.
	s := a.waitServicesFor(30*time.Second, "leased", func(s map[string]serviceStatus) bool {
		return s["wan-dhcp"].State == "up" && s["default"].State == "up"
	})
	first := leaseOf(s)
	out := s["wan-dhcp"].Outputs
	if !strings.HasPrefix(first.address, "192.0.2.1") || out["router"] != "192.0.2.1" || out["dns"] != "192.0.2.53" ||
		out["domain"] != "isp.example" || first.server != "192.0.2.1" || out["lease-time"] != strconv.Itoa(impl.lease) {
		t.Fatalf("the lease from %s: %v", impl.name, out)
	}
	t1, t2 := timers4(s)
	if t1 <= 0 || t2 <= t1 || t2 >= time.Duration(impl.lease)*time.Second {
		t.Fatalf("T1 %v, T2 %v for a lease of %d s", t1, t2, impl.lease)
	}
	if err := a.wanHolds4(first)(s); err != nil {
		t.Fatal(err)
	}
	a.ping("198.51.100.1")
	ack := a.savedACK()
	initial := routerReplies(t, n.Router)
	t.Logf("%s's ACK: server identifier %v, siaddr %v, T1 option %v, T2 option %v; replies while leasing: %+v",
		impl.name, ack.ServerIdentifier(), ack.ServerIPAddr, ack.Options.Has(dhcpv4.OptionRenewTimeValue),
		ack.Options.Has(dhcpv4.OptionRebindingTimeValue), initial)

	// The renewal at T1: unicast from the leased address, delivered by the
	// ISP's kernel and ACKed, well before T2.
	unicasts, acks := nftCounter(t, n.ISP, "unicast_requests"), strings.Count(srv.Log(), impl.ack)
	s = a.holdUntil(time.Until(first.acquired.Add(t2))+time.Second, "renewed", a.wanHolds4(first), func(s map[string]serviceStatus) bool {
		return leaseOf(s).acquired.After(first.acquired)
	})
	if now := time.Now(); !now.Before(first.acquired.Add(t2)) {
		t.Fatalf("renewed only at %v after the lease, T2 is %v", now.Sub(first.acquired).Round(time.Millisecond), t2)
	}
	if !lastRenewal(a.log.String(), "dhcp4: lease renewed", "rebinding=false") {
		t.Fatalf("the lease was not extended by a renewal:\n%s", a.log.String())
	}
	if got := nftCounter(t, n.ISP, "unicast_requests"); got <= unicasts {
		t.Fatalf("the ISP's kernel delivered no unicast request from the router (%d before, %d now)", unicasts, got)
	}
	if got := strings.Count(srv.Log(), impl.ack); got <= acks {
		t.Fatalf("%s logged no ACK for the renewal", impl.name)
	}
	renewal := routerReplies(t, n.Router).minus(initial)
	t.Logf("%s answered the unicast renewal at %v: replies %+v", impl.name, time.Since(first.acquired).Round(time.Millisecond), renewal)
	a.ping("198.51.100.1")

	// The router's unicasts cannot leave (a path that drops them): the
	// renewals fail, and the broadcast at T2 rebinds.
	renewed := leaseOf(s)
	_, t2 = timers4(s)
	nft(t, n.Router, `add rule ip itest block oifname "wan" ip daddr != 255.255.255.255 udp dport 67 drop`)
	s = a.holdUntil(time.Until(renewed.expires), "rebound", a.wanHolds4(first), func(s map[string]serviceStatus) bool {
		return leaseOf(s).acquired.After(renewed.acquired)
	})
	nft(t, n.Router, "flush chain ip itest block")
	if !lastRenewal(a.log.String(), "dhcp4: lease renewed", "rebinding=true") {
		t.Fatalf("the lease was not extended by a rebind:\n%s", a.log.String())
	}
	// To the second: the outputs are whole seconds.
	if at := leaseOf(s).acquired; at.Before(renewed.acquired.Add(t2 - time.Second)) {
		t.Fatalf("rebound %v after the renewal, before T2 (%v)", at.Sub(renewed.acquired), t2)
	}
	t.Logf("%s: rebound %v after the renewal (T2 %v)", impl.name, leaseOf(s).acquired.Sub(renewed.acquired), t2)
	a.ping("198.51.100.1")

	// The server restarts without its leases.
	held := leaseOf(s)
	srv.Stop()
	if err := srv.ForgetLeases(); err != nil {
		t.Fatal(err)
	}
	mark := len(a.log.String())
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	s, down := a.backOnLease(srv, impl, time.Until(held.expires)+20*time.Second, "192.0.2", "after the server lost its leases")
	if !logSays(a.log.String()[mark:], impl.forgotten...) {
		t.Fatalf("after %s lost its leases roostd never says %q:\n%s", impl.name, impl.forgotten, a.log.String())
	}
	t.Logf("%s lost its leases: the router was back on a lease %v after the restart, without an address for %v:\n%s\n%s",
		impl.name, time.Since(srvStarted(srv)).Round(time.Millisecond), down.Round(time.Millisecond), dhcp4Lines(a.log.String()[mark:]), srvLines(srv))
	a.ping("198.51.100.1")

	// The ISP renumbers: 198.18.0.0/24, the old leases forgotten. isp0
	// keeps 192.0.2.1 (the server the router knows), second.
	held = leaseOf(s)
	srv.Stop()
	if err := srv.ForgetLeases(); err != nil {
		t.Fatal(err)
	}
	mark = len(a.log.String())
	mustRun(t, nil, "ip", "-n", n.ISP, "addr", "del", "192.0.2.1/24", "dev", "isp0")
	mustRun(t, nil, "ip", "-n", n.ISP, "addr", "add", "198.18.0.1/24", "dev", "isp0")
	mustRun(t, nil, "ip", "-n", n.ISP, "addr", "add", "192.0.2.1/24", "dev", "isp0")
	if err := srv.Configure(isp.V4{Times: impl.times, Net: "198.18.0"}); err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	s, down = a.backOnLease(srv, impl, time.Until(held.expires)+20*time.Second, "198.18.0", "after the ISP renumbered")
	if addrs := mustRun(t, nil, "ip", "-n", n.Router, "-4", "addr", "show", "dev", "wan"); strings.Contains(addrs, held.address+"/") {
		t.Fatalf("the old address %s stayed on wan:\n%s", held.address, addrs)
	}
	t.Logf("%s renumbered: the router had %s %v after the restart, without an address for %v:\n%s\n%s",
		impl.name, s["wan-dhcp"].Outputs["address"], time.Since(srvStarted(srv)).Round(time.Millisecond), down.Round(time.Millisecond),
		dhcp4Lines(a.log.String()[mark:]), srvLines(srv))
	a.ping("198.51.100.1")

	// Dropped from the config, the client gives the lease back: unicast
	// from the leased address, which the ISP's kernel delivers.
	held = leaseOf(s)
	unicasts = nftCounter(t, n.ISP, "unicast_requests")
	a.reload(strings.NewReplacer(`    "wan-dhcp": { "kind": "dhcp4-client", "link": "wan", "hostname": "rotuer" },
`, "", `    "default": { "kind": "route", "link": "wan", "destination": "0.0.0.0/0", "gateway": { "service": "wan-dhcp", "output": "router" } },
`, "").Replace(dhcp4NATConfig), "wan-dhcp", "default")
	if labnet.Wait(5*time.Second, 100*time.Millisecond, func() bool { return nftCounter(t, n.ISP, "unicast_requests") > unicasts }) != nil {
		t.Fatalf("the ISP's kernel delivered no unicast release of %s", held.address)
	}
	if impl.release != "" && labnet.Wait(5*time.Second, 100*time.Millisecond, func() bool { return strings.Contains(srv.LogSinceStart(), impl.release) }) != nil {
		t.Fatalf("%s logged no release of %s:\n%s", impl.name, held.address, srvLines(srv))
	}
	if addrs := mustRun(t, nil, "ip", "-n", n.Router, "-4", "addr", "show", "dev", "wan"); strings.Contains(addrs, held.address+"/") {
		t.Fatalf("%s stayed on wan after the client was dropped:\n%s", held.address, addrs)
	}
}

// dhcp4Lines is the DHCPv4 client's lines in a piece of roostd's log.
func dhcp4Lines(log string) string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "msg=\"dhcp4: ") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// srvLines is the last of what srv logged since it started, about DHCP
// messages.
func srvLines(srv *isp.Server4) string {
	var out []string
	for _, l := range strings.Split(srv.LogSinceStart(), "\n") {
		if strings.Contains(l, "DHCP") || strings.Contains(l, "sending") {
			out = append(out, "  "+srv.Name+": "+l)
		}
	}
	return strings.Join(out[max(0, len(out)-12):], "\n")
}

// srvStarted is when srv last started, from the mark Start writes in its
// log.
func srvStarted(srv *isp.Server4) time.Time {
	l := srv.LogSinceStart()
	first, _, _ := strings.Cut(strings.TrimPrefix(l, "=== start "), "\n")
	at, _ := time.Parse(time.RFC3339Nano, first)
	return at
}

// backOnLease waits, for at most d, until the router holds a lease that
// the server ACKed since it last started, with an address in net on wan
// and its default route through the net's .1. It
// returns the services and how long wan was without an address. net is the
// /24's first three bytes; the pool is its .100 to .150.
func (a *agentLab) backOnLease(srv *isp.Server4, impl server4Impl, d time.Duration, net, when string) (map[string]serviceStatus, time.Duration) {
	a.t.Helper()
	gw := net + ".1"
	var down time.Duration
	var s map[string]serviceStatus
	last := time.Now()
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		addrs := mustRun(a.t, nil, "ip", "-n", a.net.Router, "-4", "addr", "show", "dev", "wan")
		now := time.Now()
		if !strings.Contains(addrs, "inet ") {
			down += now.Sub(last)
		}
		last = now
		s = a.services()
		out := s["wan-dhcp"].Outputs
		if s["wan-dhcp"].State != "up" || s["default"].State != "up" || !strings.HasPrefix(out["address"], net+".1") ||
			!strings.Contains(srv.LogSinceStart(), impl.ack) || !strings.Contains(addrs, out["address"]+"/24") {
			continue
		}
		routes := mustRun(a.t, nil, "ip", "-n", a.net.Router, "-4", "route", "show", "default")
		if !strings.Contains(routes, "via "+gw+" dev wan") {
			continue
		}
		return s, down
	}
	a.t.Fatalf("%s: no lease from %s in %s within %v: %+v\nroostd:\n%s", when, impl.name, net, d, s["wan-dhcp"], a.log.String())
	return nil, 0
}
