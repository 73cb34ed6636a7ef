package client4

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

func ack(t testing.TB, lease time.Duration) *dhcpv4.DHCPv4 {
	m, err := dhcpv4.New(dhcpv4.WithMessageType(dhcpv4.MessageTypeAck),
		dhcpv4.WithYourIP(net.IPv4(192, 0, 2, 100)),
		dhcpv4.WithOption(dhcpv4.OptSubnetMask(net.CIDRMask(24, 32))),
		dhcpv4.WithOption(dhcpv4.OptIPAddressLeaseTime(lease)),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(192, 0, 2, 1))))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestLeaseTimesAndSavedLeases(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	c := &Client{StateDir: t.TempDir(), Now: func() time.Time { return now }}
	l := &lease{ack: ack(t, 100*time.Second), acquired: now}
	if l.t1() != 50*time.Second || l.t2() != 87500*time.Millisecond || l.prefix().String() != "192.0.2.100/24" {
		t.Fatalf("t1 %v t2 %v prefix %v", l.t1(), l.t2(), l.prefix())
	}
	if err := c.save("wan", l); err != nil {
		t.Fatal(err)
	}
	if back := c.load("wan"); back == nil || !back.ack.YourIPAddr.Equal(l.ack.YourIPAddr) {
		t.Fatal("a saved lease did not load")
	}
	now = now.Add(101 * time.Second)
	if c.load("wan") != nil {
		t.Fatal("an expired saved lease was loaded")
	}
}

// FuzzLoad: a damaged lease file, or a hostile packet saved in it, is
// refused without a panic.
func FuzzLoad(f *testing.F) {
	f.Add(ack(f, time.Hour).ToBytes())
	f.Fuzz(func(t *testing.T, packet []byte) {
		dir := t.TempDir()
		b, _ := json.Marshal(saved{ACK: packet, Acquired: time.Now()})
		os.WriteFile(filepath.Join(dir, "dhcp4-wan.json"), b, 0o600)
		c := &Client{StateDir: dir}
		if l := c.load("wan"); l != nil {
			l.prefix()
			l.t1()
			l.t2()
		}
	})
}

func TestCheckACK(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  dhcpv4.Modifier
		ok   bool
	}{
		{"a plain lease", func(*dhcpv4.DHCPv4) {}, true},
		{"no address", dhcpv4.WithYourIP(net.IPv4zero), false},
		{"broadcast address", dhcpv4.WithYourIP(net.IPv4bcast), false},
		{"multicast address", dhcpv4.WithYourIP(net.ParseIP("224.0.0.1")), false},
		{"no lease time", dhcpv4.WithOption(dhcpv4.OptIPAddressLeaseTime(0)), false},
		{"a mask that is not one", dhcpv4.WithOption(dhcpv4.OptSubnetMask(net.IPMask{255, 0, 255, 0})), false},
		{"a /0", dhcpv4.WithOption(dhcpv4.OptSubnetMask(net.CIDRMask(0, 32))), false},
		{"a /32", dhcpv4.WithOption(dhcpv4.OptSubnetMask(net.CIDRMask(32, 32))), true},
		{"router 0.0.0.0", dhcpv4.WithOption(dhcpv4.OptRouter(net.IPv4zero)), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := ack(t, time.Hour)
			tc.mod(a)
			if err := checkACK(a); (err == nil) != tc.ok {
				t.Fatalf("checkACK = %v, want ok %v", err, tc.ok)
			}
		})
	}
}

// FuzzACK: any packet a server (or anyone on the WAN) sends as an ACK is
// either refused or safe to apply.
func FuzzACK(f *testing.F) {
	f.Add(ack(f, time.Hour).ToBytes())
	f.Fuzz(func(t *testing.T, packet []byte) {
		a, err := dhcpv4.FromBytes(packet)
		if err != nil || checkACK(a) != nil {
			return
		}
		l := &lease{ack: a, acquired: time.Now()}
		if p := l.prefix(); p == nil || p.IP.To4() == nil || l.duration() <= 0 {
			t.Fatalf("accepted %s: prefix %v, duration %v", a.Summary(), p, l.duration())
		}
		l.t1()
		l.t2()
	})
}

// TestRenewSchedule: renewing lasts until T2, rebinding until the end
// (dhcp/retry times the exchanges within them).
func TestRenewSchedule(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	l := lease{ack: ack(t, 100*time.Second), acquired: t0} // T1 50 s, T2 87.5 s
	s := l.schedule()
	if want := t0.Add(87500 * time.Millisecond); !s.T2.Equal(want) {
		t.Errorf("T2 at %v, want %v", s.T2, want)
	}
	if want := t0.Add(100 * time.Second); !s.End.Equal(want) {
		t.Errorf("the end at %v, want %v", s.End, want)
	}
}
