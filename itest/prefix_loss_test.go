package itest

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/mdlayher/ndp"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// TestPrefixLossDeprecated: the ISP takes the delegation back ten times in
// a row (a Reply to the router's Renew with the prefix's lifetimes 0, then
// no prefix for its Request), and delegates another /56 at the next
// Solicit. Each time the LAN hears the lost /64 deprecated (preferred
// lifetime 0, RFC 7084 L-13) at once, in an advertisement of its own, not
// only later beside the next prefix: the RA service learns of the loss
// from the supervisor, which withdraws the client's outputs in the same
// step as it stops the RA, rather than from output files it would race.
func TestPrefixLossDeprecated(t *testing.T) {
	a := startAgentLab(t, []byte(lanPrefixConfig))
	waitLinkLocal(t, a.net.ISP, "isp0")
	waitLinkLocal(t, a.net.LAN, "eth0")
	heard := listenRAs(t, a.net.LAN, "eth0")
	srv := serveTakeBack(t, a.net.ISP, "isp0")

	const rounds = 10
	for i := range rounds {
		lan := takeBackLAN(i)
		_, at := heard.wait(t, 0, 20*time.Second, fmt.Sprintf("round %d: %s announced", i, lan), func(ra heardRA) bool {
			p, ok := ra.prefixes[lan]
			return ok && p.preferred > 0
		})
		srv.takeBack()
		ra, _ := heard.wait(t, at, 15*time.Second, fmt.Sprintf("round %d: %s deprecated", i, lan), func(ra heardRA) bool {
			p, ok := ra.prefixes[lan]
			return ok && p.preferred == 0
		})
		for p, l := range ra.prefixes {
			if p != lan && l.preferred > 0 {
				t.Fatalf("round %d: the LAN heard %s deprecated first beside the next prefix %s: the loss itself went unannounced\nroostd:\n%s",
					i, lan, p, a.log.String())
			}
		}
		if l := ra.prefixes[lan]; l.valid == 0 {
			t.Fatalf("round %d: %s deprecated with a valid lifetime of 0: hosts would drop it before its end", i, lan)
		}
	}
	heard.wait(t, 0, 20*time.Second, "the last prefix announced", func(ra heardRA) bool {
		p, ok := ra.prefixes[takeBackLAN(rounds)]
		return ok && p.preferred > 0
	})
	if n := strings.Count(a.log.String(), "the delegated prefix is gone; deprecating it"); n != rounds {
		t.Fatalf("roostd said %d times that the prefix went, want %d:\n%s", n, rounds, a.log.String())
	}
}

// takeBackLAN is the LAN's /64 (subnet 1 of lanPrefixConfig) in the nth
// /56 the server delegates.
func takeBackLAN(n int) netip.Prefix {
	return netip.MustParsePrefix(fmt.Sprintf("2001:db8:100:%x01::/64", n))
}

