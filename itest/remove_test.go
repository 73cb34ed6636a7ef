package itest

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/roostrouter/roost/itest/labnet"
)

// reload gives roostd a new config (SIGHUP) and waits until the services
// dropped from it are gone from its status: the supervisor removes them
// before it answers for anything else, so their Remove has run.
func (a *agentLab) reload(config string, dropped ...string) map[string]serviceStatus {
	a.t.Helper()
	if err := os.WriteFile(a.config, []byte(config), 0o644); err != nil {
		a.t.Fatal(err)
	}
	a.cmd.Process.Signal(syscall.SIGHUP)
	return a.waitServices("without "+strings.Join(dropped, ", "), func(s map[string]serviceStatus) bool {
		for _, name := range dropped {
			if _, ok := s[name]; ok {
				return false
			}
		}
		return true
	})
}

// ipOut is `ip -n ns args…`.
func (a *agentLab) ipOut(ns string, args ...string) string {
	a.t.Helper()
	return mustRun(a.t, nil, "ip", append([]string{"-n", ns}, args...)...)
}

// stateFiles lists the files in roostd's state folder, folders with a
// trailing slash.
func (a *agentLab) stateFiles() []string {
	a.t.Helper()
	var out []string
	filepath.WalkDir(a.state, func(p string, d os.DirEntry, err error) error {
		if err != nil || p == a.state {
			return nil
		}
		rel, _ := filepath.Rel(a.state, p)
		if d.IsDir() {
			rel += "/"
		}
		out = append(out, rel)
		return nil
	})
	return out
}

// A config with a static address, route and bridge of every kind beside
// docs/rotuer.json's, for TestRemoveStatic to drop.
func staticRemoveConfig(t *testing.T) string {
	return strings.Replace(string(exampleConfig(t)),
		`"lan1": { "kind": "link", "interface": "lan1", "bridge": "lan" },`,
		`"guest": { "kind": "bridge", "name": "br-guest" },
    "lan1": { "kind": "link", "interface": "lan1", "bridge": "guest" },
    "guest-addr": { "kind": "address", "link": "guest", "address": "10.50.0.1/24" },
    "guest-route": { "kind": "route", "link": "wan", "destination": "203.0.113.0/24", "gateway": "192.0.2.1", "metric": 50, "after": ["wan-addr"] },`, 1)
}

// sysctlIn reads a kernel parameter in namespace ns.
func sysctlIn(t *testing.T, ns, key string) string {
	t.Helper()
	return strings.TrimSpace(mustRun(t, nil, "ip", labnet.In(ns, "sysctl", "-n", key)[1:]...))
}

