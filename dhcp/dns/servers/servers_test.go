package servers

import (
	"encoding/json"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/roostrouter/roost/agent/kind"
	"github.com/roostrouter/roost/agent/supervisor"
)

func TestDecode(t *testing.T) {
	var l List
	err := json.Unmarshal([]byte(`["192.0.2.53", "[2001:db8::53]:5353", {"service": "wan-dhcp"}, {"service": "wan-ppp", "output": "dns"}]`), &l)
	if err != nil {
		t.Fatal(err)
	}
	want := List{
		{Addr: netip.MustParseAddrPort("192.0.2.53:53")},
		{Addr: netip.MustParseAddrPort("[2001:db8::53]:5353")},
		{Service: "wan-dhcp", Output: "dns"},
		{Service: "wan-ppp", Output: "dns"},
	}
	if !reflect.DeepEqual(l, want) {
		t.Fatalf("decoded %+v, want %+v", l, want)
	}
	back, _ := json.Marshal(l)
	if string(back) != `["192.0.2.53","[2001:db8::53]:5353",{"output":"dns","service":"wan-dhcp"},{"output":"dns","service":"wan-ppp"}]` {
		t.Fatalf("encoded %s", back)
	}
	for _, bad := range []string{`["192.0.2.300"]`, `[{"service": ""}]`, `[{"service": "a", "colour": "red"}]`, `[7]`, `["192.0.2.1:0"]`} {
		if err := json.Unmarshal([]byte(bad), &l); err == nil {
			t.Errorf("%s decoded", bad)
		}
	}
}

func TestCheckAndAddrs(t *testing.T) {
	l := List{{Addr: netip.MustParseAddrPort("[2001:db8::53]:53")}, {Service: "wan-dhcp", Output: "dns"}, {Service: "wan-dhcp6", Output: "dns"}}
	c := kind.NewCheck("services.x", nil)
	l.Check(c, "dns", func(a netip.AddrPort) string {
		if !a.Addr().Is4() {
			return "is not an IPv4 address"
		}
		return ""
	})
	if p := c.Problems(); len(p) != 1 || !strings.Contains(p[0], "services.x.dns[0]: 2001:db8::53 is not an IPv4 address") {
		t.Fatalf("problems %q", p)
	}
	refs := c.Refs()
	if len(refs) != 2 || !refs[0].Follow || refs[0].Service != "wan-dhcp" || refs[0].Output != "dns" || refs[0].Field != "dns[1].service" {
		t.Fatalf("refs %+v", refs)
	}
	outputs := map[supervisor.Ref]string{
		{Service: "wan-dhcp", Key: "dns"}:  "192.0.2.53 192.0.2.54 junk",
		{Service: "wan-dhcp6", Key: "dns"}: "2001:db8::53",
	}
	got := l.Addrs(func(r supervisor.Ref) (string, bool) { v, ok := outputs[r]; return v, ok })
	want := []netip.AddrPort{netip.MustParseAddrPort("[2001:db8::53]:53"), netip.MustParseAddrPort("192.0.2.53:53"), netip.MustParseAddrPort("192.0.2.54:53")}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("addrs %v, want %v (in order, without repeats)", got, want)
	}
	if r := l.Refs(); len(r) != 2 || r[1] != (supervisor.Ref{Service: "wan-dhcp6", Key: "dns"}) {
		t.Fatalf("refs %v", r)
	}
}

func TestForLAN(t *testing.T) {
	learner := kind.Kind{Name: "dhcp4-client", Roles: []kind.Role{kind.Learner}}
	resolver := kind.Kind{Name: "dns", Roles: []kind.Role{kind.Resolver}}
	other := kind.Kind{Name: "link"}
	for _, tc := range []struct {
		name     string
		services map[string]kind.Kind
		want     string
	}{
		{"a dns service: the router", map[string]kind.Kind{"wan-dhcp": learner, "lan-dns": resolver}, "[]"},
		{"none: what the WAN learns", map[string]kind.Kind{"wan-ppp": learner, "wan-dhcp6": learner, "lan": other}, "[wan-dhcp6's dns wan-ppp's dns]"},
		{"none, and nothing learns: the router", map[string]kind.Kind{"lan": other}, "[]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, s := range ForLAN(tc.services) {
				got = append(got, s.String())
			}
			if s := "[" + strings.Join(got, " ") + "]"; s != tc.want {
				t.Errorf("ForLAN = %s, want %s", s, tc.want)
			}
		})
	}
}
