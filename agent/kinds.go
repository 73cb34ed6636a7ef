package agent

import (
	"github.com/roostrouter/roost/agent/kind"
	"github.com/roostrouter/roost/dhcp/client4"
	"github.com/roostrouter/roost/dhcp/client6"
	"github.com/roostrouter/roost/dhcp/dhcpd4"
	"github.com/roostrouter/roost/dhcp/dns"
	"github.com/roostrouter/roost/dhcp/ra"
	"github.com/roostrouter/roost/firewall"
	"github.com/roostrouter/roost/netconf"
)

// Kinds are the kinds of service roostd runs: adding one is a line here.
// ppp receives pppd's hooks for the PPPoE services (nil to check a config).
func Kinds(ppp *netconf.PPPHooks) []kind.Kind {
	return []kind.Kind{
		netconf.LinkKind,
		netconf.BridgeKind,
		netconf.VLANKind,
		netconf.AddressKind,
		netconf.RouteKind,
		netconf.SysctlKind,
		netconf.PPPoEKind(ppp),
		firewall.Kind,
		client4.Kind,
		client6.Kind,
		dhcpd4.Kind,
		ra.Kind,
		dns.Kind,
	}
}
