package ra

import (
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/mdlayher/ndp"

	"github.com/roostrouter/roost/agent/supervisor"
	"github.com/roostrouter/roost/dhcp/dns/servers"
)

// rdnssOf is what an advertisement says of DNS servers: each server with
// its lifetime.
func rdnssOf(ra *ndp.RouterAdvertisement) map[netip.Addr]time.Duration {
	out := map[netip.Addr]time.Duration{}
	for _, o := range ra.Options {
		if r, ok := o.(*ndp.RecursiveDNSServer); ok {
			for _, a := range r.Servers {
				out[a] = r.Lifetime
			}
		}
	}
	return out
}

// TestRDNSSFollowsServers: the servers a DHCPv6 client learns are handed
// out as they change; one no longer handed out is announced with lifetime
// 0 in the next three advertisements and then no more; a new run (another
// config, a restart) withdraws what the last one handed out; and with no
// servers named, the router's own address is announced again.
func TestRDNSSFollowsServers(t *testing.T) {
	now := time.Date(2026, 12, 3, 6, 0, 0, 0, time.UTC)
	cur := announced{Prefix: netip.MustParsePrefix("2001:db8:200:1::/64"), PreferredUntil: now.Add(time.Hour), ValidUntil: now.Add(2 * time.Hour)}
	own := netip.MustParseAddr("2001:db8:200:1::1")
	a53, a54 := netip.MustParseAddr("2001:db8::53"), netip.MustParseAddr("2001:db8::54")
	s := &Service{Interval: 10 * time.Second}
	file := filepath.Join(t.TempDir(), "ra-br-lan-dns.json")
	learned := map[supervisor.Ref]string{}
	input := func(r supervisor.Ref) (string, bool) { v, ok := learned[r]; return v, ok }
	list := servers.List{{Service: "wan-dhcp6", Output: servers.Output.Key}}
	wan := supervisor.Ref{Service: "wan-dhcp6", Key: servers.Output.Key}
	advertise := func(d *rdnss) map[netip.Addr]time.Duration {
		return rdnssOf(s.advertisement(net.HardwareAddr{2, 0, 0, 0, 0, 1}, []announced{cur}, now, d))
	}
	want := func(step string, got map[netip.Addr]time.Duration, pairs ...any) {
		t.Helper()
		w := map[netip.Addr]time.Duration{}
		for i := 0; i < len(pairs); i += 2 {
			w[pairs[i].(netip.Addr)] = pairs[i+1].(time.Duration)
		}
		if fmt.Sprint(got) != fmt.Sprint(w) {
			t.Errorf("%s: RDNSS %v, want %v", step, got, w)
		}
	}

	d := newRDNSS(list, file)
	if changed, err := d.follow(input); changed || err != nil {
		t.Fatalf("nothing learned yet: changed %v, %v", changed, err)
	}
	want("WAN down", advertise(d)) // no server rather than the router's
	learned[wan] = "2001:db8::53 192.0.2.53"
	if changed, err := d.follow(input); !changed || err != nil {
		t.Fatalf("learned: changed %v, %v", changed, err)
	}
	want("learned", advertise(d), a53, 30*time.Second)
	learned[wan] = "2001:db8::54"
	d.follow(input)
	for i := range withdrawRepeats {
		want(fmt.Sprintf("changed, advertisement %d", i+1), advertise(d), a54, 30*time.Second, a53, time.Duration(0))
	}
	want("withdrawn long enough", advertise(d), a54, 30*time.Second)

	// Another run names other servers: the last one's are withdrawn.
	d = newRDNSS(servers.List{{Addr: netip.MustParseAddrPort("[2001:db8::55]:53")}}, file)
	d.follow(input)
	want("next run", advertise(d), netip.MustParseAddr("2001:db8::55"), 30*time.Second, a54, time.Duration(0))

	// With none named, the router answers: its own address, and the
	// named ones withdrawn.
	d = newRDNSS(nil, file)
	d.follow(input)
	want("own", advertise(d), own, 30*time.Second, netip.MustParseAddr("2001:db8::55"), time.Duration(0))
	for range withdrawRepeats - 1 {
		advertise(d)
	}
	want("own, later", advertise(d), own, 30*time.Second)
	if got := readServers(file); len(got) != 0 {
		t.Errorf("the file still names %v", got)
	}

	// Remove's final advertisement withdraws the named servers too.
	final := rdnssOf(finalAdvertisement(nil, []announced{cur}, []netip.Addr{a54}, now))
	if !slices.Equal([]time.Duration{final[own], final[a54]}, []time.Duration{0, 0}) || len(final) != 2 {
		t.Errorf("final advertisement RDNSS %v, want %s and %s with lifetime 0", final, own, a54)
	}
}
