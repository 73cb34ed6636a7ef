package ra

import (
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/mdlayher/ndp"
)

func TestFinalAdvertisement(t *testing.T) {
	now := time.Date(2026, 11, 22, 6, 0, 0, 0, time.UTC)
	cur := announced{Prefix: netip.MustParsePrefix("2001:db8:200:1::/64"), PreferredUntil: now.Add(30 * time.Minute), ValidUntil: now.Add(time.Hour)}
	old := announced{Prefix: netip.MustParsePrefix("2001:db8:100:1::/64"), ValidUntil: now.Add(time.Minute), Deprecated: true}
	gone := announced{Prefix: netip.MustParsePrefix("2001:db8:50:1::/64"), ValidUntil: now.Add(-time.Minute), Deprecated: true}
	mac := net.HardwareAddr{2, 0, 0, 0, 0, 2}
	// As it goes on the wire, and as a host parses it.
	b, err := ndp.MarshalMessage(finalAdvertisement(mac, []announced{cur, old, gone}, nil, now))
	if err != nil {
		t.Fatal(err)
	}
	m, err := ndp.ParseMessage(b)
	if err != nil {
		t.Fatal(err)
	}
	ra := m.(*ndp.RouterAdvertisement)
	if ra.RouterLifetime != 0 {
		t.Errorf("router lifetime %v, want 0: hosts must drop their default route through the router", ra.RouterLifetime)
	}
	var prefixes []string
	var dns []netip.Addr
	var source bool
	for _, o := range ra.Options {
		switch o := o.(type) {
		case *ndp.PrefixInformation:
			prefixes = append(prefixes, o.Prefix.String())
			if o.ValidLifetime != 0 || o.PreferredLifetime != 0 || !o.OnLink || !o.AutonomousAddressConfiguration {
				t.Errorf("prefix %s: valid %v, preferred %v, on-link %v, autonomous %v; want 0, 0, and the flags as announced",
					o.Prefix, o.ValidLifetime, o.PreferredLifetime, o.OnLink, o.AutonomousAddressConfiguration)
			}
		case *ndp.RecursiveDNSServer:
			dns = append(dns, o.Servers...)
			if o.Lifetime != 0 {
				t.Errorf("DNS servers with lifetime %v, want 0", o.Lifetime)
			}
		case *ndp.LinkLayerAddress:
			source = o.Addr.String() == mac.String()
		}
	}
	if want := []string{"2001:db8:200:1::", "2001:db8:100:1::"}; !slices.Equal(prefixes, want) {
		t.Errorf("prefixes withdrawn: %v, want %v (not the one expired already)", prefixes, want)
	}
	if want := []netip.Addr{netip.MustParseAddr("2001:db8:200:1::1")}; !slices.Equal(dns, want) {
		t.Errorf("DNS servers withdrawn: %v, want %v", dns, want)
	}
	if !source {
		t.Error("no source link-layer address")
	}
}
