package config_test

import (
	"os"
	"strings"
	"testing"

	"github.com/roostrouter/roost/agent"
	"github.com/roostrouter/roost/agent/config"
)

// kinds are roostd's own: the config is checked as roostd checks it.
var kinds = agent.Kinds(nil)

func TestExampleConfig(t *testing.T) {
	c, err := config.Load("../../docs/rotuer.json", kinds)
	if err != nil {
		t.Fatal(err)
	}
	if c.Hostname != "rotuer" || len(c.Services) != 13 {
		t.Fatalf("example: hostname %q, %d services", c.Hostname, len(c.Services))
	}
	if got := strings.Join(c.Services["default"].Deps(), ","); got != "wan,wan-addr" {
		t.Fatalf("default route depends on %s", got)
	}
	if got := strings.Join(c.Services["lan0"].Deps(), ","); got != "lan" {
		t.Fatalf("a bridge member depends on %s, want the bridge", got)
	}
}

func TestDHCPExampleConfig(t *testing.T) {
	c, err := config.Load("../../docs/rotuer-dhcp.json", kinds)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.Services["default"].Deps(), ","); got != "wan,wan-dhcp" {
		t.Fatalf("the default route depends on %s, want the link and the DHCP client", got)
	}
	// The firewall only reads its zones' devices: it is in force before
	// they are up, and stays while a WAN link is down.
	if got := strings.Join(c.Services["firewall"].Deps(), ","); got != "" {
		t.Fatalf("the firewall depends on %s, want nothing", got)
	}
	if got := strings.Join(c.Services["lan-ra"].Deps(), ","); got != "lan,wan-dhcp6" {
		t.Fatalf("the LAN's prefix depends on %s, want the LAN and the DHCPv6 client", got)
	}
}

