// Package client4 is the router's DHCPv4 client on a link: it acquires a
// lease, renews it at T1 (unicast) and rebinds at T2 (broadcast), removes
// the address when the lease expires, starts over on a NAK, and keeps the
// lease in the state folder so that a restarted agent adopts it without
// asking again. Dropped from the config, it gives the lease back and takes
// the address away (Remove).
package client4

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/roostrouter/roost/agent/supervisor"
	"github.com/roostrouter/roost/dhcp/retry"
	"github.com/roostrouter/roost/dhcp/screen"
	"github.com/roostrouter/roost/netconf"
	"github.com/roostrouter/roost/updater/atomicfile"
)

// Client is a supervisor service.
type Client struct {
	NL       *netlink.Handle
	LinkRef  supervisor.Ref // the link's ifname output
	StateDir string
	Hostname string
	ClientID string
	Now      func() time.Time
	// Retry is the first wait after a failed exchange; it doubles up to a minute.
	Retry time.Duration
}

// saved is the lease as kept in the state folder.
type saved struct {
	ACK      []byte    `json:"ack"` // the DHCPACK as received
	Acquired time.Time `json:"acquired"`
}

// lease is an acquired lease with its times.
type lease struct {
	ack      *dhcpv4.DHCPv4
	acquired time.Time
}

func (l lease) duration() time.Duration { return l.ack.IPAddressLeaseTime(0) }

func (l lease) t1() time.Duration {
	if t := l.ack.IPAddressRenewalTime(0); t > 0 {
		return t
	}
	return l.duration() / 2
}

func (l lease) t2() time.Duration {
	if t := l.ack.IPAddressRebindingTime(0); t > 0 {
		return t
	}
	return l.duration() * 7 / 8
}

func (l lease) expires() time.Time { return l.acquired.Add(l.duration()) }

// schedule times the lease's renewal and rebinding.
func (l lease) schedule() retry.Lease {
	return retry.Lease{T2: l.acquired.Add(l.t2()), End: l.expires()}
}

func (l lease) prefix() *net.IPNet {
	mask := l.ack.SubnetMask()
	if mask == nil {
		mask = l.ack.YourIPAddr.DefaultMask()
	}
	return &net.IPNet{IP: l.ack.YourIPAddr.To4(), Mask: mask}
}

// refusedACK is an ACK checkACK refused, from server.
type refusedACK struct {
	server net.IP
	err    error
}

func (r refusedACK) Error() string { return r.err.Error() }

// checkACK refuses an ACK that could not be applied as it stands: an
// address that cannot be a host's, no lease time, a mask that is not one,
// a router that cannot be one.
func checkACK(ack *dhcpv4.DHCPv4) error {
	host := func(ip net.IP) bool {
		ip4 := ip.To4()
		return ip4 != nil && !ip4.IsUnspecified() && !ip4.IsMulticast() && !ip4.IsLoopback() && !ip4.Equal(net.IPv4bcast)
	}
	if !host(ack.YourIPAddr) {
		return fmt.Errorf("the offered address %v cannot be a host's", ack.YourIPAddr)
	}
	if lt := ack.IPAddressLeaseTime(0); lt < time.Second {
		return fmt.Errorf("lease time %v", lt)
	}
	if m := ack.SubnetMask(); m != nil {
		if ones, bits := m.Size(); bits != 32 || ones < 8 {
			return fmt.Errorf("subnet mask %v", net.IP(m))
		}
	}
	if r := ack.Router(); len(r) > 0 && !host(r[0]) {
		return fmt.Errorf("router %v", r[0])
	}
	return nil
}

func (c *Client) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func (c *Client) leaseFile(ifname string) string {
	return filepath.Join(c.StateDir, "dhcp4-"+ifname+".json")
}

func (c *Client) load(ifname string) *lease {
	l := c.kept(ifname)
	if l == nil || !c.now().Before(l.expires()) {
		return nil
	}
	return l
}

