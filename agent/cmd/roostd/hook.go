package main

import (
	"errors"
	"strings"

	"github.com/roostrouter/roost/agent"
	"github.com/roostrouter/roost/netconf"
)

// runHook takes an event from pppd (its ip-up, ip-down, ipv6-up and
// ipv6-down scripts run `roostd hook ppp EVENT` with pppd's arguments) to
// the PPPoE service in the running agent. The arguments are checked here,
// before they reach the agent, and again inside it.
func runHook(e *env, args []string) error {
	f := newFlags(e, "hook")
	dns := f.String("dns", "", "the peer's DNS `servers`, space-separated (default: pppd's DNS1 and DNS2)")
	pos, err := f.parse(args)
	if err != nil {
		return err
	}
	if len(pos) < 2 || pos[0] != "ppp" {
		return errors.New("usage: roostd hook ppp ip-up|ip-down|ipv6-up|ipv6-down IFNAME TTY SPEED LOCAL REMOTE IPPARAM (pppd runs it)")
	}
	servers := strings.Fields(*dns)
	if *dns == "" {
		// The control socket carries arguments, not the environment.
		for _, k := range []string{"DNS1", "DNS2"} {
			if v := strings.TrimSpace(e.getenv(k)); v != "" {
				servers = append(servers, v)
			}
		}
	}
	if len(servers) > 2 {
		return errors.New("--dns: at most two servers, as pppd gives")
	}
	getenv := func(k string) string {
		i := map[string]int{"DNS1": 1, "DNS2": 2}[k] // 0: not a DNS variable
		if i == 0 || i > len(servers) {
			return ""
		}
		return servers[i-1]
	}
	ev, err := netconf.ParsePPPHook(pos[1], pos[2:], getenv)
	if err != nil {
		return err
	}
	forward := []string{"hook", "--dns", strings.Join(servers, " ")}
	forward = append(forward, pos...)
	if err := viaAgent(e, *f.root, forward, func(a *agent.Agent) error { return a.PPPHooks().Deliver(ev) }); err != nil {
		return err
	}
	if *f.json {
		// pppd wants nothing printed; a script that delivers an event
		// by hand sees what the PPPoE service took.
		dns := []string{}
		for _, d := range ev.DNS {
			dns = append(dns, d.String())
		}
		printJSON(e.stdout, map[string]any{"delivered": true, "event": ev.Kind, "service": ev.Service,
			"interface": ev.Ifname, "local": ev.Local, "peer": ev.Peer, "dns": dns})
	}
	return nil
}
