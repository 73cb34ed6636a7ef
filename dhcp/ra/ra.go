// Package ra puts a delegated prefix on a LAN and announces it: it takes
// the LAN's /64 out of the prefix by its subnet index, gives the router its
// ::1, and sends router advertisements (periodic, and in answer to
// solicitations) with the prefix, DNS, MTU and source link-layer options.
// Lifetimes count down from the delegation's last renewal, and a prefix
// that went away or was replaced is announced deprecated (RFC 7084 L-13)
// until it expires, across restarts of roostd. Whether the prefix went is
// what the supervisor held when it stopped the service (supervisor.Stopped),
// not what the output files say a moment later. Dropped from the config, it
// tells the LAN with a final advertisement and takes its addresses away
// (Remove).
package ra

import (
	"context"
	"encoding/json"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/mdlayher/ndp"
	"github.com/vishvananda/netlink"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

	"github.com/roostrouter/roost/agent/supervisor"
	"github.com/roostrouter/roost/dhcp/client6"
	"github.com/roostrouter/roost/dhcp/dns/servers"
	"github.com/roostrouter/roost/dhcp/screen"
	"github.com/roostrouter/roost/netconf"
	"github.com/roostrouter/roost/updater/atomicfile"
)

// maxDeprecatedValid is the longest valid lifetime a replaced prefix is
// announced with: RFC 7084 L-13's two hours.
const maxDeprecatedValid = 2 * time.Hour

