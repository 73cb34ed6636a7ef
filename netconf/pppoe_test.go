package netconf

import (
	"strings"
	"testing"
)

func TestParsePPPHook(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	good := []string{"ppp0", "/dev/null", "0", "198.51.100.7", "198.51.100.1", "wan-ppp"}
	ev, err := ParsePPPHook("ip-up", good, env(map[string]string{"DNS1": "192.0.2.53", "DNS2": "192.0.2.54"}))
	if err != nil || ev.Ifname != "ppp0" || ev.Local.String() != "198.51.100.7" || ev.Peer.String() != "198.51.100.1" ||
		ev.Service != "wan-ppp" || len(ev.DNS) != 2 {
		t.Fatalf("ip-up: %+v, %v", ev, err)
	}
	// pppd gives a lone server as both DNS1 and DNS2.
	if ev, err := ParsePPPHook("ip-up", good, env(map[string]string{"DNS1": "192.0.2.53", "DNS2": "192.0.2.53"})); err != nil || len(ev.DNS) != 1 {
		t.Fatalf("one server twice: %v, %v", ev.DNS, err)
	}
	ev6, err := ParsePPPHook("ipv6-down", []string{"ppp0", "", "0", "fe80::1", "fe80::2", "wan-ppp"}, nil)
	if err != nil || ev6.Local.String() != "fe80::1" {
		t.Fatalf("ipv6-down: %+v, %v", ev6, err)
	}
	with := func(i int, v string) []string { a := append([]string(nil), good...); a[i] = v; return a }
	for _, tc := range []struct {
		name, kind string
		args       []string
		env        map[string]string
		want       string
	}{
		{"no arguments", "ip-up", nil, nil, "got 0 arguments"},
		{"one missing", "ip-up", good[:5], nil, "got 5 arguments"},
		{"unknown event", "ip-sideways", good, nil, "unknown ppp event"},
		{"interface with a slash", "ip-up", with(0, "../../etc"), nil, "not an interface name"},
		{"interface too long", "ip-up", with(0, "ppp0123456789abcdef"), nil, "not an interface name"},
		{"garbage address", "ip-up", with(3, "198.51.100"), nil, "local address"},
		{"IPv6 for IPv4", "ip-up", with(4, "fe80::1"), nil, "not IPv4"},
		{"IPv4 for IPv6", "ipv6-up", with(3, "198.51.100.7"), nil, "not IPv6"},
		{"unspecified", "ip-up", with(3, "0.0.0.0"), nil, "cannot be a link's address"},
		{"shell in ipparam", "ip-up", with(5, "wan;reboot"), nil, "not a service name"},
		{"bad DNS", "ip-up", good, map[string]string{"DNS1": "dns.example"}, "DNS1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParsePPPHook(tc.kind, tc.args, env(tc.env))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one saying %q", err, tc.want)
			}
		})
	}
}

func FuzzParsePPPHook(f *testing.F) {
	f.Add("ip-up", "ppp0\x00/dev/null\x000\x00198.51.100.7\x00198.51.100.1\x00wan-ppp", "192.0.2.53")
	f.Add("ipv6-up", "ppp0\x00\x000\x00fe80::1\x00fe80::2\x00wan", "")
	f.Fuzz(func(t *testing.T, kind, args, dns string) {
		ev, err := ParsePPPHook(kind, strings.Split(args, "\x00"), func(k string) string {
			if k == "DNS1" {
				return dns
			}
			return ""
		})
		if err != nil {
			return
		}
		// What is accepted is safe to use: a plain interface and service
		// name, addresses of the event's family.
		if !ifnamePattern.MatchString(ev.Ifname) || !servicePattern.MatchString(ev.Service) {
			t.Fatalf("accepted %+v", ev)
		}
		if strings.HasPrefix(kind, "ipv6") != ev.Local.Is6() || ev.Local.Is6() != ev.Peer.Is6() {
			t.Fatalf("accepted mixed families: %+v", ev)
		}
	})
}

func TestPPPoEOptions(t *testing.T) {
	p := &PPPoE{Name: "wan-ppp", User: `bob"x`, StateDir: "/persist/roost", Unit: 1}
	opts := p.Options("eth1", `pa"ss\word`)
	for _, want := range []string{
		"plugin rp-pppoe.so\n", "nic-eth1\n", "pppoe-padi-timeout 2\n", "pppoe-padi-attempts 2\n", `user "bob\"x"` + "\n", `password "pa\"ss\\word"` + "\n",
		"unit 1\n", "nodetach\n", "mtu 1492\n", "mru 1492\n", "lcp-echo-interval 10\n", "lcp-echo-failure 3\n",
		"+ipv6\n", "ipparam wan-ppp\n", `ip-up-script "/persist/roost/pppoe-wan-ppp/ip-up"` + "\n",
		`ip-down-script "/persist/roost/pppoe-wan-ppp/ip-down"` + "\n", "nodefaultroute\n",
	} {
		if !strings.Contains(opts, want) {
			t.Errorf("options lack %q:\n%s", want, opts)
		}
	}
	// pppd 2.4.9 (Debian 12) has no ipv6-up-script option: it would refuse
	// the whole file.
	if strings.Contains(opts, "ipv6-up-script") {
		t.Errorf("options name an ipv6-up-script, which pppd 2.4.9 refuses:\n%s", opts)
	}
	p.NoIPv6, p.MTU = true, 1480
	if opts := p.Options("eth1", "x"); strings.Contains(opts, "+ipv6") || !strings.Contains(opts, "mtu 1480\n") {
		t.Errorf("options with IPv6 off and MTU 1480:\n%s", opts)
	}
}

func TestPPPHooksDeliverToRunningServiceOnly(t *testing.T) {
	h := NewPPPHooks()
	if err := h.Deliver(PPPEvent{Service: "wan-ppp"}); err == nil || !strings.Contains(err.Error(), "no PPPoE service") {
		t.Fatalf("delivered to no service: %v", err)
	}
	ch, unregister := h.register("wan-ppp")
	if err := h.Deliver(PPPEvent{Service: "wan-ppp", Kind: "ip-up"}); err != nil {
		t.Fatal(err)
	}
	if ev := <-ch; ev.Kind != "ip-up" {
		t.Fatalf("got %+v", ev)
	}
	unregister()
	if err := h.Deliver(PPPEvent{Service: "wan-ppp"}); err == nil {
		t.Fatal("delivered after the service stopped")
	}
}
