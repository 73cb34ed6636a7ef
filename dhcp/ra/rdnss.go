package ra

import (
	"encoding/json"
	"net/netip"
	"os"
	"slices"
	"time"

	"github.com/mdlayher/ndp"

	"github.com/roostrouter/roost/agent/supervisor"
	"github.com/roostrouter/roost/dhcp/dns/servers"
	"github.com/roostrouter/roost/updater/atomicfile"
)

// withdrawRepeats is in how many advertisements a server no longer handed
// out is announced with lifetime 0: one could be lost.
const withdrawRepeats = 3

// rdnss is what the advertisements say of the DNS servers the config
// names (or that default to the WAN's): those handed out now, and those
// withdrawn lately, announced with lifetime 0 (RFC 8106 5.1) so that
// hosts stop asking a server the router no longer hands out. What it
// hands out is kept in file, so that servers a previous run or config
// handed out are withdrawn too, and by Remove.
type rdnss struct {
	list      servers.List // none: the router's own address is announced instead
	file      string
	current   []netip.Addr
	withdrawn map[netip.Addr]int // advertisements left to say it in
}

// newRDNSS starts from the servers file says were handed out last.
func newRDNSS(list servers.List, file string) *rdnss {
	return &rdnss{list: list, file: file, current: readServers(file)}
}

// readServers reads a list of servers handed out; none if file is
// missing or damaged (they then age out on hosts by their lifetime).
func readServers(file string) []netip.Addr {
	var out []netip.Addr
	if b, err := os.ReadFile(file); err == nil {
		json.Unmarshal(b, &out)
	}
	return out
}

// follow reads the servers as of now (IPv6 only: RDNSS carries no other)
// and reports whether they changed; a change is saved before it is sent.
func (r *rdnss) follow(input func(supervisor.Ref) (string, bool)) (bool, error) {
	var next []netip.Addr
	for _, a := range r.list.Addrs(input) {
		if a.Addr().Is6() && !a.Addr().Is4In6() {
			next = append(next, a.Addr())
		}
	}
	if slices.Equal(next, r.current) {
		return false, nil
	}
	if r.withdrawn == nil {
		r.withdrawn = map[netip.Addr]int{}
	}
	for _, a := range r.current {
		if !slices.Contains(next, a) {
			r.withdrawn[a] = withdrawRepeats
		}
	}
	for _, a := range next {
		delete(r.withdrawn, a)
	}
	r.current = next
	if r.file == "" {
		return true, nil
	}
	b, _ := json.Marshal(next)
	return true, atomicfile.WriteFile(r.file, b, 0o600)
}

// options are the RDNSS options of one advertisement about to be sent:
// none while no server is known (the WAN is down), which is better than
// one that is not there. Each call counts a withdrawal as said once.
func (r *rdnss) options(lifetime time.Duration) []ndp.Option {
	var opts []ndp.Option
	if len(r.current) > 0 {
		opts = append(opts, &ndp.RecursiveDNSServer{Lifetime: lifetime, Servers: r.current})
	}
	var gone []netip.Addr
	for a, left := range r.withdrawn {
		gone = append(gone, a)
		if left <= 1 {
			delete(r.withdrawn, a)
		} else {
			r.withdrawn[a] = left - 1
		}
	}
	if len(gone) > 0 {
		slices.SortFunc(gone, netip.Addr.Compare)
		opts = append(opts, &ndp.RecursiveDNSServer{Lifetime: 0, Servers: gone})
	}
	return opts
}
