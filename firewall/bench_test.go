package firewall

import (
	"net/netip"
	"testing"
)

func forwards1000() Ruleset {
	rs := Ruleset{Zones: map[string][]string{"wan": {"wan"}, "lan": {"br-lan"}}}
	for i := 0; i < 1000; i++ {
		rs.Forwards = append(rs.Forwards, Forward{Proto: "tcp", Port: 10000 + i,
			To: netip.AddrFrom4([4]byte{192, 168, 1, byte(2 + i%250)}), ToPort: 80})
	}
	return rs
}

// BenchmarkApplyForwards applies a ruleset with 1,000 port forwards to an
// empty namespace, as make bench times it beside nft -f.
func BenchmarkApplyForwards(b *testing.B) {
	c, _ := netns(b)
	rs := forwards1000()
	for b.Loop() {
		if err := Remove(c); err != nil {
			b.Fatal(err)
		}
		if _, err := Apply(c, rs); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkZoneMember adds and removes an interface of a zone in place, as
// make bench times it beside nft add element.
func BenchmarkZoneMember(b *testing.B) {
	c, _ := netns(b)
	rs := forwards1000()
	if _, err := Apply(c, rs); err != nil {
		b.Fatal(err)
	}
	more := forwards1000()
	more.Zones["wan"] = append(more.Zones["wan"], "ppp0")
	for i := 0; b.Loop(); i++ {
		next := rs
		if i%2 == 0 {
			next = more
		}
		if res, err := Apply(c, next); err != nil || !res.Sets {
			b.Fatalf("%+v %v", res, err)
		}
	}
}