// TestBadConfigs: every problem is reported at once, with its JSON path.
func TestBadConfigs(t *testing.T) {
	good, _ := os.ReadFile("../../docs/rotuer.json")
	for _, tc := range []struct {
		name string
		conf string
		want []string
	}{
		{"not JSON", `{"hostname": `, []string{"invalid JSON"}},
		{"wrong types and unknown fields", `{"hostname": 7, "colour": "red", "ssh": {"listen": "x"},
			"services": {"wan": {"kind": "link", "interface": "wan", "mtu": "big", "speed": 100}}}`,
			[]string{"hostname: expected string", "colour: unknown field", "ssh.listen: expected []string", "services.wan.mtu: expected int", "services.wan: unknown field \"speed\""}},
		{"unknown kind", `{"services": {"x": {"kind": "teleport"}}}`, []string{`services.x.kind: unknown kind "teleport"`}},
		{"authorized keys roostd cannot honour", `{"ssh": {"authorizedKeys": ["from=\"10.0.0.1\" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGg8pV3x3wG3Z0T8mH0Xc1r2q8yH0rX1yqJ9vQ4tq0Zk a", "not a key"]}}`,
			[]string{"ssh.authorizedKeys[0]: roostd does not enforce the option from", "ssh.authorizedKeys[1]: "}},
		{"cycle", `{"services": {
			"a": {"kind": "bridge", "name": "a", "after": ["b"]},
			"b": {"kind": "bridge", "name": "b", "after": ["c"]},
			"c": {"kind": "bridge", "name": "c", "after": ["a"]}}}`, []string{"dependency cycle: a → b → c → a"}},
		{"missing dependency", `{"services": {"addr": {"kind": "address", "link": "nowhere", "address": "10.0.0.1/24"}}}`,
			[]string{`services.addr.link: there is no service "nowhere"`}},
		{"wrong kind of dependency", `{"services": {"s": {"kind": "sysctl", "values": {"a.b": "1"}}, "addr": {"kind": "address", "link": "s", "address": "10.0.0.1/24"}}}`,
			[]string{`services.addr.link: "s" is of kind sysctl, want a link, bridge or vlan`}},
		{"duplicate names", `{"services": {"wan": {"kind": "link", "interface": "wan"}, "wan": {"kind": "link", "interface": "wan"}}}`,
			[]string{"services.wan: declared twice"}},
		{"board interface that does not exist", `{"board": "lab", "services": {"x": {"kind": "link", "interface": "eth7"}}}`,
			[]string{`services.x.interface: board lab has no interface "eth7" (it has lan0, lan1, wan)`}},
		{"unknown board", `{"board": "wrt54g"}`, []string{`board: unknown board "wrt54g"`}},
		{"misspelt output", `{"services": {
			"wan": {"kind": "link", "interface": "wan"},
			"wan-dhcp": {"kind": "dhcp4-client", "link": "wan"},
			"default": {"kind": "route", "link": "wan", "destination": "0.0.0.0/0", "gateway": {"service": "wan-dhcp", "output": "routr"}}}}`,
			[]string{`services.default.gateway.service: a dhcp4-client service has no output "routr" (it has ifname, address, prefix-length, router,`}},
		{"pinhole naming no ra", `{"services": {
			"lan": {"kind": "bridge", "name": "br-lan"},
			"fw": {"kind": "firewall", "zones": {"lan": {"services": ["lan"]}},
				"allow6": [{"ra": "lan", "host": "::1234", "proto": "tcp", "port": 443}]}}}`,
			[]string{`services.fw.allow6[0].ra: "lan" is of kind bridge, want an ra`}},
		{"typed settings", `{"services": {
			"lan": {"kind": "bridge", "name": "br-lan"},
			"lan-addr": {"kind": "address", "link": "lan", "address": "192.168.1.1/24"},
			"dhcp": {"kind": "dhcp4-server", "link": "lan", "address": "lan-addr", "leaseTime": "a while",
				"pool": {"start": "192.168.1.300", "end": "192.168.1.50"}, "static": [{"mac": "nope", "address": "192.168.1.9"}]},
			"ra": {"kind": "ra", "link": "lan", "prefixFrom": "lan-addr", "subnet": 1, "interval": "10ms"}}}`,
			[]string{`services.dhcp.leaseTime: "a while" is not a duration, like 12h or 200s`, `services.dhcp.pool`,
				`services.ra.prefixFrom: "lan-addr" is of kind address, want a dhcp6-client`, `services.ra.interval: 10ms: want a duration of a second or more`}},
		{"bad values", `{"services": {
			"a": {"kind": "address", "link": "v", "address": "10.0.0.300/24"},
			"v": {"kind": "vlan", "parent": "b", "id": 5000, "name": "this-name-is-too-long"},
			"b": {"kind": "bridge", "name": "br0", "mtu": 20},
			"r": {"kind": "route", "link": "b", "destination": "default", "gateway": "nope"}}}`,
			[]string{"services.a.address", "services.v.id: 5000", "services.v.name", "services.b.mtu: 20", "services.r.destination", `services.r.gateway: "nope"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := config.Parse([]byte(tc.conf), kinds)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not mention %q:\n%v", w, err)
				}
			}
		})
	}
	if _, err := config.Parse(good, kinds); err != nil {
		t.Fatal(err)
	}
}

func FuzzParse(f *testing.F) {
	good, _ := os.ReadFile("../../docs/rotuer.json")
	f.Add(good)
	f.Add([]byte(`{"services": {"a": {"kind": "route", "link": "a", "destination": "::/0", "gateway": {"service": "a", "output": "x"}}}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := config.Parse(b, kinds)
		if err != nil {
			return
		}
		for name, s := range c.Services {
			for _, d := range s.Deps() {
				if _, ok := c.Services[d]; !ok {
					t.Fatalf("accepted %s depending on missing %s", name, d)
				}
			}
		}
	})
}

// TestFingerprintIgnoresLayout: the same declaration written out again
// with other spacing and key order (by Nix, by hand) keeps its
// fingerprint, so a reload restarts nothing; a changed setting changes it.
func TestFingerprintIgnoresLayout(t *testing.T) {
	parse := func(svc string) string {
		t.Helper()
		c, err := config.Parse([]byte(`{"board": "lab", "services": {"wan": `+svc+`}}`), agent.Kinds(nil))
		if err != nil {
			t.Fatal(err)
		}
		return c.Services["wan"].Fingerprint()
	}
	a := parse(`{ "kind": "link", "interface": "wan", "mtu": 1500 }`)
	if b := parse(`{"mtu":1500,"interface":"wan","kind":"link"}`); b != a {
		t.Errorf("the same link, laid out otherwise: %s, was %s", b, a)
	}
	if c := parse(`{"kind": "link", "interface": "wan", "mtu": 1492}`); c == a {
		t.Error("a changed MTU kept the fingerprint")
	}
}
