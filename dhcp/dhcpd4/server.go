package dhcpd4

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"

	"github.com/roostrouter/roost/agent/supervisor"
	"github.com/roostrouter/roost/dhcp/dns/servers"
	"github.com/roostrouter/roost/dhcp/screen"
	"github.com/roostrouter/roost/netconf"
)

// Server is a supervisor service serving a LAN link.
type Server struct {
	LinkRef supervisor.Ref // the LAN's ifname
	// AddressService is the router's LAN address service: its address
	// and prefix length are the server's.
	AddressService string
	Pool           Pool
	LeaseTime      time.Duration
	DNS            servers.List // default: the router's address
	Domain         string
	StateDir       string
	Now            func() time.Time
}

// Run serves until ctx ends; the lease database stays in the state folder.
func (s *Server) Run(ctx context.Context, env *supervisor.Env) error {
	ifname, err := env.Require(s.LinkRef)
	if err != nil {
		return err
	}
	self, err := netconf.Addr.Require(env, s.AddressService)
	bits, err2 := netconf.PrefixLength.Require(env, s.AddressService)
	if err != nil || err2 != nil || !self.Is4() {
		return fmt.Errorf("%s has no IPv4 address output", s.AddressService)
	}
	now := s.Now
	if now == nil {
		now = time.Now
	}
	db, err := OpenDB(filepath.Join(s.StateDir, "dhcpd4-"+ifname+".leases"), now)
	if err != nil {
		return err
	}
	defer db.Close()
	h := &handler{s: s, db: db, self: self, mask: net.CIDRMask(bits, 32), log: env.Log}
	h.followDNS(env)
	hosts := &hostsPublisher{env: env, db: db}
	h.changed = hosts.publish
	hosts.publish()
	conn, err := server4.NewIPv4UDPConn(ifname, &net.UDPAddr{Port: dhcpv4.ServerPort})
	if err != nil {
		return fmt.Errorf("dhcp server on %s: %w", ifname, err)
	}
	screened := &screen.Conn{PacketConn: conn, Log: &screen.Limited{Log: env.Log, What: "DHCPv4 request on " + ifname},
		Parse: func(b []byte) error { _, err := dhcpv4.FromBytes(b); return err }}
	srv, err := server4.NewServer(ifname, nil, h.serve, server4.WithConn(screened))
	if err != nil {
		return fmt.Errorf("dhcp server on %s: %w", ifname, err)
	}
	go func() {
		// Expired leases leave the hosts output; the DNS servers handed
		// out follow their services.
		tick := time.NewTicker(time.Minute)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				srv.Close()
				return
			case <-tick.C:
				hosts.publish()
			case <-env.Changed():
				h.followDNS(env)
			}
		}
	}()
	netconf.IfName.Set(env, ifname)
	PoolRange.Set(env, s.Pool.Start.String()+"-"+s.Pool.End.String())
	env.Ready()
	err = srv.Serve()
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// Remove does nothing more than Run's end did (the server stopped
// serving) and keeps the lease database, $STATE/dhcpd4-<ifname>.leases, on
// purpose: hosts keep the addresses they were leased until their leases
// end, and a server added again on that link (or the same one changed)
// reads it and never hands one of those addresses to a second host.
func (s *Server) Remove(context.Context) error { return nil }

type handler struct {
	s    *Server
	db   *DB
	self netip.Addr
	mask net.IPMask
	log  *slog.Logger
	// dns is what option 6 hands out; nil: the router.
	dns     atomic.Pointer[[]net.IP]
	changed func() // a lease was granted or released
}

// followDNS reads the DNS servers to hand out, as of now.
func (h *handler) followDNS(env *supervisor.Env) {
	if len(h.s.DNS) == 0 {
		return
	}
	var ips []net.IP
	for _, a := range h.s.DNS.Addrs(env.Input) {
		if a.Addr().Is4() {
			ips = append(ips, net.IP(a.Addr().AsSlice()))
		}
	}
	if old := h.dns.Swap(&ips); old == nil || fmt.Sprint(*old) != fmt.Sprint(ips) {
		env.Log.Info("dhcpd4: DNS servers handed out", "servers", ips)
	}
}

func (h *handler) leasesChanged() {
	if h.changed != nil {
		h.changed()
	}
}

// hostsPublisher keeps the hosts output in step with the leases.
type hostsPublisher struct {
	env  *supervisor.Env
	db   *DB
	mu   sync.Mutex
	last string
}

