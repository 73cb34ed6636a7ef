package itest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"

	"github.com/roostrouter/roost/itest/isp"
	"github.com/roostrouter/roost/itest/labnet"
)

// dnsLabConfig is the router of TestDNSForwarder: its WAN from kea
// (which also names the ISP's DNS servers), a LAN with IPv4 and a ULA, a
// DHCP server, and the forwarder following the WAN's DNS servers and the
// DHCP server's hosts. No firewall: the forwarder alone must refuse the WAN.
const dnsLabConfig = `{
  "hostname": "rotuer",
  "board": "lab",
  "ssh": { "disabled": true },
  "services": {
    "wan": { "kind": "link", "interface": "wan" },
    "wan-dhcp": { "kind": "dhcp4-client", "link": "wan", "hostname": "rotuer" },
    "default": { "kind": "route", "link": "wan", "destination": "0.0.0.0/0", "gateway": { "service": "wan-dhcp", "output": "router" } },
    "lan": { "kind": "bridge", "name": "br-lan" },
    "lan0": { "kind": "link", "interface": "lan0", "bridge": "lan" },
    "lan1": { "kind": "link", "interface": "lan1", "bridge": "lan" },
    "lan-addr": { "kind": "address", "link": "lan", "address": "192.168.1.1/24" },
    "lan-addr6": { "kind": "address", "link": "lan", "address": "fd00:1::1/64" },
    "lan-dhcp": { "kind": "dhcp4-server", "link": "lan", "address": "lan-addr", "pool": { "start": "192.168.1.100", "end": "192.168.1.199" }, "domain": "home.arpa" },
    "lan-dns": { "kind": "dns", "link": "lan", "hostname": "rotuer", "upstreams": [{ "service": "wan-dhcp" }],
      "leasesFrom": "lan-dhcp", "hosts": { "nas": ["192.168.1.10"] } }
  }
}`

// keaDNS is the ISP's DHCPv4 config naming servers as its DNS servers.
func keaDNS(servers string) string {
	return strings.Replace(isp.Kea4Config(isp.Short4), `"data": "192.0.2.53"`, `"data": "`+servers+`"`, 1)
}

// dig runs dig in namespace ns, one try of two seconds, and returns what
// it prints.
func dig(t *testing.T, ns string, args ...string) string {
	t.Helper()
	r := run(t, nil, nil, "ip", labnet.In(ns, append([]string{"dig", "+time=2", "+tries=1"}, args...)...)[1:]...)
	return r.stdout + r.stderr
}

// digShort is dig +short: the answers' data, one a line.
func digShort(t *testing.T, ns string, args ...string) string {
	t.Helper()
	return strings.TrimSpace(dig(t, ns, append(args, "+short")...))
}

