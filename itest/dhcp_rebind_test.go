package itest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/roostrouter/roost/itest/isp"
	"github.com/roostrouter/roost/itest/labnet"
)

// The renewal paths beyond a plain renewal: DHCPv4 REBINDING and NAK,
// DHCPv6 Rebind and the end of a binding. The ISP's timers are seconds, so
// T1, T2 and the end of a lease all fall inside a test.

// dhcp4NATConfig is the router on a DHCPv4 WAN with the lab's LAN host
// behind NAT: the host reaches the ISP only while the router holds a lease.
const dhcp4NATConfig = `{
  "board": "lab",
  "services": {
    "wan": { "kind": "link", "interface": "wan" },
    "wan-dhcp": { "kind": "dhcp4-client", "link": "wan", "hostname": "rotuer" },
    "default": { "kind": "route", "link": "wan", "destination": "0.0.0.0/0", "gateway": { "service": "wan-dhcp", "output": "router" } },
    "lan": { "kind": "bridge", "name": "br-lan" },
    "lan0": { "kind": "link", "interface": "lan0", "bridge": "lan" },
    "lan-addr": { "kind": "address", "link": "lan", "address": "192.168.1.1/24" },
    "forwarding": { "kind": "sysctl", "values": { "net.ipv4.ip_forward": "1" } },
    "firewall": { "kind": "firewall", "zones": { "wan": { "services": ["wan"] }, "lan": { "services": ["lan"] } } }
  }
}`

// rebindTimes4 are the ISP's DHCPv4 timers here. A client that let its
// renewal's retransmissions run past T2 would rebind too late for this
// lease (the exchange alone takes 2+4+8 s).
var rebindTimes4 = isp.Times{Renew: 4, Rebind: 8, Valid: 16}

// lease4 is what the router's DHCPv4 client publishes, and when the lease
// it holds was granted (to the second: the outputs are whole seconds).
type lease4 struct {
	address, server string
	acquired        time.Time
	expires         time.Time
}

func leaseOf(s map[string]serviceStatus) lease4 {
	out := s["wan-dhcp"].Outputs
	expires, _ := strconv.ParseInt(out["expires"], 10, 64)
	secs, _ := strconv.Atoi(out["lease-time"])
	e := time.Unix(expires, 0)
	return lease4{address: out["address"], server: out["server"], expires: e, acquired: e.Add(-time.Duration(secs) * time.Second)}
}

// wanHolds4 checks that the router still has l's address on wan, its
// default route and the same outputs.
func (a *agentLab) wanHolds4(l lease4) func(map[string]serviceStatus) error {
	return func(s map[string]serviceStatus) error {
		if got := s["wan-dhcp"].Outputs["address"]; got != l.address {
			return fmt.Errorf("wan-dhcp publishes address %q, was %s", got, l.address)
		}
		if addrs := mustRun(a.t, nil, "ip", "-n", a.net.Router, "-4", "addr", "show", "dev", "wan"); !strings.Contains(addrs, l.address+"/24") {
			return fmt.Errorf("%s is no longer on wan:\n%s", l.address, addrs)
		}
		if routes := mustRun(a.t, nil, "ip", "-n", a.net.Router, "-4", "route", "show", "default"); !strings.Contains(routes, "via 192.0.2.1 dev wan") {
			return fmt.Errorf("no default route:\n%s", routes)
		}
		return nil
	}
}

// holdUntil polls the router for at most d until done holds, failing the
// test at the first poll where keep does not.
func (a *agentLab) holdUntil(d time.Duration, what string, keep func(map[string]serviceStatus) error, done func(map[string]serviceStatus) bool) map[string]serviceStatus {
	a.t.Helper()
	var s map[string]serviceStatus
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if s = a.services(); len(s) == 0 {
			continue
		}
		if err := keep(s); err != nil {
			a.t.Fatalf("while waiting until %s: %v\nroostd:\n%s", what, err, a.log.String())
		}
		if done(s) {
			return s
		}
	}
	a.t.Fatalf("never %s (%v): %+v\nroostd:\n%s", what, d, s, a.log.String())
	return nil
}

// logSays reports whether a line of log holds all of words.
func logSays(log string, words ...string) bool {
	for _, line := range strings.Split(log, "\n") {
		all := true
		for _, w := range words {
			all = all && strings.Contains(line, w)
		}
		if all {
			return true
		}
	}
	return false
}

