// Package client6 is the router's DHCPv6 client on its WAN: a DUID made
// once and kept, an address (IA_NA) and a delegated prefix (IA_PD) with a
// length hint, Renew at T1, Rebind at T2 and expiry as RFC 8415 says. It
// binds whatever a server grants, an address, a prefix or both, keeps
// asking for what it lacks, and handles each IA on its own: a binding the
// server lost is requested again at once, one it will not extend is kept
// until its lifetimes end (ia.go has the rules, packet by packet). What
// it holds is published in Liminix's layout: address/<n>/{address,len,
// preferred,valid}, prefix/<n>/{prefix,len,preferred,valid}, dns, server.
// Dropped from the config, it releases the binding and takes its
// addresses away (Remove).
package client6

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/dhcpv6/nclient6"
	"github.com/insomniacslk/dhcp/iana"
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
	NL         *netlink.Handle
	LinkRef    supervisor.Ref
	StateDir   string
	PrefixHint int // the delegated prefix length asked for; 0: none
	Retry      time.Duration
	// ReleaseOnStop gives the binding back when the service stops cleanly
	// (roostd stopping, or the service restarting). Off by default: a
	// restarted router then keeps its prefix where the ISP would otherwise
	// hand out a new one. A client the config drops or changes releases
	// whatever this says (Remove).
	ReleaseOnStop bool
	ProcSys       string // /proc/sys: accept_ra is set to 2 on the link
}

// binding is what the server granted, from a Reply.
type binding struct {
	reply    *dhcpv6.Message
	acquired time.Time
}

func (b binding) iana() *dhcpv6.OptIANA { return b.reply.Options.OneIANA() }
func (b binding) iapd() *dhcpv6.OptIAPD { return b.reply.Options.OneIAPD() }

// addrs are the addresses bound; one the server returns with a valid
// lifetime of 0 is one it takes back (RFC 8415 18.3.4), not one to use.
func (b binding) addrs() []*dhcpv6.OptIAAddress {
	var out []*dhcpv6.OptIAAddress
	if ia := b.iana(); ia != nil {
		for _, a := range ia.Options.Addresses() {
			if a.ValidLifetime > 0 {
				out = append(out, a)
			}
		}
	}
	return out
}

// prefixes are the prefixes delegated, without those taken back.
func (b binding) prefixes() []*dhcpv6.OptIAPrefix {
	var out []*dhcpv6.OptIAPrefix
	if pd := b.iapd(); pd != nil {
		for _, p := range pd.Options.Prefixes() {
			if p.ValidLifetime > 0 {
				out = append(out, p)
			}
		}
	}
	return out
}

// times are T1 and T2 (the earliest of the IAs' ones, each the server's
// or, where it says 0, the client's choice from the leases' preferred
// lifetimes), at least a second, and the end (the longest valid
// lifetime).
func (b binding) times() (t1, t2, end time.Duration) {
	type lifetimes struct {
		t1, t2           time.Duration
		preferred, valid []time.Duration
	}
	var ias []lifetimes
	if addrs := b.addrs(); len(addrs) > 0 {
		l := lifetimes{t1: b.iana().T1, t2: b.iana().T2}
		for _, a := range addrs {
			l.preferred, l.valid = append(l.preferred, a.PreferredLifetime), append(l.valid, a.ValidLifetime)
		}
		ias = append(ias, l)
	}
	if prefixes := b.prefixes(); len(prefixes) > 0 {
		l := lifetimes{t1: b.iapd().T1, t2: b.iapd().T2}
		for _, p := range prefixes {
			l.preferred, l.valid = append(l.preferred, p.PreferredLifetime), append(l.valid, p.ValidLifetime)
		}
		ias = append(ias, l)
	}
	for i, l := range ias {
		a1, a2 := iaTimes(l.t1, l.t2, l.preferred, l.valid)
		if i == 0 || a1 < t1 {
			t1 = a1
		}
		if i == 0 || a2 < t2 {
			t2 = a2
		}
		end = max(end, slices.Max(l.valid))
	}
	// Not sooner: a lease the server would not extend, counted down to a
	// moment, would otherwise make the client ask without pause.
	t1 = max(t1, time.Second)
	t2 = max(t2, t1)
	return t1, t2, end
}