// TestDNSForwarder: the dns service against real peers. nsd serves the
// test zone at the ISP (two of them, each answering who.* with its name);
// dig and busybox nslookup ask on the LAN host, which takes its address
// and name by DHCP (busybox udhcpc).
func TestDNSForwarder(t *testing.T) {
	need(t, "ip", "kea-dhcp4", "nsd", "dig", "/bin/busybox")
	n := labnet.New(fmt.Sprintf("dn%d-", os.Getpid()%100000))
	n.DynamicLAN = true
	if err := n.Up(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Down)
	ns1 := startNSD(t, n.ISP, "ns1", isp.DNS1)
	ns2 := startNSD(t, n.ISP, "ns2", isp.DNS2)
	kea := startKea(t, n.ISP, "kea-dhcp4", keaDNS(isp.DNS1+", "+isp.DNS2))
	a := startAgentLabOn(t, n, []byte(dnsLabConfig), nil)
	a.waitServices("up", allUp)
	a.waitOutput("lan-dns", "upstreams", isp.DNS1+" "+isp.DNS2)
	startsBefore := a.services()["lan-dns"].Starts

	// The LAN host: an address and a name by DHCP, and a ULA of its own.
	script, err := labnet.UdhcpcScript(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	r := run(t, nil, nil, "ip", labnet.In(n.LAN, "/bin/busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-f", "-t", "10", "-T", "1", "-s", script, "-x", "hostname:lanhost")[1:]...)
	m := regexp.MustCompile(`lease of (\S+) obtained`).FindStringSubmatch(r.stdout + r.stderr)
	if m == nil {
		t.Fatalf("udhcpc on the LAN host:\n%s%s\nroostd:\n%s", r.stdout, r.stderr, a.log.String())
	}
	host := m[1]
	mustRun(t, nil, "ip", "-n", n.LAN, "addr", "add", "fd00:1::100/64", "dev", "eth0", "nodad")
	lan := func(args ...string) string { return dig(t, n.LAN, append([]string{"@192.168.1.1"}, args...)...) }
	lanShort := func(args ...string) string { return digShort(t, n.LAN, append([]string{"@192.168.1.1"}, args...)...) }

	t.Run("forwarding", func(t *testing.T) {
		if got := lanShort("www.isp.example"); got != "198.51.100.80" {
			t.Fatalf("dig www.isp.example: %q\n%s", got, a.log.String())
		}
		if got := digShort(t, n.LAN, "@fd00:1::1", "www.isp.example", "AAAA"); got != "2001:db8:0:1::80" {
			t.Fatalf("dig over IPv6: %q", got)
		}
		r := run(t, nil, nil, "ip", labnet.In(n.LAN, "/bin/busybox", "nslookup", "www.isp.example", "192.168.1.1")[1:]...)
		if !strings.Contains(r.stdout, "198.51.100.80") {
			t.Fatalf("busybox nslookup:\n%s%s", r.stdout, r.stderr)
		}
		// DNSSEC records come through to a client that asks for them.
		if out := lan("+dnssec", "www.isp.example"); !strings.Contains(out, "RRSIG\tA 13 3 300") {
			t.Fatalf("dig +dnssec: no RRSIG:\n%s", out)
		}
	})

	t.Run("LAN names", func(t *testing.T) {
		for _, c := range []struct{ q, want string }{
			{"lanhost.home.arpa", host},
			{"rotuer.home.arpa", "192.168.1.1"},
			{"rotuer.home.arpa AAAA", "fd00:1::1"},
			{"nas.home.arpa", "192.168.1.10"},
			{"-x " + host, "lanhost.home.arpa."},
			{"-x 192.168.1.1", "rotuer.home.arpa."},
			{"nobody.home.arpa", ""},
			{"rotuer.home.arpa MX", ""},
			{"-x 192.168.1.222", ""},
			{"-x 10.1.2.3", ""}, // private: never asked upstream
			{"localhost", "127.0.0.1"},
			{"nothing.test", ""},
		} {
			if got := lanShort(strings.Fields(c.q)...); got != c.want {
				t.Errorf("dig %s: %q, want %q", c.q, got, c.want)
			}
		}
		if out := lan("nobody.home.arpa"); !strings.Contains(out, "status: NXDOMAIN") || !regexp.MustCompile(`flags:[a-z ]* aa[ ;]`).MatchString(out) {
			t.Errorf("an unknown LAN name is not an authoritative NXDOMAIN:\n%s", out)
		}
		r := run(t, nil, nil, "ip", labnet.In(n.LAN, "/bin/busybox", "nslookup", "lanhost.home.arpa", "192.168.1.1")[1:]...)
		if !strings.Contains(r.stdout, host) {
			t.Errorf("busybox nslookup lanhost.home.arpa:\n%s%s", r.stdout, r.stderr)
		}
		// Once the router has seen the host's ULA (it asked over IPv6
		// above; a ping makes sure), its name has it too.
		mustRun(t, nil, "ip", "netns", "exec", n.LAN, "ping", "-c", "1", "-W", "2", "fd00:1::1")
		waitDig(t, "the host's IPv6 address under its name", func() bool { return lanShort("lanhost.home.arpa", "AAAA") == "fd00:1::100" })
		if got := lanShort("-x", "fd00:1::100"); got != "lanhost.home.arpa." {
			t.Errorf("dig -x fd00:1::100: %q", got)
		}
		// The lease given back, the name goes; taken again, it is back.
		// (udhcpc -q -R does not release: a running udhcpc does, on
		// SIGUSR2, and asks again on SIGUSR1.)
		out := &syncBuffer{}
		bg := exec.Command("ip", labnet.In(n.LAN, "/bin/busybox", "udhcpc", "-i", "eth0", "-f", "-s", script, "-x", "hostname:lanhost")[1:]...)
		bg.Stdout, bg.Stderr = out, out
		if err := bg.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { bg.Process.Kill(); bg.Wait() }()
		waitFor := func(what string) {
			t.Helper()
			if labnet.Wait(10*time.Second, 50*time.Millisecond, func() bool { return strings.Contains(out.String(), what) }) != nil {
				t.Fatalf("udhcpc never said %q:\n%s", what, out.String())
			}
		}
		waitFor("obtained")
		bg.Process.Signal(syscall.SIGUSR2)
		waitFor("unicasting a release")
		waitDig(t, "the released host's name gone", func() bool { return lanShort("lanhost.home.arpa") == "" })
		if got := lanShort("-x", host); got != "" {
			t.Errorf("after release, dig -x %s: %q", host, got)
		}
		bg.Process.Signal(syscall.SIGUSR1)
		waitDig(t, "the host's name back with a new lease", func() bool { return lanShort("lanhost.home.arpa") == host })
	})

	t.Run("truncation and TCP", func(t *testing.T) {
		out := lan("+bufsize=1232", "big.isp.example", "TXT")
		if !strings.Contains(out, "Truncated, retrying in TCP mode") || strings.Count(out, "\tTXT\t") != isp.ZoneBigTXT {
			t.Fatalf("dig big.isp.example TXT: want a truncated UDP answer, then %d records over TCP:\n%s", isp.ZoneBigTXT, out)
		}
		if out := lan("+bufsize=1232", "+ignore", "big.isp.example", "TXT"); !regexp.MustCompile(`flags:[a-z ]* tc`).MatchString(out) {
			t.Fatalf("over UDP, no TC flag:\n%s", out)
		}
		if out := lan("+tcp", "big.isp.example", "TXT"); strings.Count(out, "\tTXT\t") != isp.ZoneBigTXT {
			t.Fatalf("dig +tcp: not all %d records:\n%s", isp.ZoneBigTXT, out)
		}
	})

	t.Run("malformed queries", func(t *testing.T) {
		for _, b := range [][]byte{
			{0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff}, // a question cut off
			{0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc0, 0x0c}, // a name pointing at itself
		} {
			reply := exchangeIn(t, n.LAN, "udp", "192.168.1.1:53", b)
			m := new(dns.Msg)
			if err := m.Unpack(reply); err != nil || m.Id != 0x1234 || m.Rcode != dns.RcodeFormatError {
				t.Fatalf("%x: reply %x (%v), want FORMERR for id 1234", b, reply, err)
			}
		}
		if got := lanShort("www.isp.example"); got != "198.51.100.80" {
			t.Fatalf("after malformed queries: %q", got)
		}
	})

	t.Run("from the WAN", func(t *testing.T) {
		// The ISP routes the LAN to the router, and nothing filters: the
		// query reaches the router's LAN address from the WAN, and no
		// socket takes it (they are bound to the LAN's device).
		wanAddr := a.services()["wan-dhcp"].Outputs["address"]
		mustRun(t, nil, "ip", "-n", n.ISP, "route", "replace", "192.168.1.0/24", "via", wanAddr)
		if !labnet.Reaches(n.ISP, "192.168.1.1") {
			t.Fatal("the ISP does not reach the router's LAN address")
		}
		for _, target := range []string{"@192.168.1.1", "@" + wanAddr} {
			for _, tcp := range []string{"+notcp", "+tcp"} {
				out := dig(t, n.ISP, target, tcp, "www.isp.example")
				if !strings.Contains(out, "connection refused") || strings.Contains(out, "status:") {
					t.Errorf("dig %s %s from the ISP: want connection refused:\n%s", target, tcp, out)
				}
			}
		}
	})

	t.Run("failover", func(t *testing.T) {
		ns1.Stop()
		defer restartNSD(t, ns1)
		out := lan("a1.who.isp.example", "TXT")
		if !strings.Contains(out, `"ns2"`) {
			t.Fatalf("with ns1 down:\n%s", out)
		}
		if ms := queryTime(out); ms > 1000 {
			t.Fatalf("failover took %d ms", ms)
		}
	})

	t.Run("upstream from DHCP", func(t *testing.T) {
		// The ISP hands out another server: the forwarder follows it at the
		// next renewal, without a restart.
		kea.Stop()
		if err := kea.Configure(keaDNS(isp.DNS2)); err != nil {
			t.Fatal(err)
		}
		if err := kea.Start(); err != nil {
			t.Fatal(err)
		}
		a.waitOutput("lan-dns", "upstreams", isp.DNS2)
		for i := 0; i < 3; i++ {
			if out := lan(fmt.Sprintf("b%d.who.isp.example", i), "TXT"); !strings.Contains(out, `"ns2"`) {
				t.Fatalf("after the change, asked the wrong server:\n%s", out)
			}
		}
		if s := a.services()["lan-dns"].Starts; s != startsBefore {
			t.Fatalf("lan-dns started %d times, had %d: it restarted instead of following", s, startsBefore)
		}
	})

	t.Run("cache with the ISP's servers down", func(t *testing.T) {
		lanShort("cache.isp.example")
		lanShort("short.isp.example")
		ns1.Stop()
		ns2.Stop()
		defer restartNSD(t, ns1)
		defer restartNSD(t, ns2)
		out := lan("cache.isp.example")
		if !strings.Contains(out, "198.51.100.82") {
			t.Fatalf("with the ISP's servers down, no answer from the cache:\n%s", out)
		}
		time.Sleep(1100 * time.Millisecond) // short's TTL (1 s) runs out
		out = lan("short.isp.example")
		if !regexp.MustCompile(`short\.isp\.example\.\s+30\s+IN\s+A\s+198\.51\.100\.81`).MatchString(out) {
			t.Fatalf("no stale answer (TTL 30, RFC 8767) for an expired name:\n%s", out)
		}
		if out := lan("nothing-cached.who.isp.example", "TXT"); !strings.Contains(out, "status: SERVFAIL") {
			t.Fatalf("an uncached name with every server down:\n%s", out)
		}
	})

	t.Run("rate limit", func(t *testing.T) {
		// Last: the flood leaves the LAN host limited for a moment.
		q := new(dns.Msg).SetQuestion("rotuer.home.arpa.", dns.TypeA)
		b, _ := q.Pack()
		answered := floodIn(t, n.LAN, "192.168.1.1:53", b, 2000)
		if answered >= 1500 || answered < 400 {
			t.Fatalf("%d of 2000 queries sent in a second answered, want the burst (500) and 250 a second", answered)
		}
		time.Sleep(100 * time.Millisecond)
		if c := strings.Count(a.log.String(), "asks too fast"); c != 1 {
			t.Fatalf("%d log lines for the flood, want 1:\n%s", c, a.log.String())
		}
	})
	if t.Failed() {
		t.Logf("roostd:\n%s", a.log.String())
	}
}

func startNSD(t *testing.T, ns, identity string, addrs ...string) *isp.NSD {
	t.Helper()
	s, err := isp.StartNSD(t.TempDir(), ns, identity, addrs...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("%s's log:\n%s", s.Name, s.Log())
		}
	})
	return s
}

