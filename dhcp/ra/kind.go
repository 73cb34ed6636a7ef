package ra

import (
	"net/netip"
	"time"

	"github.com/roostrouter/roost/agent/kind"
	"github.com/roostrouter/roost/agent/supervisor"
	"github.com/roostrouter/roost/dhcp/client6"
	"github.com/roostrouter/roost/dhcp/dns/servers"
	"github.com/roostrouter/roost/netconf"
)

// The service's outputs: the LAN's /64 and the router's address in it.
var (
	PrefixOut = supervisor.PrefixOutput("prefix")
	AddrOut   = supervisor.AddrOutput("address")
)

// Kind puts a /64 of a delegated prefix on a LAN and advertises it.
var Kind = kind.Kind{Name: "ra", Roles: []kind.Role{kind.Announcer}, Outputs: []string{PrefixOut.Key, AddrOut.Key},
	New: func() kind.Decl { return &Decl{} }}

// Decl is an ra service's declaration.
type Decl struct {
	Link       string        `json:"link"`               // the LAN's link, bridge or vlan service
	PrefixFrom string        `json:"prefixFrom"`         // the dhcp6-client service whose prefix it splits
	Subnet     int           `json:"subnet"`             // which /64: a /56 has 256
	Interval   kind.Duration `json:"interval,omitempty"` // between unsolicited advertisements; default 200s
	MTU        int           `json:"mtu,omitempty"`
	// DNS are the servers announced (RDNSS): IPv6 addresses, or services
	// whose dns output names them, followed as they change. Default: the
	// router's address on the LAN when the config runs a dns service, and
	// the servers the WAN's clients learn when it does not.
	DNS servers.List `json:"dns,omitempty"`
}

func (d *Decl) Check(c *kind.Check) {
	if d.Subnet < 0 || d.Subnet > 65535 {
		c.Errorf("subnet", "%d: want 0 to 65535", d.Subnet)
	}
	if d.Interval != 0 && time.Duration(d.Interval) < time.Second {
		c.Errorf("interval", "%s: want a duration of a second or more, like 200s", time.Duration(d.Interval))
	}
	c.MTU("mtu", d.MTU)
	d.DNS.Check(c, "dns", func(a netip.AddrPort) string {
		if !a.Addr().Is6() || a.Addr().Is4In6() || a.Port() != 53 {
			return "is not an IPv6 address (RDNSS has no port)"
		}
		return ""
	})
	c.Ref("link", d.Link, kind.Ethernet)
	c.Ref("prefixFrom", d.PrefixFrom, kind.Delegator)
}

func (d *Decl) Build(env kind.Env) (kind.Built, error) {
	link, delegated := netconf.IfName.Of(d.Link), client6.Prefix(0)
	dns := d.DNS
	if len(dns) == 0 {
		dns = servers.ForLAN(env.Services)
	}
	return kind.Built{
		// Not the lifetimes: the service follows those itself, and a
		// renewal need not re-run it.
		Reads:   []supervisor.Ref{delegated.Addr.Of(d.PrefixFrom), delegated.Len.Of(d.PrefixFrom), link},
		Watches: append([]supervisor.Ref{client6.Renewed.Of(d.PrefixFrom)}, dns.Refs()...),
		New: func() supervisor.Service {
			return &Service{NL: env.NL, LinkRef: link, PrefixFrom: d.PrefixFrom, Subnet: d.Subnet, Interval: time.Duration(d.Interval), MTU: d.MTU, DNS: dns, StateDir: env.State}
		},
	}, nil
}
