package itest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/roostrouter/roost/itest/isp"
	"github.com/roostrouter/roost/itest/labnet"
)

// startKea6 serves the lab's ISP side with short IPv6 leases and /56s to
// delegate.
func startKea6(t *testing.T, ns string) *isp.Kea {
	return startKea(t, ns, "kea-dhcp6", isp.Kea6Config(isp.Short6, "2001:db8:100::"))
}

// TestDHCP6Client: an address and a delegated /56 from kea-dhcp6, renewed,
// adopted across a kill -9 of roostd without a new Solicit, and given back
// when roostd stops (releaseOnStop).
func TestDHCP6Client(t *testing.T) {
	cfg := `{
  "board": "lab",
  "services": {
    "wan": { "kind": "link", "interface": "wan" },
    "wan-dhcp6": { "kind": "dhcp6-client", "link": "wan", "prefixHint": 56, "releaseOnStop": true }
  }
}`
	a := startAgentLab(t, []byte(cfg))
	// The ISP's server starts once its link can carry IPv6 (its link-local
	// address has passed duplicate detection), as a real ISP's long has.
	waitLinkLocal(t, a.net.ISP, "isp0")
	k := startKea6(t, a.net.ISP)
	deadline := time.Now().Add(20 * time.Second)
	for a.services()["wan-dhcp6"].State != "up" && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	if a.services()["wan-dhcp6"].State != "up" {
		kea, _ := os.ReadFile(filepath.Join(k.Dir, "kea.log"))
		t.Fatalf("no binding; isp:\n%s\nrouter:\n%s\nkea:\n%s\nroostd:\n%s", mustRun(t, nil, "ip", "-n", a.net.ISP, "-6", "addr"), mustRun(t, nil, "ip", "-n", a.net.Router, "-6", "addr"), kea, a.log.String())
	}
	s := a.services()
	out := s["wan-dhcp6"].Outputs
	if !strings.HasPrefix(out["address/0/address"], "2001:db8:0:1::1") || out["prefix/0/len"] != "56" ||
		!strings.HasPrefix(out["prefix/0/prefix"], "2001:db8:1") || out["dns"] != "2001:db8::53" {
		t.Fatalf("dhcp6 outputs: %v", out)
	}
	if addrs := mustRun(t, nil, "ip", "-n", a.net.Router, "-6", "addr", "show", "dev", "wan"); !strings.Contains(addrs, out["address/0/address"]+"/128") {
		t.Fatalf("the leased address is not on wan:\n%s", addrs)
	}
	// A renewal reaches kea (renew-timer 4 s).
	count := func() int { return k.Count("DHCP6_PD_LEASE_RENEW") + k.Count("DHCP6_LEASE_RENEW") }
	deadline = time.Now().Add(10 * time.Second)
	for count() == 0 && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	if count() == 0 {
		b, _ := os.ReadFile(filepath.Join(k.Dir, "kea.log"))
		t.Fatalf("kea saw no renewal:\n%s", b)
	}
	// A roostd killed and restarted adopts the kept binding: no new
	// Solicit (kea's advertise count stays), the same prefix.
	adverts := k.Count("DHCP6_PD_LEASE_ADVERT") + k.Count("DHCP6_LEASE_ADVERT")
	a.kill9()
	a.start()
	again := a.waitServices("up again", func(s map[string]serviceStatus) bool { return s["wan-dhcp6"].State == "up" })
	if got := again["wan-dhcp6"].Outputs["prefix/0/prefix"]; got != out["prefix/0/prefix"] {
		t.Fatalf("after a restart the prefix is %s, was %s", got, out["prefix/0/prefix"])
	}
	if n := k.Count("DHCP6_PD_LEASE_ADVERT") + k.Count("DHCP6_LEASE_ADVERT"); n != adverts {
		t.Fatalf("the restarted roostd solicited again (%d advertisements, were %d):\n%s", n, adverts, a.log.String())
	}
	if !strings.Contains(a.log.String(), "adopting the kept binding") {
		t.Fatalf("roostd did not say it adopted the binding:\n%s", a.log.String())
	}

	// A clean stop gives the address and the prefix back (releaseOnStop).
	a.stop()
	if n, m := k.Count("DHCP6_RELEASE_NA"), k.Count("DHCP6_RELEASE_PD"); n == 0 || m == 0 {
		b, _ := os.ReadFile(filepath.Join(k.Dir, "kea.log"))
		t.Fatalf("kea saw %d address and %d prefix releases, want both:\n%s", n, m, b)
	}
	if addrs := mustRun(t, nil, "ip", "-n", a.net.Router, "-6", "addr", "show", "dev", "wan"); strings.Contains(addrs, out["address/0/address"]) {
		t.Fatalf("the released address is still on wan:\n%s", addrs)
	}
}