// lastRenewal reports whether the last line of log that says msg also
// says how.
func lastRenewal(log, msg, how string) bool {
	lines := strings.Split(log, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], msg) {
			return strings.Contains(lines[i], how)
		}
	}
	return false
}

// beforeT1 fails the test if the lease's T1 has passed: the step just
// done had to come before the client's first renewal.
func beforeT1(t *testing.T, acquired time.Time, renew int, what string) {
	t.Helper()
	if t1 := acquired.Add(time.Duration(renew) * time.Second); !time.Now().Before(t1) {
		t.Fatalf("%s took until %v after the lease, past T1 (%d s): this machine is too slow for the test's timers", what, time.Since(acquired).Round(time.Millisecond), renew)
	}
}

// TestDHCP4Rebind: the ISP's server that leased the router's address (at
// 192.0.2.67) is gone at T1, its address with it; another server, at
// 192.0.2.1 with the same lease database, took over. The router's renewals
// go to the old server and get no answer; at T2 its broadcast REQUEST
// (REBINDING) reaches the new one, which extends the lease. The address,
// the default route, the outputs and the LAN host's way out stay
// throughout, there is no new DISCOVER, and the next renewal goes to the
// new server.
func TestDHCP4Rebind(t *testing.T) {
	a := startAgentLab(t, []byte(dhcp4NATConfig))
	mustRun(t, nil, "ip", "-n", a.net.ISP, "addr", "add", "192.0.2.67/24", "dev", "isp0")
	k := startKea(t, a.net.ISP, "kea-dhcp4", isp.Kea4Server{Times: rebindTimes4, Address: "192.0.2.67"}.Config())
	s := a.waitServices("leased from 192.0.2.67", func(s map[string]serviceStatus) bool {
		return s["wan-dhcp"].State == "up" && s["default"].State == "up"
	})
	first := leaseOf(s)
	if first.server != "192.0.2.67" || !strings.HasPrefix(first.address, "192.0.2.1") {
		t.Fatalf("the first lease: %+v", s["wan-dhcp"].Outputs)
	}

	// The old server goes, before T1; the new one starts.
	k.Stop()
	mustRun(t, nil, "ip", "-n", a.net.ISP, "addr", "del", "192.0.2.67/24", "dev", "isp0")
	beforeT1(t, first.acquired, rebindTimes4.Renew, "stopping the first server")
	discovers := k.Count("DHCP4_LEASE_ADVERT")
	if err := k.Configure(isp.Kea4Server{Times: rebindTimes4}.Config()); err != nil {
		t.Fatal(err)
	}
	restart(t, k)
	a.ping("198.51.100.1")

	// Renewals to 192.0.2.67 go unanswered; the REBINDING request at T2
	// gets the new server's ACK, before the lease ends.
	s = a.holdUntil(time.Until(first.expires)+time.Second, "rebound to 192.0.2.1", a.wanHolds4(first), func(s map[string]serviceStatus) bool {
		return s["wan-dhcp"].Outputs["server"] == "192.0.2.1"
	})
	rebound := leaseOf(s)
	if !rebound.expires.After(first.expires) || s["wan-dhcp"].State != "up" {
		t.Fatalf("after the rebind: %+v, first lease expired at %v", s["wan-dhcp"], first.expires)
	}
	if !lastRenewal(a.log.String(), "dhcp4: lease renewed", "rebinding=true") {
		t.Fatalf("roostd does not say it rebound:\n%s", a.log.String())
	}
	if n := k.Count("DHCP4_LEASE_ADVERT"); n != discovers {
		t.Fatalf("the router sent a DISCOVER (kea offered %d times, %d before) instead of keeping its lease:\n%s", n, discovers, a.log.String())
	}
	a.ping("198.51.100.1")

	// The next renewal, at the new T1, goes to the new server and is
	// answered: the lease moves on without another rebind.
	s = a.holdUntil(time.Until(rebound.expires), "renewed by 192.0.2.1", a.wanHolds4(first), func(s map[string]serviceStatus) bool {
		return leaseOf(s).expires.After(rebound.expires)
	})
	if !lastRenewal(a.log.String(), "dhcp4: lease renewed", "rebinding=false") {
		t.Fatalf("the lease was not extended by a renewal with the new server:\n%s", a.log.String())
	}
	if got := leaseOf(s); got.server != "192.0.2.1" || got.address != first.address {
		t.Fatalf("after the renewal: %+v", s["wan-dhcp"].Outputs)
	}
}

