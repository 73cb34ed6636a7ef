package agent

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/roostrouter/roost/agent/config"
	"github.com/roostrouter/roost/agent/supervisor"
	"github.com/roostrouter/roost/dhcp/client4"
	"github.com/roostrouter/roost/dhcp/client6"
	"github.com/roostrouter/roost/dhcp/dhcpd4"
	"github.com/roostrouter/roost/dhcp/ra"
	"github.com/roostrouter/roost/firewall"
	"github.com/roostrouter/roost/netconf"
)

// specs turns the config's services into the supervisor's.
func (a *Agent) specs(cfg *config.Config) ([]supervisor.Spec, error) {
	nl, procSys, state := a.nl, "/proc/sys", a.opts.State
	board := cfg.BoardInfo()
	var out []supervisor.Spec
	if ssh, ok := a.sshSpec(cfg); ok {
		out = append(out, ssh)
	}
	var firewalls []string
	for name, s := range cfg.Services {
		if s.Firewall != nil {
			firewalls = append(firewalls, name)
		}
	}
	for name, s := range cfg.Services {
		sp := supervisor.Spec{Name: name, Kind: s.Kind, Deps: s.Deps(), Fingerprint: s.Fingerprint()}
		ifname := func(svc string) supervisor.Ref { return supervisor.Ref{Service: svc, Key: "ifname"} }
		switch {
		case s.Link != nil:
			l := *s.Link
			dev, _ := board.Device(l.Interface)
			mac, _ := net.ParseMAC(l.MAC)
			var br *supervisor.Ref
			if l.Bridge != "" {
				r := ifname(l.Bridge)
				br = &r
				sp.Reads = append(sp.Reads, r)
			}
			sp.New = func() supervisor.Service {
				return &netconf.Link{NL: nl, Device: dev, MTU: l.MTU, MAC: mac, BridgeRef: br}
			}
		case s.Bridge != nil:
			b := *s.Bridge
			sp.New = func() supervisor.Service { return &netconf.Bridge{NL: nl, Name: b.Name, MTU: b.MTU} }
		case s.VLAN != nil:
			v := *s.VLAN
			sp.Reads = append(sp.Reads, ifname(v.Parent))
			sp.New = func() supervisor.Service {
				return &netconf.VLAN{NL: nl, Name: v.Name, ID: v.ID, ParentRef: ifname(v.Parent)}
			}
		case s.Address != nil:
			a := *s.Address
			ip, ipnet, _ := net.ParseCIDR(a.Address)
			prefix := &net.IPNet{IP: ip, Mask: ipnet.Mask}
			sp.Reads = append(sp.Reads, ifname(a.Link))
			sp.New = func() supervisor.Service {
				return &netconf.Address{NL: nl, LinkRef: ifname(a.Link), Prefix: prefix}
			}
		case s.Route != nil:
			r := *s.Route
			_, dst, _ := net.ParseCIDR(r.Destination)
			sp.Reads = append(sp.Reads, ifname(r.Link))
			var gwRef *supervisor.Ref
			if r.Gateway != nil {
				ref := supervisor.Ref{Service: r.Gateway.Service, Key: r.Gateway.Output}
				gwRef = &ref
				sp.Reads = append(sp.Reads, ref)
			}
			gw := net.ParseIP(r.GatewayIP)
			sp.New = func() supervisor.Service {
				return &netconf.Route{NL: nl, LinkRef: ifname(r.Link), Destination: dst, Gateway: gw, GatewayRef: gwRef, Metric: r.Metric, Table: r.Table}
			}
		case s.Firewall != nil:
			fw := &firewall.Service{Zones: s.Firewall.Zones, Open: s.Firewall.Open, Forwards: s.Firewall.Forwards, Allow6: s.Firewall.Allow6, Rules: s.Firewall.Rules, ProcSys: procSys}
			sp.Reads = fw.Reads()
			sp.New = func() supervisor.Service { c := *fw; return &c }
		case s.DHCP4 != nil:
			d := *s.DHCP4
			sp.Reads = append(sp.Reads, ifname(d.Link))
			sp.New = func() supervisor.Service {
				return &client4.Client{NL: nl, LinkRef: ifname(d.Link), StateDir: state, Hostname: d.Hostname, ClientID: d.ClientID}
			}
		case s.DHCP6 != nil:
			d := *s.DHCP6
			sp.Reads = append(sp.Reads, ifname(d.Link))
			sp.New = func() supervisor.Service {
				return &client6.Client{NL: nl, LinkRef: ifname(d.Link), StateDir: state, PrefixHint: d.PrefixHint, ReleaseOnStop: d.ReleaseOnStop, ProcSys: procSys}
			}
		case s.RA != nil:
			r := *s.RA
			interval, _ := time.ParseDuration(r.Interval)
			// Not the lifetimes: the service follows those itself, and a
			// renewal need not re-run it.
			for _, k := range []string{"prefix/0/prefix", "prefix/0/len"} {
				sp.Reads = append(sp.Reads, supervisor.Ref{Service: r.PrefixFrom, Key: k})
			}
			sp.Reads = append(sp.Reads, ifname(r.Link))
			sp.Watches = append(sp.Watches, supervisor.Ref{Service: r.PrefixFrom, Key: "renewed"})
			sp.New = func() supervisor.Service {
				return &ra.Service{NL: nl, LinkRef: ifname(r.Link), PrefixFrom: r.PrefixFrom, Subnet: r.Subnet, Interval: interval, MTU: r.MTU, StateDir: state}
			}
		case s.PPPoE != nil:
			p := *s.PPPoE
			sp.Reads = append(sp.Reads, ifname(p.Link))
			svc := &netconf.PPPoE{NL: nl, LinkRef: ifname(p.Link), Name: name, User: p.User, PasswordFile: p.PasswordFile,
				Unit: p.Unit, MTU: p.MTU, NoIPv6: p.IPv6 != nil && !*p.IPv6, StateDir: state,
				Roostd: a.opts.Self, Root: a.opts.Root, Hooks: a.ppp, Pppd: p.Pppd}
			if p.LCPEcho != nil {
				svc.EchoInterval, svc.EchoFailures = p.LCPEcho.Interval, p.LCPEcho.Failures
			}
			sp.New = func() supervisor.Service { c := *svc; return &c }
		case s.DHCPD4 != nil:
			d := *s.DHCPD4
			srv, err := dhcpServer(d, state, ifname)
			if err != nil {
				return nil, fmt.Errorf("service %s: %w", name, err)
			}
			sp.Reads = append(sp.Reads, ifname(d.Link), supervisor.Ref{Service: d.Address, Key: "address"})
			sp.New = func() supervisor.Service { c := *srv; return &c }
		case s.Sysctl != nil:
			values := s.Sysctl.Values
			if setsForwarding(values) {
				// Forwarding only once the firewall is in force: the
				// firewall service turns it off while it cannot be.
				sp.Deps = append(sp.Deps, firewalls...)
			}
			sp.New = func() supervisor.Service { return &netconf.Sysctl{ProcSys: procSys, Values: values, StateDir: state} }
		default:
			return nil, fmt.Errorf("service %s: kind %q has no implementation", name, s.Kind)
		}
		out = append(out, sp)
	}
	return out, nil
}

// dhcpServer builds a DHCPv4 server from its validated declaration.
func dhcpServer(d config.DHCP4Server, state string, ifname func(string) supervisor.Ref) (*dhcpd4.Server, error) {
	srv := &dhcpd4.Server{LinkRef: ifname(d.Link), AddressRef: supervisor.Ref{Service: d.Address}, StateDir: state, Domain: d.Domain,
		Pool: dhcpd4.Pool{Start: netip.MustParseAddr(d.Pool.Start), End: netip.MustParseAddr(d.Pool.End), Static: map[string]netip.Addr{}}}
	if d.LeaseTime != "" {
		lt, err := time.ParseDuration(d.LeaseTime)
		if err != nil {
			return nil, err
		}
		srv.LeaseTime = lt
	}
	for _, a := range d.DNS {
		srv.DNS = append(srv.DNS, netip.MustParseAddr(a))
	}
	for _, st := range d.Static {
		mac, err := net.ParseMAC(st.MAC)
		if err != nil {
			return nil, err
		}
		srv.Pool.Static[mac.String()] = netip.MustParseAddr(st.Address)
	}
	return srv, nil
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