func restartNSD(t *testing.T, s *isp.NSD) {
	t.Helper()
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
}

// waitOutput waits for a service's output to be want.
func (a *agentLab) waitOutput(service, key, want string) {
	a.t.Helper()
	a.waitServices(fmt.Sprintf("with %s's %s %q", service, key, want), func(s map[string]serviceStatus) bool {
		return s[service].Outputs[key] == want
	})
}

func waitDig(t *testing.T, what string, ok func() bool) {
	t.Helper()
	if labnet.Wait(5*time.Second, 100*time.Millisecond, ok) != nil {
		t.Fatalf("never: %s", what)
	}
}

// queryTime is what dig says a query took, in ms.
func queryTime(out string) int {
	var ms int
	if m := regexp.MustCompile(`Query time: (\d+) msec`).FindStringSubmatch(out); m != nil {
		fmt.Sscan(m[1], &ms)
	}
	return ms
}

// dialIn opens a socket to addr from network namespace ns.
func dialIn(ns, network, addr string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		// The thread stays in ns and is never unlocked: it ends with this
		// goroutine instead of going back to the pool.
		runtime.LockOSThread()
		f, err := os.Open(filepath.Join("/run/netns", ns))
		if err != nil {
			done <- result{nil, err}
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- result{nil, err}
			return
		}
		c, err := net.Dial(network, addr)
		done <- result{c, err}
	}()
	r := <-done
	return r.c, r.err
}

