package dhcpd4

import (
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// sink is a PacketConn that keeps what the server sends, and where to.
type sink struct {
	net.PacketConn
	sent []*dhcpv4.DHCPv4
	to   []net.Addr
}

func (s *sink) WriteTo(b []byte, to net.Addr) (int, error) {
	m, err := dhcpv4.FromBytes(b)
	if err == nil {
		s.sent = append(s.sent, m)
		s.to = append(s.to, to)
	}
	return len(b), nil
}

func testHandler(t testing.TB) *handler {
	db, err := OpenDB(filepath.Join(t.TempDir(), "leases"), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Pool: pool(), LeaseTime: time.Hour}
	return &handler{s: s, db: db, self: netip.MustParseAddr("10.99.0.1"), mask: net.CIDRMask(20, 32),
		log: slog.New(slog.DiscardHandler)}
}

func TestDiscoverRequest(t *testing.T) {
	h := testHandler(t)
	c := &sink{}
	mac, _ := net.ParseMAC("02:aa:00:00:00:09")
	disc, _ := dhcpv4.NewDiscovery(mac)
	h.serve(c, nil, disc)
	if len(c.sent) != 1 || c.sent[0].MessageType() != dhcpv4.MessageTypeOffer {
		t.Fatalf("no offer: %v", c.sent)
	}
	offer := c.sent[0]
	req, _ := dhcpv4.NewRequestFromOffer(offer)
	h.serve(c, nil, req)
	if len(c.sent) != 2 || c.sent[1].MessageType() != dhcpv4.MessageTypeAck || !c.sent[1].YourIPAddr.Equal(offer.YourIPAddr) {
		t.Fatalf("no ack for the offered address: %v", c.sent[1:])
	}
	if !c.sent[1].Router()[0].Equal(net.IPv4(10, 99, 0, 1)) || c.sent[1].IPAddressLeaseTime(0) != time.Hour {
		t.Fatalf("ack options: %v", c.sent[1])
	}
	// Another host asking for that address is refused.
	other, _ := net.ParseMAC("02:aa:00:00:00:0a")
	steal, _ := dhcpv4.NewDiscovery(other)
	steal.UpdateOption(dhcpv4.OptMessageType(dhcpv4.MessageTypeRequest))
	steal.UpdateOption(dhcpv4.OptRequestedIPAddress(offer.YourIPAddr))
	h.serve(c, nil, steal)
	if c.sent[2].MessageType() != dhcpv4.MessageTypeNak {
		t.Fatalf("a request for another host's address got %s", c.sent[2].MessageType())
	}
	// A renewal goes back to the host's address; a NAK of one is
	// broadcast (RFC 2131 4.1).
	renew, _ := dhcpv4.NewRequestFromOffer(offer)
	renew.ClientIPAddr = offer.YourIPAddr
	renew.UpdateOption(dhcpv4.OptRequestedIPAddress(net.IPv4zero))
	h.serve(c, nil, renew)
	stale := *renew
	stale.ClientHWAddr = other
	h.serve(c, nil, &stale)
	if len(c.sent) != 5 || c.sent[3].MessageType() != dhcpv4.MessageTypeAck || c.sent[4].MessageType() != dhcpv4.MessageTypeNak {
		t.Fatalf("renewals got %v", c.sent[3:])
	}
	if got := c.to[3].String(); got != offer.YourIPAddr.String()+":68" {
		t.Errorf("the renewal's ACK went to %s, want the host at %s", got, offer.YourIPAddr)
	}
	if got := c.to[4].String(); got != "255.255.255.255:68" {
		t.Errorf("the NAK went to %s, want broadcast", got)
	}
}

// FuzzServe: whatever a LAN host sends, the server neither panics nor
// gives one address to two hosts.
func FuzzServe(f *testing.F) {
	mac, _ := net.ParseMAC("02:aa:00:00:00:09")
	disc, _ := dhcpv4.NewDiscovery(mac)
	f.Add(disc.ToBytes())
	f.Fuzz(func(t *testing.T, packet []byte) {
		m, err := dhcpv4.FromBytes(packet)
		if err != nil {
			return
		}
		h := testHandler(t)
		c := &sink{}
		h.serve(c, nil, m)
		m.UpdateOption(dhcpv4.OptMessageType(dhcpv4.MessageTypeRequest))
		h.serve(c, nil, m)
		seen := map[netip.Addr]bool{}
		for _, l := range h.db.Leases() {
			if seen[l.IP] {
				t.Fatalf("%s leased twice", l.IP)
			}
			seen[l.IP] = true
		}
	})
}
