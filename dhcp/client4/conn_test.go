package client4

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// rawStandIn stands for the raw packet socket, which a test without
// CAP_NET_RAW cannot open: it notes where each packet was sent and sends
// nothing (a broadcast on the test machine's links is not the test's).
type rawStandIn struct {
	net.PacketConn
	mu sync.Mutex
	to []net.Addr
}

func (r *rawStandIn) WriteTo(b []byte, addr net.Addr) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.to = append(r.to, addr)
	return len(b), nil
}

func (r *rawStandIn) sent() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.to)
}

func listenUDP(t *testing.T, addr string) net.PacketConn {
	t.Helper()
	pc, err := net.ListenPacket("udp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc
}

// TestWanConnRenewsFromTheLease: while a renewal holds the bound socket, a
// unicast to the server leaves from the leased address (127.0.0.2 on lo
// here), as a real datagram the server reads; a broadcast still goes
// through the raw socket, and so does everything once the renewal is over.
func TestWanConnRenewsFromTheLease(t *testing.T) {
	server := listenUDP(t, "127.0.0.1:0")
	raw := &rawStandIn{PacketConn: listenUDP(t, "127.0.0.1:0")}
	w := &wanConn{PacketConn: raw, ifname: "lo", port: 0}
	done, err := w.bindLease(context.Background(), net.IPv4(127, 0, 0, 2))
	if err != nil {
		t.Fatalf("bindLease: %v", err)
	}
	if _, err := w.WriteTo([]byte("renew"), server.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	server.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	n, from, err := server.ReadFrom(buf)
	if err != nil {
		t.Fatalf("the server got no unicast renewal: %v", err)
	}
	if ip := from.(*net.UDPAddr).IP; string(buf[:n]) != "renew" || !ip.Equal(net.IPv4(127, 0, 0, 2)) {
		t.Fatalf("the server got %q from %v, want the renewal from the leased address 127.0.0.2", buf[:n], from)
	}
	if raw.sent() != 0 {
		t.Fatalf("the unicast renewal also went through the raw socket: %v", raw.to)
	}
	bcast := &net.UDPAddr{IP: net.IPv4bcast, Port: 67}
	if _, err := w.WriteTo([]byte("rebind"), bcast); err != nil || raw.sent() != 1 {
		t.Fatalf("a broadcast while renewing: err %v, raw socket sent %d", err, raw.sent())
	}
	done()
	if _, err := w.WriteTo([]byte("release"), server.LocalAddr()); err != nil || raw.sent() != 2 {
		t.Fatalf("a unicast after the renewal: err %v, raw socket sent %d, want it there", err, raw.sent())
	}
	// The address is free again for the next renewal.
	again, err := w.bindLease(context.Background(), net.IPv4(127, 0, 0, 2))
	if err != nil {
		t.Fatalf("a second renewal cannot bind: %v", err)
	}
	again()
}

// TestWanConnNotOnTheLink: an address the machine does not have cannot be
// bound, and says what was tried.
func TestWanConnNotOnTheLink(t *testing.T) {
	w := &wanConn{PacketConn: &rawStandIn{}, ifname: "lo", port: 0}
	if done, err := w.bindLease(context.Background(), net.IPv4(192, 0, 2, 100)); err == nil {
		done()
		t.Fatal("bound an address that is on no link")
	}
}

// TestRenewal: the renewing DHCPREQUEST carries the lease in ciaddr, no
// server identifier and no requested address (RFC 2131 table 5: a server
// takes those for SELECTING or INIT-REBOOT), and a new transaction ID each
// time, not the ACK's.
func TestRenewal(t *testing.T) {
	c := &Client{Hostname: "rotuer", ClientID: "id-1"}
	a := ack(t, time.Hour)
	seen := map[dhcpv4.TransactionID]bool{a.TransactionID: true}
	for range 3 {
		req, err := c.renewal(&lease{ack: a, acquired: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		if req.MessageType() != dhcpv4.MessageTypeRequest || req.OpCode != dhcpv4.OpcodeBootRequest || !req.ClientIPAddr.Equal(a.YourIPAddr) {
			t.Fatalf("not a renewal of %v: %s", a.YourIPAddr, req.Summary())
		}
		if req.ServerIdentifier() != nil || req.RequestedIPAddress() != nil || req.IsBroadcast() {
			t.Fatalf("a renewal with a server identifier, a requested address or the broadcast flag: %s", req.Summary())
		}
		if req.HostName() != "rotuer" || string(req.Options.Get(dhcpv4.OptionClientIdentifier)) != "id-1" {
			t.Fatalf("the renewal lost the host name or client ID: %s", req.Summary())
		}
		if seen[req.TransactionID] {
			t.Fatalf("transaction ID %v used before", req.TransactionID)
		}
		seen[req.TransactionID] = true
	}
}
