// Package firewall is roost's firewall: a ruleset model with zones, rendered
// into one nftables table of roost's own (inet roost) and applied
// atomically through netlink with google/nftables, never with the nft
// binary. Other tables are never touched.
//
// The default policy: input and forward drop; established and related
// accepted, invalid dropped, loopback accepted; the ICMPv6 that RFC 4890
// says must pass, echo rate-limited; DHCPv6 client replies on the WAN;
// SSH, DNS, DHCP and DHCPv6 from the LAN; IPv6 to LAN hosts closed unless
// allowed per host and port (RFC 6092); IPv4 masqueraded from the LAN out
// of the WAN; MSS clamped to the path MTU; port forwards with hairpin NAT.
//
// An IPv6 pinhole may name its host by interface identifier within the
// prefix an ra service announces: it follows that prefix when the ISP
// renumbers, and while the prefix is unknown it is absent, never wider.
package firewall

import (
	"fmt"
	"net/netip"
	"strings"
)

// Ruleset is the firewall's model.
type Ruleset struct {
	// Zones map a zone's name to its interfaces. "wan" and "lan" have the
	// default policy's meaning; others can be named by Open.
	Zones map[string][]string
	// Settling are zones with a member service that has not named its
	// interface yet (roostd starting, or handing over to a new roostd):
	// their live members are kept, only added to, so that a restart never
	// takes the LAN out of its zone for the moment its links take.
	Settling map[string]bool
	// Open accepts traffic to the router itself from a zone.
	Open []Port
	// Forwards send a WAN port to a LAN host (IPv4 DNAT).
	Forwards []Forward
	// Allow6 opens a LAN host's port to the WAN for IPv6.
	Allow6 []Allow6
	// LANPrefixes are the prefixes the ra services announce now, by
	// service name: the allow6 entries that name a host by its interface
	// identifier are in them. One missing leaves its entries out.
	LANPrefixes map[string]netip.Prefix
	// Rules are the user's own, added before the final count-and-drop of
	// their chain.
	Rules []Rule
}

// Rule is a user's rule in a documented, structured form (roostd has no
// nft parser, and needs none): every field set must match.
type Rule struct {
	Chain   string        `json:"chain"`            // input or forward
	From    string        `json:"from,omitempty"`   // zone the packet comes in on
	To      string        `json:"to,omitempty"`     // zone it goes out of (forward only)
	Proto   string        `json:"proto,omitempty"`  // tcp, udp, icmp or icmpv6
	Port    int           `json:"port,omitempty"`   // destination port (tcp, udp)
	Source  *netip.Prefix `json:"source,omitempty"` // source address or prefix
	Dest    *netip.Prefix `json:"dest,omitempty"`   // destination address or prefix
	Verdict string        `json:"verdict"`          // accept or drop
}

// Port is a port opened on the router.
type Port struct {
	Zone  string `json:"zone"`
	Proto string `json:"proto"` // tcp or udp
	Port  int    `json:"port"`
}

// Forward is a port forward.
type Forward struct {
	Proto  string     `json:"proto"`
	Port   int        `json:"port"` // on the WAN
	To     netip.Addr `json:"to"`   // a LAN host's IPv4 address
	ToPort int        `json:"toPort,omitempty"`
}

// Allow6 opens a port of a LAN host to the WAN, for IPv6. The host is
// fixed (To), or it is Host within the /64 that the ra service RA
// announces, so that the pinhole follows the delegated prefix when the
// ISP renumbers.
type Allow6 struct {
	To netip.Prefix `json:"to,omitzero"`  // a host (/128) or a prefix
	RA string       `json:"ra,omitempty"` // an ra service: the host is in the prefix it announces
	// Host is the host's interface identifier, its last 64 bits, as it
	// forms its addresses by SLAAC (ip token, or its MAC's EUI-64):
	// ::1234:5678:9abc:def0.
	Host  netip.Addr `json:"host,omitzero"`
	Proto string     `json:"proto"`
	Port  int        `json:"port"`
}

// dest is what the entry opens: To, or Host in the prefix its ra
// service announces now; false while that prefix is unknown, so that a
// pinhole is absent rather than open to more than its host.
func (a Allow6) dest(lan map[string]netip.Prefix) (netip.Prefix, bool) {
	if a.RA == "" {
		return a.To, a.To.IsValid()
	}
	p, ok := lan[a.RA]
	if !ok || !p.Addr().Is6() || p.Bits() > 64 || !validHost(a.Host) {
		return netip.Prefix{}, false
	}
	net, host := p.Masked().Addr().As16(), a.Host.As16()
	copy(net[8:], host[8:])
	return netip.PrefixFrom(netip.AddrFrom16(net), 128), true
}

// validHost: an interface identifier, the last 64 bits of an address
// and nothing before them.
func validHost(h netip.Addr) bool {
	b := h.As16()
	return h.Is6() && h.Zone() == "" && [8]byte(b[:8]) == [8]byte{} && [8]byte(b[8:]) != [8]byte{}
}