// kept is the lease in the state folder, expired or not; nil if there is
// none or it is damaged.
func (c *Client) kept(ifname string) *lease {
	b, err := os.ReadFile(c.leaseFile(ifname))
	if err != nil {
		return nil
	}
	var s saved
	if json.Unmarshal(b, &s) != nil {
		return nil
	}
	ack, err := dhcpv4.FromBytes(s.ACK)
	if err != nil || ack.MessageType() != dhcpv4.MessageTypeAck || checkACK(ack) != nil {
		return nil
	}
	return &lease{ack: ack, acquired: s.Acquired}
}

func (c *Client) save(ifname string, l *lease) error {
	b, _ := json.Marshal(saved{ACK: l.ack.ToBytes(), Acquired: l.acquired})
	if err := os.MkdirAll(c.StateDir, 0o700); err != nil {
		return err
	}
	return atomicfile.WriteFile(c.leaseFile(ifname), b, 0o600)
}

func (c *Client) modifiers() []dhcpv4.Modifier {
	var m []dhcpv4.Modifier
	if c.Hostname != "" {
		m = append(m, dhcpv4.WithOption(dhcpv4.OptHostName(c.Hostname)))
	}
	if c.ClientID != "" {
		m = append(m, dhcpv4.WithOption(dhcpv4.OptClientIdentifier([]byte(c.ClientID))))
	}
	return m
}

// Run keeps a lease on the link.
func (c *Client) Run(ctx context.Context, env *supervisor.Env) error {
	ifname, err := env.Require(c.LinkRef)
	if err != nil {
		return err
	}
	if err := netconf.RememberLink(c.linkRecord(), ifname); err != nil {
		env.Log.Warn("state folder", "err", err)
	}
	link, err := c.NL.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("link %s: %w", ifname, err)
	}
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return fmt.Errorf("dhcp client on %s: %w", ifname, err)
	}
	raw, err := nclient4.NewRawUDPConn(ifname, nclient4.ClientPort)
	if err != nil {
		if errors.Is(err, unix.EAFNOSUPPORT) {
			err = fmt.Errorf("%w: this kernel has no packet sockets: load the af_packet module (CONFIG_PACKET)", err)
		}
		return fmt.Errorf("dhcp client on %s: %w", ifname, err)
	}
	screened := &screen.Conn{PacketConn: raw, Log: &screen.Limited{Log: env.Log, What: "DHCPv4 reply on " + ifname},
		Parse: func(b []byte) error { _, err := dhcpv4.FromBytes(b); return err }}
	conn := &wanConn{PacketConn: screened, ifname: ifname, port: nclient4.ClientPort}
	nc, err := nclient4.NewWithConn(conn, ifi.HardwareAddr, nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(3))
	if err != nil {
		raw.Close()
		return fmt.Errorf("dhcp client on %s: %w", ifname, err)
	}
	defer nc.Close()
	backoff := retry.Backoff{First: c.Retry}
	cur := c.load(ifname)
	if cur != nil && c.onLink(link, cur) {
		// roostd restarted: the address never left the link.
		env.Log.Info("dhcp4: adopting the saved lease", "address", cur.prefix(), "expires", cur.expires())
	} else if cur != nil {
		cur = c.initReboot(ctx, env.Log, nc, ifi.HardwareAddr, cur)
	}
	for {
		if cur == nil {
			var ok bool
			cur, ok = retry.Until(ctx, &backoff, func() (*lease, error) { return c.acquire(ctx, nc) }, func(err error, wait time.Duration) {
				var r refusedACK
				if errors.As(err, &r) {
					env.Log.Warn("dhcp4: refused the server's ACK", "server", r.server, "err", r.err, "retryIn", wait)
				} else {
					env.Log.Info("dhcp4: no lease yet", "err", err, "retryIn", wait)
				}
			})
			if !ok {
				return nil
			}
			env.Log.Info("dhcp4: lease acquired", "address", cur.prefix(), "server", cur.ack.ServerIdentifier(), "for", cur.duration())
		}
		if err := c.apply(link, cur); err != nil {
			return err
		}
		if err := c.save(ifname, cur); err != nil {
			return err
		}
		publish(env, ifname, cur)
		env.Ready()

		next, err := c.maintain(ctx, env.Log, nc, conn, cur)
		if ctx.Err() != nil {
			return nil // the lease and its address stay for the next roostd
		}
		if err != nil {
			env.Log.Info("dhcp4: lease lost", "err", err)
			c.withdraw(link, cur)
			os.Remove(c.leaseFile(ifname))
			env.NotReady(outputKeys...)
			cur = nil
			continue
		}
		cur = next
	}
}

