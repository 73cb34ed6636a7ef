package dhcpd4

import (
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/roostrouter/roost/agent/kind"
	"github.com/roostrouter/roost/agent/supervisor"
	"github.com/roostrouter/roost/dhcp/dns/servers"
	"github.com/roostrouter/roost/netconf"
)

// PoolRange is the server's output naming its dynamic range, start-end.
var PoolRange = supervisor.StringOutput("pool")

// Kind serves addresses on a LAN.
var Kind = kind.Kind{Name: "dhcp4-server", Outputs: []string{netconf.IfName.Key, PoolRange.Key, Hosts.Key}, New: func() kind.Decl { return &Decl{} }}

// Decl is a DHCPv4 server's declaration.
type Decl struct {
	Link      string        `json:"link"`    // the LAN's link, bridge or vlan service
	Address   string        `json:"address"` // the router's address service on it (server id, router, subnet)
	Pool      PoolDecl      `json:"pool"`
	LeaseTime kind.Duration `json:"leaseTime,omitempty"` // like 12h; default 12h
	// DNS are the servers handed out (option 6): addresses, or services
	// whose dns output names them (the LAN's dns service, or the WAN's
	// DHCP client when the router runs none), followed as they change.
	// Default: the router when the config runs a dns service, and the
	// servers the WAN's clients learn when it does not (servers.ForLAN).
	DNS    servers.List `json:"dns,omitempty"`
	Domain string       `json:"domain,omitempty"`
	Static []StaticDecl `json:"static,omitempty"`
}

// PoolDecl is the dynamic range.
type PoolDecl struct {
	Start netip.Addr `json:"start"`
	End   netip.Addr `json:"end"`
}

// StaticDecl is an address reserved for a MAC.
type StaticDecl struct {
	MAC     netconf.MAC `json:"mac"`
	Address netip.Addr  `json:"address"`
}

func (d *Decl) Check(c *kind.Check) {
	if !d.Pool.Start.Is4() || !d.Pool.End.Is4() || d.Pool.End.Less(d.Pool.Start) {
		c.Errorf("pool", "want IPv4 start and end, start before end")
	}
	if d.LeaseTime != 0 && time.Duration(d.LeaseTime) < time.Minute {
		c.Errorf("leaseTime", "%s: want a duration of a minute or more, like 12h", time.Duration(d.LeaseTime))
	}
	d.DNS.Check(c, "dns", func(a netip.AddrPort) string {
		if !a.Addr().Is4() || a.Port() != 53 {
			return "is not an IPv4 address (option 6 has no port)"
		}
		return ""
	})
	for i, st := range d.Static {
		if !st.Address.Is4() {
			c.Errorf(fmt.Sprintf("static[%d].address", i), "%s is not an IPv4 address", st.Address)
		}
		if len(st.MAC) == 0 {
			c.Errorf(fmt.Sprintf("static[%d].mac", i), "required: the host's MAC address")
		}
	}
	c.Ref("link", d.Link, kind.Ethernet)
	c.Ref("address", d.Address, kind.Address)
}

func (d *Decl) Build(env kind.Env) (kind.Built, error) {
	link := netconf.IfName.Of(d.Link)
	dns := d.DNS
	if len(dns) == 0 {
		dns = servers.ForLAN(env.Services)
	}
	srv := Server{LinkRef: link, AddressService: d.Address, StateDir: env.State, Domain: d.Domain, DNS: dns,
		LeaseTime: time.Duration(d.LeaseTime), Pool: Pool{Start: d.Pool.Start, End: d.Pool.End, Static: map[string]netip.Addr{}}}
	for _, st := range d.Static {
		srv.Pool.Static[net.HardwareAddr(st.MAC).String()] = st.Address
	}
	return kind.Built{Reads: []supervisor.Ref{link, netconf.Addr.Of(d.Address)}, Watches: dns.Refs(),
		New: func() supervisor.Service { c := srv; return &c }}, nil
}