// schedule times the binding's renewal and rebinding.
func (b binding) schedule() retry.Lease {
	_, t2, valid := b.times()
	return retry.Lease{T2: b.acquired.Add(t2), End: b.acquired.Add(valid)}
}

func (c *Client) duid(hw net.HardwareAddr) (dhcpv6.DUID, error) {
	file := filepath.Join(c.StateDir, "dhcp6-duid")
	if b, err := os.ReadFile(file); err == nil {
		if d, err := dhcpv6.DUIDFromBytes(b); err == nil {
			return d, nil
		}
	}
	var d dhcpv6.DUID = &dhcpv6.DUIDLLT{HWType: iana.HWTypeEthernet, Time: dhcpv6.GetTime(), LinkLayerAddr: hw}
	if len(hw) == 0 {
		// A link without a hardware address (ppp0): a random UUID, kept.
		u := &dhcpv6.DUIDUUID{}
		if _, err := rand.Read(u.UUID[:]); err != nil {
			return nil, err
		}
		d = u
	}
	if err := os.MkdirAll(c.StateDir, 0o700); err != nil {
		return nil, err
	}
	return d, atomicfile.WriteFile(file, d.ToBytes(), 0o600)
}

func (c *Client) leaseFile(ifname string) string {
	return filepath.Join(c.StateDir, "dhcp6-"+ifname+".json")
}

// saved is the binding as kept in $STATE: the server's Reply and when it
// came.
type saved struct {
	Reply    []byte    `json:"reply"`
	Acquired time.Time `json:"acquired"`
}

func (c *Client) save(ifname string, b *binding) error {
	data, _ := json.Marshal(saved{Reply: b.reply.ToBytes(), Acquired: b.acquired})
	return atomicfile.WriteFile(c.leaseFile(ifname), data, 0o600)
}

// load returns the kept binding if it is still valid: a restarted roostd
// adopts it and renews at T1, as the DHCPv4 client does, instead of
// soliciting (the LAN's prefix does not flap). A damaged file is no binding.
func (c *Client) load(ifname string, now time.Time) *binding {
	b := c.kept(ifname)
	if b == nil || b.acquired.After(now) {
		return nil
	}
	if _, _, valid := b.times(); !now.Before(b.acquired.Add(valid)) {
		return nil
	}
	return b
}

// kept is the binding in the state folder, expired or not; nil if there
// is none or it is damaged.
func (c *Client) kept(ifname string) *binding {
	data, err := os.ReadFile(c.leaseFile(ifname))
	if err != nil {
		return nil
	}
	var sv saved
	if json.Unmarshal(data, &sv) != nil {
		return nil
	}
	reply, err := dhcpv6.MessageFromBytes(sv.Reply)
	if err != nil || reply.MessageType != dhcpv6.MessageTypeReply {
		return nil
	}
	b, err := checkReply(reply)
	if err != nil {
		return nil
	}
	b.acquired = sv.Acquired
	return b
}