// Service is a supervisor service.
type Service struct {
	NL         *netlink.Handle
	LinkRef    supervisor.Ref // the LAN's ifname
	PrefixFrom string         // the DHCPv6 client whose prefix/0 it splits
	Subnet     int            // the LAN's /64 within the delegated prefix
	Interval   time.Duration  // between unsolicited advertisements (default 200 s)
	MTU        int            // announced if set
	// DNS are the servers announced; none: the router's own address
	// in the LAN's prefix (a dns service answers there).
	DNS      servers.List
	StateDir string // where the prefixes it announced are kept
	Now      func() time.Time
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

// announced is a prefix the LAN was told about, with when it stops being
// preferred and valid.
type announced struct {
	Prefix         netip.Prefix `json:"prefix"`
	PreferredUntil time.Time    `json:"preferredUntil"`
	ValidUntil     time.Time    `json:"validUntil"`
	Deprecated     bool         `json:"deprecated,omitempty"`
}

// lifetimes are what is left of a at now, as an advertisement carries them.
func (a announced) lifetimes(now time.Time) (preferred, valid time.Duration) {
	left := func(t time.Time) time.Duration { return max(t.Sub(now).Truncate(time.Second), 0) }
	if a.Deprecated {
		return 0, min(left(a.ValidUntil), maxDeprecatedValid)
	}
	return left(a.PreferredUntil), left(a.ValidUntil)
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Service) stateFile(ifname string) string {
	return filepath.Join(s.StateDir, "ra-"+ifname+".json")
}

// dnsFile keeps the DNS servers the config named that were last handed out.
func (s *Service) dnsFile(ifname string) string {
	if s.StateDir == "" {
		return ""
	}
	return filepath.Join(s.StateDir, "ra-"+ifname+"-dns.json")
}

// load reads the prefixes announced before; a missing or damaged file is an
// empty list (the worst outcome is an old prefix left to expire on hosts
// by itself).
func (s *Service) load(env *supervisor.Env, ifname string) []announced {
	list, err := s.read(ifname)
	if err != nil {
		env.Log.Info("ra: ignoring damaged state", "file", s.stateFile(ifname), "err", err)
	}
	return list
}

// read is load without the log line: nil for no file, and an error for a
// damaged one.
func (s *Service) read(ifname string) ([]announced, error) {
	b, err := os.ReadFile(s.stateFile(ifname))
	if err != nil {
		return nil, nil
	}
	var list []announced
	if err := json.Unmarshal(b, &list); err != nil {
		return nil, err
	}
	return list, nil
}

func (s *Service) save(ifname string, list []announced) error {
	if s.StateDir == "" {
		return nil
	}
	b, err := json.Marshal(list)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(s.StateDir, 0o700); err != nil {
		return err
	}
	return atomicfile.WriteFile(s.stateFile(ifname), b, 0o600)
}

// delegated are the outputs of the prefix the DHCPv6 client delegates.
var delegated = client6.Prefix(0)

// lan is this LAN's /64 of the prefix the DHCPv6 client holds.
func (s *Service) lan(in supervisor.Inputs) (netip.Prefix, error) {
	addr, err := delegated.Addr.Require(in, s.PrefixFrom)
	if err != nil {
		return netip.Prefix{}, err
	}
	bits, err := delegated.Len.Require(in, s.PrefixFrom)
	if err != nil {
		return netip.Prefix{}, err
	}
	p := netip.PrefixFrom(addr, bits)
	if !p.IsValid() {
		return netip.Prefix{}, fmt.Errorf("delegated prefix %s/%d from %s is not a prefix", addr, bits, s.PrefixFrom)
	}
	return Subnet64(p, s.Subnet)
}

// delegation reads the prefix the DHCPv6 client holds and its /64 for this
// LAN, with its lifetimes counted from the client's last renewal.
func (s *Service) delegation(in supervisor.Inputs) (announced, int64, error) {
	lan, err := s.lan(in)
	if err != nil {
		return announced{}, 0, err
	}
	seconds := func(o supervisor.Output[int]) time.Duration {
		n, _, _ := o.Get(in, s.PrefixFrom)
		return time.Duration(n) * time.Second
	}
	now := s.now()
	// The lifetimes run from the renewal; a renewal stamp in the future
	// or none (a clock that jumped) counts from now.
	renewed, _, _ := client6.Renewed.Get(in, s.PrefixFrom)
	since := now
	if renewed > 0 && time.Unix(renewed, 0).Before(now) {
		since = time.Unix(renewed, 0)
	}
	a := announced{Prefix: lan, PreferredUntil: since.Add(seconds(delegated.Preferred)), ValidUntil: since.Add(seconds(delegated.Valid))}
	return a, renewed, nil
}

// Run assigns the LAN's prefix and advertises it.
func (s *Service) Run(ctx context.Context, env *supervisor.Env) error {
	ifname, err := env.Require(s.LinkRef)
	if err != nil {
		return err
	}
	if s.StateDir != "" {
		if err := netconf.RememberLink(s.linkRecord(), ifname); err != nil {
			env.Log.Warn("state folder", "err", err)
		}
	}
	cur, renewed, err := s.delegation(env)
	if err != nil {
		return err
	}
	link, err := s.NL.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("link %s: %w", ifname, err)
	}
	// Every other prefix announced before and still valid is now announced
	// deprecated, and the router's own address in it too.
	now := s.now()
	list := []announced{cur}
	for _, old := range s.load(env, ifname) {
		if old.Prefix == cur.Prefix || !old.ValidUntil.After(now) {
			continue
		}
		if !old.Deprecated {
			env.Log.Info("ra: deprecating a replaced prefix", "link", ifname, "prefix", old.Prefix)
		}
		old.Deprecated = true
		list = append(list, old)
	}
	if err := s.assign(link, list, now); err != nil {
		return err
	}
	if err := s.save(ifname, list); err != nil {
		return fmt.Errorf("save announced prefixes of %s: %w", ifname, err)
	}
	PrefixOut.Set(env, cur.Prefix)
	AddrOut.Set(env, cur.Prefix.Addr().Next())

	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return err
	}
	conn, self, err := ndp.Listen(ifi, ndp.LinkLocal)
	if err != nil {
		return fmt.Errorf("router advertisements on %s: %w", ifname, err)
	}
	defer conn.Close()
	if err := conn.SetControlMessage(ipv6.FlagHopLimit, true); err != nil {
		return fmt.Errorf("router advertisements on %s: %w", ifname, err)
	}
	if err := conn.JoinGroup(netip.MustParseAddr("ff02::2")); err != nil {
		return fmt.Errorf("join all-routers on %s: %w", ifname, err)
	}
	allNodes := netip.MustParseAddr("ff02::1")
	dns := newRDNSS(s.DNS, s.dnsFile(ifname))
	s.followDNS(env, ifname, dns)
	send := func() {
		if err := conn.WriteTo(s.advertisement(ifi.HardwareAddr, list, s.now(), dns), nil, allNodes); err != nil {
			env.Log.Info("ra: send", "link", ifname, "err", err)
		}
	}
	solicited := make(chan struct{}, 1)
	go s.listen(conn, self, ifname, env, solicited)
	env.Log.Info("ra: announcing", "link", ifname, "prefix", cur.Prefix, "valid", cur.ValidUntil.Sub(now).Round(time.Second))
	env.Ready()
	send()
	t := time.NewTicker(s.interval())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			if s.gone(supervisor.StoppedBy(ctx), cur.Prefix) {
				s.deprecate(env, ifname, link, list, send)
			}
			return nil
		case <-t.C:
		case <-solicited:
		case <-env.Changed():
			s.followDNS(env, ifname, dns)
		}
		// A renewal of the delegation moves the lifetimes on: the router's
		// address and the hosts' get them at once.
		if next, r, err := s.delegation(env); err == nil && r != renewed && next.Prefix == cur.Prefix {
			cur, renewed, list[0] = next, r, next
			if err := s.assign(link, list[:1], s.now()); err != nil {
				env.Log.Info("ra: refresh address lifetimes", "link", ifname, "err", err)
			}
			if err := s.save(ifname, list); err != nil {
				env.Log.Info("ra: save announced prefixes", "link", ifname, "err", err)
			}
		}
		send()
	}
}