// waitLinkLocal waits until dev in ns has a usable link-local address.
func waitLinkLocal(t *testing.T, ns, dev string) {
	// Not fatal: what the test runs next says more about why.
	labnet.WaitLinkLocal(ns, dev, 10*time.Second)
}

// TestPrefixOnLAN: the prefix kea delegates is split, the LAN gets its /64
// by router advertisement, and the LAN host sees it (rdisc6) and takes a
// SLAAC address in it. Without a dns service the advertisements name the
// ISP's DNS server (RDNSS); with one added by a reload, the router's own
// address, and the ISP's server withdrawn (lifetime 0).
func TestPrefixOnLAN(t *testing.T) {
	need(t, "rdisc6")
	a := startAgentLab(t, []byte(lanPrefixConfig))
	waitLinkLocal(t, a.net.ISP, "isp0")
	startKea6(t, a.net.ISP)
	s := a.waitServices("announcing", func(s map[string]serviceStatus) bool { return s["lan-ra"].State == "up" })
	lan := s["lan-ra"].Outputs["prefix"]
	delegated := s["wan-dhcp6"].Outputs["prefix/0/prefix"]
	if !strings.HasSuffix(lan, ":1::/64") || !strings.HasPrefix(lan, strings.TrimSuffix(delegated, "::")) {
		t.Fatalf("LAN prefix %q from delegated %q: want its /64 number 1", lan, delegated)
	}
	// rdisc6 asks, the router answers with the prefix.
	waitLinkLocal(t, a.net.LAN, "eth0")
	out := mustRun(t, nil, "ip", labnet.In(a.net.LAN, "rdisc6", "-1", "-w", "2000", "eth0")[1:]...)
	if !strings.Contains(out, strings.TrimSuffix(lan, "/64")) {
		t.Fatalf("rdisc6 on the LAN host:\n%s", out)
	}
	if got := rdnss(out); len(got) != 1 || got[isp.DNS1v6] == "" || got[isp.DNS1v6] == "0" {
		t.Fatalf("without a dns service the RDNSS is %v, want the ISP's %s:\n%s", got, isp.DNS1v6, out)
	}
	// The LAN host configures an address in the prefix (SLAAC).
	prefix := strings.TrimSuffix(lan, "::/64") + ":"
	var addrs string
	if labnet.Wait(10*time.Second, 200*time.Millisecond, func() bool {
		addrs = mustRun(t, nil, "ip", "-n", a.net.LAN, "-6", "addr", "show", "dev", "eth0")
		return strings.Contains(addrs, prefix)
	}) != nil {
		t.Fatalf("the LAN host has no address in %s:\n%s", lan, addrs)
	}

	// A dns service added: the advertisements name the router, and tell
	// hosts to stop asking the ISP's server. rdisc6 listens through the
	// change.
	listen := exec.Command("ip", labnet.In(a.net.LAN, "rdisc6", "-d", "-m", "-w", "8000", "eth0")[1:]...)
	var heard bytes.Buffer
	listen.Stdout, listen.Stderr = &heard, &heard
	if err := listen.Start(); err != nil {
		t.Fatal(err)
	}
	a.reload(strings.Replace(lanPrefixConfig, `"forwarding":`, `"lan-dns": { "kind": "dns", "link": "lan" },
    "forwarding":`, 1))
	listen.Wait()
	own := strings.TrimSuffix(lan, "/64") + "1"
	var withdrawn bool
	var last map[string]string
	for _, ra := range strings.Split(heard.String(), "Hop limit")[1:] {
		last = rdnss(ra)
		withdrawn = withdrawn || last[isp.DNS1v6] == "0"
	}
	if !withdrawn || last[own] == "" || last[own] == "0" || len(last) != 1 {
		t.Fatalf("with a dns service: ISP's server withdrawn %v, last RDNSS %v, want only %s:\n%s\nroostd:\n%s", withdrawn, last, own, heard.String(), a.log.String())
	}
}

