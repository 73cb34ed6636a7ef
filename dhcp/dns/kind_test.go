package dns

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/roostrouter/roost/agent/kind"
)

func TestDeclCheck(t *testing.T) {
	for _, tc := range []struct {
		json string
		want []string // problems, in part
		refs int
	}{
		{`{"link": "lan", "upstreams": [{"service": "wan-dhcp"}, "192.0.2.53"], "leasesFrom": "lan-dhcp", "hostname": "rotuer",
		   "hosts": {"nas": ["192.168.1.10"], "printer.office": ["fd00:1::11"]}, "serveStale": "12h"}`, nil, 3},
		{`{"link": "lan", "hostname": "ro_tuer", "domain": "bad domain", "hosts": {"-x": ["192.168.1.10"]},
		   "cacheSize": 100, "serveStale": "200h", "rateLimit": -1, "upstreams": ["0.0.0.0"]}`,
			[]string{"hostname", "domain", `hosts: "-x"`, "cacheSize", "serveStale", "rateLimit", "upstreams[0]: 0.0.0.0 is not"}, 1},
	} {
		var d Decl
		if err := json.Unmarshal([]byte(tc.json), &d); err != nil {
			t.Fatal(err)
		}
		c := kind.NewCheck("services.lan-dns", nil)
		d.Check(c)
		got := strings.Join(c.Problems(), "\n")
		if len(c.Problems()) != len(tc.want) {
			t.Errorf("%s: problems\n%s\nwant %d", tc.json, got, len(tc.want))
		}
		for _, w := range tc.want {
			if !strings.Contains(got, w) {
				t.Errorf("no problem with %q in\n%s", w, got)
			}
		}
		if len(c.Refs()) != tc.refs {
			t.Errorf("%s: refs %+v", tc.json, c.Refs())
		}
		for _, r := range c.Refs() {
			if r.Service != "lan" && !r.Follow {
				t.Errorf("%+v is a dependency: the forwarder must run without its upstreams and leases", r)
			}
		}
	}
}