// Run keeps an address and a prefix.
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
	// The WAN's IPv6 default route comes from the ISP's router
	// advertisements, which a router (forwarding on) ignores unless
	// accept_ra is 2. Its value before is kept, for Remove.
	if c.ProcSys != "" {
		if _, err := c.sysctls().Set(acceptRA(ifname), "2"); errors.Is(err, netconf.ErrNotRecorded) {
			env.Log.Warn("state folder", "err", err)
		} else if err != nil {
			return fmt.Errorf("accept router advertisements on %s: %w", ifname, err)
		}
	}
	duid, err := c.duid(link.Attrs().HardwareAddr)
	if err != nil {
		return err
	}
	hw := idAddr(link.Attrs().HardwareAddr, duid)
	// Solicit once the link-local address has passed duplicate address
	// detection (a second after carrier): sent earlier, it fails, and the
	// backoff would add seconds to every link-up.
	if !c.waitLinkLocal(ctx, link, 5*time.Second) {
		env.Log.Info("dhcp6: no usable link-local address yet; soliciting anyway", "link", ifname)
	}
	conn, err := listen(ctx, ifname)
	if err != nil {
		return err
	}
	screened := &screen.Conn{PacketConn: conn, Log: &screen.Limited{Log: env.Log, What: "DHCPv6 reply on " + ifname},
		Parse: func(b []byte) error { _, err := dhcpv6.MessageFromBytes(b); return err }}
	nc, err := nclient6.NewWithConn(screened, hw, nclient6.WithTimeout(time.Second), nclient6.WithRetry(3))
	if err != nil {
		return fmt.Errorf("dhcpv6 client on %s: %w", ifname, err)
	}
	defer nc.Close()
	w := asker{duid: duid, prefixLen: c.PrefixHint}
	copy(w.iaid[:], hw[len(hw)-4:])
	backoff := retry.Backoff{First: c.Retry}
	all := &net.UDPAddr{IP: dhcpv6.AllDHCPRelayAgentsAndServers, Port: dhcpv6.DefaultServerPort, Zone: ifname}
	var cur, published *binding
	if cur = c.load(ifname, time.Now()); cur != nil {
		env.Log.Info("dhcp6: adopting the kept binding", "link", ifname, "prefixes", len(cur.prefixes()), "since", cur.acquired)
	} else {
		env.Log.Info("dhcp6: soliciting", "link", ifname, "duid", duid)
	}
	for {
		if cur == nil {
			var ok bool
			cur, ok = retry.Until(ctx, &backoff, func() (*binding, error) { return c.acquire(ctx, env.Log, nc, all, w) },
				func(err error, wait time.Duration) {
					env.Log.Info("dhcp6: no binding yet", "err", err, "retryIn", wait)
				})
			if !ok {
				return nil
			}
		}
		if err := c.apply(link, cur); err != nil {
			return err
		}
		if published != nil {
			c.withdrawGone(link, published, cur)
		}
		if err := c.save(ifname, cur); err != nil {
			env.Log.Warn("dhcp6: keep the binding", "err", err)
		}
		publish(env, cur, published)
		published = cur
		env.Ready()
		next, err := c.maintain(ctx, env, nc, all, w, cur)
		if ctx.Err() != nil {
			if c.ReleaseOnStop {
				err := c.release(nc, all, link, cur)
				env.Log.Info("dhcp6: released", "link", ifname, "err", err)
			}
			return nil
		}
		if err != nil {
			env.Log.Info("dhcp6: binding lost", "err", err)
			c.withdraw(link, cur)
			// The outputs go in the same step as the readiness: an RA
			// stopped for it must see the prefix gone, to deprecate it.
			env.NotReady(outputKeys...)
			cur, published = nil, nil
			continue
		}
		cur = next
	}
}

// acquire solicits, takes the first Advertise that offers an address or
// a prefix (RFC 8415 18.2.9: one offering neither is ignored), requests
// what it offered, and binds whatever the Reply grants: addresses,
// prefixes or both. The Request is built here, not by insomniacslk's
// NewRequestFromAdvertise, which wants an IA_NA in every Advertise and so
// never binds to a server that delegates only a prefix.
func (c *Client) acquire(ctx context.Context, log *slog.Logger, nc *nclient6.Client, all *net.UDPAddr, w asker) (*binding, error) {
	sol, err := w.message(dhcpv6.MessageTypeSolicit, nil, nil, true)
	if err != nil {
		return nil, err
	}
	var ignored string // why the last Advertise was not taken, for the error
	adv, err := nc.SendAndRead(ctx, all, sol, func(m *dhcpv6.Message) bool {
		if !w.answers(dhcpv6.MessageTypeAdvertise, m) {
			return false
		}
		a, err := w.take(nil, m, time.Now())
		switch {
		case err != nil:
			ignored = err.Error()
		case !a.granted:
			ignored = "it offers nothing: " + a.String()
		}
		return err == nil && a.granted
	})
	if err != nil {
		if ignored != "" {
			return nil, fmt.Errorf("solicit: an Advertise was ignored (%s): %w", ignored, err)
		}
		return nil, fmt.Errorf("solicit: %w", err)
	}
	offer, err := w.take(nil, adv, time.Now())
	if err != nil {
		return nil, fmt.Errorf("solicit: %w", err)
	}
	log.Info("dhcp6: advertised", "server", adv.Options.ServerID(), "answer", offer.String())
	req, err := w.message(dhcpv6.MessageTypeRequest, adv.Options.ServerID(), offer.b, false)
	if err != nil {
		return nil, err
	}
	reply, err := nc.SendAndRead(ctx, all, req, w.matcher(dhcpv6.MessageTypeReply))
	if err != nil {
		return nil, fmt.Errorf("request (offered: %s): %w", offer, err)
	}
	got, err := w.take(nil, reply, time.Now())
	if err != nil {
		return nil, fmt.Errorf("request: %w", err)
	}
	if got.b == nil {
		return nil, fmt.Errorf("request: the server granted nothing: %s", got)
	}
	log.Info("dhcp6: bound", "answer", got.String(), "addresses", len(got.b.addrs()), "prefixes", len(got.b.prefixes()))
	return got.b, nil
}