func (p *hostsPublisher) publish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	hosts := p.db.Hosts()
	if v := formatHosts(hosts); v != p.last {
		Hosts.Set(p.env, hosts)
		p.last = v
	}
}

func (h *handler) serve(conn net.PacketConn, peer net.Addr, m *dhcpv4.DHCPv4) {
	if m.OpCode != dhcpv4.OpcodeBootRequest || len(m.ClientHWAddr) != 6 {
		h.log.Warn("dhcpd4: dropped a malformed request", "from", peer, "op", m.OpCode, "hwlen", len(m.ClientHWAddr))
		return
	}
	mac := m.ClientHWAddr.String()
	var resp *dhcpv4.DHCPv4
	var err error
	switch m.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		requested, _ := netip.AddrFromSlice(m.RequestedIPAddress().To4())
		ip, perr := h.db.Offer(mac, requested, h.s.Pool)
		if perr != nil {
			h.log.Warn("dhcpd4: no address to offer", "mac", mac, "err", perr)
			return
		}
		resp, err = h.reply(m, dhcpv4.MessageTypeOffer, ip)
	case dhcpv4.MessageTypeRequest:
		if sid := m.ServerIdentifier(); sid != nil && !sid.Equal(net.IP(h.self.AsSlice())) {
			return // the host chose another server
		}
		want := m.RequestedIPAddress()
		if want == nil || want.IsUnspecified() {
			want = m.ClientIPAddr // renewing or rebinding
		}
		ip, _ := netip.AddrFromSlice(want.To4())
		if _, gerr := h.db.Grant(mac, ip, m.HostName(), h.leaseTime(), h.s.Pool); gerr != nil {
			h.log.Info("dhcpd4: NAK", "mac", mac, "requested", ip, "err", gerr)
			resp, err = dhcpv4.NewReplyFromRequest(m, dhcpv4.WithMessageType(dhcpv4.MessageTypeNak),
				dhcpv4.WithServerIP(net.IP(h.self.AsSlice())), dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IP(h.self.AsSlice()))))
		} else {
			h.leasesChanged()
			resp, err = h.reply(m, dhcpv4.MessageTypeAck, ip)
		}
	case dhcpv4.MessageTypeRelease:
		ip, _ := netip.AddrFromSlice(m.ClientIPAddr.To4())
		if rerr := h.db.Release(mac, ip); rerr != nil {
			h.log.Info("dhcpd4: release refused", "err", rerr)
		} else {
			h.leasesChanged()
		}
		return
	default:
		return
	}
	if err != nil {
		h.log.Error("dhcpd4: build reply", "err", err)
		return
	}
	dest := &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ClientPort}
	// A renewing host has its address: answer it there. A NAK is always
	// broadcast (RFC 2131 4.1): the host may no longer hold the address
	// it asked about.
	if m.ClientIPAddr != nil && !m.ClientIPAddr.IsUnspecified() && resp.MessageType() != dhcpv4.MessageTypeNak {
		dest.IP = m.ClientIPAddr
	}
	if _, err := conn.WriteTo(resp.ToBytes(), dest); err != nil {
		h.log.Warn("dhcpd4: send", "err", err)
	}
}

func (h *handler) leaseTime() time.Duration {
	if h.s.LeaseTime > 0 {
		return h.s.LeaseTime
	}
	return 12 * time.Hour
}

func (h *handler) reply(m *dhcpv4.DHCPv4, typ dhcpv4.MessageType, ip netip.Addr) (*dhcpv4.DHCPv4, error) {
	self := net.IP(h.self.AsSlice())
	dns := []net.IP{self}
	if p := h.dns.Load(); p != nil {
		dns = *p
	}
	mods := []dhcpv4.Modifier{
		dhcpv4.WithMessageType(typ),
		dhcpv4.WithYourIP(net.IP(ip.AsSlice())),
		dhcpv4.WithServerIP(self),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(self)),
		dhcpv4.WithOption(dhcpv4.OptSubnetMask(h.mask)),
		dhcpv4.WithOption(dhcpv4.OptRouter(self)),
		dhcpv4.WithOption(dhcpv4.OptIPAddressLeaseTime(h.leaseTime())),
	}
	if len(dns) > 0 {
		// None while the services named have none (the WAN is down):
		// better than a server that is not there.
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptDNS(dns...)))
	}
	if h.s.Domain != "" {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptDomainName(h.s.Domain)))
	}
	return dhcpv4.NewReplyFromRequest(m, mods...)
}