// rdnss reads the DNS servers of rdisc6's output (one advertisement), each
// with its lifetime in seconds.
func rdnss(out string) map[string]string {
	got := map[string]string{}
	var pending []string
	for _, line := range strings.Split(out, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch k {
		case "Recursive DNS server":
			pending = append(pending, v)
		case "DNS server lifetime", "DNS servers lifetime":
			for _, a := range pending {
				got[a] = strings.Fields(v)[0]
			}
			pending = nil
		}
	}
	return got
}

// lanPrefixConfig is the WAN's DHCPv6 client and the LAN's /64 number 1,
// announced every 2 s.
const lanPrefixConfig = `{
  "board": "lab",
  "services": {
    "wan": { "kind": "link", "interface": "wan" },
    "wan-dhcp6": { "kind": "dhcp6-client", "link": "wan", "prefixHint": 56 },
    "lan": { "kind": "bridge", "name": "br-lan" },
    "lan0": { "kind": "link", "interface": "lan0", "bridge": "lan" },
    "lan-ra": { "kind": "ra", "link": "lan", "prefixFrom": "wan-dhcp6", "subnet": 1, "interval": "2s", "mtu": 1500 },
    "forwarding": { "kind": "sysctl", "values": { "net.ipv6.conf.all.forwarding": "1" } }
  }
}`

// hostAddr6 waits for dev in ns to hold a global address that starts with
// prefix and whose flags satisfy ok; it returns the address.
func hostAddr6(t *testing.T, ns, dev, prefix string, ok func(flags string) bool) (string, string) {
	t.Helper()
	var out string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		out = mustRun(t, nil, "ip", "-n", ns, "-6", "-o", "addr", "show", "dev", dev)
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			if len(f) > 3 && strings.HasPrefix(f[3], prefix) && ok(line) {
				return strings.Split(f[3], "/")[0], line
			}
		}
	}
	t.Fatalf("%s in %s has no address in %s as wanted:\n%s", dev, ns, prefix, out)
	return "", ""
}