func (w asker) matcher(typ dhcpv6.MessageType) nclient6.Matcher {
	return func(m *dhcpv6.Message) bool { return w.answers(typ, m) }
}

// checkReply is the binding a kept Reply holds: one the server did not
// refuse, with a server ID and a lease in it.
func checkReply(reply *dhcpv6.Message) (*binding, error) {
	if err := refusal(reply); err != nil {
		return nil, err
	}
	if reply.Options.ServerID() == nil {
		return nil, errors.New("the reply has no server ID")
	}
	b := &binding{reply: reply, acquired: time.Now()}
	if len(b.addrs()) == 0 && len(b.prefixes()) == 0 {
		return nil, errors.New("the reply binds neither an address nor a prefix")
	}
	return b, nil
}

// maintain renews at T1 (to its server) and rebinds at T2 (to any),
// returning the new binding, or an error when the binding ends. Each
// Renew and Rebind asks for an address and a prefix, held or not. An IA
// the server no longer has a binding for, or takes back, gets a Request
// at once (RFC 8415 18.2.10.1); one it does not extend (NoAddrsAvail,
// NoPrefixAvail, left out) is kept until its lifetimes end, and the other
// IA is renewed all the same.
func (c *Client) maintain(ctx context.Context, env *supervisor.Env, nc *nclient6.Client, all *net.UDPAddr, w asker, b *binding) (*binding, error) {
	t1, t2, valid := b.times()
	for {
		now := time.Now()
		end := b.acquired.Add(valid)
		at := b.acquired.Add(t1)
		switch {
		case !now.Before(end):
			return nil, errors.New("the binding expired")
		case now.After(at):
			at = now
		}
		if !retry.Sleep(ctx, time.Until(at)) {
			return nil, ctx.Err()
		}
		start := time.Now()
		rebinding := !start.Before(b.acquired.Add(t2))
		typ, server := dhcpv6.MessageTypeRenew, b.reply.Options.ServerID()
		if rebinding {
			typ, server = dhcpv6.MessageTypeRebind, nil // to any server
		}
		msg, err := w.message(typ, server, b, true)
		if err != nil {
			return nil, err
		}
		rctx, cancel := context.WithDeadline(ctx, b.schedule().Deadline(start))
		reply, err := nc.SendAndRead(rctx, all, msg, w.matcher(dhcpv6.MessageTypeReply))
		cancel()
		if err == nil {
			a, err := w.take(b, reply, time.Now())
			switch {
			case err != nil:
				env.Log.Info("dhcp6: refused reply", "err", err, "rebinding", rebinding)
			case a.request:
				env.Log.Info("dhcp6: the server lost or took back a binding; requesting", "answer", a.String(), "rebinding", rebinding)
				if nb := c.request(ctx, env, nc, all, w, b, a, reply); nb != nil {
					return nb, nil
				}
				if a.b == nil {
					return nil, fmt.Errorf("the server took back all it had bound (%s)", a)
				}
				// Nothing more from the Request: what the Renew or
				// Rebind gave stands; retry at the usual times.
				if a.granted {
					return a.b, nil
				}
			case a.granted:
				env.Log.Info("dhcp6: renewed", "rebinding", rebinding, "answer", a.String(), "addresses", len(a.b.addrs()), "prefixes", len(a.b.prefixes()))
				return a.b, nil
			default:
				env.Log.Info("dhcp6: refused reply", "err", "it extends nothing: "+a.String(), "rebinding", rebinding)
			}
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if !retry.Sleep(ctx, time.Until(b.schedule().RetryAt(start, time.Now()))) {
			return nil, ctx.Err()
		}
	}
}

// request sends a Request for all IAs to the server that answered a Renew
// or Rebind with a = take(b, reply) (RFC 8415 18.2.10.1), and returns the
// binding its Reply leaves, or nil if it gave nothing.
func (c *Client) request(ctx context.Context, env *supervisor.Env, nc *nclient6.Client, all *net.UDPAddr, w asker, b *binding, a answer, reply *dhcpv6.Message) *binding {
	// The hints are what is still held: a lease the server took back is
	// not asked for again.
	hints := a.b
	msg, err := w.message(dhcpv6.MessageTypeRequest, reply.Options.ServerID(), hints, true)
	if err != nil {
		env.Log.Warn("dhcp6: request", "err", err)
		return nil
	}
	start := time.Now()
	// Within what is left of the renewal or rebinding time: a server that
	// does not answer leaves the rest to the next Renew or Rebind.
	rctx, cancel := context.WithDeadline(ctx, b.schedule().Deadline(start))
	defer cancel()
	got, err := nc.SendAndRead(rctx, all, msg, w.matcher(dhcpv6.MessageTypeReply))
	if err != nil {
		env.Log.Info("dhcp6: no reply to the request", "err", err)
		return nil
	}
	ra, err := w.take(a.b, got, time.Now())
	if err != nil || !ra.granted {
		env.Log.Info("dhcp6: request refused", "err", err, "answer", ra.String())
		return nil
	}
	env.Log.Info("dhcp6: renewed", "by", "request", "answer", ra.String(), "addresses", len(ra.b.addrs()), "prefixes", len(ra.b.prefixes()))
	return ra.b
}

// apply puts the addresses on the link with what is left of their
// lifetimes.
func (c *Client) apply(link netlink.Link, b *binding) error {
	elapsed := time.Since(b.acquired)
	// Rounded up: the kernel keeps an address until the client itself
	// takes it off at the end, never a moment less than the binding.
	left := func(d time.Duration) int { return int((max(d-elapsed, 0) + time.Second - 1) / time.Second) }
	for _, a := range b.addrs() {
		if left(a.ValidLifetime) == 0 {
			continue // 0 would be "forever" to the kernel
		}
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: a.IPv6Addr, Mask: net.CIDRMask(128, 128)},
			ValidLft: left(a.ValidLifetime), PreferedLft: left(a.PreferredLifetime), Flags: unix.IFA_F_NODAD}
		if err := c.NL.AddrReplace(link, addr); err != nil {
			return fmt.Errorf("add address %s to %s: %w", a.IPv6Addr, link.Attrs().Name, err)
		}
	}
	return nil
}

