package client4

import (
	"github.com/roostrouter/roost/agent/kind"
	"github.com/roostrouter/roost/agent/supervisor"
	"github.com/roostrouter/roost/netconf"
)

// The client's outputs, besides netconf's IfName, Addr and PrefixLength
// (an address service's, so that what reads one reads the other).
var (
	Router     = supervisor.AddrOutput("router")
	DNS        = supervisor.StringOutput("dns") // addresses, space-separated
	Domain     = supervisor.StringOutput("domain")
	Server     = supervisor.AddrOutput("server")
	LeaseTime  = supervisor.IntOutput("lease-time")  // seconds
	RenewTime  = supervisor.IntOutput("renew-time")  // seconds: T1
	RebindTime = supervisor.IntOutput("rebind-time") // seconds: T2
	Expires    = supervisor.Int64Output("expires")   // Unix time
)

var outputKeys = []string{netconf.IfName.Key, netconf.Addr.Key, netconf.PrefixLength.Key, Router.Key, DNS.Key, Domain.Key,
	Server.Key, LeaseTime.Key, RenewTime.Key, RebindTime.Key, Expires.Key}

// Kind gets a link's IPv4 address from a DHCP server.
var Kind = kind.Kind{Name: "dhcp4-client", Roles: []kind.Role{kind.Learner}, Outputs: outputKeys, New: func() kind.Decl { return &Decl{} }}

// Decl is a DHCPv4 client's declaration.
type Decl struct {
	Link     string `json:"link"`               // a link, bridge or vlan service
	Hostname string `json:"hostname,omitempty"` // sent in option 12
	ClientID string `json:"clientId,omitempty"` // sent in option 61
}

func (d *Decl) Check(c *kind.Check) { c.Ref("link", d.Link, kind.Ethernet) }

func (d *Decl) Build(env kind.Env) (kind.Built, error) {
	link := netconf.IfName.Of(d.Link)
	return kind.Built{Reads: []supervisor.Ref{link}, New: func() supervisor.Service {
		return &Client{NL: env.NL, LinkRef: link, StateDir: env.State, Hostname: d.Hostname, ClientID: d.ClientID}
	}}, nil
}