// TestRemoveStatic: a reload that drops address, route, bridge and link
// services takes away exactly what roostd had put there, even when the
// roostd that removes them is not the one that added them; what was added
// by hand, on other links or on the same one, and the same addresses on
// other links, stay.
func TestRemoveStatic(t *testing.T) {
	cfg := staticRemoveConfig(t)
	a := startAgentLab(t, []byte(cfg))
	a.waitServices("up", func(s map[string]serviceStatus) bool {
		return s["wan-addr"].State == "up" && s["default"].State == "up" && s["guest-route"].State == "up" &&
			s["lan-addr6"].State == "up" && s["guest"].State == "up" && s["guest-addr"].State == "up"
	})
	r := a.net.Router
	// By hand: a link roostd does not manage, with addresses of its own
	// and the very addresses roostd put on br-lan; more addresses on
	// br-lan; routes to roostd's destinations.
	mustRun(t, nil, "ip", "-n", r, "link", "add", "stray0", "type", "veth", "peer", "name", "stray1")
	for _, args := range [][]string{
		{"link", "set", "stray0", "up"},
		{"link", "set", "stray1", "up"},
		{"addr", "add", "10.7.7.7/24", "dev", "stray0"},
		{"addr", "add", "192.168.1.1/24", "dev", "stray0"},
		{"addr", "add", "fd00:1::1/64", "dev", "stray0", "nodad"},
		{"addr", "add", "10.9.9.1/24", "dev", "br-lan"},
		{"addr", "add", "fd00:9::1/64", "dev", "br-lan", "nodad"},
		{"route", "add", "default", "via", "10.7.7.1", "dev", "stray0", "metric", "100"},
		// The very destination and metric of guest-route, on another link.
		{"route", "append", "203.0.113.0/24", "via", "10.7.7.1", "dev", "stray0", "metric", "50"},
	} {
		mustRun(t, nil, "ip", append([]string{"-n", r}, args...)...)
	}
	// The roostd that removes is a later one, which adopted the state.
	a.kill9()
	a.start()
	a.waitServices("adopted", func(s map[string]serviceStatus) bool {
		return s["default"].State == "up" && s["guest-addr"].State == "up"
	})

	dropped := []string{"lan-addr", "lan-addr6", "default", "guest-route", "guest", "lan1", "guest-addr"}
	next := cfg
	for _, line := range strings.Split(cfg, "\n") {
		for _, name := range dropped {
			if strings.HasPrefix(strings.TrimSpace(line), `"`+name+`":`) {
				next = strings.Replace(next, line+"\n", "", 1)
			}
		}
	}
	a.reload(next, dropped...)

	// (A second address by hand in the subnet of roostd's IPv4 one would
	// go with it: the kernel deletes secondaries with their primary unless
	// promote_secondaries is set. Those here are in subnets of their own.)
	lan := a.ipOut(r, "addr", "show", "dev", "br-lan")
	for _, gone := range []string{"192.168.1.1/24", "fd00:1::1/64"} {
		if strings.Contains(lan, gone) {
			t.Errorf("%s is still on br-lan after the drop of its address service:\n%s", gone, lan)
		}
	}
	for _, kept := range []string{"10.9.9.1/24", "fd00:9::1/64"} {
		if !strings.Contains(lan, kept) {
			t.Errorf("%s, added by hand to br-lan, is gone:\n%s", kept, lan)
		}
	}
	if wan := a.ipOut(r, "addr", "show", "dev", "wan"); !strings.Contains(wan, "192.0.2.2/24") || !strings.Contains(wan, "2001:db8:0:1::2/64") {
		t.Errorf("wan's addresses, still in the config, are gone:\n%s", wan)
	}
	if g := a.ipOut(r, "addr"); strings.Contains(g, "10.50.0.1") {
		t.Errorf("guest-addr's 10.50.0.1 is still there:\n%s", g)
	}
	stray := a.ipOut(r, "addr", "show", "dev", "stray0")
	for _, want := range []string{"10.7.7.7/24", "192.168.1.1/24", "fd00:1::1/64"} {
		if !strings.Contains(stray, want) {
			t.Errorf("%s, added by hand to a link roostd does not manage, is gone:\n%s", want, stray)
		}
	}
	routes := a.ipOut(r, "-4", "route")
	for _, gone := range []string{"default via 192.0.2.1", "203.0.113.0/24 via 192.0.2.1"} {
		if strings.Contains(routes, gone) {
			t.Errorf("%s is still there after its route service was dropped:\n%s", gone, routes)
		}
	}
	for _, kept := range []string{"default via 10.7.7.1 dev stray0 metric 100", "203.0.113.0/24 via 10.7.7.1 dev stray0 metric 50"} {
		if !strings.Contains(routes, kept) {
			t.Errorf("the route %q, added by hand, is gone:\n%s", kept, routes)
		}
	}
	if routes6 := a.ipOut(r, "-6", "route", "show", "default"); !strings.Contains(routes6, "via 2001:db8:0:1::1 dev wan") {
		t.Errorf("default6, still in the config, is gone:\n%s", routes6)
	}
	// The bridge roostd made is deleted; the port it held is not roostd's
	// and stays, out of it.
	if out := run(t, nil, nil, "ip", "-n", r, "link", "show", "br-guest"); out.code == 0 {
		t.Errorf("br-guest is still there:\n%s", out.stdout)
	}
	if l := a.ipOut(r, "-d", "link", "show", "lan1"); strings.Contains(l, "master") {
		t.Errorf("lan1 is still in a bridge:\n%s", l)
	}
	if strings.Contains(a.log.String(), "removing a service's configuration") {
		t.Errorf("a Remove failed:\n%s", a.log.String())
	}
}