// Check reports every problem of a ruleset.
func (r Ruleset) Check() []string {
	var errs []string
	zone := func(where, z string) {
		if _, ok := r.Zones[z]; !ok {
			errs = append(errs, fmt.Sprintf("%s: unknown zone %q (zones: %s)", where, z, strings.Join(r.zoneList(), ", ")))
		}
	}
	proto := func(where, p string) {
		if p != "tcp" && p != "udp" {
			errs = append(errs, fmt.Sprintf("%s: protocol %q: want tcp or udp", where, p))
		}
	}
	port := func(where string, p int) {
		if p < 1 || p > 65535 {
			errs = append(errs, fmt.Sprintf("%s: port %d: want 1 to 65535", where, p))
		}
	}
	for name, ifs := range r.Zones {
		if !validSetName(name) {
			errs = append(errs, fmt.Sprintf("zones.%s: a zone name is lower-case letters, digits and _", name))
		}
		_ = ifs
	}
	for i, o := range r.Open {
		w := fmt.Sprintf("open[%d]", i)
		zone(w, o.Zone)
		proto(w, o.Proto)
		port(w, o.Port)
	}
	seen := map[string]int{}
	for i, f := range r.Forwards {
		w := fmt.Sprintf("forwards[%d]", i)
		proto(w, f.Proto)
		port(w, f.Port)
		if f.ToPort != 0 {
			port(w+".toPort", f.ToPort)
		}
		if !f.To.Is4() {
			errs = append(errs, fmt.Sprintf("%s: to %q: want a LAN host's IPv4 address (IPv6 hosts are opened with allow6)", w, f.To))
		}
		key := fmt.Sprintf("%s/%d", f.Proto, f.Port)
		if j, dup := seen[key]; dup {
			errs = append(errs, fmt.Sprintf("%s: %s port %d is already forwarded by forwards[%d]", w, f.Proto, f.Port, j))
		}
		seen[key] = i
	}
	for i, a := range r.Allow6 {
		w := fmt.Sprintf("allow6[%d]", i)
		proto(w, a.Proto)
		port(w, a.Port)
		follows := a.RA != "" || a.Host.IsValid()
		switch {
		case follows && a.To.IsValid():
			errs = append(errs, fmt.Sprintf("%s: to %q and ra/host: want either a fixed to, or ra and host", w, a.To))
		case follows && a.RA == "":
			errs = append(errs, fmt.Sprintf("%s.ra: host %s needs the ra service whose prefix it is in", w, a.Host))
		case follows && !a.Host.IsValid():
			errs = append(errs, fmt.Sprintf("%s.host: ra %q needs the host's interface identifier, like ::1234:5678:9abc:def0", w, a.RA))
		case follows && !validHost(a.Host):
			errs = append(errs, fmt.Sprintf("%s.host: %q: want an interface identifier, the host's last 64 bits, like ::1234:5678:9abc:def0", w, a.Host))
		case follows:
		case !a.To.IsValid():
			errs = append(errs, fmt.Sprintf("%s: want to (an IPv6 host or prefix), or ra and host (a host in a LAN's delegated prefix)", w))
		case !a.To.Addr().Is6() || a.To.Addr().Is4In6():
			errs = append(errs, fmt.Sprintf("%s: to %q: want an IPv6 host or prefix", w, a.To))
		}
	}
	for i, u := range r.Rules {
		w := fmt.Sprintf("rules[%d]", i)
		if u.Chain != "input" && u.Chain != "forward" {
			errs = append(errs, fmt.Sprintf("%s: chain %q: want input or forward", w, u.Chain))
		}
		if u.From != "" {
			zone(w+".from", u.From)
		}
		if u.To != "" {
			zone(w+".to", u.To)
			if u.Chain == "input" {
				errs = append(errs, w+".to: input rules have no outgoing zone")
			}
		}
		switch u.Proto {
		case "", "icmp", "icmpv6":
			if u.Port != 0 {
				errs = append(errs, fmt.Sprintf("%s: a port needs proto tcp or udp", w))
			}
		case "tcp", "udp":
			if u.Port != 0 {
				port(w, u.Port)
			}
		default:
			errs = append(errs, fmt.Sprintf("%s: protocol %q: want tcp, udp, icmp or icmpv6", w, u.Proto))
		}
		if u.Source != nil && u.Dest != nil && u.Source.Addr().Is4() != u.Dest.Addr().Is4() {
			errs = append(errs, fmt.Sprintf("%s: source and dest are of different families", w))
		}
		if u.Verdict != "accept" && u.Verdict != "drop" {
			errs = append(errs, fmt.Sprintf("%s: verdict %q: want accept or drop", w, u.Verdict))
		}
	}
	if _, ok := r.Zones["wan"]; !ok {
		errs = append(errs, "zones: a wan zone is required")
	}
	if _, ok := r.Zones["lan"]; !ok {
		errs = append(errs, "zones: a lan zone is required")
	}
	return errs
}

func validSetName(s string) bool {
	if s == "" || len(s) > 16 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}
