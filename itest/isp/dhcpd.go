package isp

import (
	"fmt"
	"path/filepath"
)

// NewDhcpd4 is ISC dhcpd 4.4 (Debian's isc-dhcp-server) in the
// foreground, authoritative for its network as an ISP's server is. After
// a renumbering only the new network is declared: dhcpd serves isp0 by its
// first address, and ignores the renewal of an address on no network it
// knows ("unknown lease") rather than NAK it.
func NewDhcpd4(dir, ns string) *Server4 {
	leases := filepath.Join(dir, "dhcpd.leases")
	return &Server4{
		Daemon: &Daemon{Name: "dhcpd", Dir: dir, NS: ns, Args: []string{"dhcpd", "-4", "-f", "-d",
			"-cf", filepath.Join(dir, "dhcpd.conf"), "-lf", leases, "-pf", filepath.Join(dir, "dhcpd.pid"), "isp0"}},
		LeaseFile:   leases,
		emptyLeases: true,
		config: func(v V4) string {
			n := v.net()
			var timers string
			if v.Times.Renew > 0 {
				timers += fmt.Sprintf("    option dhcp-renewal-time %d;\n", v.Times.Renew)
			}
			if v.Times.Rebind > 0 {
				timers += fmt.Sprintf("    option dhcp-rebinding-time %d;\n", v.Times.Rebind)
			}
			return fmt.Sprintf(`# The ISP's DHCPv4 server in the lab.
authoritative;
ddns-update-style none;
ping-check false;
default-lease-time %[2]d;
max-lease-time %[2]d;
min-lease-time %[2]d;
shared-network isp0 {
  subnet %[1]s.0 netmask 255.255.255.0 {
    range %[1]s.100 %[1]s.150;
    option routers %[1]s.1;
    option domain-name-servers 192.0.2.53;
    option domain-name "isp.example";
%[3]s  }
}
`, n, v.Times.Valid, timers)
		},
	}
}
