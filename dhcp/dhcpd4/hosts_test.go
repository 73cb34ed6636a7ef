package dhcpd4

import (
	"net"
	"net/netip"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

func TestHostLabel(t *testing.T) {
	for in, want := range map[string]string{
		"laptop":                "laptop",
		"DESKTOP-AB12":          "desktop-ab12",
		"Johns iPhone":          "johns-iphone",
		"nas.local":             "nas",
		"my_printer":            "my-printer",
		"-bad":                  "",
		"bad-":                  "",
		"ünicode":               "",
		"":                      "",
		"a\x00b":                "",
		strings.Repeat("x", 64): "",
	} {
		if got := HostLabel(in); got != want {
			t.Errorf("HostLabel(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestHostsFollowLeases: a lease's name is listed while it lives, the
// newest lease keeps a name two hosts gave, a renewal without a name keeps
// it, and the output reads back as written.
func TestHostsFollowLeases(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	db, err := OpenDB(filepath.Join(t.TempDir(), "leases"), func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	grant := func(mac, ip, name string, d time.Duration) {
		t.Helper()
		if _, err := db.Grant(mac, netip.MustParseAddr(ip), name, d, pool()); err != nil {
			t.Fatal(err)
		}
	}
	grant("02:aa:00:00:00:01", "10.99.0.10", "Laptop", time.Hour)
	grant("02:aa:00:00:00:02", "10.99.0.11", "phone", time.Hour)
	grant("02:aa:00:00:00:03", "10.99.0.12", "phone", 2*time.Hour) // the newer phone
	grant("02:aa:00:00:00:04", "10.99.0.13", "", time.Hour)        // no name
	grant("02:aa:00:00:00:01", "10.99.0.10", "", time.Hour)        // renewal without a name
	mac := func(s string) net.HardwareAddr { m, _ := net.ParseMAC(s); return m }
	want := []Host{
		{"laptop", netip.MustParseAddr("10.99.0.10"), mac("02:aa:00:00:00:01")},
		{"phone", netip.MustParseAddr("10.99.0.12"), mac("02:aa:00:00:00:03")},
	}
	got := db.Hosts()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("hosts %v, want %v", got, want)
	}
	text := formatHosts(got)
	if text != "10.99.0.10 laptop # 02:aa:00:00:00:01\n10.99.0.12 phone # 02:aa:00:00:00:03" {
		t.Fatalf("hosts output:\n%s", text)
	}
	if back, _ := parseHosts(text + "\ngarbage line\n10.0.0.1 Bad_Name\n"); !reflect.DeepEqual(back, want) {
		t.Fatalf("read back %v, want %v", back, want)
	}
	db.Release("02:aa:00:00:00:03", netip.MustParseAddr("10.99.0.12"))
	now = now.Add(90 * time.Minute) // the laptop's lease ended
	if got := db.Hosts(); len(got) != 0 {
		t.Fatalf("hosts after release and expiry: %v", got)
	}
}

// TestDNSOption: option 6 is the router by default, the servers the
// followed services name, and absent while they name none.
func TestDNSOption(t *testing.T) {
	h := testHandler(t)
	mac, _ := net.ParseMAC("02:aa:00:00:00:09")
	ask := func() []net.IP {
		c := &sink{}
		disc, _ := dhcpv4.NewDiscovery(mac)
		h.serve(c, nil, disc)
		if len(c.sent) != 1 {
			t.Fatalf("no offer")
		}
		return c.sent[0].DNS()
	}
	if got := ask(); len(got) != 1 || !got[0].Equal(net.IPv4(10, 99, 0, 1)) {
		t.Fatalf("default DNS %v, want the router", got)
	}
	isp := []net.IP{net.IPv4(192, 0, 2, 53).To4()}
	h.dns.Store(&isp)
	if got := ask(); len(got) != 1 || !got[0].Equal(isp[0]) {
		t.Fatalf("DNS %v, want the ISP's", got)
	}
	h.dns.Store(&[]net.IP{})
	if got := ask(); len(got) != 0 {
		t.Fatalf("DNS %v while the services name none, want no option", got)
	}
}
