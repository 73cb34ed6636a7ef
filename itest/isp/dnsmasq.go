package isp

import (
	"fmt"
	"path/filepath"
	"strings"
)

// NewDnsmasq4 is dnsmasq 2.90 (Debian's dnsmasq-base) as a DHCPv4 server
// only: no DNS (port=0), no resolv.conf nor hosts read, only its own files
// written (its config replaces /etc/dnsmasq.conf), in the foreground (-k),
// logging each DHCP message. It is not authoritative (dnsmasq's default)
// unless V4.Authoritative.
// dnsmasq raises a lease shorter than 2 minutes to that, so a test's short
// timers come as T1 and T2, which it honours (less a random second).
func NewDnsmasq4(dir, ns string) *Server4 {
	leases := filepath.Join(dir, "dnsmasq.leases")
	conf := filepath.Join(dir, "dnsmasq.conf")
	return &Server4{
		Daemon:    &Daemon{Name: "dnsmasq", Dir: dir, NS: ns, Args: []string{"dnsmasq", "-k", "--conf-file=" + conf}},
		LeaseFile: leases,
		config: func(v V4) string {
			n := v.net()
			lines := []string{
				"no-resolv", "no-hosts", "no-poll", "port=0", "user=root",
				"interface=isp0", "except-interface=lo", "bind-dynamic",
				"log-dhcp", "log-facility=-",
				// No ICMP probe of an address before offering it: kea and
				// the others offer at once, and tests time the lease.
				"no-ping",
				"dhcp-leasefile=" + leases,
				"pid-file=" + filepath.Join(dir, "dnsmasq.pid"),
				fmt.Sprintf("dhcp-range=%[1]s.100,%[1]s.150,255.255.255.0,%[2]ds", n, max(v.Times.Valid, 120)),
				"dhcp-option=option:router," + n + ".1",
				"dhcp-option=option:dns-server,192.0.2.53",
				"dhcp-option=option:domain-name,isp.example",
			}
			if v.Authoritative {
				lines = append(lines, "dhcp-authoritative")
			}
			if v.Times.Renew > 0 {
				lines = append(lines, fmt.Sprintf("dhcp-option=option:T1,%d", v.Times.Renew))
			}
			if v.Times.Rebind > 0 {
				lines = append(lines, fmt.Sprintf("dhcp-option=option:T2,%d", v.Times.Rebind))
			}
			return strings.Join(lines, "\n") + "\n"
		},
	}
}