// TestDHCP4NAK: the ISP renumbers its access network: its server restarts
// without its lease database, serving 198.18.0.0/24 instead (its old
// address, 192.0.2.1, stays for the transition), and NAKs the router's
// renewal at T1, for an address in no subnet it knows. The router drops
// its address at once, long before the lease would have ended, and starts
// over with a DISCOVER: it has an address in the new subnet, its default
// route through the new gateway, and the LAN host reaches the ISP through
// it.
func TestDHCP4NAK(t *testing.T) {
	a := startAgentLab(t, []byte(dhcp4NATConfig))
	k := startKea(t, a.net.ISP, "kea-dhcp4", isp.Kea4Server{Times: rebindTimes4}.Config())
	s := a.waitServices("leased", func(s map[string]serviceStatus) bool {
		return s["wan-dhcp"].State == "up" && s["default"].State == "up"
	})
	first := leaseOf(s)
	if !strings.HasPrefix(first.address, "192.0.2.1") {
		t.Fatalf("the first lease: %+v", s["wan-dhcp"].Outputs)
	}
	a.ping("198.51.100.1")

	k.Stop()
	if err := os.Remove(filepath.Join(k.Dir, "leases4.csv")); err != nil {
		t.Fatal(err)
	}
	// The new address first: kea picks the subnet of a DISCOVER by isp0's
	// first address.
	mustRun(t, nil, "ip", "-n", a.net.ISP, "addr", "del", "192.0.2.1/24", "dev", "isp0")
	mustRun(t, nil, "ip", "-n", a.net.ISP, "addr", "add", "198.18.0.1/24", "dev", "isp0")
	mustRun(t, nil, "ip", "-n", a.net.ISP, "addr", "add", "192.0.2.1/24", "dev", "isp0")
	if err := k.Configure(isp.Kea4Server{Times: rebindTimes4, Net: "198.18.0"}.Config()); err != nil {
		t.Fatal(err)
	}
	restart(t, k)
	beforeT1(t, first.acquired, rebindTimes4.Renew, "restarting the server")

	s = a.waitServicesFor(time.Until(first.expires), "leased in the new subnet before the old lease's end", func(s map[string]serviceStatus) bool {
		return strings.HasPrefix(s["wan-dhcp"].Outputs["address"], "198.18.0.1") && s["wan-dhcp"].State == "up" && s["default"].State == "up"
	})
	if !logSays(a.log.String(), "dhcp4: lease lost", "said NAK (renewing)") {
		t.Fatalf("roostd does not say the server NAKed its renewal:\n%s", a.log.String())
	}
	next := leaseOf(s)
	addrs := mustRun(t, nil, "ip", "-n", a.net.Router, "-4", "addr", "show", "dev", "wan")
	if strings.Contains(addrs, first.address+"/") || !strings.Contains(addrs, next.address+"/24") {
		t.Fatalf("wan after the NAK, the lease was %s and is %s:\n%s", first.address, next.address, addrs)
	}
	if routes := mustRun(t, nil, "ip", "-n", a.net.Router, "-4", "route", "show", "default"); !strings.Contains(routes, "via 198.18.0.1 dev wan") {
		t.Fatalf("no default route through the new gateway:\n%s", routes)
	}
	a.ping("198.51.100.1")
}

// dhcp6LANConfig is the router on a DHCPv6 WAN, the delegated prefix's /64
// number 1 announced on the LAN; the lab's LAN host reaches the ISP over
// IPv6 only from its address in that prefix.
const dhcp6LANConfig = `{
  "board": "lab",
  "services": {
    "wan": { "kind": "link", "interface": "wan" },
    "wan-dhcp6": { "kind": "dhcp6-client", "link": "wan", "prefixHint": 56 },
    "lan": { "kind": "bridge", "name": "br-lan" },
    "lan0": { "kind": "link", "interface": "lan0", "bridge": "lan" },
    "lan-addr6": { "kind": "address", "link": "lan", "address": "fd00:1::1/64" },
    "lan-ra": { "kind": "ra", "link": "lan", "prefixFrom": "wan-dhcp6", "subnet": 1, "interval": "2s", "mtu": 1500 },
    "forwarding": { "kind": "sysctl", "values": { "net.ipv6.conf.all.forwarding": "1" } }
  }
}`

