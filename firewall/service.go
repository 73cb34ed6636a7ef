package firewall

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"sync"

	"github.com/roostrouter/roost/agent/supervisor"
	"github.com/roostrouter/roost/dhcp/ra"
	"github.com/roostrouter/roost/netconf"
)

// Zone lists a zone's members: services whose ifname output joins it (it
// follows them as they come, go or change), and interface names (which
// match even before such a device exists, as ppp0 before the link is up).
type Zone struct {
	Services   []string `json:"services,omitempty"`
	Interfaces []string `json:"interfaces,omitempty"`
}

// Service applies a ruleset as a supervisor service. It depends on
// nothing, so the firewall is in force before any link is up; zone members
// fill in as their services publish their interface names.
type Service struct {
	Zones    map[string]Zone
	Open     []Port
	Forwards []Forward
	Allow6   []Allow6
	Rules    []Rule
	// ProcSys is /proc/sys: forwarding is turned off there while the
	// ruleset cannot be applied.
	ProcSys string
	// Joined, if set, tells a zone service still starting from one that
	// went away (Ruleset.Settling); it outlives each run.
	Joined *Joined
}

// Joined remembers the zone services that have named their interface
// since roostd started, across the firewall's runs: one that has not yet
// is still starting, and its zone keeps its live members; one that had and
// has no name now went away, and its interface leaves the zone.
type Joined struct {
	mu   sync.Mutex
	seen map[string]bool
}

// saw notes that svc named its interface; it reports whether svc had.
func (j *Joined) saw(svc string, now bool) (had bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	had = j.seen[svc]
	if now {
		if j.seen == nil {
			j.seen = map[string]bool{}
		}
		j.seen[svc] = true
	}
	return had
}

// Reads are the outputs the service follows: the zones' members' interface
// names, and the prefixes of the ra services that allow6 entries name (a
// renumbering re-runs the firewall, and their pinholes follow).
func (s *Service) Reads() []supervisor.Ref {
	var refs []supervisor.Ref
	for _, z := range s.Zones {
		for _, svc := range z.Services {
			refs = append(refs, netconf.IfName.Of(svc))
		}
	}
	for _, r := range s.RARefs() {
		ref := ra.PrefixOut.Of(r.Service)
		if !slices.Contains(refs, ref) {
			refs = append(refs, ref)
		}
	}
	return refs
}

// ServiceRef is a service that the firewall's declaration names, with the
// JSON path (within the firewall service) that names it.
type ServiceRef struct{ Path, Service string }

// RARefs are the ra services that allow6 entries name, for the config
// check: each must be an ra service. One that is not never announces a
// prefix, and its pinholes stay absent.
func (s *Service) RARefs() []ServiceRef {
	var out []ServiceRef
	for i, a := range s.Allow6 {
		if a.RA != "" {
			out = append(out, ServiceRef{Path: fmt.Sprintf("allow6[%d].ra", i), Service: a.RA})
		}
	}
	return out
}

// Ruleset is the model with the zones' current members and the LAN
// prefixes the pinholes follow.
func (s *Service) Ruleset(input func(supervisor.Ref) (string, bool)) Ruleset {
	rs := Ruleset{Zones: map[string][]string{}, Settling: map[string]bool{}, Open: s.Open, Forwards: s.Forwards, Allow6: s.Allow6, Rules: s.Rules,
		LANPrefixes: map[string]netip.Prefix{}}
	for _, r := range s.RARefs() {
		if p, ok, err := ra.PrefixOut.Get(inputFunc(input), r.Service); ok && err == nil {
			rs.LANPrefixes[r.Service] = p
		}
	}
	for name, z := range s.Zones {
		members := append([]string{}, z.Interfaces...)
		for _, svc := range z.Services {
			ifn, ok := input(netconf.IfName.Of(svc))
			if ok {
				members = append(members, ifn)
			}
			if s.Joined != nil && !s.Joined.saw(svc, ok) && !ok {
				rs.Settling[name] = true
			}
		}
		sort.Strings(members)
		rs.Zones[name] = members
	}
	return rs
}

// inputFunc is a function that reads outputs, as supervisor.Inputs.
type inputFunc func(supervisor.Ref) (string, bool)

func (f inputFunc) Input(r supervisor.Ref) (string, bool) { return f(r) }

// Run applies the ruleset; the supervisor runs it again when a member's
// interface name changes, and then only the sets change.
func (s *Service) Run(ctx context.Context, env *supervisor.Env) error {
	rs := s.Ruleset(env.Input)
	c, err := NewConn()
	if err != nil {
		return s.failSafe(nil, rs, err) // it names the modules a kernel without nf_tables lacks
	}
	res, err := Apply(c, rs)
	if err != nil {
		return s.failSafe(c, rs, err)
	}
	for _, a := range rs.Allow6 {
		if _, ok := a.dest(rs.LANPrefixes); !ok && a.RA != "" {
			env.Log.Info("firewall: an IPv6 pinhole waits for its LAN's prefix", "ra", a.RA, "host", a.Host, "proto", a.Proto, "port", a.Port)
		}
	}
	switch {
	case res.Rules:
		env.Log.Info("firewall rules applied")
	case res.Sets:
		env.Log.Info("firewall zones updated", "zones", rs.Zones)
	}
	for z, members := range rs.Zones {
		env.SetOutput("zone/"+z, fmt.Sprint(members))
	}
	env.Ready()
	<-ctx.Done()
	return nil // the ruleset stays in force when roostd stops
}

// ReplacesInPlace says that a changed firewall is applied over the old one
// in one batch: removing it first would leave the router open.
func (s *Service) ReplacesInPlace() bool { return true }

// Remove deletes roost's table, when the config drops the firewall.
func (s *Service) Remove(context.Context) error {
	c, err := NewConn()
	if errors.Is(err, ErrNoNFTables) {
		return nil // no nf_tables, no table of ours
	}
	if err != nil {
		return err
	}
	return Remove(c)
}
