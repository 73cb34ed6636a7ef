package dns

import (
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/miekg/dns"
)

// localTTL is the TTL of the LAN's own names: short, as leases come and go.
const localTTL = 60

// Names are what the LAN's own names are made of.
type Names struct {
	Domain   string                  // like home.arpa
	Hostname string                  // the router's name in it
	Router   []netip.Addr            // its addresses on the LAN
	Static   map[string][]netip.Addr // names in the domain, from the config
	Leases   []Lease                 // the DHCP server's hosts
	// Neighbours are the LAN's IPv6 neighbours by MAC: a lease's host
	// gets its IPv6 addresses from them.
	Neighbours map[string][]netip.Addr
}

// Lease is a host the DHCP server leased an address to.
type Lease struct {
	Name string
	IP   netip.Addr
	MAC  net.HardwareAddr
}

// Zone answers for the LAN's own names and the zones that are never asked
// upstream; it is built whole from Names and then only read.
type Zone struct {
	domain string                  // FQDN, lower case
	names  map[string][]netip.Addr // FQDN, lower case → addresses
	ptr    map[netip.Addr]string   // address → FQDN
	soa    *dns.SOA
}

// NewZone builds the zone. What the config says comes first: a static
// host's name is never a lease's, nor the router's.
func NewZone(n Names) *Zone {
	domain := dns.Fqdn(strings.ToLower(n.Domain))
	if n.Domain == "" {
		domain = "home.arpa."
	}
	z := &Zone{domain: domain, names: map[string][]netip.Addr{}, ptr: map[netip.Addr]string{}}
	add := func(name string, addrs ...netip.Addr) {
		fqdn := strings.ToLower(name) + "." + domain
		for _, a := range addrs {
			a = a.Unmap()
			if !a.IsValid() || slices.Contains(z.names[fqdn], a) {
				continue
			}
			z.names[fqdn] = append(z.names[fqdn], a)
			if _, ok := z.ptr[a]; !ok {
				z.ptr[a] = fqdn
			}
		}
	}
	for _, name := range sortedNames(n.Static) {
		add(name, n.Static[name]...)
	}
	if n.Hostname != "" {
		if _, taken := z.names[strings.ToLower(n.Hostname)+"."+domain]; !taken {
			add(n.Hostname, n.Router...)
		}
	}
	taken := map[string]bool{}
	for name := range z.names {
		taken[name] = true
	}
	for _, l := range n.Leases {
		fqdn := strings.ToLower(l.Name) + "." + domain
		if taken[fqdn] || !dnsLabel(l.Name) {
			continue
		}
		add(l.Name, l.IP)
		if l.MAC != nil {
			add(l.Name, n.Neighbours[l.MAC.String()]...)
		}
	}
	mbox := "hostmaster." + domain
	ns := "localhost."
	if n.Hostname != "" {
		ns = strings.ToLower(n.Hostname) + "." + domain
	}
	z.soa = &dns.SOA{Hdr: dns.RR_Header{Name: domain, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: localTTL},
		Ns: ns, Mbox: mbox, Serial: 1, Refresh: 3600, Retry: 600, Expire: 86400, Minttl: localTTL}
	return z
}

func sortedNames(m map[string][]netip.Addr) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// dnsLabel reports whether s is one LDH label.
func dnsLabel(s string) bool {
	if s == "" || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
			return false
		}
	}
	return true
}

// Len is the number of names in the zone.
func (z *Zone) Len() int { return len(z.names) }

// Lookup is the addresses of a name in the zone (FQDN).
func (z *Zone) Lookup(name string) []netip.Addr { return z.names[strings.ToLower(dns.Fqdn(name))] }

// neverForwarded are the zones the forwarder answers itself, found or not:
// special-use names (RFC 6761, 7686, 8375) and the reverse zones of
// private, loopback, link-local and documentation addresses (RFC 6303).
var neverForwarded = func() []string {
	z := []string{"home.arpa.", "invalid.", "test.", "onion.", "local.arpa.",
		"10.in-addr.arpa.", "168.192.in-addr.arpa.", "0.in-addr.arpa.", "127.in-addr.arpa.",
		"254.169.in-addr.arpa.", "2.0.192.in-addr.arpa.", "100.51.198.in-addr.arpa.",
		"113.0.203.in-addr.arpa.", "255.255.255.255.in-addr.arpa.",
		strings.Repeat("0.", 32) + "ip6.arpa.", "1." + strings.Repeat("0.", 31) + "ip6.arpa.",
		"d.f.ip6.arpa.", "8.e.f.ip6.arpa.", "9.e.f.ip6.arpa.", "a.e.f.ip6.arpa.", "b.e.f.ip6.arpa.",
		"8.b.d.0.1.0.0.2.ip6.arpa."}
	for i := 16; i <= 31; i++ {
		z = append(z, strconv.Itoa(i)+".172.in-addr.arpa.")
	}
	for i := 64; i <= 127; i++ {
		z = append(z, strconv.Itoa(i)+".100.in-addr.arpa.") // shared address space, RFC 7793
	}
	return z
}()

// neverForwardedSet is neverForwarded to look names up in.
var neverForwardedSet = func() map[string]bool {
	m := map[string]bool{}
	for _, z := range neverForwarded {
		m[z] = true
	}
	return m
}()

