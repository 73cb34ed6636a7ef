package itest

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"

	"github.com/roostrouter/roost/itest/isp"
	"github.com/roostrouter/roost/itest/labnet"
)

// The router's DHCPv6 client against the ISP's servers from Debian
// besides kea: ISC dhcpd -6 (addresses and prefixes, or prefixes only),
// WIDE dhcp6s (prefixes by host entry) and dnsmasq (addresses only). Each
// with lifetimes of seconds, so that renewals, rebinds, a server restarted
// without its leases and a renumbering all happen within the test. What
// each does differently is in docs/dhcp-servers.md.

// startLab6 is the router on dhcp6LANConfig, with the ISP's router
// advertisements (the router's IPv6 default route) and the LAN host's
// link up.
func startLab6(t *testing.T) *agentLab {
	a := startAgentLab(t, []byte(dhcp6LANConfig))
	waitLinkLocal(t, a.net.ISP, "isp0")
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := isp.Advertise(ctx, a.net.ISP, "isp0", time.Second); err != nil {
		t.Fatal(err)
	}
	waitLinkLocal(t, a.net.LAN, "eth0")
	probeReplies6(t, a.net.Router)
	return a
}

// startServer6 starts an ISP's server for the test; its log ends the
// test's output if the test fails.
func startServer6(t *testing.T, d *isp.Daemon, err error) *isp.Daemon {
	t.Helper()
	need(t, d.Args[0])
	if err == nil {
		err = d.Start()
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		d.Stop()
		if t.Failed() {
			lines := strings.Split(strings.TrimSpace(d.Log()), "\n")
			t.Logf("%s's log, last lines:\n%s", d.Name, strings.Join(lines[max(0, len(lines)-60):], "\n"))
		}
	})
	return d
}

