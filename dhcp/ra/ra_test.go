package ra

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/mdlayher/ndp"

	"github.com/roostrouter/roost/agent/supervisor"
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

func TestAdvertisementLifetimes(t *testing.T) {
	now := time.Date(2026, 11, 22, 6, 0, 0, 0, time.UTC)
	cur := announced{Prefix: netip.MustParsePrefix("2001:db8:200:1::/64"), PreferredUntil: now.Add(30 * time.Minute), ValidUntil: now.Add(time.Hour)}
	for _, tc := range []struct {
		name                 string
		a                    announced
		at                   time.Time
		preferred, valid     time.Duration
		inAdvertisement, dns bool
	}{
		{"fresh", cur, now, 30 * time.Minute, time.Hour, true, true},
		{"counted down", cur, now.Add(10*time.Minute + 500*time.Millisecond), 19*time.Minute + 59*time.Second, 49*time.Minute + 59*time.Second, true, true},
		{"past preferred", cur, now.Add(40 * time.Minute), 0, 20 * time.Minute, true, true},
		{"replaced, valid capped at 2h",
			announced{Prefix: netip.MustParsePrefix("2001:db8:100:1::/64"), PreferredUntil: now.Add(20 * time.Hour), ValidUntil: now.Add(30 * time.Hour), Deprecated: true},
			now, 0, 2 * time.Hour, true, false},
		{"replaced, expired",
			announced{Prefix: netip.MustParsePrefix("2001:db8:100:1::/64"), ValidUntil: now.Add(-time.Second), Deprecated: true},
			now, 0, 0, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &Service{Interval: 10 * time.Second}
			ra := s.advertisement(net.HardwareAddr{2, 0, 0, 0, 0, 1}, []announced{tc.a}, tc.at, nil)
			var pio *ndp.PrefixInformation
			var rdnss *ndp.RecursiveDNSServer
			for _, o := range ra.Options {
				switch o := o.(type) {
				case *ndp.PrefixInformation:
					pio = o
				case *ndp.RecursiveDNSServer:
					rdnss = o
				}
			}
			if (pio != nil) != tc.inAdvertisement {
				t.Fatalf("prefix in the advertisement: %v, want %v", pio != nil, tc.inAdvertisement)
			}
			if pio != nil && (pio.PreferredLifetime != tc.preferred || pio.ValidLifetime != tc.valid || pio.Prefix != tc.a.Prefix.Addr()) {
				t.Errorf("PIO %s preferred %s valid %s; want %s %s %s", pio.Prefix, pio.PreferredLifetime, pio.ValidLifetime, tc.a.Prefix, tc.preferred, tc.valid)
			}
			if (rdnss != nil) != tc.dns {
				t.Errorf("RDNSS present: %v, want %v", rdnss != nil, tc.dns)
			}
			// What ndp encodes, it parses back.
			b, err := ndp.MarshalMessage(ra)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := ndp.ParseMessage(b); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestGone: as the service stops, the prefix is gone when the supervisor
// stopped it without the client's prefix (withdrawn with the binding) or
// with another one; with the same one (roostd stopping, a reload, the
// link down), or stopped by anything but the supervisor, it is not.
func TestGone(t *testing.T) {
	s := &Service{PrefixFrom: "wan-dhcp6", Subnet: 1}
	cur := netip.MustParsePrefix("2001:db8:100:1::/64")
	stopped := func(prefix, length string) *supervisor.Stopped {
		st := &supervisor.Stopped{Inputs: map[supervisor.Ref]string{}}
		if prefix != "" {
			st.Inputs[delegated.Addr.Of("wan-dhcp6")] = prefix
		}
		if length != "" {
			st.Inputs[delegated.Len.Of("wan-dhcp6")] = length
		}
		return st
	}
	for _, tc := range []struct {
		name string
		st   *supervisor.Stopped
		want bool
	}{
		{"still delegated", stopped("2001:db8:100::", "56"), false},
		{"the same /64 in a shorter delegation", stopped("2001:db8:100::", "48"), false},
		{"withdrawn", stopped("", ""), true},
		{"half withdrawn", stopped("2001:db8:100::", ""), true},
		{"replaced", stopped("2001:db8:200::", "56"), true},
		{"too long to hold the subnet", stopped("2001:db8:100::", "64"), true},
		{"not stopped by the supervisor", nil, false},
	} {
		if got := s.gone(tc.st, cur); got != tc.want {
			t.Errorf("%s: gone = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// FuzzParseND: whatever a LAN host sends the router's neighbor discovery
// socket is refused with an error or parsed, never a panic.
func FuzzParseND(f *testing.F) {
	rs, _ := ndp.MarshalMessage(&ndp.RouterSolicitation{})
	f.Add(rs, 255)
	f.Add([]byte{133, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0}, 255)
	f.Add(rs, 64)
	f.Fuzz(func(t *testing.T, b []byte, hopLimit int) {
		m, err := parseND(b, hopLimit)
		if err == nil && (m == nil || hopLimit != 255) {
			t.Fatalf("accepted %v with hop limit %d", m, hopLimit)
		}
	})
}
