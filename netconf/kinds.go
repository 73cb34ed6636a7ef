package netconf

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strings"

	"github.com/roostrouter/roost/agent/kind"
	"github.com/roostrouter/roost/agent/supervisor"
)

// The outputs of the device kinds (link, bridge, vlan, pppoe) and of the
// address and route kinds. IfName is the one most services read: the
// kernel's name of the device a service runs on.
var (
	IfName       = supervisor.StringOutput("ifname")
	IfIndex      = supervisor.IntOutput("ifindex")
	LinkMTU      = supervisor.IntOutput("mtu")
	LinkMAC      = supervisor.StringOutput("mac")
	Addr         = supervisor.AddrOutput("address")
	PrefixLength = supervisor.IntOutput("prefix-length")
	Destination  = supervisor.PrefixOutput("destination")
	Gateway      = supervisor.AddrOutput("gateway")
	PPPPeer      = supervisor.AddrOutput("peer")
	PPPDNS       = supervisor.StringOutput("dns") // addresses, space-separated
	PPPIPv6      = "ipv6"                         // the table of IPv6CP's addresses
	PPPLocal6    = supervisor.AddrOutput("local").In(PPPIPv6)
	PPPPeer6     = supervisor.AddrOutput("peer").In(PPPIPv6)
)

var deviceOutputs = []string{IfName.Key, IfIndex.Key, LinkMTU.Key, LinkMAC.Key}

// LinkKind configures one of the board's interfaces.
var LinkKind = kind.Kind{Name: "link", Roles: []kind.Role{kind.Ethernet, kind.Device}, Outputs: deviceOutputs,
	New: func() kind.Decl { return &LinkDecl{} }}

// LinkDecl is a link's declaration.
type LinkDecl struct {
	Interface string `json:"interface"`        // the board's logical name: wan, lan0, …
	MTU       int    `json:"mtu,omitempty"`    // unchanged if 0
	MAC       MAC    `json:"mac,omitempty"`    // unchanged if empty
	Bridge    string `json:"bridge,omitempty"` // the bridge service it joins
}

func (d *LinkDecl) Check(c *kind.Check) {
	if d.Interface == "" {
		c.Errorf("interface", "required: the board's interface (%s)", strings.Join(c.Board.InterfaceNames(), ", "))
	} else if _, ok := c.Board.Device(d.Interface); !ok {
		c.Errorf("interface", "board %s has no interface %q (it has %s)", c.Board.Name, d.Interface, strings.Join(c.Board.InterfaceNames(), ", "))
	}
	c.MTU("mtu", d.MTU)
	if d.Bridge != "" {
		c.Ref("bridge", d.Bridge, kind.Bridge)
	}
}

func (d *LinkDecl) Build(env kind.Env) (kind.Built, error) {
	dev, _ := env.Board.Device(d.Interface)
	var b kind.Built
	var br *supervisor.Ref
	if d.Bridge != "" {
		r := IfName.Of(d.Bridge)
		br = &r
		b.Reads = append(b.Reads, r)
	}
	b.New = func() supervisor.Service {
		return &Link{NL: env.NL, Device: dev, MTU: d.MTU, MAC: net.HardwareAddr(d.MAC), BridgeRef: br}
	}
	return b, nil
}

// BridgeKind creates a bridge.
var BridgeKind = kind.Kind{Name: "bridge", Roles: []kind.Role{kind.Bridge, kind.Ethernet, kind.Device}, Outputs: deviceOutputs,
	New: func() kind.Decl { return &BridgeDecl{} }}

// BridgeDecl is a bridge's declaration.
type BridgeDecl struct {
	Name string `json:"name"`
	MTU  int    `json:"mtu,omitempty"`
}

func (d *BridgeDecl) Check(c *kind.Check) {
	c.Ifname("name", d.Name)
	c.MTU("mtu", d.MTU)
}

func (d *BridgeDecl) Build(env kind.Env) (kind.Built, error) {
	return kind.Built{New: func() supervisor.Service { return &Bridge{NL: env.NL, Name: d.Name, MTU: d.MTU} }}, nil
}

// VLANKind creates a VLAN device on a link.
var VLANKind = kind.Kind{Name: "vlan", Roles: []kind.Role{kind.Ethernet, kind.Device}, Outputs: deviceOutputs,
	New: func() kind.Decl { return &VLANDecl{} }}

// VLANDecl is a VLAN's declaration.
type VLANDecl struct {
	Parent string `json:"parent"` // a link, bridge or vlan service
	ID     int    `json:"id"`
	Name   string `json:"name"`
}

func (d *VLANDecl) Check(c *kind.Check) {
	c.Ifname("name", d.Name)
	if d.ID < 1 || d.ID > 4094 {
		c.Errorf("id", "%d is not a VLAN id (1 to 4094)", d.ID)
	}
	c.Ref("parent", d.Parent, kind.Ethernet)
}

func (d *VLANDecl) Build(env kind.Env) (kind.Built, error) {
	parent := IfName.Of(d.Parent)
	return kind.Built{Reads: []supervisor.Ref{parent},
		New: func() supervisor.Service { return &VLAN{NL: env.NL, Name: d.Name, ID: d.ID, ParentRef: parent} }}, nil
}

