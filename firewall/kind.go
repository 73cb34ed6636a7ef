package firewall

import (
	"fmt"
	"sort"

	"github.com/roostrouter/roost/agent/kind"
	"github.com/roostrouter/roost/agent/supervisor"
)

// Kind is the nftables firewall.
var Kind = kind.Kind{Name: "firewall", New: func() kind.Decl { return &Decl{} }}

// Decl is the firewall's declaration.
type Decl struct {
	Zones    map[string]Zone `json:"zones"`
	Open     []Port          `json:"open,omitempty"`
	Forwards []Forward       `json:"forwards,omitempty"`
	Allow6   []Allow6        `json:"allow6,omitempty"`
	Rules    []Rule          `json:"rules,omitempty"`
}

func (d *Decl) service(procSys string) Service {
	return Service{Zones: d.Zones, Open: d.Open, Forwards: d.Forwards, Allow6: d.Allow6, Rules: d.Rules, ProcSys: procSys}
}

func (d *Decl) Check(c *kind.Check) {
	s := d.service("")
	for _, problem := range s.Ruleset(func(supervisor.Ref) (string, bool) { return "", false }).Check() {
		c.Problem(problem)
	}
	var zones []string
	for z := range d.Zones {
		zones = append(zones, z)
	}
	sort.Strings(zones)
	for _, z := range zones {
		for i, ifn := range d.Zones[z].Interfaces {
			if !kind.ValidIfname(ifn) {
				c.Errorf(fmt.Sprintf("zones.%s.interfaces[%d]", z, i), "%q is not a device name", ifn)
			}
		}
		for i, svc := range d.Zones[z].Services {
			c.Watch(fmt.Sprintf("zones.%s.services[%d]", z, i), svc, kind.Device)
		}
	}
	for _, r := range s.RARefs() {
		c.Watch(r.Path, r.Service, kind.Announcer)
	}
}

func (d *Decl) Build(env kind.Env) (kind.Built, error) {
	s := d.service(env.ProcSys)
	s.Joined = &Joined{}
	return kind.Built{Reads: s.Reads(), New: func() supervisor.Service { c := s; return &c }}, nil
}