func publish(env *supervisor.Env, ifname string, l *lease) {
	ones, _ := l.prefix().Mask.Size()
	netconf.IfName.Set(env, ifname)
	netconf.Addr.Set(env, addr4(l.ack.YourIPAddr))
	netconf.PrefixLength.Set(env, ones)
	if r := l.ack.Router(); len(r) > 0 {
		Router.Set(env, addr4(r[0]))
	}
	var dns []string
	for _, ip := range l.ack.DNS() {
		dns = append(dns, ip.String())
	}
	DNS.Set(env, strings.Join(dns, " "))
	Domain.Set(env, l.ack.DomainName())
	if id := addr4(l.ack.ServerIdentifier()); id.IsValid() {
		Server.Set(env, id)
	}
	LeaseTime.Set(env, int(l.duration().Seconds()))
	RenewTime.Set(env, int(l.t1().Seconds()))
	RebindTime.Set(env, int(l.t2().Seconds()))
	Expires.Set(env, l.expires().Unix())
}

// addr4 is ip (from a DHCP message, in either of net.IP's forms) as an
// IPv4 netip.Addr.
func addr4(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap()
}

// maintain renews at T1 and rebinds at T2 until the lease is renewed (it
// returns the new lease), lost (an error) or ctx ends. Each exchange ends
// at T2 or at the end of the lease (retry.Lease): nclient4's own
// retransmissions (2, 4, 8 s) never carry a renewal past T2 nor a rebind
// past the end; the next exchange waits half the time left.
func (c *Client) maintain(ctx context.Context, log *slog.Logger, nc *nclient4.Client, conn *wanConn, l *lease) (*lease, error) {
	for {
		now := c.now()
		t1, t2, end := l.acquired.Add(l.t1()), l.acquired.Add(l.t2()), l.expires()
		var at time.Time
		switch {
		case now.Before(t1):
			at = t1
		case now.Before(end):
			at = now
		default:
			return nil, errors.New("the lease expired")
		}
		if !retry.Sleep(ctx, at.Sub(now)) {
			return nil, ctx.Err()
		}
		start := c.now()
		rebinding := !start.Before(t2)
		state := "renewing"
		if rebinding {
			state = "rebinding"
		}
		resp, err := c.exchange(ctx, log, nc, conn, l, start, rebinding)
		switch {
		case err == nil && resp.MessageType() == dhcpv4.MessageTypeNak:
			return nil, fmt.Errorf("the server %v said NAK (%s)", resp.ServerIdentifier(), state)
		case err == nil && checkACK(resp) != nil:
			// Treated as no answer: the lease we hold stays until it ends.
			log.Warn("dhcp4: refused the server's ACK", "err", checkACK(resp))
		case err == nil:
			// From the exchange's start: the server's lease runs from the
			// request it answered, never earlier.
			next := &lease{ack: resp, acquired: start}
			if next.ack.ServerIdentifier() == nil {
				next.ack.UpdateOption(dhcpv4.OptServerIdentifier(l.ack.ServerIdentifier()))
			}
			log.Info("dhcp4: lease renewed", "address", next.prefix(), "server", next.ack.ServerIdentifier(), "rebinding", rebinding, "for", next.duration())
			return next, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		now = c.now()
		wait := max(l.schedule().RetryAt(start, now).Sub(now), 0)
		log.Info("dhcp4: no answer to renew", "rebinding", rebinding, "err", err, "retryIn", wait.Round(time.Millisecond), "expires", end)
		if !retry.Sleep(ctx, wait) {
			return nil, ctx.Err()
		}
	}
}

// acquire gets a lease anew: DISCOVER, OFFER, REQUEST, ACK.
func (c *Client) acquire(ctx context.Context, nc *nclient4.Client) (*lease, error) {
	offer, err := nc.DiscoverOffer(ctx, c.modifiers()...)
	if err != nil {
		return nil, err
	}
	// The lease runs from the REQUEST (RFC 2131 4.4.1): counted from the
	// ACK it would outlast the server's.
	sent := c.now()
	l, err := nc.RequestFromOffer(ctx, offer, c.modifiers()...)
	if err != nil {
		return nil, err
	}
	if err := checkACK(l.ACK); err != nil {
		return nil, refusedACK{server: l.ACK.ServerIdentifier(), err: err}
	}
	return &lease{ack: l.ACK, acquired: sent}, nil
}

// initRebootWait bounds the wait for an answer to INIT-REBOOT.
const initRebootWait = 5 * time.Second

// onLink reports whether l's address is on link: the agent restarted, as
// opposed to the router booting (or the link coming back bare).
func (c *Client) onLink(link netlink.Link, l *lease) bool {
	addrs, err := c.NL.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if a.IP.Equal(l.ack.YourIPAddr) {
			return true
		}
	}
	return false
}

