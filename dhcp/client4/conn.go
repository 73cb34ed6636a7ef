package client4

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// wanConn is the client's socket on its link, as nclient4 sees it.
//
// Every reply is read from the raw packet socket (PacketConn): it sees
// each DHCP reply on the link, broadcast or unicast, before the firewall,
// and as the only socket read, no second reader takes replies from it.
// Sends go out of the raw socket too, from 0.0.0.0 to the broadcast MAC,
// as INIT, INIT-REBOOT and REBINDING want; except while a lease renews:
// then a UDP socket bound to the leased address on the link (see
// bindLease) sends the renewal to the server that leased, unicast from
// that address (RFC 2131 4.3.2, 4.4.5). A unicast from 0.0.0.0 is a
// martian to the server's kernel: a server on ordinary sockets (dnsmasq,
// udhcpd) or a relay never sees it.
type wanConn struct {
	net.PacketConn        // the raw socket
	ifname         string // the link
	port           int    // the client port: 68 (a test's own elsewhere)

	mu  sync.Mutex
	udp net.PacketConn // bound to the lease during an exchange; never read
}

// bindLease binds a UDP socket to ip (the leased address, on the link)
// and the client port, through which WriteTo sends unicast until the
// returned func closes it. The replies still come in by the raw socket;
// what the kernel queues on this one goes with it.
func (w *wanConn) bindLease(ctx context.Context, ip net.IP) (func(), error) {
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			// On the link whatever the routing table says, as the raw
			// socket is.
			serr = unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, w.ifname)
		}); err != nil {
			return err
		}
		return serr
	}}
	addr := net.JoinHostPort(ip.String(), strconv.Itoa(w.port))
	pc, err := lc.ListenPacket(ctx, "udp4", addr)
	if err != nil {
		return nil, fmt.Errorf("bind %s on %s for a unicast renewal: %w", addr, w.ifname, err)
	}
	w.mu.Lock()
	w.udp = pc
	w.mu.Unlock()
	return func() {
		w.mu.Lock()
		w.udp = nil
		w.mu.Unlock()
		pc.Close()
	}, nil
}

// WriteTo sends a unicast through the bound UDP socket if there is one,
// and anything else through the raw socket. What the bound socket refuses
// (EPERM: the router's own firewall) stays refused: the raw socket would
// only get around it. Bound to the link, the socket has a route to any
// server: without one in the table, the kernel takes the server as on the
// link.
func (w *wanConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	w.mu.Lock()
	udp := w.udp
	w.mu.Unlock()
	if to, ok := addr.(*net.UDPAddr); ok && udp != nil && !to.IP.Equal(net.IPv4bcast) {
		return udp.WriteTo(b, addr)
	}
	return w.PacketConn.WriteTo(b, addr)
}

// Close closes the raw socket, and the bound one if a renewal holds it.
func (w *wanConn) Close() error {
	w.mu.Lock()
	udp := w.udp
	w.udp = nil
	w.mu.Unlock()
	var errs []error
	if udp != nil {
		errs = append(errs, udp.Close())
	}
	return errors.Join(append(errs, w.PacketConn.Close())...)
}