// inNamespace runs fn on a thread in network namespace ns: what it opens
// (sockets) stays in ns, and may be used from any goroutine after. The
// thread is never unlocked, so it ends with fn's goroutine instead of going
// back to the pool in the wrong namespace.
func inNamespace(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		f, err := os.Open("/run/netns/" + ns)
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("enter namespace %s: %w", ns, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// heardRA is a router advertisement the LAN host received: the prefixes
// it names with their lifetimes.
type heardRA struct {
	prefixes map[netip.Prefix]struct{ preferred, valid time.Duration }
}

// raLog records the router advertisements heard on a link.
type raLog struct {
	mu    sync.Mutex
	ras   []heardRA
	added chan struct{}
}

// listenRAs records what router advertisements dev in ns receives until
// the test ends.
func listenRAs(t *testing.T, ns, dev string) *raLog {
	t.Helper()
	var conn *ndp.Conn
	err := inNamespace(ns, func() error {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		conn, _, err = ndp.Listen(ifi, ndp.LinkLocal)
		return err
	})
	if err != nil {
		t.Fatalf("listen for router advertisements on %s in %s: %v", dev, ns, err)
	}
	t.Cleanup(func() { conn.Close() })
	l := &raLog{added: make(chan struct{}, 1)}
	go func() {
		for {
			m, _, _, err := conn.ReadFrom()
			if err != nil {
				return // closed
			}
			ra, ok := m.(*ndp.RouterAdvertisement)
			if !ok {
				continue
			}
			h := heardRA{prefixes: map[netip.Prefix]struct{ preferred, valid time.Duration }{}}
			for _, o := range ra.Options {
				if pi, ok := o.(*ndp.PrefixInformation); ok {
					h.prefixes[netip.PrefixFrom(pi.Prefix, int(pi.PrefixLength))] = struct{ preferred, valid time.Duration }{pi.PreferredLifetime, pi.ValidLifetime}
				}
			}
			l.mu.Lock()
			l.ras = append(l.ras, h)
			l.mu.Unlock()
			select {
			case l.added <- struct{}{}:
			default:
			}
		}
	}()
	return l
}

// wait returns the first advertisement from the from-th on that satisfies
// ok, and the count to wait from for what comes after it; it fails the
// test if none comes within d.
func (l *raLog) wait(t *testing.T, from int, d time.Duration, what string, ok func(heardRA) bool) (heardRA, int) {
	t.Helper()
	deadline := time.After(d)
	for {
		l.mu.Lock()
		for i := from; i < len(l.ras); i++ {
			if ok(l.ras[i]) {
				ra := l.ras[i]
				l.mu.Unlock()
				return ra, i + 1
			}
		}
		from = len(l.ras)
		l.mu.Unlock()
		select {
		case <-l.added:
		case <-deadline:
			t.Fatalf("never heard on the LAN: %s", what)
		}
	}
}

// takeBackServer is the ISP's DHCPv6 server for TestPrefixLossDeprecated:
// it delegates /56s out of 2001:db8:100::/48 (T1 1 s, T2 2 s, lifetimes
// 60 and 120 s), no address, and when told takes the prefix back. kea
// cannot play this part: it takes a prefix back only as it delegates
// another in the same Reply, or says NoPrefixAvail beside it.
type takeBackServer struct {
	mu sync.Mutex
	n  int // the /56 delegated now
	// taking: the next Renew or Rebind gets the prefix with lifetimes 0;
	// refusing: the Request that follows gets NoPrefixAvail, and the
	// next Solicit the next /56.
	taking, refusing bool
}

func (s *takeBackServer) takeBack() {
	s.mu.Lock()
	s.taking = true
	s.mu.Unlock()
}

// serveTakeBack serves DHCPv6 on dev in ns until the test ends.
func serveTakeBack(t *testing.T, ns, dev string) *takeBackServer {
	t.Helper()
	var conn *net.UDPConn
	err := inNamespace(ns, func() error {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		conn, err = net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6unspecified, Port: dhcpv6.DefaultServerPort})
		if err != nil {
			return err
		}
		return ipv6.NewPacketConn(conn).JoinGroup(ifi, &net.UDPAddr{IP: dhcpv6.AllDHCPRelayAgentsAndServers})
	})
	if err != nil {
		t.Fatalf("DHCPv6 server on %s in %s: %v", dev, ns, err)
	}
	t.Cleanup(func() { conn.Close() })
	s := &takeBackServer{}
	go func() {
		b := make([]byte, 1500)
		for {
			n, peer, err := conn.ReadFromUDP(b)
			if err != nil {
				return // closed
			}
			msg, err := dhcpv6.MessageFromBytes(b[:n])
			if err != nil {
				continue
			}
			if reply := s.answer(msg); reply != nil {
				conn.WriteToUDP(reply.ToBytes(), peer)
			}
		}
	}()
	return s
}

// answer is the server's answer to msg, or nil for none.
func (s *takeBackServer) answer(msg *dhcpv6.Message) *dhcpv6.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	pd := msg.Options.OneIAPD()
	if pd == nil {
		return nil
	}
	sid := &dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: net.HardwareAddr{2, 0, 0, 0, 0, 1}}
	out := &dhcpv6.OptIAPD{IaId: pd.IaId, T1: time.Second, T2: 2 * time.Second}
	prefix := &net.IPNet{IP: net.ParseIP(fmt.Sprintf("2001:db8:100:%x00::", s.n)), Mask: net.CIDRMask(56, 128)}
	grant := &dhcpv6.OptIAPrefix{PreferredLifetime: time.Minute, ValidLifetime: 2 * time.Minute, Prefix: prefix}
	var reply *dhcpv6.Message
	var err error
	switch msg.MessageType {
	case dhcpv6.MessageTypeSolicit:
		reply, err = dhcpv6.NewAdvertiseFromSolicit(msg)
		out.Options.Add(grant)
	case dhcpv6.MessageTypeRequest, dhcpv6.MessageTypeRenew, dhcpv6.MessageTypeRebind:
		reply, err = dhcpv6.NewReplyFromMessage(msg)
		switch {
		case s.taking && msg.MessageType != dhcpv6.MessageTypeRequest:
			s.taking, s.refusing = false, true
			for _, p := range pd.Options.Prefixes() {
				out.Options.Add(&dhcpv6.OptIAPrefix{Prefix: p.Prefix}) // lifetimes 0: taken back
			}
		case s.refusing && msg.MessageType == dhcpv6.MessageTypeRequest:
			s.refusing = false
			s.n++
			out.Options.Add(&dhcpv6.OptStatusCode{StatusCode: iana.StatusNoPrefixAvail, StatusMessage: "taken back"})
		default:
			out.Options.Add(grant)
		}
	default:
		return nil
	}
	if err != nil {
		return nil
	}
	reply.AddOption(dhcpv6.OptServerID(sid))
	reply.AddOption(out)
	return reply
}
