package dns

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/miekg/dns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/roostrouter/roost/agent/supervisor"
	"github.com/roostrouter/roost/dhcp/dhcpd4"
	"github.com/roostrouter/roost/dhcp/dns/servers"
)

// The server's bounds: a router has little memory, and a LAN host may
// misbehave.
const (
	maxUDPHandlers = 512              // queries answered at once over UDP; more are dropped
	maxTCPConns    = 64               // TCP connections at once; more wait in the backlog
	tcpIdle        = 10 * time.Second // a TCP connection without a query is closed
	maxQuery       = 4096             // bytes of a query read over UDP
)

// Service is the LAN's DNS forwarder as the supervisor runs it.
type Service struct {
	NL         *netlink.Handle
	LinkRef    supervisor.Ref // the LAN's ifname
	Upstreams  servers.List
	LeasesFrom string // the dhcp4-server whose hosts it names; "" for none
	Hostname   string
	Domain     string
	Static     map[string][]netip.Addr
	CacheSize  int           // bytes
	StaleFor   time.Duration // serve-stale window
	RateLimit  int           // queries a second per client
}

// Run listens on every address of the LAN's device, and only there: the
// sockets are bound to the device, so a query that arrives from the WAN,
// to whatever address, never reaches them, firewall or not.
func (s *Service) Run(ctx context.Context, env *supervisor.Env) error {
	ifname, err := env.Require(s.LinkRef)
	if err != nil {
		return err
	}
	link, err := s.NL.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("dns on %s: %w", ifname, err)
	}
	// Subscribed before the first look, so that no change goes unseen.
	changes := make(chan struct{}, 1)
	s.subscribe(ctx, env.Log, link.Attrs().Index, changes)

	udp, tcp, err := listen(ctx, ifname, 53)
	if err != nil {
		return err
	}
	defer udp.Close()
	defer tcp.Close()

	fwd := &Forwarder{}
	r := NewResolver(Config{Cache: NewCache(s.CacheSize, s.StaleFor), Upstream: fwd, RateLimit: s.RateLimit, Log: env.Log})
	n := &names{s: s, env: env, link: link}
	up := &upstreams{list: s.Upstreams, fwd: fwd}
	up.follow(env)
	n.refresh(r)
	var wg sync.WaitGroup
	defer wg.Wait()
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	wg.Add(2)
	go func() { defer wg.Done(); serveUDP(sctx, udp, r, env.Log) }()
	go func() { defer wg.Done(); serveTCP(sctx, tcp, r, env.Log) }()
	env.Ready()
	env.Log.Info("dns: answering on the LAN", "link", ifname, "domain", n.last.domain)

	tick := time.NewTicker(time.Minute) // what no event says: a neighbour that aged out
	defer tick.Stop()
	var settle <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-env.Changed():
			up.follow(env)
			n.refresh(r)
		case <-changes:
			// A burst of neighbour or address changes makes one rebuild.
			if settle == nil {
				settle = time.After(200 * time.Millisecond)
			}
		case <-settle:
			settle = nil
			n.refresh(r)
		case <-tick.C:
			n.refresh(r)
		}
	}
}

// Remove has nothing to undo: the forwarder leaves nothing behind.
func (s *Service) Remove(context.Context) error { return nil }

// upstreams keeps the forwarder's servers in step with the config and the
// outputs it follows.
type upstreams struct {
	list  servers.List
	fwd   *Forwarder
	shown string // as last published
	done  bool
}

// follow reads the upstream servers as of now.
func (u *upstreams) follow(env *supervisor.Env) {
	addrs := u.list.Addrs(env.Input)
	var words []string
	for _, a := range addrs {
		words = append(words, hostPort(a))
	}
	shown := strings.Join(words, " ")
	if u.done && shown == u.shown {
		return
	}
	u.fwd.Set(addrs)
	Upstreams.Set(env, shown)
	u.shown, u.done = shown, true
	if len(addrs) == 0 {
		env.Log.Warn("dns: no upstream server yet: answering the LAN's names and from the cache only")
	} else {
		env.Log.Info("dns: upstream servers", "servers", shown)
	}
}

func hostPort(a netip.AddrPort) string {
	if a.Port() == 53 {
		return a.Addr().String()
	}
	return a.String()
}

// subscribe signals changes when the LAN device's addresses or neighbours
// change.
func (s *Service) subscribe(ctx context.Context, log *slog.Logger, index int, changes chan struct{}) {
	signal := func() {
		select {
		case changes <- struct{}{}:
		default:
		}
	}
	logErr := func(err error) {
		if ctx.Err() == nil { // not the subscription closing as we stop
			log.Warn("dns: netlink updates", "err", err)
		}
	}
	addrs := make(chan netlink.AddrUpdate, 64)
	if err := netlink.AddrSubscribeWithOptions(addrs, ctx.Done(), netlink.AddrSubscribeOptions{ErrorCallback: logErr}); err != nil {
		log.Warn("dns: no address updates; the router's names follow its addresses within a minute", "err", err)
	} else {
		go func() {
			for u := range addrs {
				if u.LinkIndex == index {
					signal()
				}
			}
		}()
	}
	neighs := make(chan netlink.NeighUpdate, 256)
	if err := netlink.NeighSubscribeWithOptions(neighs, ctx.Done(), netlink.NeighSubscribeOptions{ErrorCallback: logErr}); err != nil {
		log.Warn("dns: no neighbour updates; hosts' IPv6 names follow within a minute", "err", err)
	} else {
		go func() {
			for u := range neighs {
				if u.LinkIndex == index && u.Family == unix.AF_INET6 {
					signal()
				}
			}
		}()
	}
}