// restartServer6 stops d, lets it forget its leases (and its DUID unless
// keepDUID) when forget is set, runs change (a new config) if not nil,
// and starts it again.
func restartServer6(t *testing.T, d *isp.Daemon, forget, keepDUID bool, change func() error) time.Time {
	t.Helper()
	d.Stop()
	if forget {
		if err := isp.Forget6(d, keepDUID); err != nil {
			t.Fatal(err)
		}
	}
	if change != nil {
		if err := change(); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	return time.Now()
}

// bound6 says the router is bound: with an address when addr, a prefix
// starting with pd unless pd is empty (and then none), and the LAN's /64
// announced out of it.
func bound6(addr bool, pd string) func(map[string]serviceStatus) bool {
	return func(s map[string]serviceStatus) bool {
		b := bindingOf(s)
		if s["wan-dhcp6"].State != "up" || (b.address != "") != addr {
			return false
		}
		if pd == "" {
			return b.prefix == ""
		}
		return strings.HasPrefix(b.prefix, pd) && s["lan-ra"].State == "up" && within(s["lan-ra"].Outputs["prefix"], s["wan-dhcp6"].Outputs)
	}
}

// within says whether the LAN's /64 lies in the delegated prefix.
func within(lan string, out map[string]string) bool {
	l, err := netip.ParsePrefix(lan)
	if err != nil {
		return false
	}
	d, err := netip.ParsePrefix(out["prefix/0/prefix"] + "/" + out["prefix/0/len"])
	return err == nil && l.Bits() == 64 && d.Contains(l.Addr())
}

// holds6 is what must stay true while the router renews: an address on
// wan if it had one, a prefix published if it had one, the same ones when
// same.
func (a *agentLab) holds6(first binding6, same bool) func(map[string]serviceStatus) error {
	return func(s map[string]serviceStatus) error {
		b := bindingOf(s)
		if (b.address != "") != (first.address != "") || (b.prefix != "") != (first.prefix != "") ||
			same && (b.address != first.address || b.prefix != first.prefix) {
			return fmt.Errorf("wan-dhcp6 holds address %q and prefix %q, was %q and %q", b.address, b.prefix, first.address, first.prefix)
		}
		if b.address != "" {
			if addrs := mustRun(a.t, nil, "ip", "-n", a.net.Router, "-6", "addr", "show", "dev", "wan"); !strings.Contains(addrs, b.address+"/128") {
				return fmt.Errorf("%s is not on wan:\n%s", b.address, addrs)
			}
		}
		return nil
	}
}

// lanUp6 checks what a user behind the router sees: the router's ::1 in
// the LAN's /64 on br-lan, roostd status naming the delegated prefix, and
// the LAN host's SLAAC address in the /64 reaching the ISP. It returns
// the LAN's /64.
func (a *agentLab) lanUp6(s map[string]serviceStatus) string {
	a.t.Helper()
	lan, routerAddr := s["lan-ra"].Outputs["prefix"], s["lan-ra"].Outputs["address"]
	if addrs := mustRun(a.t, nil, "ip", "-n", a.net.Router, "-6", "addr", "show", "dev", "br-lan"); !strings.Contains(addrs, routerAddr+"/64") {
		a.t.Fatalf("br-lan has no %s/64 in the LAN's %s:\n%s", routerAddr, lan, addrs)
	}
	status := mustRun(a.t, nil, "ip", labnet.In(a.net.Router, roostd, "status", "--root", a.root, "--state", a.state)[1:]...)
	if pd := bindingOf(s).prefix; !strings.Contains(status, pd) {
		a.t.Fatalf("roostd status does not show the delegated prefix %s:\n%s", pd, status)
	}
	a.lanReaches6(lan)
	return lan
}

// renewedAfter says whether the binding was renewed after t (the output
// is whole seconds).
func renewedAfter(t time.Time) func(map[string]serviceStatus) bool {
	return func(s map[string]serviceStatus) bool {
		return s["wan-dhcp6"].State == "up" && !bindingOf(s).renewed.Before(t.Truncate(time.Second))
	}
}

// logSince is what was logged after mark, a length of the log taken
// before.
func (a *agentLab) logSince(mark int) string { return a.log.String()[mark:] }

// routerDUID is the router's DUID, as an ISP that delegates by DUID needs
// it: roostd makes it at its first start and keeps it in $STATE.
func (a *agentLab) routerDUID() []byte {
	a.t.Helper()
	var duid []byte
	if labnet.Wait(10*time.Second, 100*time.Millisecond, func() bool {
		duid, _ = os.ReadFile(filepath.Join(a.state, "dhcp6-duid"))
		return len(duid) > 0
	}) != nil {
		a.t.Fatalf("roostd made no DUID:\n%s", a.log.String())
	}
	return duid
}

// TestDHCP6ServerISCDhcpd: ISC dhcpd -6 gives an address and delegates a
// /56 with T1 and T2 of 0 (its default), so the router renews at half the
// preferred lifetime, not the valid one. Restarted without its leases but
// with its DUID, it answers the Renew; restarted with nothing, not even
// its DUID, it is another server that ignores the Renews, and the Rebind
// at T2 keeps the binding; restarted delegating from another pool, it
// renumbers the LAN. The LAN host reaches the ISP throughout.
func TestDHCP6ServerISCDhcpd(t *testing.T) {
	a := startLab6(t)
	times := isp.Times{Preferred: 10, Valid: 20} // no T1, T2: the client's 5 s and 8 s
	conf := isp.Dhcpd6{Times: times, Addresses: true, PD: "2001:db8:100::"}
	d, err := isp.NewDhcpd6(t.TempDir(), a.net.ISP, conf)
	startServer6(t, d, err)
	s := a.waitServicesFor(30*time.Second, "bound by dhcpd", bound6(true, "2001:db8:100:"))
	first := bindingOf(s)
	if !strings.HasPrefix(first.address, "2001:db8:0:1::1") || s["wan-dhcp6"].Outputs["dns"] != "2001:db8::53" {
		t.Fatalf("the binding: %+v", s["wan-dhcp6"].Outputs)
	}
	t.Logf("dhcpd: %s", a.serverSays6())
	lan := a.lanUp6(s)

	// T1 0: the Renew comes at half the preferred lifetime (5 s), not at
	// half the valid one (10 s).
	s = a.holdUntil(15*time.Second, "renewed", a.holds6(first, true), func(s map[string]serviceStatus) bool {
		return bindingOf(s).renewed.After(first.renewed)
	})
	if dt := bindingOf(s).renewed.Sub(first.renewed); dt < 4*time.Second || dt > 7*time.Second {
		t.Fatalf("renewed %v after the binding: want half the preferred lifetime, 5 s", dt)
	}
	if d.Count("Renew message from") == 0 {
		t.Fatalf("dhcpd saw no Renew:\n%s", d.Log())
	}
	renewed := bindingOf(s)

	// Restarted without its leases, with its DUID: it answers the Renew.
	mark := len(a.log.String())
	at := restartServer6(t, d, true, true, nil)
	s = a.holdUntil(20*time.Second, "renewed by dhcpd without its leases", a.holds6(renewed, false), renewedAfter(at))
	t.Logf("dhcpd without its leases, same DUID: %s", renewalsIn(a.logSince(mark)))
	lan = a.keepsLAN6(s, lan)

	// Restarted with nothing: a new DUID. The Renews (to the old one) go
	// unanswered; the Rebind at T2 gets the binding back.
	mark = len(a.log.String())
	server := bindingOf(s).server
	at = restartServer6(t, d, true, false, nil)
	s = a.holdUntil(20*time.Second, "rebound by dhcpd with a new DUID", a.holds6(renewed, false), func(s map[string]serviceStatus) bool {
		return renewedAfter(at)(s) && bindingOf(s).server != server
	})
	if !logSays(a.logSince(mark), "dhcp6: renewed", "rebinding=true") {
		t.Fatalf("the binding came back without a Rebind:\n%s", a.logSince(mark))
	}
	t.Logf("dhcpd with a new DUID: %s", renewalsIn(a.logSince(mark)))
	lan = a.keepsLAN6(s, lan)

	// Renumbered: dhcpd delegates from another /48 and forgot the old.
	mark = len(a.log.String())
	at = restartServer6(t, d, true, true, func() error {
		conf.PD = "2001:db8:200::"
		return d.Write("dhcpd6.conf", conf.Config())
	})
	s = a.waitServicesFor(20*time.Second, "renumbered", bound6(true, "2001:db8:200:"))
	t.Logf("renumbered %.1f s after dhcpd's restart: %s", time.Since(at).Seconds(), renewalsIn(a.logSince(mark)))
	newLAN := a.lanUp6(s)
	hostAddr6(t, a.net.LAN, "eth0", strings.TrimSuffix(lan, "::/64")+":", func(flags string) bool { return strings.Contains(flags, "deprecated") })
	if newLAN == lan {
		t.Fatalf("the LAN's prefix is still %s", lan)
	}
}

// TestDHCP6ServerPrefixOnly: ISC dhcpd -6 with prefix6 and no range6
// delegates a prefix and gives no address (an IA_NA with NoAddrsAvail).
// The router binds the prefix alone and the LAN host reaches the ISP.
// When the ISP starts giving addresses too (dhcpd restarted with a range,
// its leases kept), the router, which kept asking, has one after its next
// renewal, with the same prefix.
func TestDHCP6ServerPrefixOnly(t *testing.T) {
	a := startLab6(t)
	conf := isp.Dhcpd6{Times: isp.Times{Renew: 4, Rebind: 8, Preferred: 15, Valid: 20}, PD: "2001:db8:100::"}
	d, err := isp.NewDhcpd6(t.TempDir(), a.net.ISP, conf)
	startServer6(t, d, err)
	s := a.waitServicesFor(30*time.Second, "bound to a prefix alone", bound6(false, "2001:db8:100:"))
	first := bindingOf(s)
	if addrs := mustRun(t, nil, "ip", "-n", a.net.Router, "-6", "addr", "show", "dev", "wan", "scope", "global"); strings.TrimSpace(addrs) != "" {
		t.Fatalf("wan has a global address with no IA_NA granted:\n%s", addrs)
	}
	if logSays(a.log.String(), "IA_NA cannot be nil") {
		t.Fatalf("roostd tried insomniacslk's Request:\n%s", a.log.String())
	}
	t.Logf("dhcpd, prefixes only: %s", a.serverSays6())
	a.lanUp6(s)
	a.holdUntil(10*time.Second, "renewed", a.holds6(first, false), renewedAfter(first.renewed.Add(time.Second)))

	at := restartServer6(t, d, false, true, func() error {
		conf.Addresses = true
		return d.Write("dhcpd6.conf", conf.Config())
	})
	s = a.waitServicesFor(15*time.Second, "given an address too", bound6(true, "2001:db8:100:"))
	if got := bindingOf(s); got.prefix != first.prefix || !strings.HasPrefix(got.address, "2001:db8:0:1::1") {
		t.Fatalf("after the ISP added addresses: %+v, was %+v", got, first)
	}
	t.Logf("an address %.1f s after dhcpd offered them: %s", time.Since(at).Seconds(), renewalsIn(a.log.String()))
	if addrs := mustRun(t, nil, "ip", "-n", a.net.Router, "-6", "addr", "show", "dev", "wan"); !strings.Contains(addrs, bindingOf(s).address+"/128") {
		t.Fatalf("the address is not on wan:\n%s", addrs)
	}
	a.lanUp6(s)
}

// TestDHCP6ServerWIDE: WIDE dhcp6s delegates a /56 by a host entry keyed
// by the router's DUID, and gives no address. It keeps no binding across
// a restart (its DUID it keeps): the Renew after one gets NoBinding, and
// the router sends a Request at once (RFC 8415 18.2.10.1) rather than
// renewing a binding the server no longer has until T2. A new prefix in
// the host entry renumbers the LAN the same way.
func TestDHCP6ServerWIDE(t *testing.T) {
	need(t, "mount")
	a := startLab6(t)
	host := isp.Dhcp6sHost{DUID: a.routerDUID(), Prefix: "2001:db8:100:100::/56", Preferred: 10, Valid: 20}
	d, err := isp.NewDhcp6s(t.TempDir(), a.net.ISP, isp.Dhcp6s{Hosts: []isp.Dhcp6sHost{host}})
	startServer6(t, d, err)
	s := a.waitServicesFor(30*time.Second, "delegated a prefix", bound6(false, "2001:db8:100:100::"))
	first := bindingOf(s)
	t.Logf("dhcp6s: %s", a.serverSays6())
	lan := a.lanUp6(s)
	a.holdUntil(15*time.Second, "renewed", a.holds6(first, true), renewedAfter(first.renewed.Add(time.Second)))

	// Its Renews so far got the prefix renewed (and NoBinding for the
	// IA_NA the router asks for each time, which needs no Request).
	if logSays(a.log.String(), "requesting") {
		t.Fatalf("a Request before dhcp6s lost its bindings:\n%s", a.log.String())
	}

	// dhcp6s restarted: no binding, and the router's Renew says so.
	mark := len(a.log.String())
	at := restartServer6(t, d, false, true, nil)
	s = a.holdUntil(20*time.Second, "bound again after dhcp6s's restart", a.holds6(first, true), renewedAfter(at))
	log := a.logSince(mark)
	if !logSays(log, "requesting", "IA_PD NoBinding") || !logSays(log, "dhcp6: renewed", "by=request") {
		t.Fatalf("no Request after dhcp6s said NoBinding:\n%s", log)
	}
	t.Logf("dhcp6s restarted: %s", renewalsIn(log))
	lan = a.keepsLAN6(s, lan)

	// The ISP moves the router to another prefix.
	at = restartServer6(t, d, false, true, func() error {
		host.Prefix = "2001:db8:200:100::/56"
		return d.Write("dhcp6s.conf", isp.Dhcp6s{Hosts: []isp.Dhcp6sHost{host}}.Config())
	})
	s = a.waitServicesFor(20*time.Second, "renumbered", bound6(false, "2001:db8:200:100::"))
	t.Logf("renumbered %.1f s after dhcp6s's restart: %s", time.Since(at).Seconds(), renewalsIn(a.log.String()))
	a.lanUp6(s)
	hostAddr6(t, a.net.LAN, "eth0", strings.TrimSuffix(lan, "::/64")+":", func(flags string) bool { return strings.Contains(flags, "deprecated") })
}

// TestDHCP6ServerDnsmasq: dnsmasq gives an address (IA_NA) and delegates
// nothing. The router binds the address alone and reaches the ISP from
// it. dnsmasq leases are 2 minutes at least, T1 half of that: the test
// restarts dnsmasq without its leases (its DUID kept) and waits for the
// Renew at T1, which must leave the router with an address.
func TestDHCP6ServerDnsmasq(t *testing.T) {
	a := startLab6(t)
	d := startServer6(t, isp.NewDnsmasq6(t.TempDir(), a.net.ISP, isp.Dnsmasq6{Lease: 120}), nil)
	s := a.waitServicesFor(30*time.Second, "given an address", bound6(true, ""))
	first := bindingOf(s)
	if !strings.HasPrefix(first.address, "2001:db8:0:1::1") {
		t.Fatalf("the binding: %+v", s["wan-dhcp6"].Outputs)
	}
	t.Logf("dnsmasq: %s", a.serverSays6())
	a.routerReaches6(first.address)

	mark := len(a.log.String())
	at := restartServer6(t, d, true, true, nil)
	s = a.holdUntil(80*time.Second, "renewed by dnsmasq without its leases", a.holds6(first, false), renewedAfter(at))
	t.Logf("dnsmasq without its leases: address %s, was %s: %s", bindingOf(s).address, first.address, renewalsIn(a.logSince(mark)))
	a.routerReaches6(bindingOf(s).address)
}

// TestDHCP6ServerKeaForgets: kea-dhcp6 (the lab's usual server) restarted
// without its lease file, its DUID the same: the router's next Renew keeps
// the binding, and the LAN its prefix and its way out.
func TestDHCP6ServerKeaForgets(t *testing.T) {
	a := startLab6(t)
	k := startKea(t, a.net.ISP, "kea-dhcp6", isp.Kea6Server{Times: rebindTimes6, PD: "2001:db8:100::"}.Config())
	s := a.waitServicesFor(30*time.Second, "bound by kea", bound6(true, "2001:db8:100:"))
	first := bindingOf(s)
	t.Logf("kea: %s", a.serverSays6())
	lan := a.lanUp6(s)

	mark := len(a.log.String())
	k.Stop()
	if err := os.Remove(filepath.Join(k.Dir, "leases6.csv")); err != nil {
		t.Fatal(err)
	}
	restart(t, k)
	at := time.Now()
	s = a.holdUntil(15*time.Second, "renewed by kea without its leases", a.holds6(first, false), renewedAfter(at))
	t.Logf("kea without its leases: address %s, was %s: %s", bindingOf(s).address, first.address, renewalsIn(a.logSince(mark)))
	a.keepsLAN6(s, lan)
}

// routerReaches6 checks that the router reaches the ISP from its WAN
// address.
func (a *agentLab) routerReaches6(addr string) {
	a.t.Helper()
	if labnet.Wait(5*time.Second, 200*time.Millisecond, func() bool {
		return run(a.t, nil, nil, "ip", labnet.In(a.net.Router, "ping", "-c", "1", "-W", "1", "-I", addr, "2001:db8:0:1::1")[1:]...).code == 0
	}) != nil {
		a.t.Fatalf("the router does not reach the ISP from %s:\n%s", addr, mustRun(a.t, nil, "ip", "-n", a.net.Router, "-6", "route"))
	}
}

// keepsLAN6 checks that the LAN kept its /64 across a server's restart
// and still reaches the ISP; it returns the /64.
func (a *agentLab) keepsLAN6(s map[string]serviceStatus, lan string) string {
	a.t.Helper()
	if got := s["lan-ra"].Outputs["prefix"]; got != lan {
		a.t.Fatalf("the LAN's prefix is %s, was %s", got, lan)
	}
	a.lanReaches6(lan)
	return lan
}

// renewalsIn is roostd's DHCPv6 lines of log, for the test's output: what
// the server answered and what the client did.
func renewalsIn(log string) string {
	var out []string
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, "dhcp6:") {
			out = append(out, line)
		}
	}
	return "\n" + strings.Join(out, "\n")
}

