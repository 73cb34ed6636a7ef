// Package servers is a list of DNS servers as the config gives it (the dns
// kind's upstreams, the DNS servers a LAN is handed): fixed addresses, and
// services whose dns output (a DHCP client's, PPPoE's, the dns service's
// own) the list follows as it changes.
package servers

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/roostrouter/roost/agent/kind"
	"github.com/roostrouter/roost/agent/supervisor"
)

// Output is the dns output of the kinds that learn or run DNS servers:
// addresses, space-separated (client4.DNS, client6.DNS and netconf.PPPDNS
// are the same key).
var Output = supervisor.StringOutput("dns")

// Source is one entry: a fixed server ("192.0.2.53", "[2001:db8::53]:5353")
// or a service's output ({"service": "wan-dhcp"}, its dns output by
// default).
type Source struct {
	Addr    netip.AddrPort // port 53 unless given
	Service string
	Output  string // default "dns"
}

func (s *Source) UnmarshalJSON(b []byte) error {
	var text string
	if json.Unmarshal(b, &text) == nil {
		if a, err := netip.ParseAddr(text); err == nil {
			s.Addr = netip.AddrPortFrom(a, 53)
			return nil
		}
		ap, err := netip.ParseAddrPort(text)
		if err != nil || ap.Port() == 0 {
			return fmt.Errorf("%q is not an address, like 192.0.2.53 or [2001:db8::53]:5353", text)
		}
		s.Addr = ap
		return nil
	}
	var ref struct {
		Service string `json:"service"`
		Output  string `json:"output"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&ref); err != nil || ref.Service == "" {
		return fmt.Errorf(`want an address or {"service": …} (a service whose dns output names servers)`)
	}
	s.Service, s.Output = ref.Service, ref.Output
	if s.Output == "" {
		s.Output = Output.Key
	}
	return nil
}

func (s Source) MarshalJSON() ([]byte, error) {
	if s.Service == "" {
		return json.Marshal(s.String())
	}
	return json.Marshal(map[string]string{"service": s.Service, "output": s.Output})
}

// String is the server as the config writes it: the address, with its
// port unless 53; or the service and output.
func (s Source) String() string {
	switch {
	case s.Service != "":
		return s.Service + "'s " + s.Output
	case s.Addr.Port() == 53:
		return s.Addr.Addr().String()
	}
	return s.Addr.String()
}

// List is the servers of a setting, in the order given.
type List []Source

// Check reports fixed addresses that want refuses (want says why, like "is
// not an IPv4 address") and records the services named as followed, not
// as dependencies: the list goes on without a service that is down.
func (l List) Check(c *kind.Check, field string, want func(netip.AddrPort) string) {
	for i, s := range l {
		f := fmt.Sprintf("%s[%d]", field, i)
		if s.Service != "" {
			c.Follow(f+".service", s.Service, s.Output)
		} else if why := want(s.Addr); why != "" {
			c.Errorf(f, "%s %s", s, why)
		}
	}
}

// Refs are the outputs the list reads, for Built.Watches.
func (l List) Refs() []supervisor.Ref {
	var out []supervisor.Ref
	for _, s := range l {
		if s.Service != "" {
			out = append(out, supervisor.Ref{Service: s.Service, Key: s.Output})
		}
	}
	return out
}

// Addrs are the servers as of now: the fixed ones and those the services'
// outputs name (port 53), in order, without repeats; input reads an output
// (env.Input). A service that is down adds none; a word of its output that
// is not an address is skipped.
func (l List) Addrs(input func(supervisor.Ref) (string, bool)) []netip.AddrPort {
	var out []netip.AddrPort
	add := func(a netip.AddrPort) {
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	for _, s := range l {
		if s.Service == "" {
			add(s.Addr)
			continue
		}
		v, _ := input(supervisor.Ref{Service: s.Service, Key: s.Output})
		for _, w := range strings.Fields(v) {
			if a, err := netip.ParseAddr(w); err == nil {
				add(netip.AddrPortFrom(a.Unmap(), 53))
			}
		}
	}
	return out
}

// Learned is every service of the config whose dns output names the ISP's
// servers (kind.Learner), in name order: a dns service's upstreams when
// its config names none.
func Learned(services map[string]kind.Kind) List {
	var l List
	for _, name := range slices.Sorted(maps.Keys(services)) {
		if services[name].Plays(kind.Learner) {
			l = append(l, Source{Service: name, Output: Output.Key})
		}
	}
	return l
}

// ForLAN is what a LAN is handed when its dns setting is unset: nil,
// meaning the router itself, when the config runs a dns service (or has
// no WAN client to learn servers from); otherwise the servers the WAN
// learns, so that no host is pointed at a server that is not there.
func ForLAN(services map[string]kind.Kind) List {
	for _, k := range services {
		if k.Plays(kind.Resolver) {
			return nil
		}
	}
	return Learned(services)
}
