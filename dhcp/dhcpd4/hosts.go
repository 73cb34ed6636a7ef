package dhcpd4

import (
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"

	"github.com/roostrouter/roost/agent/supervisor"
)

// Host is a live lease whose host gave a name (option 12) that can be a
// DNS label.
type Host struct {
	Name string // one label, lower case
	IP   netip.Addr
	MAC  net.HardwareAddr
}

// Hosts is the server's output naming its hosts: hosts(5) lines
// ("192.168.1.100 laptop # 02:00:00:00:00:01", the MAC a comment), so
// that the LAN's dns service answers for them as leases come and go, and a
// script can read it as a hosts file. It changes when a host comes, goes
// or is renamed, not at each renewal.
var Hosts = supervisor.NewOutput("hosts", formatHosts, parseHosts)

func formatHosts(hosts []Host) string {
	var lines []string
	for _, h := range hosts {
		lines = append(lines, fmt.Sprintf("%s %s # %s", h.IP, h.Name, h.MAC))
	}
	return strings.Join(lines, "\n")
}

// parseHosts reads what formatHosts wrote; a line that does not parse is
// skipped, so that a reader never fails on one bad host.
func parseHosts(s string) ([]Host, error) {
	var out []Host
	for _, line := range strings.Split(s, "\n") {
		line, comment, _ := strings.Cut(line, "#")
		f := strings.Fields(line)
		if len(f) != 2 {
			continue
		}
		ip, err := netip.ParseAddr(f[0])
		if err != nil || HostLabel(f[1]) != f[1] {
			continue
		}
		mac, _ := net.ParseMAC(strings.TrimSpace(comment))
		out = append(out, Host{Name: f[1], IP: ip, MAC: mac})
	}
	return out, nil
}

// HostLabel is the DNS label a host's name gives: its first label, lower
// case, spaces and underscores made hyphens; "" if what is left is not a
// label of letters, digits and inner hyphens (RFC 952/1123).
func HostLabel(name string) string {
	name, _, _ = strings.Cut(name, ".")
	name = strings.Map(func(r rune) rune {
		switch {
		case r >= 'A' && r <= 'Z':
			return r + 'a' - 'A'
		case r == ' ' || r == '_':
			return '-'
		}
		return r
	}, strings.TrimSpace(name))
	if name == "" || len(name) > 63 || name[0] == '-' || name[len(name)-1] == '-' {
		return ""
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			return ""
		}
	}
	return name
}

// Hosts are the live leases with a name, by address; of two leases with
// one name, the one granted last keeps it (it expires last).
func (db *DB) Hosts() []Host {
	db.mu.Lock()
	defer db.mu.Unlock()
	byName := map[string]Lease{}
	for _, l := range db.Leases() {
		name := HostLabel(l.Hostname)
		if name == "" {
			continue
		}
		if old, ok := byName[name]; !ok || l.Expires.After(old.Expires) {
			byName[name] = l
		}
	}
	var out []Host
	for name, l := range byName {
		mac, _ := net.ParseMAC(l.MAC)
		out = append(out, Host{Name: name, IP: l.IP, MAC: mac})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].IP.Less(out[j].IP) })
	return out
}