// AddressKind puts a static address on a link.
var AddressKind = kind.Kind{Name: "address", Roles: []kind.Role{kind.Address}, Outputs: []string{IfName.Key, Addr.Key, PrefixLength.Key},
	New: func() kind.Decl { return &AddressDecl{} }}

// AddressDecl is an address's declaration.
type AddressDecl struct {
	Link    string       `json:"link"`    // a link, bridge or vlan service
	Address netip.Prefix `json:"address"` // the address and its prefix length: 192.168.1.1/24, fd00::1/64
}

func (d *AddressDecl) Check(c *kind.Check) {
	if !d.Address.IsValid() {
		c.Errorf("address", "required: an address with its prefix length, like 192.168.1.1/24")
	}
	c.Ref("link", d.Link, kind.Ethernet)
}

func (d *AddressDecl) Build(env kind.Env) (kind.Built, error) {
	link := IfName.Of(d.Link)
	prefix := &net.IPNet{IP: d.Address.Addr().AsSlice(), Mask: net.CIDRMask(d.Address.Bits(), d.Address.Addr().BitLen())}
	return kind.Built{Reads: []supervisor.Ref{link},
		New: func() supervisor.Service { return &Address{NL: env.NL, LinkRef: link, Prefix: prefix} }}, nil
}

// RouteKind adds a route.
var RouteKind = kind.Kind{Name: "route", Outputs: []string{Destination.Key, Gateway.Key},
	New: func() kind.Decl { return &RouteDecl{} }}

// RouteDecl is a route's declaration.
type RouteDecl struct {
	Link        string       `json:"link"`
	Destination netip.Prefix `json:"destination"` // 0.0.0.0/0 or ::/0 for a default route
	Gateway     RouteGateway `json:"gateway,omitempty"`
	Metric      int          `json:"metric,omitempty"`
	Table       int          `json:"table,omitempty"`
}

// RouteGateway is a fixed address ("192.0.2.1") or another service's
// output ({"service": "wan-dhcp", "output": "router"}).
type RouteGateway struct {
	IP      netip.Addr
	Service string
	Output  string
}

func (g *RouteGateway) UnmarshalJSON(b []byte) error {
	var s string
	if json.Unmarshal(b, &s) == nil {
		ip, err := netip.ParseAddr(s)
		if err != nil {
			return fmt.Errorf("%q is not an IP address", s)
		}
		g.IP = ip
		return nil
	}
	var ref struct {
		Service string `json:"service"`
		Output  string `json:"output"`
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&ref); err != nil || ref.Service == "" || ref.Output == "" {
		return fmt.Errorf(`want an IP address or {"service": …, "output": …}`)
	}
	g.Service, g.Output = ref.Service, ref.Output
	return nil
}

func (d *RouteDecl) Check(c *kind.Check) {
	if !d.Destination.IsValid() {
		c.Errorf("destination", "required: a prefix, like 0.0.0.0/0 or 2001:db8::/32")
	}
	if d.Metric < 0 {
		c.Errorf("metric", "%d is negative", d.Metric)
	}
	if d.Table < 0 || int64(d.Table) > 0xfffffff0 {
		c.Errorf("table", "%d is not a routing table", d.Table)
	}
	c.Ref("link", d.Link, kind.Device)
	if d.Gateway.Service != "" {
		c.OutputRef("gateway.service", d.Gateway.Service, d.Gateway.Output)
	}
}

func (d *RouteDecl) Build(env kind.Env) (kind.Built, error) {
	link := IfName.Of(d.Link)
	b := kind.Built{Reads: []supervisor.Ref{link}}
	var gwRef *supervisor.Ref
	if d.Gateway.Service != "" {
		gwRef = &supervisor.Ref{Service: d.Gateway.Service, Key: d.Gateway.Output}
		b.Reads = append(b.Reads, *gwRef)
	}
	var gw net.IP
	if d.Gateway.IP.IsValid() {
		gw = d.Gateway.IP.AsSlice()
	}
	p := d.Destination.Masked()
	dst := &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
	b.New = func() supervisor.Service {
		return &Route{NL: env.NL, LinkRef: link, Destination: dst, Gateway: gw, GatewayRef: gwRef, Metric: d.Metric, Table: d.Table}
	}
	return b, nil
}

// SysctlKind sets kernel parameters.
var SysctlKind = kind.Kind{Name: "sysctl", New: func() kind.Decl { return &SysctlDecl{} }}

// SysctlDecl is a sysctl service's declaration.
type SysctlDecl struct {
	Values map[string]string `json:"values"`
}

func (d *SysctlDecl) Check(c *kind.Check) {
	if len(d.Values) == 0 {
		c.Errorf("values", "required: at least one key")
	}
	for k := range d.Values {
		if k == "" || strings.Contains(k, "/") || strings.Contains(k, "..") || strings.HasPrefix(k, ".") {
			c.Errorf("values", "%q is not a sysctl key like net.ipv4.ip_forward", k)
		}
	}
}

