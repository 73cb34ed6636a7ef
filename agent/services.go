package agent

import (
	"fmt"
	"sort"

	"github.com/roostrouter/roost/agent/config"
	"github.com/roostrouter/roost/agent/kind"
	"github.com/roostrouter/roost/agent/supervisor"
)

// specs turns the config's services into the supervisor's.
func (a *Agent) specs(cfg *config.Config) ([]supervisor.Spec, error) {
	var out []supervisor.Spec
	if ssh, ok := a.sshSpec(cfg); ok {
		out = append(out, ssh)
	}
	byKind := map[string][]string{}
	for name, s := range cfg.Services {
		byKind[s.Kind] = append(byKind[s.Kind], name)
	}
	for _, names := range byKind {
		sort.Strings(names)
	}
	kinds := map[string]kind.Kind{}
	for _, k := range Kinds(a.ppp) {
		kinds[k.Name] = k
	}
	services := map[string]kind.Kind{}
	for name, s := range cfg.Services {
		services[name] = kinds[s.Kind]
	}
	for name, s := range cfg.Services {
		b, err := s.Decl.Build(kind.Env{Name: name, NL: a.nl, Board: cfg.BoardInfo(), State: a.opts.State,
			Root: a.opts.Root, ProcSys: a.opts.ProcSys, Self: a.opts.Self, Services: services})
		if err != nil {
			return nil, fmt.Errorf("service %s: %w", name, err)
		}
		// What it reads is part of what it is: a default drawn from the
		// rest of the config (the DNS servers a LAN is handed) changes
		// them, and must restart it as a changed setting would.
		fingerprint := fmt.Sprint(s.Fingerprint(), b.Reads, b.Watches)
		sp := supervisor.Spec{Name: name, Kind: s.Kind, Deps: s.Deps(), Fingerprint: fingerprint,
			Reads: b.Reads, Watches: b.Watches, New: b.New}
		for _, k := range b.AfterKinds {
			sp.Deps = append(sp.Deps, byKind[k]...)
		}
		out = append(out, sp)
	}
	return out, nil
}
