package client6

import (
	"net/netip"
	"strconv"

	"github.com/roostrouter/roost/agent/kind"
	"github.com/roostrouter/roost/agent/supervisor"
	"github.com/roostrouter/roost/netconf"
)

// LeaseOutputs are the outputs of one address or delegated prefix the
// client holds: a table, address/N or prefix/N, with its lifetimes in
// seconds counted from Renewed.
type LeaseOutputs struct {
	Table     string
	Addr      supervisor.Output[netip.Addr] // the address, or the prefix's first address
	Len       supervisor.Output[int]
	Preferred supervisor.Output[int]
	Valid     supervisor.Output[int]
}

func lease(table, addrKey string) LeaseOutputs {
	return LeaseOutputs{Table: table, Addr: supervisor.AddrOutput(addrKey).In(table), Len: supervisor.IntOutput("len").In(table),
		Preferred: supervisor.IntOutput("preferred").In(table), Valid: supervisor.IntOutput("valid").In(table)}
}

// Address is the nth address (IA_NA) the client holds.
func Address(n int) LeaseOutputs { return lease(addressTables+"/"+strconv.Itoa(n), "address") }

// Prefix is the nth prefix (IA_PD) delegated to it.
func Prefix(n int) LeaseOutputs { return lease(prefixTables+"/"+strconv.Itoa(n), "prefix") }

// The client's other outputs.
var (
	DNS     = supervisor.StringOutput("dns") // addresses, space-separated
	Server  = supervisor.StringOutput("server")
	Renewed = supervisor.Int64Output("renewed") // Unix time the lifetimes count from
)

// outputKeys are the client's top-level outputs, tables included.
var outputKeys = []string{addressTables, prefixTables, DNS.Key, Server.Key, Renewed.Key}

const addressTables, prefixTables = "address", "prefix"

// Kind gets addresses and delegated prefixes from the ISP.
var Kind = kind.Kind{Name: "dhcp6-client", Roles: []kind.Role{kind.Delegator, kind.Learner}, Outputs: []string{DNS.Key, Server.Key, Renewed.Key},
	New: func() kind.Decl { return &Decl{} }}

// Decl is a DHCPv6 client's declaration.
type Decl struct {
	Link          string `json:"link"`
	PrefixHint    int    `json:"prefixHint,omitempty"`    // the delegated prefix length to ask for, like 56
	ReleaseOnStop bool   `json:"releaseOnStop,omitempty"` // give the binding back when roostd stops
}

func (d *Decl) Check(c *kind.Check) {
	if h := d.PrefixHint; h != 0 && (h < 32 || h > 64) {
		c.Errorf("prefixHint", "%d: want a prefix length from 32 to 64", h)
	}
	c.Ref("link", d.Link, kind.Device)
}

func (d *Decl) Build(env kind.Env) (kind.Built, error) {
	link := netconf.IfName.Of(d.Link)
	return kind.Built{Reads: []supervisor.Ref{link}, New: func() supervisor.Service {
		return &Client{NL: env.NL, LinkRef: link, StateDir: env.State, PrefixHint: d.PrefixHint, ReleaseOnStop: d.ReleaseOnStop, ProcSys: env.ProcSys}
	}}, nil
}
