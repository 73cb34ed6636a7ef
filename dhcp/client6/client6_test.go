package client6

import (
	"net"
	"os"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
)

func reply(t testing.TB) *dhcpv6.Message {
	m, err := dhcpv6.NewMessage()
	if err != nil {
		t.Fatal(err)
	}
	m.MessageType = dhcpv6.MessageTypeReply
	m.AddOption(dhcpv6.OptClientID(clientDUID))
	m.AddOption(dhcpv6.OptServerID(serverDUID))
	m.AddOption(&dhcpv6.OptIANA{IaId: [4]byte{1}, T1: 40 * time.Second, T2: 60 * time.Second,
		Options: dhcpv6.IdentityOptions{Options: dhcpv6.Options{&dhcpv6.OptIAAddress{
			IPv6Addr: net.ParseIP("2001:db8:0:1::100"), PreferredLifetime: 80 * time.Second, ValidLifetime: 100 * time.Second}}}})
	_, pfx, _ := net.ParseCIDR("2001:db8:100::/56")
	m.AddOption(&dhcpv6.OptIAPD{IaId: [4]byte{1}, T1: 30 * time.Second, T2: 50 * time.Second,
		Options: dhcpv6.PDOptions{Options: dhcpv6.Options{&dhcpv6.OptIAPrefix{
			Prefix: pfx, PreferredLifetime: 90 * time.Second, ValidLifetime: 120 * time.Second}}}})
	return m
}

func TestBindingTimes(t *testing.T) {
	b, err := checkReply(reply(t))
	if err != nil {
		t.Fatal(err)
	}
	// T1 and T2 are the earlier of the IAs'; the end is the longest lifetime.
	t1, t2, end := b.times()
	if t1 != 30*time.Second || t2 != 50*time.Second || end != 120*time.Second {
		t.Fatalf("t1 %v t2 %v end %v", t1, t2, end)
	}
	if len(b.addrs()) != 1 || len(b.prefixes()) != 1 {
		t.Fatal("the binding lost its address or prefix")
	}
	empty, _ := dhcpv6.NewMessage()
	empty.MessageType = dhcpv6.MessageTypeReply
	if _, err := checkReply(empty); err == nil {
		t.Fatal("a reply without an address or prefix was accepted")
	}
}

// FuzzReply: a hostile Reply is refused or yields sane times, never a panic.
func FuzzReply(f *testing.F) {
	f.Add(reply(f).ToBytes())
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := dhcpv6.MessageFromBytes(data)
		if err != nil {
			return
		}
		b, err := checkReply(m)
		if err != nil {
			return
		}
		if t1, t2, end := b.times(); t1 < 0 || t2 < 0 || end < 0 {
			t.Fatalf("negative times %v %v %v", t1, t2, end)
		}
	})
}

func TestIDAddrForLinksWithoutHardwareAddress(t *testing.T) {
	c := &Client{StateDir: t.TempDir()}
	duid, err := c.duid(nil) // ppp0
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := duid.(*dhcpv6.DUIDUUID); !ok {
		t.Fatalf("DUID for a link without a hardware address: %T", duid)
	}
	again, _ := c.duid(nil)
	a, b := idAddr(nil, duid), idAddr(nil, again)
	if len(a) != 6 || a.String() != b.String() || a[0]&0x02 == 0 {
		t.Fatalf("id addresses %s and %s: want the same locally administered address", a, b)
	}
	eth := net.HardwareAddr{2, 0, 0, 0, 0, 2}
	if idAddr(eth, duid).String() != eth.String() {
		t.Fatal("an Ethernet link's own address was not used")
	}
}

func TestKeptBinding(t *testing.T) {
	c := &Client{StateDir: t.TempDir()}
	b, err := checkReply(reply(t))
	if err != nil {
		t.Fatal(err)
	}
	b.acquired = time.Date(2026, 11, 22, 6, 0, 0, 0, time.UTC)
	if err := c.save("wan", b); err != nil {
		t.Fatal(err)
	}
	if got := c.load("wan", b.acquired.Add(time.Minute)); got == nil || !got.acquired.Equal(b.acquired) || len(got.prefixes()) != 1 {
		t.Fatalf("a binding a minute old was not adopted: %+v", got)
	}
	if c.load("wan", b.acquired.Add(121*time.Second)) != nil {
		t.Fatal("a binding past its longest valid lifetime was adopted")
	}
	if c.load("wan", b.acquired.Add(-time.Hour)) != nil {
		t.Fatal("a binding from the future (a clock that jumped back) was adopted")
	}
	os.WriteFile(c.leaseFile("wan"), []byte(`{"reply": "AAAA", "acquired": "2026-11-22T06:00:00Z"}`), 0o600)
	if c.load("wan", b.acquired) != nil {
		t.Fatal("a damaged kept binding was adopted")
	}
}

// TestRenewSchedule: renewing lasts until T2, rebinding until the end
// (dhcp/retry times the exchanges within them).
func TestRenewSchedule(t *testing.T) {
	b, err := checkReply(reply(t)) // T1 30 s, T2 50 s, the end at 120 s
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1_800_000_000, 0)
	b.acquired = t0
	s := b.schedule()
	if want := t0.Add(50 * time.Second); !s.T2.Equal(want) {
		t.Errorf("T2 at %v, want %v", s.T2, want)
	}
	if want := t0.Add(120 * time.Second); !s.End.Equal(want) {
		t.Errorf("the end at %v, want %v", s.End, want)
	}
}
