// Package ra puts a delegated prefix on a LAN and announces it: it takes
// the LAN's /64 out of the prefix by its subnet index, gives the router its
// ::1, and sends router advertisements (periodic, and in answer to
// solicitations) with the prefix, DNS, MTU and source link-layer options.
package ra

import (
	"context"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/mdlayher/ndp"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/roostrouter/roost/agent/supervisor"
)

// Service is a supervisor service.
type Service struct {
	NL         *netlink.Handle
	LinkRef    supervisor.Ref // the LAN's ifname
	PrefixFrom string         // the DHCPv6 client whose prefix/0 it splits
	Subnet     int            // the LAN's /64 within the delegated prefix
	Interval   time.Duration  // between unsolicited advertisements (default 200 s)
	MTU        int            // announced if set
}

// Subnet64 returns the index-th /64 of delegated.
func Subnet64(delegated netip.Prefix, index int) (netip.Prefix, error) {
	if delegated.Bits() > 64 || !delegated.Addr().Is6() {
		return netip.Prefix{}, fmt.Errorf("%s cannot be split into /64s", delegated)
	}
	if n := 64 - delegated.Bits(); n < 62 && index >= 1<<n || index < 0 {
		return netip.Prefix{}, fmt.Errorf("subnet %d does not fit in %s (it has %d /64s)", index, delegated, 1<<(64-delegated.Bits()))
	}
	a := delegated.Masked().Addr().As16()
	v := new(big.Int).SetBytes(a[:])
	v.Or(v, new(big.Int).Lsh(big.NewInt(int64(index)), 64))
	var out [16]byte
	v.FillBytes(out[:])
	return netip.PrefixFrom(netip.AddrFrom16(out), 64), nil
}

func (s *Service) input(env *supervisor.Env, key string) (string, error) {
	v, ok := env.Input(supervisor.Ref{Service: s.PrefixFrom, Key: key})
	if !ok {
		return "", fmt.Errorf("%s has no output %s yet", s.PrefixFrom, key)
	}
	return strings.TrimSpace(v), nil
}

// Run assigns the LAN's prefix and advertises it.
func (s *Service) Run(ctx context.Context, env *supervisor.Env) error {
	ifname, ok := env.Input(s.LinkRef)
	if !ok {
		return fmt.Errorf("%s has no ifname output", s.LinkRef.Service)
	}
	p, err := s.input(env, "prefix/0/prefix")
	if err != nil {
		return err
	}
	l, err := s.input(env, "prefix/0/len")
	if err != nil {
		return err
	}
	bits, _ := strconv.Atoi(l)
	delegated, err := netip.ParsePrefix(p + "/" + strconv.Itoa(bits))
	if err != nil {
		return fmt.Errorf("delegated prefix %s/%s: %w", p, l, err)
	}
	preferred, valid := s.lifetime(env, "prefix/0/preferred"), s.lifetime(env, "prefix/0/valid")
	lan, err := Subnet64(delegated, s.Subnet)
	if err != nil {
		return err
	}
	router := lan.Addr().Next()
	link, err := s.NL.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("link %s: %w", ifname, err)
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: router.AsSlice(), Mask: net.CIDRMask(64, 128)},
		ValidLft: int(valid.Seconds()), PreferedLft: int(preferred.Seconds()), Flags: unix.IFA_F_NODAD}
	if err := s.NL.AddrReplace(link, addr); err != nil {
		return fmt.Errorf("add %s to %s: %w", router, ifname, err)
	}
	env.SetOutput("prefix", lan.String())
	env.SetOutput("address", router.String())

	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return err
	}
	conn, _, err := ndp.Listen(ifi, ndp.LinkLocal)
	if err != nil {
		return fmt.Errorf("router advertisements on %s: %w", ifname, err)
	}
	defer conn.Close()
	if err := conn.JoinGroup(netip.MustParseAddr("ff02::2")); err != nil {
		return fmt.Errorf("join all-routers on %s: %w", ifname, err)
	}
	opts := []ndp.Option{
		&ndp.PrefixInformation{PrefixLength: 64, OnLink: true, AutonomousAddressConfiguration: true,
			ValidLifetime: valid, PreferredLifetime: preferred, Prefix: lan.Addr()},
		&ndp.RecursiveDNSServer{Lifetime: min(valid, 3*s.interval()), Servers: []netip.Addr{router}},
		&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: ifi.HardwareAddr},
	}
	if s.MTU > 0 {
		opts = append(opts, ndp.NewMTU(uint32(s.MTU)))
	}
	advert := &ndp.RouterAdvertisement{CurrentHopLimit: 64, RouterLifetime: 3 * s.interval(), Options: opts}
	all := netip.MustParseAddr("ff02::1")
	send := func() {
		if err := conn.WriteTo(advert, nil, all); err != nil {
			env.Log.Info("ra: send", "link", ifname, "err", err)
		}
	}
	solicited := make(chan struct{}, 1)
	go func() {
		for {
			m, _, from, err := conn.ReadFrom()
			if err != nil {
				return // closed when the service stops
			}
			if _, ok := m.(*ndp.RouterSolicitation); ok {
				env.Log.Info("ra: solicited", "from", from)
				select {
				case solicited <- struct{}{}:
				default:
				}
			}
		}
	}()
	env.Log.Info("ra: announcing", "link", ifname, "prefix", lan, "preferred", preferred, "valid", valid)
	env.Ready()
	send()
	t := time.NewTicker(s.interval())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			send()
		case <-solicited:
			send()
		}
	}
}

func (s *Service) interval() time.Duration {
	if s.Interval > 0 {
		return s.Interval
	}
	return 200 * time.Second
}

func (s *Service) lifetime(env *supervisor.Env, key string) time.Duration {
	v, err := s.input(env, key)
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(v)
	return time.Duration(n) * time.Second
}

// Remove leaves the address: it expires with the delegation.
func (s *Service) Remove(context.Context) error { return nil }