// TestRemoveSysctl: a dropped sysctl service puts back the values it
// changed, as they were before roostd, though the roostd that drops it is
// not the one that set them; a value it found as it wanted it (syncookies
// is on in a new namespace) is not its own, and stays as it was set by
// hand meanwhile.
func TestRemoveSysctl(t *testing.T) {
	a := startAgentLab(t, []byte(`{
  "board": "lab",
  "services": {
    "wan": { "kind": "link", "interface": "wan" },
    "forwarding": { "kind": "sysctl", "values": { "net.ipv4.ip_forward": "1", "net.ipv6.conf.all.forwarding": "1", "net.ipv4.tcp_syncookies": "1" } }
  }
}`))
	a.waitServices("up", func(s map[string]serviceStatus) bool { return s["forwarding"].State == "up" })
	r := a.net.Router
	if sysctlIn(t, r, "net.ipv4.ip_forward") != "1" || sysctlIn(t, r, "net.ipv6.conf.all.forwarding") != "1" {
		t.Fatal("forwarding is not on")
	}
	a.kill9()
	a.start()
	a.waitServices("adopted", func(s map[string]serviceStatus) bool { return s["forwarding"].State == "up" })
	mustRun(t, nil, "ip", labnet.In(r, "sysctl", "-q", "-w", "net.ipv4.tcp_syncookies=2")[1:]...)
	a.reload(`{"board": "lab", "services": {"wan": { "kind": "link", "interface": "wan" }}}`, "forwarding")
	for key, want := range map[string]string{"net.ipv4.ip_forward": "0", "net.ipv6.conf.all.forwarding": "0", "net.ipv4.tcp_syncookies": "2"} {
		if got := sysctlIn(t, r, key); got != want {
			t.Errorf("%s = %s after the drop, want %s (for roostd to put values back, agent/services.go passes StateDir to netconf.Sysctl)", key, got, want)
		}
	}
	if files := a.stateFiles(); strings.Contains(strings.Join(files, " "), "sysctl/net") {
		t.Errorf("records left in the state folder: %v", files)
	}
}

const dhcpRemoveConfig = `{
  "board": "lab",
  "services": {
    "wan": { "kind": "link", "interface": "wan" },
    "wan-dhcp": { "kind": "dhcp4-client", "link": "wan", "hostname": "rotuer" },
    "wan-dhcp6": { "kind": "dhcp6-client", "link": "wan", "prefixHint": 56 },
    "lan": { "kind": "bridge", "name": "br-lan" },
    "lan0": { "kind": "link", "interface": "lan0", "bridge": "lan" },
    "lan-addr": { "kind": "address", "link": "lan", "address": "192.168.1.1/24" },
    "lan-ra": { "kind": "ra", "link": "lan", "prefixFrom": "wan-dhcp6", "subnet": 1, "interval": "2s" },
    "lan-dhcp": { "kind": "dhcp4-server", "link": "lan", "address": "lan-addr", "pool": { "start": "192.168.1.10", "end": "192.168.1.20" } },
    "forwarding": { "kind": "sysctl", "values": { "net.ipv6.conf.all.forwarding": "1" } }
  }
}`