// initReboot asks the network to confirm a saved lease whose address is
// not on the link (RFC 2131 3.2, 4.3.2: the DHCPREQUEST of INIT-REBOOT,
// broadcast, the address in the requested-address option, no server
// identifier): an ACK renews it, a NAK (the ISP renumbered while the
// router was off) drops it for a DISCOVER at once. Many servers stay
// silent about an address that is not theirs (kea unless authoritative),
// so no answer means one round of DISCOVER; only if no server answers that
// either is the saved lease used until it ends, as RFC 2131 allows.
func (c *Client) initReboot(ctx context.Context, log *slog.Logger, nc *nclient4.Client, mac net.HardwareAddr, l *lease) *lease {
	log.Info("dhcp4: confirming the saved lease (INIT-REBOOT)", "address", l.prefix(), "expires", l.expires())
	req, err := dhcpv4.New(append([]dhcpv4.Modifier{dhcpv4.WithHwAddr(mac), dhcpv4.WithBroadcast(true),
		dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithRequestedOptions(dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter, dhcpv4.OptionDomainName, dhcpv4.OptionDomainNameServer),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(l.ack.YourIPAddr))}, c.modifiers()...)...)
	if err != nil {
		log.Warn("dhcp4: INIT-REBOOT request", "err", err)
		return l
	}
	sent := c.now()
	// A few seconds, as dhcpcd waits: a server that will answer does so
	// at once, and the router should not stay offline for retransmissions.
	rctx, cancel := context.WithTimeout(ctx, initRebootWait)
	defer cancel()
	resp, err := nc.SendAndRead(rctx, nclient4.DefaultServers, req, nclient4.IsMessageType(dhcpv4.MessageTypeAck, dhcpv4.MessageTypeNak))
	switch {
	case err != nil:
		log.Info("dhcp4: no answer to INIT-REBOOT: asking anew", "err", err)
		fresh, err := c.acquire(ctx, nc)
		if err != nil {
			log.Info("dhcp4: no server answers: using the saved lease until it ends", "err", err)
			return l
		}
		log.Info("dhcp4: lease acquired", "address", fresh.prefix(), "server", fresh.ack.ServerIdentifier(), "for", fresh.duration())
		return fresh
	case resp.MessageType() == dhcpv4.MessageTypeNak:
		log.Info("dhcp4: the server said NAK to the saved lease (INIT-REBOOT): asking anew", "server", resp.ServerIdentifier())
		return nil
	case checkACK(resp) != nil:
		log.Warn("dhcp4: refused the server's ACK (INIT-REBOOT)", "err", checkACK(resp))
		return l
	}
	next := &lease{ack: resp, acquired: sent}
	log.Info("dhcp4: lease confirmed (INIT-REBOOT)", "address", next.prefix(), "server", resp.ServerIdentifier(), "for", next.duration())
	return next
}