// rebindTimes6 are the ISP's DHCPv6 timers here. A Renew whose
// retransmissions ran past T2 (1+2+4 s) would rebind too late.
var rebindTimes6 = isp.Times{Renew: 3, Rebind: 6, Preferred: 10, Valid: 12}

// binding6 is what the router's DHCPv6 client publishes.
type binding6 struct {
	address, prefix, server string
	renewed                 time.Time
}

func bindingOf(s map[string]serviceStatus) binding6 {
	out := s["wan-dhcp6"].Outputs
	renewed, _ := strconv.ParseInt(out["renewed"], 10, 64)
	return binding6{address: out["address/0/address"], prefix: out["prefix/0/prefix"], server: out["server"], renewed: time.Unix(renewed, 0)}
}

// ends is when the binding's valid lifetime ends (to the second, never
// later than the client's own count).
func (b binding6) ends() time.Time {
	return b.renewed.Add(time.Duration(rebindTimes6.Valid) * time.Second)
}

// wanHolds6 checks that the router still has b's address on wan and
// publishes the same address and prefix.
func (a *agentLab) wanHolds6(b binding6) func(map[string]serviceStatus) error {
	return func(s map[string]serviceStatus) error {
		if got := bindingOf(s); got.address != b.address || got.prefix != b.prefix {
			return fmt.Errorf("wan-dhcp6 publishes address %q and prefix %q, was %s and %s", got.address, got.prefix, b.address, b.prefix)
		}
		if addrs := mustRun(a.t, nil, "ip", "-n", a.net.Router, "-6", "addr", "show", "dev", "wan"); !strings.Contains(addrs, b.address+"/128") {
			return fmt.Errorf("%s is no longer on wan:\n%s", b.address, addrs)
		}
		return nil
	}
}

// lanReaches6 waits for the LAN host's address in the LAN's prefix and
// checks that it reaches the ISP.
func (a *agentLab) lanReaches6(lanPrefix string) {
	a.t.Helper()
	hostAddr6(a.t, a.net.LAN, "eth0", strings.TrimSuffix(lanPrefix, "::/64")+":", func(flags string) bool {
		return !strings.Contains(flags, "tentative") && !strings.Contains(flags, "deprecated")
	})
	a.ping("2001:db8:0:1::1")
}

