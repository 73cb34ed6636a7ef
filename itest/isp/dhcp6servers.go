package isp

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// The ISP's DHCPv6 servers besides kea, as Debian packages them, each on
// isp0 with the lab's addresses: 2001:db8:0:1::100 to ::1ff for IA_NA,
// /56s out of a /48 the ISP routes to the router (labnet.DelegationPool,
// RenumberedPool), DNS 2001:db8::53. Each has its own folder; Stop, Forget6
// and Start play a server that lost its leases.

// Dhcpd6 is ISC dhcpd in -6 mode (isc-dhcp-server).
type Dhcpd6 struct {
	Times Times // Renew and Rebind 0: dhcpd sends T1 and T2 of 0 (its default), the client's choice
	// Addresses: an address pool (range6); without it dhcpd only
	// delegates prefixes.
	Addresses bool
	// PD is the /48 the /56s are delegated from (its first 256); empty:
	// no prefix6, addresses only.
	PD string
}

// Config is dhcpd.conf.
func (s Dhcpd6) Config() string {
	var b strings.Builder
	fmt.Fprintf(&b, "default-lease-time %d;\nmax-lease-time %d;\npreferred-lifetime %d;\n", s.Times.Valid, s.Times.Valid, s.Times.Preferred)
	if s.Times.Renew > 0 {
		fmt.Fprintf(&b, "option dhcp-renewal-time %d;\noption dhcp-rebinding-time %d;\n", s.Times.Renew, s.Times.Rebind)
	}
	b.WriteString("option dhcp6.name-servers 2001:db8::53;\nauthoritative;\nsubnet6 2001:db8:0:1::/64 {\n")
	if s.Addresses {
		b.WriteString("  range6 2001:db8:0:1::100 2001:db8:0:1::1ff;\n")
	}
	if s.PD != "" {
		pd := strings.TrimSuffix(s.PD, "::")
		fmt.Fprintf(&b, "  prefix6 %s:: %s:ff00:: /56;\n", pd, pd)
	}
	b.WriteString("}\n")
	return b.String()
}

// NewDhcpd6 prepares dhcpd -6 in ns with its files in dir (Start starts
// it): the config, an empty lease file (dhcpd will not start without
// one), its pid file there rather than in /run.
func NewDhcpd6(dir, ns string, s Dhcpd6) (*Daemon, error) {
	d := &Daemon{Name: "dhcpd -6", Dir: dir, NS: ns,
		Args: []string{"dhcpd", "-6", "-f", "-d", "-cf", filepath.Join(dir, "dhcpd6.conf"), "-lf", filepath.Join(dir, "dhcpd6.leases"), "-pf", filepath.Join(dir, "dhcpd6.pid"), "isp0"}}
	return d, errors.Join(d.Write("dhcpd6.conf", s.Config()), d.Write("dhcpd6.leases", ""))
}

// Dhcp6s is WIDE's dhcp6s (wide-dhcpv6-server): it delegates prefixes by
// host entry only, each keyed by a client's DUID, and gives no address
// here.
type Dhcp6s struct {
	Hosts []Dhcp6sHost
}

// Dhcp6sHost is a host entry: a client's DUID and the prefix delegated to
// it with its lifetimes, in seconds.
type Dhcp6sHost struct {
	DUID             []byte
	Prefix           string // like 2001:db8:100:100::/56
	Preferred, Valid int
}

// Config is dhcp6s.conf.
func (s Dhcp6s) Config() string {
	var b strings.Builder
	b.WriteString("option domain-name-servers 2001:db8::53;\n")
	for i, h := range s.Hosts {
		hex := make([]string, len(h.DUID))
		for j, c := range h.DUID {
			hex[j] = fmt.Sprintf("%02x", c)
		}
		fmt.Fprintf(&b, "host router%d {\n\tduid %s;\n\tprefix %s %d %d;\n};\n", i, strings.Join(hex, ":"), h.Prefix, h.Preferred, h.Valid)
	}
	return b.String()
}

// NewDhcp6s prepares dhcp6s in ns with its files in dir. dhcp6s keeps its
// DUID in /var/lib/dhcpv6, a path it has no flag for: dir's duid folder is
// mounted there, for dhcp6s alone. Its control key is not there: without
// one it serves anyway, with no control channel.
func NewDhcp6s(dir, ns string, s Dhcp6s) (*Daemon, error) {
	d := &Daemon{Name: "dhcp6s", Dir: dir, NS: ns,
		Args: []string{"dhcp6s", "-f", "-D", "-c", filepath.Join(dir, "dhcp6s.conf"), "-P", filepath.Join(dir, "dhcp6s.pid"),
			"-k", filepath.Join(dir, "no-control-key"), "isp0"},
		Mounts: map[string]string{"duid": "/var/lib/dhcpv6"}}
	return d, d.Write("dhcp6s.conf", s.Config())
}

// Dnsmasq6 is dnsmasq (dnsmasq-base) giving addresses (IA_NA) only, with
// a lease time of Lease seconds (at least 120: dnsmasq's minimum).
type Dnsmasq6 struct {
	Lease int
}

// NewDnsmasq6 prepares dnsmasq in ns with its files in dir: no DNS (port
// 0), no resolv.conf, hosts or config file of the host's read, its lease
// and pid files in dir.
func NewDnsmasq6(dir, ns string, s Dnsmasq6) *Daemon {
	return &Daemon{Name: "dnsmasq", Dir: dir, NS: ns, Args: []string{"dnsmasq", "-k", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--port=0",
		"--user=root", "--interface=isp0", "--bind-interfaces", "--log-dhcp", "--log-facility=-",
		"--pid-file=" + filepath.Join(dir, "dnsmasq.pid"), "--dhcp-leasefile=" + filepath.Join(dir, "dnsmasq.leases"),
		fmt.Sprintf("--dhcp-range=2001:db8:0:1::100,2001:db8:0:1::1ff,64,%d", s.Lease),
		"--dhcp-option=option6:dns-server,[2001:db8::53]"}}
}

// Forget6 empties the server's lease database, as a server restarted
// without it (after a crash, on a fresh disk) has it: every binding lost.
// With keepDUID the server keeps its DUID (dhcpd and dnsmasq keep it in
// the lease file, dhcp6s in its duid folder), so it still answers the
// Renews sent to it; without, it is another server to the client, which
// ignores them (RFC 8415 16.6) and answers only Rebinds.
func Forget6(d *Daemon, keepDUID bool) error {
	for _, f := range []struct{ name, keep string }{{"dhcpd6.leases", "server-duid "}, {"dnsmasq.leases", "duid "}} {
		b, err := os.ReadFile(filepath.Join(d.Dir, f.name))
		if os.IsNotExist(err) {
			continue
		} else if err != nil {
			return err
		}
		var kept []string
		for _, line := range strings.Split(string(b), "\n") {
			if keepDUID && strings.HasPrefix(line, f.keep) {
				kept = append(kept, line+"\n")
			}
		}
		if err := d.Write(f.name, strings.Join(kept, "")); err != nil {
			return err
		}
		os.Remove(filepath.Join(d.Dir, f.name+"~"))
	}
	if !keepDUID {
		if err := os.Remove(filepath.Join(d.Dir, "duid", "dhcp6s_duid")); err != nil && !os.IsNotExist(err) {
			return err
		}
	}
	return nil
}