// names rebuilds the zone from what the router knows now.
type names struct {
	s    *Service
	env  *supervisor.Env
	link netlink.Link
	last *Zone
	dns  string // the dns output as last published
}

func (n *names) refresh(r *Resolver) {
	s := n.s
	in := Names{Domain: s.Domain, Hostname: s.Hostname, Static: s.Static, Neighbours: map[string][]netip.Addr{}}
	addrs, err := s.NL.AddrList(n.link, netlink.FAMILY_ALL)
	if err != nil {
		n.env.Log.Warn("dns: the LAN's addresses", "err", err)
	}
	var words []string
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok || ip.IsLinkLocalUnicast() || a.Flags&unix.IFA_F_TENTATIVE != 0 {
			continue
		}
		ip = ip.Unmap()
		in.Router = append(in.Router, ip)
		words = append(words, ip.String())
	}
	if v := strings.Join(words, " "); v != n.dns {
		// The addresses LAN hosts can be told to ask (a DHCP server's or
		// an RA's dns setting may name this service).
		servers.Output.Set(n.env, v)
		n.dns = v
	}
	if neighs, err := s.NL.NeighList(n.link.Attrs().Index, netlink.FAMILY_V6); err == nil {
		for _, nb := range neighs {
			ip, ok := netip.AddrFromSlice(nb.IP)
			if !ok || ip.IsLinkLocalUnicast() || ip.IsMulticast() || len(nb.HardwareAddr) == 0 ||
				nb.State&(netlink.NUD_FAILED|netlink.NUD_INCOMPLETE|netlink.NUD_NOARP) != 0 {
				continue
			}
			mac := nb.HardwareAddr.String()
			in.Neighbours[mac] = append(in.Neighbours[mac], ip)
		}
	}
	if s.LeasesFrom != "" {
		hosts, _, err := dhcpd4.Hosts.Get(n.env, s.LeasesFrom)
		if err != nil {
			n.env.Log.Warn("dns: the DHCP server's hosts", "err", err)
		}
		for _, h := range hosts {
			in.Leases = append(in.Leases, Lease{Name: h.Name, IP: h.IP, MAC: h.MAC})
		}
	}
	z := NewZone(in)
	r.SetZone(z)
	n.last = z
}

// listen opens the UDP and TCP sockets on port of every address of
// ifname, IPv4 and IPv6, bound to the device.
func listen(ctx context.Context, ifname string, port int) (*net.UDPConn, net.Listener, error) {
	lc := net.ListenConfig{Control: func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, ifname)
		})
		return errors.Join(err, serr)
	}}
	addr := fmt.Sprintf(":%d", port)
	pc, err := lc.ListenPacket(ctx, "udp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("dns on %s: listen on UDP port %d: %w", ifname, port, err)
	}
	l, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		pc.Close()
		return nil, nil, fmt.Errorf("dns on %s: listen on TCP port %d: %w", ifname, port, err)
	}
	return pc.(*net.UDPConn), l, nil
}

// serveUDP answers queries over UDP, each from the address it was sent to.
func serveUDP(ctx context.Context, conn *net.UDPConn, r *Resolver, log *slog.Logger) {
	if err := setUDPSocketOptions(conn); err != nil {
		log.Warn("dns: replies may come from another of the LAN's addresses than asked", "err", err)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Now()) })
	defer stop()
	sem := make(chan struct{}, maxUDPHandlers)
	var wg sync.WaitGroup
	defer wg.Wait()
	buf := make([]byte, maxQuery)
	for {
		n, sess, err := dns.ReadFromSessionUDP(conn, buf)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			log.Warn("dns: read a query", "err", err)
			time.Sleep(10 * time.Millisecond) // an error that repeats must not spin
			continue
		}
		client := sess.RemoteAddr().(*net.UDPAddr).AddrPort().Addr().Unmap()
		select {
		case sem <- struct{}{}:
		default:
			continue // overloaded: a client will ask again
		}
		q := append([]byte(nil), buf[:n]...)
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if reply := r.Answer(ctx, q, client, false); reply != nil {
				dns.WriteToSessionUDP(conn, reply, sess)
			}
		}()
	}
}

// setUDPSocketOptions asks for each query's destination address, so that
// the reply leaves from it (miekg/dns does this for the sockets it opens).
func setUDPSocketOptions(conn *net.UDPConn) error {
	raw, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	var err4, err6 error
	raw.Control(func(fd uintptr) {
		err6 = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1)
		err4 = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_PKTINFO, 1)
	})
	if err4 != nil && err6 != nil {
		return err4
	}
	return nil
}

// serveTCP answers queries over TCP: several on a connection, each framed
// by its length (RFC 7766), until the client is idle for tcpIdle.
func serveTCP(ctx context.Context, l net.Listener, r *Resolver, log *slog.Logger) {
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	sem := make(chan struct{}, maxTCPConns)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		conn, err := l.Accept()
		if err != nil {
			<-sem
			if ctx.Err() != nil {
				return
			}
			log.Warn("dns: accept a TCP connection", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		wg.Add(1)
		go func() {
			defer func() { conn.Close(); <-sem; wg.Done() }()
			unstop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
			defer unstop()
			client := conn.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
			for {
				conn.SetReadDeadline(time.Now().Add(tcpIdle))
				var n [2]byte
				if _, err := io.ReadFull(conn, n[:]); err != nil {
					return
				}
				q := make([]byte, binary.BigEndian.Uint16(n[:]))
				if _, err := io.ReadFull(conn, q); err != nil {
					return
				}
				reply := r.Answer(ctx, q, client, true)
				if reply == nil {
					return
				}
				conn.SetWriteDeadline(time.Now().Add(tcpIdle))
				if _, err := conn.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(reply))), reply...)); err != nil {
					return
				}
			}
		}()
	}
}