// TestDHCP6RebindAndExpiry: the ISP replaces its DHCPv6 server before T1
// (another DUID, the same lease database). The new server ignores the
// router's Renews, meant for the old one, and answers its Rebind at T2: the
// address and the delegated prefix stay, and the LAN host keeps reaching
// the ISP. Then the ISP's server is gone for good: when the valid lifetime
// ends, and not before, the router takes its address off wan, its outputs
// go and the LAN loses the prefix; it solicits until a server answers
// again, and everything comes back.
func TestDHCP6RebindAndExpiry(t *testing.T) {
	a := startAgentLab(t, []byte(dhcp6LANConfig))
	// The router's IPv6 default route comes from the ISP's advertisements.
	waitLinkLocal(t, a.net.ISP, "isp0")
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := isp.Advertise(ctx, a.net.ISP, "isp0", time.Second); err != nil {
		t.Fatal(err)
	}
	k := startKea(t, a.net.ISP, "kea-dhcp6", isp.Kea6Server{Times: rebindTimes6, PD: "2001:db8:100::"}.Config())
	s := a.waitServicesFor(20*time.Second, "bound", func(s map[string]serviceStatus) bool {
		return s["wan-dhcp6"].State == "up" && s["lan-ra"].State == "up"
	})
	first := bindingOf(s)
	if !strings.Contains(first.server, "02:00:00:00:00:01") || !strings.HasPrefix(first.address, "2001:db8:0:1::1") || !strings.HasPrefix(first.prefix, "2001:db8:100:") {
		t.Fatalf("the first binding: %+v", s["wan-dhcp6"].Outputs)
	}

	// Another server replaces the first, before T1.
	k.Stop()
	beforeT1(t, first.renewed, rebindTimes6.Renew, "stopping the first server")
	if err := k.Configure(isp.Kea6Server{Times: rebindTimes6, PD: "2001:db8:100::", ServerMAC: "02:00:00:00:00:02"}.Config()); err != nil {
		t.Fatal(err)
	}
	restart(t, k)
	lanPrefix := s["lan-ra"].Outputs["prefix"]
	a.lanReaches6(lanPrefix)

	// The Renews go unanswered; the Rebind at T2 gets the new server's
	// Reply, before the binding ends.
	s = a.holdUntil(time.Until(first.ends()), "rebound by the new server", a.wanHolds6(first), func(s map[string]serviceStatus) bool {
		return strings.Contains(bindingOf(s).server, "02:00:00:00:00:02")
	})
	rebound := bindingOf(s)
	if !rebound.renewed.After(first.renewed) || s["wan-dhcp6"].State != "up" {
		t.Fatalf("after the rebind: %+v", s["wan-dhcp6"])
	}
	if !lastRenewal(a.log.String(), "dhcp6: renewed", "rebinding=true") {
		t.Fatalf("roostd does not say it rebound:\n%s", a.log.String())
	}
	if got := a.services()["lan-ra"].Outputs["prefix"]; got != lanPrefix {
		t.Fatalf("the LAN's prefix is %s after the rebind, was %s", got, lanPrefix)
	}
	a.lanReaches6(lanPrefix)

	// The ISP's server is gone: the binding holds until its valid lifetime
	// ends, then the router lets go of it.
	k.Stop()
	s = a.holdUntil(time.Until(rebound.ends())+3*time.Second, "without a binding after its end", func(s map[string]serviceStatus) error {
		if bindingOf(s).address == "" {
			return nil // gone: done says whether that is all right
		}
		return a.wanHolds6(rebound)(s)
	}, func(s map[string]serviceStatus) bool {
		return bindingOf(s).address == ""
	})
	if gone := time.Now(); gone.Before(rebound.ends()) {
		t.Fatalf("the binding was dropped at %v, before its valid lifetime ended at %v", gone, rebound.ends())
	}
	if out := s["wan-dhcp6"].Outputs; len(out) != 0 || s["wan-dhcp6"].State == "up" {
		t.Fatalf("wan-dhcp6 after its binding ended: %+v", s["wan-dhcp6"])
	}
	if addrs := mustRun(t, nil, "ip", "-n", a.net.Router, "-6", "addr", "show", "dev", "wan"); strings.Contains(addrs, rebound.address) {
		t.Fatalf("%s is still on wan after its binding ended:\n%s", rebound.address, addrs)
	}
	var lanAddrs string
	if labnet.Wait(5*time.Second, 200*time.Millisecond, func() bool {
		lanAddrs = mustRun(t, nil, "ip", "-n", a.net.LAN, "-6", "addr", "show", "dev", "eth0")
		return !strings.Contains(lanAddrs, strings.TrimSuffix(lanPrefix, "::/64")+":")
	}) != nil {
		t.Fatalf("the LAN host still has an address in %s after the delegation ended:\n%s", lanPrefix, lanAddrs)
	}
	if labnet.Reaches(a.net.LAN, "2001:db8:0:1::1") {
		t.Fatal("the LAN host still reaches the ISP over IPv6 after the delegation ended")
	}
	if !logSays(a.log.String(), "dhcp6: binding lost", "expired") {
		t.Fatalf("roostd does not say the binding expired:\n%s", a.log.String())
	}

	// A server again: the router's Solicit (kea advertises) gets it a
	// binding, and the LAN host its way out.
	adverts := k.Count("DHCP6_PD_LEASE_ADVERT")
	restart(t, k)
	s = a.waitServicesFor(20*time.Second, "bound again", func(s map[string]serviceStatus) bool {
		return s["wan-dhcp6"].State == "up" && s["lan-ra"].State == "up"
	})
	if k.Count("DHCP6_PD_LEASE_ADVERT") == adverts {
		t.Fatalf("bound again without a Solicit:\n%s", a.log.String())
	}
	if b := bindingOf(s); !strings.HasPrefix(b.address, "2001:db8:0:1::1") || !strings.HasPrefix(b.prefix, "2001:db8:100:") {
		t.Fatalf("the new binding: %+v", s["wan-dhcp6"].Outputs)
	}
	a.lanReaches6(s["lan-ra"].Outputs["prefix"])
}

