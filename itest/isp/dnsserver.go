package isp

import (
	"crypto"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/miekg/dns"

	"github.com/roostrouter/roost/itest/labnet"
)

// The ISP's DNS servers: what its DHCP servers hand out (192.0.2.53 and
// 2001:db8::53), and a second one for failover.
const (
	DNS1   = "192.0.2.53"
	DNS1v6 = "2001:db8::53"
	DNS2   = "192.0.2.54"
)

// ZoneBigTXT is how many TXT records big.isp.example has: more than fit
// in 1232 bytes, so that it comes truncated over UDP.
const ZoneBigTXT = 40

// NSD is Debian's nsd serving the test zone isp.example at the ISP, its
// config, zone, log and pid file in Dir. Its answers say which server gave
// them: every name under who.isp.example has a TXT record with its
// Identity.
type NSD struct {
	Daemon
	Identity string
	Addrs    []string
}

// StartNSD puts addrs on the ISP's loopback (an on-link address is
// answered for on isp0 too) and starts nsd on them in ns.
func StartNSD(dir, ns, identity string, addrs ...string) (*NSD, error) {
	for _, a := range addrs {
		bits := "/32"
		if strings.Contains(a, ":") {
			bits = "/128"
		}
		if err := labnet.Run("ip", "-n", ns, "addr", "replace", a+bits, "dev", "lo"); err != nil {
			return nil, err
		}
	}
	s := &NSD{Daemon: Daemon{Name: "nsd " + identity, Dir: dir, NS: ns}, Identity: identity, Addrs: addrs}
	zone, err := Zone(identity)
	if err != nil {
		return nil, err
	}
	var listen []string
	for _, a := range addrs {
		listen = append(listen, "  ip-address: "+a)
	}
	conf := fmt.Sprintf(`server:
%[2]s
  ip-freebind: yes
  username: ""
  chroot: ""
  zonesdir: "%[1]s"
  database: ""
  zonelistfile: "%[1]s/zone.list"
  xfrdfile: "%[1]s/xfrd.state"
  xfrdir: "%[1]s"
  pidfile: "%[1]s/nsd.pid"
  server-count: 1
  hide-version: yes
  rrl-ratelimit: 0
  identity: %[3]q
  verbosity: 1
remote-control:
  control-enable: no
zone:
  name: isp.example
  zonefile: isp.example.zone
`, dir, strings.Join(listen, "\n"), identity)
	if err := s.Write("nsd.conf", conf); err != nil {
		return nil, err
	}
	if err := s.Write("isp.example.zone", zone); err != nil {
		return nil, err
	}
	s.Args = []string{"nsd", "-d", "-c", filepath.Join(dir, "nsd.conf")}
	return s, s.Start()
}

// Pid is nsd's process, for a lab that outlives the command that
// started it (SIGTERM stops nsd and its children).
func (s *NSD) Pid() int { return s.cmd.Process.Pid }

// Stop kills nsd and the processes it forked (its server and xfrd), all
// in its process group: an ISP's server that crashes.
func (s *NSD) Stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.exited
		s.cmd = nil
	}
}

// Zone is isp.example as the server named identity serves it: a few
// addresses, a short-lived one (short, TTL 1), a big TXT RRset, who.* TXT
// records naming the server, any name under bench (for load), and signatures (a DNSKEY and the RRSIGs of
// www), so that a DNSSEC client's query has RRSIGs to get.
func Zone(identity string) (string, error) {
	head := `$ORIGIN isp.example.
$TTL 300
@ IN SOA ns.isp.example. hostmaster.isp.example. 1 3600 600 86400 60
@ IN NS ns
ns IN A ` + DNS1 + `
cache IN A 198.51.100.82
short 1 IN A 198.51.100.81
*.who IN TXT "` + identity + `"
*.bench IN A 198.51.100.90
`
	var b strings.Builder
	b.WriteString(head)
	for i := 0; i < ZoneBigTXT; i++ {
		fmt.Fprintf(&b, "big IN TXT \"%02d %s\"\n", i, strings.Repeat("x", 60))
	}
	key := &dns.DNSKEY{Hdr: dns.RR_Header{Name: "isp.example.", Rrtype: dns.TypeDNSKEY, Class: dns.ClassINET, Ttl: 300},
		Flags: 257, Protocol: 3, Algorithm: dns.ECDSAP256SHA256}
	priv, err := key.Generate(256)
	if err != nil {
		return "", err
	}
	www := []dns.RR{
		&dns.A{Hdr: dns.RR_Header{Name: "www.isp.example.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 300}, A: []byte{198, 51, 100, 80}},
	}
	www6 := []dns.RR{
		&dns.AAAA{Hdr: dns.RR_Header{Name: "www.isp.example.", Rrtype: dns.TypeAAAA, Class: dns.ClassINET, Ttl: 300},
			AAAA: []byte{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0x80}},
	}
	now := time.Now()
	for _, set := range [][]dns.RR{{key}, www, www6} {
		sig := &dns.RRSIG{Hdr: dns.RR_Header{Name: set[0].Header().Name, Rrtype: dns.TypeRRSIG, Class: dns.ClassINET, Ttl: 300},
			KeyTag: key.KeyTag(), SignerName: "isp.example.", Algorithm: dns.ECDSAP256SHA256,
			Inception: uint32(now.Add(-time.Hour).Unix()), Expiration: uint32(now.Add(30 * 24 * time.Hour).Unix())}
		if err := sig.Sign(priv.(crypto.Signer), set); err != nil {
			return "", fmt.Errorf("sign the test zone: %w", err)
		}
		for _, rr := range append(set, sig) {
			b.WriteString(rr.String() + "\n")
		}
	}
	return b.String(), nil
}

// DNSInNamespace is whether something answers DNS on addr in ns: a
// query for the zone's SOA over UDP gets an answer within a second.
func DNSInNamespace(ns, addr string) bool {
	out, _ := exec.Command("ip", "netns", "exec", ns, "dig", "@"+addr, "isp.example", "SOA", "+short", "+time=1", "+tries=1").Output()
	return strings.Contains(string(out), "hostmaster")
}