// TestRemoveDHCP: dropping the DHCP clients, the LAN's router
// advertisements and its DHCPv4 server gives the leases back to the ISP,
// takes the addresses away, tells the LAN host at once, and clears the
// state folder of all but the DUID and the server's lease database, with
// which a server added back gives no host's address to another.
func TestRemoveDHCP(t *testing.T) {
	need(t, "kea-dhcp4", "kea-dhcp6")
	a := startAgentLab(t, []byte(dhcpRemoveConfig))
	waitLinkLocal(t, a.net.ISP, "isp0")
	k4 := startKea4(t, a.net.ISP)
	k6 := startKea6(t, a.net.ISP)
	up := func(s map[string]serviceStatus) bool {
		return s["wan-dhcp"].State == "up" && s["wan-dhcp6"].State == "up" && s["lan-ra"].State == "up" && s["lan-dhcp"].State == "up"
	}
	a.waitServicesFor(30*time.Second, "bound and announcing", up)
	r, lanHost := a.net.Router, a.net.LAN
	s := a.services()
	addr4 := s["wan-dhcp"].Outputs["address"]
	addr6 := s["wan-dhcp6"].Outputs["address/0/address"]
	lan := s["lan-ra"].Outputs["prefix"]
	// The LAN host takes an address in the LAN's /64 and a default route
	// from the advertisements; three hosts lease from the LAN's server.
	waitLinkLocal(t, lanHost, "eth0")
	slaac, _ := hostAddr6(t, lanHost, "eth0", strings.TrimSuffix(lan, "::/64")+":", func(string) bool { return true })
	if !strings.Contains(a.ipOut(lanHost, "-6", "route", "show", "default"), "proto ra") {
		t.Fatalf("the LAN host has no default route from the router's advertisements:\n%s", a.ipOut(lanHost, "-6", "route"))
	}
	leased := dhcpLoad(t, lanHost, 0, 3)

	if got := sysctlIn(t, r, "net.ipv6.conf.wan.accept_ra"); got != "2" {
		t.Fatalf("accept_ra on wan is %s while the DHCPv6 client runs, want 2", got)
	}
	// The roostd that removes is a later one, which adopted the leases.
	a.kill9()
	a.start()
	a.waitServicesFor(30*time.Second, "adopted", up)
	noServers := strings.NewReplacer(`    "wan-dhcp": { "kind": "dhcp4-client", "link": "wan", "hostname": "rotuer" },
`, "", `    "wan-dhcp6": { "kind": "dhcp6-client", "link": "wan", "prefixHint": 56 },
`, "", `    "lan-ra": { "kind": "ra", "link": "lan", "prefixFrom": "wan-dhcp6", "subnet": 1, "interval": "2s" },
`, "", `    "lan-dhcp": { "kind": "dhcp4-server", "link": "lan", "address": "lan-addr", "pool": { "start": "192.168.1.10", "end": "192.168.1.20" } },
`, "").Replace(dhcpRemoveConfig)
	a.reload(noServers, "wan-dhcp", "wan-dhcp6", "lan-ra", "lan-dhcp")

	// The ISP saw the leases given back.
	if k4.Count("DHCP4_RELEASE") == 0 {
		t.Errorf("kea-dhcp4 saw no release:\n%s", k4.Log())
	}
	if k6.Count("DHCP6_RELEASE_NA") == 0 || k6.Count("DHCP6_RELEASE_PD") == 0 {
		t.Errorf("kea-dhcp6 saw no release of the address and the prefix:\n%s", k6.Log())
	}
	// The router holds none of it.
	if wan := a.ipOut(r, "addr", "show", "dev", "wan"); strings.Contains(wan, addr4+"/") || strings.Contains(wan, addr6+"/128") {
		t.Errorf("the leased addresses %s and %s are still on wan:\n%s", addr4, addr6, wan)
	}
	if routes := a.ipOut(r, "-4", "route"); strings.Contains(routes, "192.0.2.0/24") {
		t.Errorf("the leased subnet's route is still there:\n%s", routes)
	}
	if l := a.ipOut(r, "addr", "show", "dev", "br-lan"); strings.Contains(l, strings.TrimSuffix(lan, "/64")+"1/64") {
		t.Errorf("the router's address in the LAN's %s is still there:\n%s", lan, l)
	}
	// As the link had it from the namespace's default before the client.
	if got, want := sysctlIn(t, r, "net.ipv6.conf.wan.accept_ra"), sysctlIn(t, r, "net.ipv6.conf.default.accept_ra"); got != want {
		t.Errorf("accept_ra on wan is %s after the drop, want %s, as it was before the DHCPv6 client", got, want)
	}
	// The LAN host was told at once: no default route through the router,
	// its address in the prefix deprecated or gone, no route to the prefix.
	var host string
	if labnet.Wait(3*time.Second, 100*time.Millisecond, func() bool {
		host = a.ipOut(lanHost, "-6", "-o", "addr", "show", "dev", "eth0") + a.ipOut(lanHost, "-6", "route")
		for _, line := range strings.Split(host, "\n") {
			if strings.Contains(line, slaac+"/") && !strings.Contains(line, "deprecated") ||
				strings.Contains(line, "proto ra") {
				return false
			}
		}
		return true
	}) != nil {
		t.Errorf("the LAN host still uses the withdrawn router or prefix:\n%s", host)
	}
	// The state folder keeps the DUID and the server's leases, nothing else.
	files := strings.Join(a.stateFiles(), " ")
	for _, gone := range []string{"dhcp4-wan.json", "dhcp6-wan.json", "ra-br-lan.json", "-link-", "sysctl/net.ipv6.conf.wan"} {
		if strings.Contains(files, gone) {
			t.Errorf("%s is still in the state folder: %s", gone, files)
		}
	}
	for _, kept := range []string{"dhcp6-duid", "dhcpd4-br-lan.leases"} {
		if !strings.Contains(files, kept) {
			t.Errorf("%s is gone from the state folder: %s", kept, files)
		}
	}
	if strings.Contains(a.log.String(), "removing a service's configuration") {
		t.Errorf("a Remove failed:\n%s", a.log.String())
	}

	// The LAN's server added back: the hosts get their addresses again,
	// and new hosts other ones.
	a.reload(dhcpRemoveConfig)
	a.waitServicesFor(30*time.Second, "back", up)
	again := dhcpLoad(t, lanHost, 0, 6)
	taken := map[string]string{}
	for mac, ip := range leased {
		if again[mac] != ip {
			t.Errorf("%s had %s before the drop, now %s", mac, ip, again[mac])
		}
		taken[ip] = mac
	}
	for mac, ip := range again {
		if other, ok := taken[ip]; ok && other != mac {
			t.Errorf("%s went to %s, which %s holds", ip, mac, other)
		}
	}
}