// TestRenumbering: the ISP delegates a different prefix; the LAN host sees
// the old one deprecated at once (preferred lifetime 0, RFC 7084 L-13),
// takes an address in the new one and uses it. The firewall's pinhole to
// the host, named by its interface identifier in lan-ra's prefix, moves to
// its new address: the ISP reaches the host's web server there, and only
// on the port allowed.
func TestRenumbering(t *testing.T) {
	need(t, "nft", "/bin/busybox")
	a := startAgentLab(t, []byte(renumberingConfig))
	// The host forms its addresses from the identifier allow6 names.
	mustRun(t, nil, "ip", "-n", a.net.LAN, "token", "set", "::1234:5678:9abc:def0", "dev", "eth0")
	waitLinkLocal(t, a.net.ISP, "isp0")
	// The router's IPv6 default route, for the host's replies to the ISP.
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := isp.Advertise(ctx, a.net.ISP, "isp0", time.Second); err != nil {
		t.Fatal(err)
	}
	k := startKea6(t, a.net.ISP)
	waitLinkLocal(t, a.net.LAN, "eth0")
	preferred := func(flags string) bool {
		return !strings.Contains(flags, "deprecated") && !strings.Contains(flags, "tentative")
	}
	oldAddr, _ := hostAddr6(t, a.net.LAN, "eth0", "2001:db8:100:1:", preferred)
	if oldAddr != "2001:db8:100:1:1234:5678:9abc:def0" {
		t.Fatalf("the LAN host took %s, not its token's address", oldAddr)
	}
	serveHTTP(t, a.net.LAN, "80", "lan host")
	serveHTTP(t, a.net.LAN, "8080", "not allowed")
	a.pinholeTo(oldAddr)

	// The ISP renumbers: a new delegation pool, the old leases forgotten.
	k.Stop()
	os.Remove(filepath.Join(k.Dir, "leases6.csv"))
	os.WriteFile(filepath.Join(k.Dir, "kea.json"), []byte(fmt.Sprintf(isp.Kea6Config(isp.Short6, "2001:db8:200::"), k.Dir)), 0o644)
	renumbered := time.Now()
	restart(t, k)

	newAddr, _ := hostAddr6(t, a.net.LAN, "eth0", "2001:db8:200:1:", preferred)
	_, old := hostAddr6(t, a.net.LAN, "eth0", oldAddr, func(flags string) bool { return strings.Contains(flags, "deprecated") })
	t.Logf("%.1fs after the ISP renumbered: new %s; old %s", time.Since(renumbered).Seconds(), newAddr, strings.Join(strings.Fields(old)[3:], " "))
	// The host now reaches out from the new address.
	route := mustRun(t, nil, "ip", "-n", a.net.LAN, "-6", "route", "get", "2001:db8:0:1::1")
	if !strings.Contains(route, "src "+newAddr) {
		t.Fatalf("the LAN host would not use its new address %s:\n%s", newAddr, route)
	}
	// The router's own address in the old prefix is deprecated too.
	hostAddr6(t, a.net.Router, "br-lan", "2001:db8:100:1::1/64", func(flags string) bool { return strings.Contains(flags, "deprecated") })
	s := a.services()
	if got := s["lan-ra"].Outputs["prefix"]; got != "2001:db8:200:1::/64" {
		t.Fatalf("lan-ra announces %s, want the new /64", got)
	}
	if !strings.Contains(a.log.String(), "deprecat") {
		t.Fatalf("roostd did not say it deprecated the old prefix:\n%s", a.log.String())
	}
	// The pinhole followed: the new address is open, the old one's rule
	// is gone.
	ruleset := a.pinholeTo(newAddr)
	if strings.Contains(ruleset, oldAddr) {
		t.Errorf("the ruleset still opens the old address %s:\n%s", oldAddr, ruleset)
	}
}

// renumberingConfig is lanPrefixConfig with a firewall that opens port 80
// of the LAN host whose interface identifier is ::1234:5678:9abc:def0, in
// whatever prefix lan-ra announces.
var renumberingConfig = strings.Replace(lanPrefixConfig, `"forwarding":`, `"firewall": { "kind": "firewall",
      "zones": { "wan": { "services": ["wan"] }, "lan": { "services": ["lan"] } },
      "allow6": [ { "ra": "lan-ra", "host": "::1234:5678:9abc:def0", "proto": "tcp", "port": 80 } ] },
    "forwarding":`, 1)

// pinholeTo waits until the ISP reaches the LAN host's web server at addr
// through the firewall (which follows lan-ra's prefix a moment after the
// host does), checks that its other port stays closed, and returns the
// ruleset.
func (a *agentLab) pinholeTo(addr string) string {
	a.t.Helper()
	var page string
	var ok bool
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline) && page != "lan host"; {
		if page, ok = fetch(a.t, a.net.ISP, "http://["+addr+"]/"); !ok {
			time.Sleep(200 * time.Millisecond)
		}
	}
	ruleset := mustRun(a.t, nil, "ip", labnet.In(a.net.Router, "nft", "list", "table", "inet", "roost")[1:]...)
	if page != "lan host" {
		a.t.Fatalf("the ISP does not reach the LAN host at [%s]:80 (%q):\n%s\nroostd:\n%s", addr, page, ruleset, a.log.String())
	}
	if !strings.Contains(ruleset, "ip6 daddr "+addr+" tcp dport 80 accept") {
		a.t.Fatalf("no pinhole to %s in the ruleset:\n%s", addr, ruleset)
	}
	if page, ok := fetch(a.t, a.net.ISP, "http://["+addr+"]:8080/"); ok {
		a.t.Fatalf("the ISP reaches port 8080 of the LAN host, which allow6 does not open: %q", page)
	}
	return ruleset
}
