package client4

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"

	"github.com/roostrouter/roost/netconf"
)

// linkRecord is where Run notes the link its LinkRef named, for Remove:
// the lease file is named by the link, and a fresh instance, perhaps in a
// later roostd, has no outputs to read.
func (c *Client) linkRecord() string {
	return filepath.Join(c.StateDir, "dhcp4-link-"+c.LinkRef.Service)
}

// Remove undoes the client when the config drops it or changes it: a
// lease still valid is given back to its server (DHCPRELEASE, as dhcpcd
// and udhcpc -R do), the leased address comes off the link it was leased
// on (the kernel's route to the subnet goes with it; the client adds no
// other route: a default route from its router output is a route
// service's, removed with that one), and the lease file and the link
// record go. Its outputs were withdrawn by the supervisor when it stopped.
// Every step is tried; the errors are joined.
func (c *Client) Remove(ctx context.Context) error {
	ifname := netconf.RememberedLink(c.linkRecord())
	if ifname == "" {
		return nil // it never ran: nothing of its own
	}
	var errs []error
	if l := c.kept(ifname); l != nil {
		if c.now().Before(l.expires()) {
			errs = append(errs, c.release(ctx, ifname, l))
		}
		if link, err := c.NL.LinkByName(ifname); err == nil {
			c.withdraw(link, l)
		}
	}
	for _, f := range []string{c.leaseFile(ifname), c.linkRecord()} {
		if err := os.Remove(f); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove %s: %w", f, err))
		}
	}
	return errors.Join(errs...)
}

// releaseFor is the DHCPRELEASE for l: the address and the server
// identifier from the ACK, and the client identifier if it has one; RFC
// 2131 (table 5) wants no other option in it, the host name included.
func (c *Client) releaseFor(l *lease) (*dhcpv4.DHCPv4, error) {
	var m []dhcpv4.Modifier
	if c.ClientID != "" {
		m = append(m, dhcpv4.WithOption(dhcpv4.OptClientIdentifier([]byte(c.ClientID))))
	}
	return dhcpv4.NewReleaseFromACK(l.ack, m...)
}

// release sends the DHCPRELEASE to the server that leased, unicast as RFC
// 2131 4.4.6 says: from the leased address, still on the link, so that a
// server on ordinary sockets (dnsmasq, udhcpd) sees it; through the raw
// socket, from 0.0.0.0, only if that address cannot be bound any more (a
// server that reads the raw link, like kea or ISC dhcpd, still sees that).
// Bound to the link, it needs no route to the server, which a route
// service being removed at the same time may have taken. No answer comes
// to a release.
func (c *Client) release(ctx context.Context, ifname string, l *lease) error {
	msg, err := c.releaseFor(l)
	if err != nil {
		return fmt.Errorf("dhcp4: release %s on %s: %w", l.ack.YourIPAddr, ifname, err)
	}
	raw, err := nclient4.NewRawUDPConn(ifname, nclient4.ClientPort)
	if err != nil {
		return fmt.Errorf("dhcp4: release %s on %s: %w", l.ack.YourIPAddr, ifname, err)
	}
	conn := &wanConn{PacketConn: raw, ifname: ifname, port: nclient4.ClientPort}
	defer conn.Close()
	if closeUDP, err := conn.bindLease(ctx, l.ack.YourIPAddr); err == nil {
		defer closeUDP()
	}
	server := &net.UDPAddr{IP: l.ack.ServerIdentifier(), Port: nclient4.ServerPort}
	if _, err := conn.WriteTo(msg.ToBytes(), server); err != nil {
		return fmt.Errorf("dhcp4: release %s to %s on %s: %w", l.ack.YourIPAddr, server.IP, ifname, err)
	}
	return nil
}