// followDNS reads the servers to announce as of now; a change goes out
// in the advertisement that follows at once.
func (s *Service) followDNS(env *supervisor.Env, ifname string, dns *rdnss) {
	changed, err := dns.follow(env.Input)
	if err != nil {
		env.Log.Warn("ra: save the DNS servers announced (a later run cannot withdraw them)", "link", ifname, "err", err)
	}
	if changed && len(s.DNS) > 0 {
		env.Log.Info("ra: DNS servers announced", "link", ifname, "servers", dns.current)
	}
}

// listen reads what arrives on the LAN's neighbor discovery socket until
// it is closed, and signals solicited for each router solicitation. What
// does not parse, or did not come from the link (hop limit not 255, RFC
// 4861 6.1.1), is dropped with a log line; ndp's own ReadFrom would drop
// it silently.
func (s *Service) listen(conn *ndp.Conn, self netip.Addr, ifname string, env *supervisor.Env, solicited chan<- struct{}) {
	dropped := &screen.Limited{Log: env.Log, What: "neighbor discovery packet on " + ifname}
	b := make([]byte, 1500)
	for {
		n, cm, from, err := conn.ReadRaw(b)
		if err != nil {
			return // closed when the service stops
		}
		if from == self {
			continue // our own advertisement, looped back
		}
		hopLimit := 255
		if cm != nil {
			hopLimit = cm.HopLimit
		}
		m, err := parseND(b[:n], hopLimit)
		if err != nil {
			dropped.Drop(&net.IPAddr{IP: from.AsSlice(), Zone: ifname}, n, err)
			continue
		}
		switch m := m.(type) {
		case *ndp.RouterSolicitation:
			env.Log.Info("ra: solicited", "from", from)
			select {
			case solicited <- struct{}{}:
			default:
			}
		case *ndp.RouterAdvertisement:
			env.Log.Info("ra: another router advertises on this LAN", "link", ifname, "from", from, "lifetime", m.RouterLifetime)
		}
	}
}

// parseND parses a neighbor discovery message from the LAN, refusing one
// that did not come from the link itself (RFC 4861 6.1.1: hop limit 255).
func parseND(b []byte, hopLimit int) (ndp.Message, error) {
	if hopLimit != 255 {
		return nil, fmt.Errorf("hop limit %d, not 255: not from this link", hopLimit)
	}
	return ndp.ParseMessage(b)
}

// gone says, as the service stops, whether the LAN's prefix cur went with
// the delegation (lost, or replaced by another): so the supervisor's
// Stopped says, which holds the client's prefix as it was when the
// service was stopped (the prefix and its length are among the Reads that
// Build declares). Stopped by roostd stopping, a reload or its link going
// down, the prefix is still there, and hosts keep it as it was; stopped
// by anything but the supervisor, nothing is known, and nothing is said.
func (s *Service) gone(st *supervisor.Stopped, cur netip.Prefix) bool {
	if st == nil {
		return false
	}
	next, err := s.lan(st)
	return err != nil || next != cur
}