// exchangeIn sends b over UDP from ns and returns the reply.
func exchangeIn(t *testing.T, ns, network, addr string, b []byte) []byte {
	t.Helper()
	c, err := dialIn(ns, network, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("no reply to %x: %v", b, err)
	}
	return buf[:n]
}

// floodIn sends count copies of b over UDP from ns, 2,000 a second (in
// batches: not so fast that sockets drop them), and counts the replies.
func floodIn(t *testing.T, ns, addr string, b []byte, count int) int {
	t.Helper()
	c, err := dialIn(ns, "udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got := make(chan int)
	go func() {
		n := 0
		buf := make([]byte, 512)
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		for {
			if _, err := c.Read(buf); err != nil {
				got <- n
				return
			}
			n++
			c.SetReadDeadline(time.Now().Add(time.Second))
		}
	}()
	for i := 0; i < count; i++ {
		c.Write(b)
		if i%50 == 49 {
			time.Sleep(25 * time.Millisecond)
		}
	}
	return <-got
}

// TestDNSHandedOut: what the DHCPv4 server tells the LAN to use for DNS
// follows whether the router runs a dns service. Without one it hands out
// the ISP's servers as the WAN learns them (a LAN host is never pointed at
// a router that does not answer); with one added by a reload, the router.
func TestDNSHandedOut(t *testing.T) {
	need(t, "ip", "kea-dhcp4", "/bin/busybox")
	n := labnet.New(fmt.Sprintf("dh%d-", os.Getpid()%100000))
	n.DynamicLAN = true
	if err := n.Up(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Down)
	startKea(t, n.ISP, "kea-dhcp4", keaDNS(isp.DNS1+", "+isp.DNS2))
	withoutDNS := regexp.MustCompile(`(?s),\n    "lan-dns": .*?\} \}`).ReplaceAllString(dnsLabConfig, "")
	if withoutDNS == dnsLabConfig {
		t.Fatal("the config without a dns service still has it")
	}
	a := startAgentLabOn(t, n, []byte(withoutDNS), nil)
	a.waitServices("up", func(s map[string]serviceStatus) bool { return s["lan-dhcp"].State == "up" && allUp(s) })
	script, err := labnet.UdhcpcScript(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	handed := func() string {
		t.Helper()
		r := run(t, nil, nil, "ip", labnet.In(n.LAN, "/bin/busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-f", "-t", "10", "-T", "1", "-s", script)[1:]...)
		m := regexp.MustCompile(`udhcpc: dns (.*)`).FindStringSubmatch(r.stdout)
		if m == nil {
			t.Fatalf("udhcpc on the LAN host:\n%s%s\nroostd:\n%s", r.stdout, r.stderr, a.log.String())
		}
		return strings.TrimSpace(m[1])
	}
	if got, want := handed(), isp.DNS1+" "+isp.DNS2; got != want {
		t.Fatalf("without a dns service the LAN host was handed DNS %q, want the ISP's %q", got, want)
	}
	a.reload(dnsLabConfig)
	a.waitServices("lan-dns up", func(s map[string]serviceStatus) bool {
		return s["lan-dns"].State == "up" && s["lan-dhcp"].State == "up"
	})
	if got := handed(); got != "192.168.1.1" {
		t.Fatalf("with a dns service the LAN host was handed DNS %q, want the router, 192.168.1.1", got)
	}
}