// probeReplies6 counts, in the router's namespace, the DHCPv6 messages
// that reach the client's port, by the server's source port: 547, or
// another (RFC 8415 does not fix it; a client that insisted on 547 would
// miss those).
func probeReplies6(t *testing.T, ns string) {
	t.Helper()
	mustRun(t, []byte(`table ip6 itest6 {
	counter from547 {}
	counter fromother {}
	counter reconfigure {}
	chain in {
		type filter hook input priority -300;
		udp dport 546 udp sport 547 counter name from547
		udp dport 546 udp sport != 547 counter name fromother
		udp dport 546 @th,64,8 10 counter name reconfigure
	}
}
`), "ip", "netns", "exec", ns, "nft", "-f", "-")
}

// replies6 is what probeReplies6 counted: from port 547, from others,
// and Reconfigure messages.
func replies6(t *testing.T, ns string) (from547, other, reconfigure int) {
	t.Helper()
	count := func(name string) int { return nftCounterIn(t, ns, "ip6", "itest6", name) }
	return count("from547"), count("fromother"), count("reconfigure")
}

// serverSays6 is, for the test's output and docs/dhcp-servers.md, what the
// server put in the binding roostd keeps: its DUID, and each IA's T1 and
// T2 with the lifetimes. It fails the test if the router heard nothing.
func (a *agentLab) serverSays6() string {
	a.t.Helper()
	m, err := dhcpv6.MessageFromBytes(a.savedMessage("dhcp6-wan.json", "reply"))
	if err != nil {
		a.t.Fatal(err)
	}
	from547, other, reconfigure := replies6(a.t, a.net.Router)
	if from547+other == 0 {
		a.t.Fatal("no DHCPv6 message reached the router's port 546")
	}
	out := fmt.Sprintf("server %s; replies from port 547: %d, from other ports: %d; Reconfigure: %d", m.Options.ServerID(), from547, other, reconfigure)
	for _, ia := range m.Options.IANA() {
		out += fmt.Sprintf("; IA_NA T1 %v T2 %v", ia.T1, ia.T2)
		for _, x := range ia.Options.Addresses() {
			out += fmt.Sprintf(" %s preferred %v valid %v", x.IPv6Addr, x.PreferredLifetime, x.ValidLifetime)
		}
	}
	for _, ia := range m.Options.IAPD() {
		out += fmt.Sprintf("; IA_PD T1 %v T2 %v", ia.T1, ia.T2)
		for _, p := range ia.Options.Prefixes() {
			out += fmt.Sprintf(" %s preferred %v valid %v", p.Prefix, p.PreferredLifetime, p.ValidLifetime)
		}
	}
	return out
}