// zoneOf is the never-forwarded zone name (lower case, FQDN) is in, the
// LAN's domain included, or "": its suffixes looked up, no allocation.
func (z *Zone) zoneOf(name string) string {
	for s := name; s != ""; {
		if s == z.domain || neverForwardedSet[s] {
			return s
		}
		i := strings.IndexByte(s, '.')
		if i < 0 {
			return ""
		}
		s = s[i+1:]
	}
	return ""
}

// Answer answers q if it is the zone's to answer: a LAN name, the reverse
// of an address in it, localhost, or any name in a zone never forwarded
// (NXDOMAIN). nil: ask upstream.
func (z *Zone) Answer(q dns.Question) *dns.Msg {
	if q.Qclass != dns.ClassINET && q.Qclass != dns.ClassANY {
		return nil
	}
	name := strings.ToLower(q.Name)
	m := new(dns.Msg)
	m.Authoritative = true
	hdr := func(t uint16) dns.RR_Header {
		return dns.RR_Header{Name: q.Name, Rrtype: t, Class: dns.ClassINET, Ttl: localTTL}
	}
	// localhost and its subdomains are loopback (RFC 6761).
	if name == "localhost." || strings.HasSuffix(name, ".localhost.") {
		switch q.Qtype {
		case dns.TypeA, dns.TypeANY:
			m.Answer = append(m.Answer, &dns.A{Hdr: hdr(dns.TypeA), A: net.IPv4(127, 0, 0, 1).To4()})
		}
		switch q.Qtype {
		case dns.TypeAAAA, dns.TypeANY:
			m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr(dns.TypeAAAA), AAAA: net.IPv6loopback})
		}
		if len(m.Answer) == 0 {
			m.Ns = []dns.RR{z.soaFor("localhost.")}
		}
		return m
	}
	if addrs, ok := z.names[name]; ok {
		for _, a := range addrs {
			if a.Is4() && (q.Qtype == dns.TypeA || q.Qtype == dns.TypeANY) {
				m.Answer = append(m.Answer, &dns.A{Hdr: hdr(dns.TypeA), A: a.AsSlice()})
			}
			if a.Is6() && (q.Qtype == dns.TypeAAAA || q.Qtype == dns.TypeANY) {
				m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr(dns.TypeAAAA), AAAA: a.AsSlice()})
			}
		}
		if len(m.Answer) == 0 {
			m.Ns = []dns.RR{z.soaFor(z.domain)} // the name is there, not this type
		}
		return m
	}
	if a, ok := reverseAddr(name); ok {
		if target, ok := z.ptr[a]; ok {
			if q.Qtype == dns.TypePTR || q.Qtype == dns.TypeANY {
				m.Answer = []dns.RR{&dns.PTR{Hdr: hdr(dns.TypePTR), Ptr: target}}
			} else {
				zone := z.zoneOf(name)
				if zone == "" {
					zone = name // a public address: the name is all the zone known here
				}
				m.Ns = []dns.RR{z.soaFor(zone)}
			}
			return m
		}
	}
	zone := z.zoneOf(name)
	if zone == "" {
		return nil
	}
	if name == zone && q.Qtype == dns.TypeSOA {
		m.Answer = []dns.RR{z.soaFor(zone)}
		return m
	}
	m.Ns = []dns.RR{z.soaFor(zone)}
	if name != zone && !z.hasBelow(name) {
		m.Rcode = dns.RcodeNameError
	}
	return m
}

// hasBelow reports whether a name of the zone lies below name (name then
// exists, without records of its own: NODATA, not NXDOMAIN).
func (z *Zone) hasBelow(name string) bool {
	for n := range z.names {
		if strings.HasSuffix(n, "."+name) {
			return true
		}
	}
	for a := range z.ptr {
		if rev, _ := dns.ReverseAddr(a.String()); strings.HasSuffix(rev, "."+name) {
			return true
		}
	}
	return false
}

func (z *Zone) soaFor(zone string) *dns.SOA {
	soa := *z.soa
	soa.Hdr.Name = zone
	return &soa
}

// reverseAddr is the address a full in-addr.arpa or ip6.arpa name stands
// for.
func reverseAddr(name string) (netip.Addr, bool) {
	if !strings.HasSuffix(name, ".arpa.") {
		return netip.Addr{}, false
	}
	labels := dns.SplitDomainName(name)
	switch {
	case len(labels) == 6 && strings.HasSuffix(name, ".in-addr.arpa."):
		var b [4]byte
		for i := 0; i < 4; i++ {
			v, ok := decimalByte(labels[3-i])
			if !ok {
				return netip.Addr{}, false
			}
			b[i] = v
		}
		return netip.AddrFrom4(b), true
	case len(labels) == 34 && strings.HasSuffix(name, ".ip6.arpa."):
		var b [16]byte
		for i := 0; i < 32; i++ {
			l := labels[31-i]
			if len(l) != 1 {
				return netip.Addr{}, false
			}
			v := strings.IndexByte("0123456789abcdef", l[0])
			if v < 0 {
				return netip.Addr{}, false
			}
			b[i/2] |= byte(v) << (4 * (1 - i%2))
		}
		return netip.AddrFrom16(b), true
	}
	return netip.Addr{}, false
}

func decimalByte(s string) (byte, bool) {
	if s == "" || len(s) > 3 || len(s) > 1 && s[0] == '0' {
		return 0, false
	}
	v := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + int(c-'0')
	}
	return byte(v), v < 256
}