// withdrawGone takes off the link the addresses of old that b no longer
// holds (the server took them back, or gave others).
func (c *Client) withdrawGone(link netlink.Link, old, b *binding) {
	for _, a := range old.addrs() {
		if !slices.ContainsFunc(b.addrs(), func(n *dhcpv6.OptIAAddress) bool { return n.IPv6Addr.Equal(a.IPv6Addr) }) {
			c.NL.AddrDel(link, &netlink.Addr{IPNet: &net.IPNet{IP: a.IPv6Addr, Mask: net.CIDRMask(128, 128)}})
		}
	}
}

func (c *Client) withdraw(link netlink.Link, b *binding) {
	for _, a := range b.addrs() {
		c.NL.AddrDel(link, &netlink.Addr{IPNet: &net.IPNet{IP: a.IPv6Addr, Mask: net.CIDRMask(128, 128)}})
	}
}

// message is a message of typ about the binding: the client's ID, the
// server's if toServer, and the IAs as the server granted them.
func (b binding) message(typ dhcpv6.MessageType, toServer bool) (*dhcpv6.Message, error) {
	msg, err := dhcpv6.NewMessage()
	if err != nil {
		return nil, err
	}
	msg.MessageType = typ
	msg.AddOption(dhcpv6.OptClientID(b.reply.Options.ClientID()))
	if toServer {
		msg.AddOption(dhcpv6.OptServerID(b.reply.Options.ServerID()))
	}
	msg.AddOption(dhcpv6.OptElapsedTime(0))
	if ia := b.iana(); ia != nil {
		msg.AddOption(ia)
	}
	if pd := b.iapd(); pd != nil {
		msg.AddOption(pd)
	}
	return msg, nil
}

