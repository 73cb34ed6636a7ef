// Package dns is the LAN's DNS forwarder: a caching forwarder on the
// router's LAN addresses that answers for the LAN's own names (the router,
// the DHCP server's hosts, static hosts) and asks the ISP's servers the
// rest, following them as the WAN learns them.
package dns

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/roostrouter/roost/agent/kind"
	"github.com/roostrouter/roost/agent/supervisor"
	"github.com/roostrouter/roost/dhcp/dhcpd4"
	"github.com/roostrouter/roost/dhcp/dns/servers"
	"github.com/roostrouter/roost/netconf"
)

// Upstreams is the service's output naming the servers it asks now,
// space-separated; its dns output (servers.Output) is the addresses it
// answers on, for a DHCP server or an RA to hand out.
var Upstreams = supervisor.StringOutput("upstreams")

// Kind answers DNS for a LAN.
var Kind = kind.Kind{Name: "dns", Roles: []kind.Role{kind.Resolver}, Outputs: []string{servers.Output.Key, Upstreams.Key},
	New: func() kind.Decl { return &Decl{} }}

// The defaults, and the bounds of what the config may set.
const (
	DefaultCacheSize = 1 << 20 // bytes: some thousands of answers
	DefaultStaleFor  = 24 * time.Hour
	maxCacheSize     = 64 << 20
)

// Decl is a dns service's declaration.
type Decl struct {
	Link       string                  `json:"link"`                 // the LAN's link, bridge or vlan service
	Upstreams  servers.List            `json:"upstreams,omitempty"`  // addresses, or services whose dns output it follows; default every WAN client's
	LeasesFrom string                  `json:"leasesFrom,omitempty"` // a dhcp4-server whose hosts it names
	Hostname   string                  `json:"hostname,omitempty"`   // the router's name in the domain
	Domain     string                  `json:"domain,omitempty"`     // default home.arpa
	Hosts      map[string][]netip.Addr `json:"hosts,omitempty"`      // static names in the domain
	CacheSize  int                     `json:"cacheSize,omitempty"`  // bytes; default 1 MiB
	ServeStale *kind.Duration          `json:"serveStale,omitempty"` // default 24h; 0s: never
	RateLimit  int                     `json:"rateLimit,omitempty"`  // queries a second per client; default 250
}

func (d *Decl) Check(c *kind.Check) {
	c.Ref("link", d.Link, kind.Ethernet)
	d.Upstreams.Check(c, "upstreams", func(a netip.AddrPort) string {
		if a.Addr().IsUnspecified() || a.Addr().IsMulticast() {
			return "is not a server's address"
		}
		return ""
	})
	if d.LeasesFrom != "" {
		c.Follow("leasesFrom", d.LeasesFrom, dhcpd4.Hosts.Key)
	}
	if d.Hostname != "" && !dnsLabel(d.Hostname) {
		c.Errorf("hostname", "%q is not a host name (letters, digits and inner hyphens, up to 63)", d.Hostname)
	}
	if d.Domain != "" {
		if _, ok := dns.IsDomainName(d.Domain); !ok || d.Domain == "." || strings.ContainsAny(d.Domain, " \t") {
			c.Errorf("domain", "%q is not a domain name, like home.arpa", d.Domain)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(d.Hosts)) {
		for _, l := range strings.Split(name, ".") {
			if !dnsLabel(l) {
				c.Errorf("hosts", "%q is not a name in the domain, like nas or printer.office", name)
				break
			}
		}
		for i, a := range d.Hosts[name] {
			if !a.IsValid() || a.IsUnspecified() {
				c.Errorf(fmt.Sprintf("hosts.%s[%d]", name, i), "want an address")
			}
		}
	}
	if d.CacheSize != 0 && (d.CacheSize < 64<<10 || d.CacheSize > maxCacheSize) {
		c.Errorf("cacheSize", "%d: want bytes from 65536 to %d (the default is %d)", d.CacheSize, maxCacheSize, DefaultCacheSize)
	}
	if st := d.ServeStale; st != nil && (*st < 0 || time.Duration(*st) > 7*24*time.Hour) {
		c.Errorf("serveStale", "%s: want a duration up to 7 days (RFC 8767), like 24h", time.Duration(*st))
	}
	if d.RateLimit < 0 {
		c.Errorf("rateLimit", "%d: want queries a second, more than 0", d.RateLimit)
	}
}

func (d *Decl) Build(env kind.Env) (kind.Built, error) {
	link := netconf.IfName.Of(d.Link)
	upstreams := d.Upstreams
	if len(upstreams) == 0 {
		upstreams = servers.Learned(env.Services)
	}
	watches := upstreams.Refs()
	if d.LeasesFrom != "" {
		watches = append(watches, dhcpd4.Hosts.Of(d.LeasesFrom))
	}
	svc := Service{NL: env.NL, LinkRef: link, Upstreams: upstreams, LeasesFrom: d.LeasesFrom,
		Hostname: d.Hostname, Domain: d.Domain, Static: d.Hosts, CacheSize: d.CacheSize,
		StaleFor: DefaultStaleFor, RateLimit: d.RateLimit}
	if svc.CacheSize == 0 {
		svc.CacheSize = DefaultCacheSize
	}
	if d.ServeStale != nil {
		svc.StaleFor = time.Duration(*d.ServeStale)
	}
	return kind.Built{Reads: []supervisor.Ref{link}, Watches: watches,
		New: func() supervisor.Service { c := svc; return &c }}, nil
}