// TestDHCP4InitReboot: the router comes back (its WAN link bare) with a
// saved lease. The client asks the network to confirm it (INIT-REBOOT)
// instead of using it blindly or starting over: the server's ACK keeps
// the address without a DISCOVER; after the ISP renumbered while the
// router was off, the client gets an address in the new subnet within
// seconds, not at the old lease's renewal time half an hour later.
func TestDHCP4InitReboot(t *testing.T) {
	a := startAgentLab(t, []byte(dhcp4NATConfig))
	k := startKea(t, a.net.ISP, "kea-dhcp4", isp.Kea4Server{Times: isp.Lab}.Config())
	leased := func(prefix string) func(s map[string]serviceStatus) bool {
		return func(s map[string]serviceStatus) bool {
			return strings.HasPrefix(s["wan-dhcp"].Outputs["address"], prefix) && s["wan-dhcp"].State == "up" && s["default"].State == "up"
		}
	}
	first := leaseOf(a.waitServices("leased", leased("192.0.2.1")))
	// A reboot: roostd stops, the link comes back without its address.
	reboot := func() {
		a.stop()
		mustRun(t, nil, "ip", "-n", a.net.Router, "addr", "flush", "dev", "wan")
		a.start()
	}

	discovers := k.Count("DHCP4_LEASE_ADVERT")
	reboot() // a.log is the new roostd's
	again := leaseOf(a.waitServicesFor(10*time.Second, "confirmed", leased("192.0.2.1")))
	if again.address != first.address || !logSays(a.log.String(), "lease confirmed (INIT-REBOOT)") {
		t.Fatalf("after a reboot the lease is %+v, was %+v:\n%s", again, first, a.log.String())
	}
	if n := k.Count("DHCP4_LEASE_ADVERT"); n != discovers {
		t.Fatalf("the confirmed lease cost a DISCOVER (%d offers, were %d)", n, discovers)
	}
	a.ping("198.51.100.1")

	// The ISP renumbers while the router is off.
	a.stop()
	k.Stop()
	mustRun(t, nil, "ip", "-n", a.net.ISP, "addr", "del", "192.0.2.1/24", "dev", "isp0")
	mustRun(t, nil, "ip", "-n", a.net.ISP, "addr", "add", "198.18.0.1/24", "dev", "isp0")
	if err := k.Configure(isp.Kea4Server{Times: isp.Lab, Net: "198.18.0"}.Config()); err != nil {
		t.Fatal(err)
	}
	restart(t, k)
	reboot()
	// kea, not authoritative, stays silent about an address it does not
	// serve: the client asks anew once the INIT-REBOOT goes unanswered.
	a.waitServicesFor(30*time.Second, "leased in the new subnet", leased("198.18.0.1"))
	if !logSays(a.log.String(), "no answer to INIT-REBOOT: asking anew") {
		t.Fatalf("roostd does not say it asked anew:\n%s", a.log.String())
	}
	if addrs := mustRun(t, nil, "ip", "-n", a.net.Router, "-4", "addr", "show", "dev", "wan"); strings.Contains(addrs, first.address+"/") {
		t.Fatalf("the old address is on wan:\n%s", addrs)
	}
	a.ping("198.51.100.1")

	// Another ISP's server, dnsmasq, authoritative, on yet another subnet:
	// it says NAK to an address that is not on its network, and the client
	// asks anew at once.
	a.stop()
	k.Stop()
	mustRun(t, nil, "ip", "-n", a.net.ISP, "addr", "del", "198.18.0.1/24", "dev", "isp0")
	mustRun(t, nil, "ip", "-n", a.net.ISP, "addr", "add", "198.19.0.1/24", "dev", "isp0")
	srv, err := isp.StartServer4(isp.NewDnsmasq4(t.TempDir(), a.net.ISP), isp.V4{Times: isp.Lab, Net: "198.19.0", Authoritative: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	reboot()
	a.waitServicesFor(15*time.Second, "leased from dnsmasq", leased("198.19.0.1"))
	if !logSays(a.log.String(), "said NAK to the saved lease (INIT-REBOOT)") {
		t.Fatalf("roostd does not say dnsmasq NAKed the saved lease:\n%s", a.log.String())
	}
}
