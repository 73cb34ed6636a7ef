package ra

import (
	"net/netip"
	"testing"
)

func TestSubnet64(t *testing.T) {
	d := netip.MustParsePrefix("2001:db8:100::/56")
	for _, tc := range []struct {
		index int
		want  string
	}{{0, "2001:db8:100::/64"}, {1, "2001:db8:100:1::/64"}, {255, "2001:db8:100:ff::/64"}} {
		got, err := Subnet64(d, tc.index)
		if err != nil || got.String() != tc.want {
			t.Errorf("Subnet64(%s, %d) = %s, %v; want %s", d, tc.index, got, err, tc.want)
		}
	}
	if _, err := Subnet64(d, 256); err == nil {
		t.Error("subnet 256 of a /56 was accepted")
	}
	if _, err := Subnet64(netip.MustParsePrefix("2001:db8::/80"), 0); err == nil {
		t.Error("a /80 was split into /64s")
	}
}