func (d *SysctlDecl) Build(env kind.Env) (kind.Built, error) {
	b := kind.Built{New: func() supervisor.Service { return &Sysctl{ProcSys: env.ProcSys, Values: d.Values, StateDir: env.State} }}
	if setsForwarding(d.Values) {
		// Forwarding only once the firewall is in force: the firewall
		// service turns it off while it cannot be.
		b.AfterKinds = []string{"firewall"}
	}
	return b, nil
}

// setsForwarding reports whether sysctl values turn on forwarding.
func setsForwarding(values map[string]string) bool {
	for k, v := range values {
		k = strings.ReplaceAll(k, "/", ".")
		if v != "0" && (k == "net.ipv4.ip_forward" || strings.HasSuffix(k, ".forwarding")) {
			return true
		}
	}
	return false
}

// MAC is a MAC address in the config, like 02:00:00:00:00:01.
type MAC net.HardwareAddr

func (m *MAC) UnmarshalText(b []byte) error {
	hw, err := net.ParseMAC(string(b))
	if err != nil {
		return fmt.Errorf("%q is not a MAC address", b)
	}
	*m = MAC(hw)
	return nil
}

func (m MAC) MarshalText() ([]byte, error) { return []byte(net.HardwareAddr(m).String()), nil }

// PPPoEKind is a WAN over PPPoE: pppd with its PPPoE plugin on a link,
// its hooks delivered through hooks.
func PPPoEKind(hooks *PPPHooks) kind.Kind {
	return kind.Kind{Name: "pppoe", Roles: []kind.Role{kind.Device, kind.Learner},
		Outputs: []string{IfName.Key, Addr.Key, PPPPeer.Key, PPPDNS.Key},
		New:     func() kind.Decl { return &PPPoEDecl{hooks: hooks} }}
}

// PPPoEDecl is a PPPoE session's declaration.
type PPPoEDecl struct {
	Link         string `json:"link"`           // the Ethernet link, or a vlan on it
	User         string `json:"user"`           // the ISP's username
	PasswordFile string `json:"passwordFile"`   // absolute, outside the store: under $STATE or a secrets path
	Unit         int    `json:"unit,omitempty"` // the interface is ppp<unit>; default 0
	MTU          int    `json:"mtu,omitempty"`  // and MRU; default 1492
	LCPEcho      *struct {
		Interval int `json:"interval"` // seconds between echoes; default 10
		Failures int `json:"failures"` // missed echoes before the link is down; default 3
	} `json:"lcpEcho,omitempty"`
	IPv6  *bool  `json:"ipv6,omitempty"` // negotiate IPv6CP; default true
	Pppd  string `json:"pppd,omitempty"` // pppd's path, like the system's own /nix/store/…-ppp/bin/pppd; default pppd from PATH
	hooks *PPPHooks
}

func (d *PPPoEDecl) Check(c *kind.Check) {
	if d.User == "" {
		c.Errorf("user", "required: the username your ISP gave you")
	}
	switch {
	case d.PasswordFile == "":
		c.Errorf("passwordFile", "required: a file holding the password, like /persist/secrets/pppoe-password")
	case !filepath.IsAbs(d.PasswordFile):
		c.Errorf("passwordFile", "%q: want an absolute path", d.PasswordFile)
	case strings.HasPrefix(filepath.Clean(d.PasswordFile), "/nix/store/"):
		c.Errorf("passwordFile", "%q is in the Nix store, which anyone on the router can read: keep it under the state folder or a secrets path", d.PasswordFile)
	}
	if d.Unit < 0 || d.Unit > 999 {
		c.Errorf("unit", "%d: want 0 to 999", d.Unit)
	}
	if d.MTU != 0 && (d.MTU < 576 || d.MTU > 1492) {
		c.Errorf("mtu", "%d: want 576 to 1492 (PPPoE takes 8 bytes of Ethernet's 1500)", d.MTU)
	}
	if e := d.LCPEcho; e != nil && (e.Interval < 1 || e.Failures < 1) {
		c.Errorf("lcpEcho", "want an interval and a failure count of 1 or more")
	}
	c.Ref("link", d.Link, kind.Ethernet)
}

func (d *PPPoEDecl) Build(env kind.Env) (kind.Built, error) {
	link := IfName.Of(d.Link)
	svc := PPPoE{NL: env.NL, LinkRef: link, Name: env.Name, User: d.User, PasswordFile: d.PasswordFile,
		Unit: d.Unit, MTU: d.MTU, NoIPv6: d.IPv6 != nil && !*d.IPv6, StateDir: env.State,
		Roostd: env.Self, Root: env.Root, Hooks: d.hooks, Pppd: d.Pppd}
	if d.LCPEcho != nil {
		svc.EchoInterval, svc.EchoFailures = d.LCPEcho.Interval, d.LCPEcho.Failures
	}
	return kind.Built{Reads: []supervisor.Ref{link}, New: func() supervisor.Service { c := svc; return &c }}, nil
}