// release gives the binding back to its server (RFC 8415 18.2.7) and
// takes the addresses off the link and the binding out of the state
// folder; a server that does not answer within a second is not waited
// for. The error says whether the server answered.
func (c *Client) release(nc *nclient6.Client, all *net.UDPAddr, link netlink.Link, b *binding) error {
	defer os.Remove(c.leaseFile(link.Attrs().Name))
	defer c.withdraw(link, b)
	msg, err := b.message(dhcpv6.MessageTypeRelease, true)
	if err != nil {
		return fmt.Errorf("dhcp6: release on %s: %w", link.Attrs().Name, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := nc.SendAndRead(ctx, all, msg, nclient6.IsMessageType(dhcpv6.MessageTypeReply)); err != nil {
		return fmt.Errorf("dhcp6: release on %s, no reply from the server: %w", link.Attrs().Name, err)
	}
	return nil
}

// publish sets the binding's outputs. Entries are replaced in place, not
// deleted first, so a renewal that changes nothing changes no output (and
// re-runs no reader); entries beyond the binding's go.
func publish(env *supervisor.Env, b, prev *binding) {
	secs := func(d time.Duration) int { return int(d.Seconds()) }
	if prev != nil {
		for i := len(b.addrs()); i < len(prev.addrs()); i++ {
			env.DeleteOutput(Address(i).Table)
		}
		for i := len(b.prefixes()); i < len(prev.prefixes()); i++ {
			env.DeleteOutput(Prefix(i).Table)
		}
	}
	for i, a := range b.addrs() {
		o := Address(i)
		addr, _ := netip.AddrFromSlice(a.IPv6Addr)
		o.Addr.Set(env, addr)
		o.Len.Set(env, 128)
		o.Preferred.Set(env, secs(a.PreferredLifetime))
		o.Valid.Set(env, secs(a.ValidLifetime))
	}
	for i, p := range b.prefixes() {
		o := Prefix(i)
		ones, _ := p.Prefix.Mask.Size()
		addr, _ := netip.AddrFromSlice(p.Prefix.IP)
		o.Addr.Set(env, addr)
		o.Len.Set(env, ones)
		o.Preferred.Set(env, secs(p.PreferredLifetime))
		o.Valid.Set(env, secs(p.ValidLifetime))
	}
	var dns []string
	for _, ip := range b.reply.Options.DNS() {
		dns = append(dns, ip.String())
	}
	DNS.Set(env, strings.Join(dns, " "))
	Server.Set(env, b.reply.Options.ServerID().String())
	// When the lifetimes above were granted: readers count down from it.
	Renewed.Set(env, b.acquired.Unix())
}

// idAddr is the hardware address the exchange is keyed by (the IAID is its
// last four bytes): the link's own, or for a link without one (ppp0) a
// locally administered address made from the DUID, so it stays the same.
func idAddr(hw net.HardwareAddr, duid dhcpv6.DUID) net.HardwareAddr {
	if len(hw) >= 4 {
		return hw
	}
	sum := sha256.Sum256(duid.ToBytes())
	return net.HardwareAddr{sum[0]&0xfe | 0x02, sum[1], sum[2], sum[3], sum[4], sum[5]}
}

// waitLinkLocal waits up to limit for link to hold a link-local address
// that is no longer tentative.
func (c *Client) waitLinkLocal(ctx context.Context, link netlink.Link, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for {
		addrs, err := c.NL.AddrList(link, netlink.FAMILY_V6)
		if err != nil {
			return false
		}
		for _, a := range addrs {
			if a.IP.IsLinkLocalUnicast() && a.Flags&(unix.IFA_F_TENTATIVE|unix.IFA_F_DADFAILED) == 0 {
				return true
			}
		}
		if time.Now().After(deadline) || !retry.Sleep(ctx, 50*time.Millisecond) {
			return false
		}
	}
}

// listen opens port 546 on the link. It binds to the wildcard address on
// the device, not to the link-local address, which is still tentative
// (duplicate address detection) for a moment after the link comes up.
func listen(ctx context.Context, ifname string) (net.PacketConn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, ifname)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	conn, err := lc.ListenPacket(ctx, "udp6", "[::]:546")
	if err != nil {
		return nil, fmt.Errorf("dhcpv6 client on %s: %w", ifname, err)
	}
	return conn, nil
}