// deprecate tells the LAN at once that its prefix (list[0]) is deprecated
// (RFC 7084 L-13: preferred lifetime 0, valid lifetime what is left, at
// most two hours), and the router's own address in it too.
func (s *Service) deprecate(env *supervisor.Env, ifname string, link netlink.Link, list []announced, send func()) {
	env.Log.Info("ra: the delegated prefix is gone; deprecating it", "link", ifname, "prefix", list[0].Prefix)
	list[0].Deprecated = true
	if err := s.assign(link, list[:1], s.now()); err != nil {
		env.Log.Info("ra: deprecate address", "link", ifname, "err", err)
	}
	if err := s.save(ifname, list); err != nil {
		env.Log.Info("ra: save announced prefixes", "link", ifname, "err", err)
	}
	send()
}

// assign gives the router ::1 in each prefix with its lifetimes left; a
// deprecated prefix's address is only updated if the router still has it.
func (s *Service) assign(link netlink.Link, list []announced, now time.Time) error {
	for _, a := range list {
		router := a.Prefix.Addr().Next()
		ipnet := &net.IPNet{IP: router.AsSlice(), Mask: net.CIDRMask(64, 128)}
		if a.Deprecated {
			have, err := s.NL.AddrList(link, netlink.FAMILY_V6)
			if err != nil {
				return fmt.Errorf("list addresses of %s: %w", link.Attrs().Name, err)
			}
			if !hasAddr(have, router) {
				continue
			}
		}
		preferred, valid := a.lifetimes(now)
		if valid == 0 {
			continue
		}
		addr := &netlink.Addr{IPNet: ipnet, ValidLft: int(valid.Seconds()), PreferedLft: int(preferred.Seconds()), Flags: unix.IFA_F_NODAD}
		if err := s.NL.AddrReplace(link, addr); err != nil {
			return fmt.Errorf("add %s to %s: %w", router, link.Attrs().Name, err)
		}
	}
	return nil
}

func hasAddr(addrs []netlink.Addr, a netip.Addr) bool {
	for _, h := range addrs {
		if ip, ok := netip.AddrFromSlice(h.IP); ok && ip.Unmap() == a {
			return true
		}
	}
	return false
}

// advertisement is the RA for the prefixes as of now: the current one,
// and the replaced ones (preferred 0) until they expire. Its DNS servers
// are dns's, or the router's own address in the current prefix when the
// config names none (dns nil or with an empty list).
func (s *Service) advertisement(mac net.HardwareAddr, list []announced, now time.Time, dns *rdnss) *ndp.RouterAdvertisement {
	var opts []ndp.Option
	var own []netip.Addr
	var dnsLifetime time.Duration
	for _, a := range list {
		preferred, valid := a.lifetimes(now)
		if valid == 0 && a.Deprecated {
			continue
		}
		opts = append(opts, &ndp.PrefixInformation{PrefixLength: 64, OnLink: true, AutonomousAddressConfiguration: true,
			ValidLifetime: valid, PreferredLifetime: preferred, Prefix: a.Prefix.Addr()})
		if !a.Deprecated && valid > 0 {
			own = append(own, a.Prefix.Addr().Next())
			dnsLifetime = min(valid, 3*s.interval())
		}
	}
	if len(own) > 0 && (dns == nil || len(dns.list) == 0) {
		opts = append(opts, &ndp.RecursiveDNSServer{Lifetime: dnsLifetime, Servers: own})
	}
	if dns != nil {
		opts = append(opts, dns.options(3*s.interval())...)
	}
	opts = append(opts, &ndp.LinkLayerAddress{Direction: ndp.Source, Addr: mac})
	if s.MTU > 0 {
		opts = append(opts, ndp.NewMTU(uint32(s.MTU)))
	}
	return &ndp.RouterAdvertisement{CurrentHopLimit: 64, RouterLifetime: 3 * s.interval(), Options: opts}
}

func (s *Service) interval() time.Duration {
	if s.Interval > 0 {
		return s.Interval
	}
	return 200 * time.Second
}