// renewal is the DHCPREQUEST that renews or rebinds l: the leased address
// in ciaddr, no server identifier nor requested address (RFC 2131 table
// 5), and a transaction of its own (NewRenewFromAck would reuse the ACK's).
func (c *Client) renewal(l *lease) (*dhcpv4.DHCPv4, error) {
	xid, err := dhcpv4.GenerateTransactionID()
	if err != nil {
		return nil, fmt.Errorf("renew %s: %w", l.ack.YourIPAddr, err)
	}
	// A request whatever the saved ACK's op (NewRenewFromAck flips it).
	request := func(d *dhcpv4.DHCPv4) { d.OpCode = dhcpv4.OpcodeBootRequest }
	req, err := dhcpv4.NewRenewFromAck(l.ack, append(c.modifiers(), dhcpv4.WithTransactionID(xid), request)...)
	if err != nil {
		return nil, fmt.Errorf("renew %s: %w", l.ack.YourIPAddr, err)
	}
	return req, nil
}

// exchange sends l's DHCPREQUEST, started at start, and waits for the
// ACK or NAK until the exchange's deadline. Renewing, it goes unicast from
// the leased address to the server that leased (RFC 2131 4.4.5);
// rebinding, or for a lease that names no server, it is broadcast.
func (c *Client) exchange(ctx context.Context, log *slog.Logger, nc *nclient4.Client, conn *wanConn, l *lease, start time.Time, rebinding bool) (*dhcpv4.DHCPv4, error) {
	req, err := c.renewal(l)
	if err != nil {
		return nil, err
	}
	dest := &net.UDPAddr{IP: net.IPv4bcast, Port: nclient4.ServerPort}
	if sid := l.ack.ServerIdentifier(); !rebinding && sid != nil && !sid.IsUnspecified() {
		dest.IP = sid
	}
	// Bound while rebinding too: the ACK comes unicast to the leased
	// address, which the kernel would otherwise answer with a port
	// unreachable.
	if unbind, err := conn.bindLease(ctx, l.ack.YourIPAddr); err == nil {
		defer unbind()
	} else if !dest.IP.Equal(net.IPv4bcast) {
		log.Warn("dhcp4: renewing from 0.0.0.0 through the raw socket: a server on ordinary sockets drops that, and the lease lasts only if a rebind at T2 is answered", "err", err)
	}
	rctx, cancel := context.WithDeadline(ctx, l.schedule().Deadline(start))
	defer cancel()
	return nc.SendAndRead(rctx, dest, req, nclient4.IsMessageType(dhcpv4.MessageTypeAck, dhcpv4.MessageTypeNak))
}

// apply puts the leased address on the link, with the lease's lifetime, so
// that the kernel too drops it if roostd is not there when it expires.
func (c *Client) apply(link netlink.Link, l *lease) error {
	// Rounded up: the kernel keeps the address until the client itself
	// takes it off at the end, never a moment less than the lease.
	left := int((time.Until(l.expires()) + time.Second - 1) / time.Second)
	addr := &netlink.Addr{IPNet: l.prefix(), ValidLft: left, PreferedLft: left}
	if err := c.NL.AddrReplace(link, addr); err != nil {
		return fmt.Errorf("add leased address %s to %s: %w", l.prefix(), link.Attrs().Name, err)
	}
	return nil
}

func (c *Client) withdraw(link netlink.Link, l *lease) {
	c.NL.AddrDel(link, &netlink.Addr{IPNet: l.prefix()})
}
