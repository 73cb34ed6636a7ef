// Package netconf applies links, bridges, VLANs, addresses, routes and
// sysctls through netlink, as services of the agent's supervisor. Applying
// is idempotent: state that is already right is left alone, so a restarted
// roostd adopts the live network without a single netlink change. It never
// touches a link the config does not name. Remove, when the config drops or
// changes a service, undoes what roostd put there and nothing else: the
// addresses and routes it added carry its mark (Proto), a sysctl's earlier
// value is kept in the state folder (SysctlRestore), and each Remove says
// how it finds what is its own.
package netconf

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/roostrouter/roost/agent/supervisor"
)

// linkReady reports whether a link carries traffic: its carrier is up, or
// it is a device without a carrier notion that is administratively up.
func linkReady(l netlink.Link) bool {
	a := l.Attrs()
	if a.Flags&net.FlagUp == 0 {
		return false
	}
	switch a.OperState {
	case netlink.OperUp:
		return true
	case netlink.OperUnknown:
		return a.RawFlags&unix.IFF_LOWER_UP != 0
	}
	return false
}

func publishLink(env *supervisor.Env, l netlink.Link) {
	a := l.Attrs()
	IfName.Set(env, a.Name)
	IfIndex.Set(env, a.Index)
	LinkMTU.Set(env, a.MTU)
	if len(a.HardwareAddr) > 0 {
		LinkMAC.Set(env, a.HardwareAddr.String())
	}
}

// watchLink follows a link's netlink updates until ctx ends, calling apply
// whenever it appears or changes, and telling the supervisor whether it is
// ready. ready decides readiness (carrier, or admin state for bridges).
func watchLink(ctx context.Context, h *netlink.Handle, env *supervisor.Env, name string, apply func(netlink.Link) (netlink.Link, error), ready func(netlink.Link) bool) error {
	updates := make(chan netlink.LinkUpdate, 64)
	done := make(chan struct{})
	defer close(done)
	if err := netlink.LinkSubscribeWithOptions(updates, done, netlink.LinkSubscribeOptions{ErrorCallback: func(err error) {
		env.Log.Warn("link updates", "err", err)
	}}); err != nil {
		return fmt.Errorf("subscribe to link updates: %w", err)
	}
	wasReady := false
	handle := func(l netlink.Link) error {
		l, err := apply(l)
		if err != nil {
			return err
		}
		publishLink(env, l)
		if r := ready(l); r != wasReady {
			if r {
				env.Ready()
			} else {
				env.NotReady()
			}
			wasReady = r
		}
		return nil
	}
	if l, err := h.LinkByName(name); err == nil {
		if err := handle(l); err != nil {
			return err
		}
	} else {
		env.Log.Info("waiting for link", "link", name)
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case u, ok := <-updates:
			if !ok {
				return errors.New("link updates stopped")
			}
			if u.Link.Attrs().Name != name {
				continue
			}
			// Updates queue up while we change the link: read its state
			// now rather than trust the update's snapshot, or a stale
			// "down" from before our own "set up" would flap dependents.
			l, err := h.LinkByName(name)
			if err != nil || u.Header.Type == unix.RTM_DELLINK && l == nil {
				env.Log.Info("link gone", "link", name)
				if wasReady {
					env.NotReady()
					wasReady = false
				}
				continue
			}
			if err := handle(l); err != nil {
				return err
			}
		}
	}
}

// Link configures an existing device: MTU, MAC, its bridge, up. It is ready
// while it has carrier.
type Link struct {
	NL        *netlink.Handle
	Device    string
	MTU       int
	MAC       net.HardwareAddr
	BridgeRef *supervisor.Ref // the bridge service whose ifname it joins
}

// Run keeps the link configured.
func (s *Link) Run(ctx context.Context, env *supervisor.Env) error {
	var master string
	if s.BridgeRef != nil {
		var err error
		if master, err = env.Require(*s.BridgeRef); err != nil {
			return fmt.Errorf("bridge: %w", err)
		}
	}
	return watchLink(ctx, s.NL, env, s.Device, func(l netlink.Link) (netlink.Link, error) {
		return s.apply(l, master)
	}, linkReady)
}

func (s *Link) apply(l netlink.Link, master string) (netlink.Link, error) {
	a := l.Attrs()
	changed := false
	if s.MTU > 0 && a.MTU != s.MTU {
		if err := s.NL.LinkSetMTU(l, s.MTU); err != nil {
			return l, fmt.Errorf("set MTU of %s to %d: %w", s.Device, s.MTU, err)
		}
		changed = true
	}
	if len(s.MAC) > 0 && a.HardwareAddr.String() != s.MAC.String() {
		if err := s.NL.LinkSetHardwareAddr(l, s.MAC); err != nil {
			return l, fmt.Errorf("set MAC of %s to %s: %w", s.Device, s.MAC, err)
		}
		changed = true
	}
	if master != "" {
		br, err := s.NL.LinkByName(master)
		if err != nil {
			return l, fmt.Errorf("bridge %s of %s: %w", master, s.Device, err)
		}
		if a.MasterIndex != br.Attrs().Index {
			if err := s.NL.LinkSetMaster(l, br); err != nil {
				return l, fmt.Errorf("add %s to bridge %s: %w", s.Device, master, err)
			}
			changed = true
		}
	}
	if a.Flags&net.FlagUp == 0 {
		if err := s.NL.LinkSetUp(l); err != nil {
			return l, fmt.Errorf("set %s up: %w", s.Device, err)
		}
		changed = true
	}
	if changed {
		return s.NL.LinkByName(s.Device)
	}
	return l, nil
}

// Remove takes the link out of the bridge it joined, if it is in a
// bridge. The device is not roostd's: it stays, up, with the MTU and MAC it
// has (what it had before roostd set them is not known).
func (s *Link) Remove(context.Context) error {
	if s.BridgeRef == nil {
		return nil
	}
	l, err := s.NL.LinkByName(s.Device)
	if err != nil || l.Attrs().MasterIndex == 0 {
		return nil
	}
	// Only a bridge: a bond or VRF the device was put in by hand is not
	// what roostd did.
	if m, err := s.NL.LinkByIndex(l.Attrs().MasterIndex); err != nil || m.Type() != "bridge" {
		return nil
	}
	if err := s.NL.LinkSetNoMaster(l); err != nil {
		return fmt.Errorf("take %s out of its bridge: %w", s.Device, err)
	}
	return nil
}

// Bridge creates a bridge device. It is ready once it is up; its members
// join it (they depend on it, not the reverse).
type Bridge struct {
	NL   *netlink.Handle
	Name string
	MTU  int
}

// Run keeps the bridge in place.
func (s *Bridge) Run(ctx context.Context, env *supervisor.Env) error {
	if _, err := s.NL.LinkByName(s.Name); err != nil {
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: s.Name, MTU: s.MTU}}
		if err := s.NL.LinkAdd(br); err != nil {
			if errors.Is(err, unix.EOPNOTSUPP) {
				err = fmt.Errorf("%w: this kernel has no bridge support: load the bridge module (CONFIG_BRIDGE)", err)
			}
			return fmt.Errorf("create bridge %s: %w", s.Name, err)
		}
	}
	up := func(l netlink.Link) bool { return l.Attrs().Flags&net.FlagUp != 0 }
	return watchLink(ctx, s.NL, env, s.Name, func(l netlink.Link) (netlink.Link, error) {
		if l.Type() != "bridge" {
			return l, fmt.Errorf("%s exists and is a %s, not a bridge", s.Name, l.Type())
		}
		if l.Attrs().Flags&net.FlagUp == 0 {
			if err := s.NL.LinkSetUp(l); err != nil {
				return l, fmt.Errorf("set %s up: %w", s.Name, err)
			}
			return s.NL.LinkByName(s.Name)
		}
		return l, nil
	}, up)
}

// Remove deletes the bridge, if the device of that name is a bridge.
func (s *Bridge) Remove(context.Context) error {
	return deleteLink(s.NL, s.Name, func(l netlink.Link) bool { return l.Type() == "bridge" })
}

// deleteLink deletes the device name if ours says it is the one roostd
// made; another device that took the name is left alone.
func deleteLink(h *netlink.Handle, name string, ours func(netlink.Link) bool) error {
	l, err := h.LinkByName(name)
	if err != nil || !ours(l) {
		return nil
	}
	if err := h.LinkDel(l); err != nil {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return nil
}

// VLAN creates a VLAN device on a parent link.
type VLAN struct {
	NL        *netlink.Handle
	Name      string
	ID        int
	ParentRef supervisor.Ref // the parent service's ifname
}

// Run keeps the VLAN device in place.
func (s *VLAN) Run(ctx context.Context, env *supervisor.Env) error {
	parentName, err := env.Require(s.ParentRef)
	if err != nil {
		return fmt.Errorf("parent: %w", err)
	}
	parent, err := s.NL.LinkByName(parentName)
	if err != nil {
		return fmt.Errorf("parent %s of %s: %w", parentName, s.Name, err)
	}
	if l, err := s.NL.LinkByName(s.Name); err == nil {
		if v, ok := l.(*netlink.Vlan); !ok || v.VlanId != s.ID || l.Attrs().ParentIndex != parent.Attrs().Index {
			return fmt.Errorf("%s exists but is not VLAN %d on %s", s.Name, s.ID, parentName)
		}
	} else {
		v := &netlink.Vlan{LinkAttrs: netlink.LinkAttrs{Name: s.Name, ParentIndex: parent.Attrs().Index}, VlanId: s.ID}
		if err := s.NL.LinkAdd(v); err != nil {
			if errors.Is(err, unix.EOPNOTSUPP) {
				err = fmt.Errorf("%w: this kernel has no 802.1Q VLAN support: load the 8021q module (CONFIG_VLAN_8021Q)", err)
			}
			return fmt.Errorf("create VLAN %s (%d on %s): %w", s.Name, s.ID, parentName, err)
		}
	}
	return watchLink(ctx, s.NL, env, s.Name, func(l netlink.Link) (netlink.Link, error) {
		if l.Attrs().Flags&net.FlagUp == 0 {
			if err := s.NL.LinkSetUp(l); err != nil {
				return l, fmt.Errorf("set %s up: %w", s.Name, err)
			}
			return s.NL.LinkByName(s.Name)
		}
		return l, nil
	}, linkReady)
}

// Remove deletes the VLAN device, if the device of that name is VLAN ID.
// (Its parent is the parent service's output, not known here: the ID and
// the name are the declaration's.)
func (s *VLAN) Remove(context.Context) error {
	return deleteLink(s.NL, s.Name, func(l netlink.Link) bool {
		v, ok := l.(*netlink.Vlan)
		return ok && v.VlanId == s.ID
	})
}

// Address puts a static address on a link. It adds it with roostd's mark
// (Proto), and Remove deletes only a copy that carries it; one found in
// place (added by hand, or by a roostd before the mark) is used as it is
// and left there.
type Address struct {
	NL      *netlink.Handle
	LinkRef supervisor.Ref
	Prefix  *net.IPNet // the address and its prefix length
}

// Run adds the address unless it is there.
func (s *Address) Run(ctx context.Context, env *supervisor.Env) error {
	name, err := env.Require(s.LinkRef)
	if err != nil {
		return err
	}
	l, err := s.NL.LinkByName(name)
	if err != nil {
		return fmt.Errorf("link %s: %w", name, err)
	}
	if !hasAddr(s.NL, l, s.Prefix) {
		addr := &netlink.Addr{IPNet: s.Prefix}
		if s.Prefix.IP.To4() == nil {
			addr.Flags = unix.IFA_F_NODAD // a static router address: no duplicate detection delay
		}
		if err := addAddr(l, addr); err != nil && !errors.Is(err, unix.EEXIST) {
			return err
		}
	}
	ones, _ := s.Prefix.Mask.Size()
	ip, _ := netip.AddrFromSlice(s.Prefix.IP)
	IfName.Set(env, name)
	Addr.Set(env, ip.Unmap())
	PrefixLength.Set(env, ones)
	env.Ready()
	<-ctx.Done()
	return nil
}

func hasAddr(h *netlink.Handle, l netlink.Link, p *net.IPNet) bool {
	addrs, err := h.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if a.IPNet.String() == p.String() {
			return true
		}
	}
	return false
}

// Remove deletes the address from the link where it carries roostd's
// mark, and from no other: the same address added by hand, to another
// link or to this one, stays. The link is the kernel's answer, not the
// link service's output, which a fresh instance cannot read (see
// addrToRemove for the cases where it cannot tell).
func (s *Address) Remove(context.Context) error {
	live, err := listAddrs(netlink.FAMILY_ALL)
	if err != nil {
		return err
	}
	ip, _ := netip.AddrFromSlice(s.Prefix.IP)
	ones, _ := s.Prefix.Mask.Size()
	index, err := addrToRemove(live, netip.PrefixFrom(ip.Unmap(), ones))
	if err != nil || index == 0 {
		return err
	}
	l, err := s.NL.LinkByIndex(index)
	if err != nil {
		return nil // gone, and the address with it
	}
	if err := s.NL.AddrDel(l, &netlink.Addr{IPNet: s.Prefix}); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
		return fmt.Errorf("delete address %s from %s: %w", s.Prefix, l.Attrs().Name, err)
	}
	return nil
}

// Route adds a route through a link, its gateway given or read from
// another service's output.
type Route struct {
	NL          *netlink.Handle
	LinkRef     supervisor.Ref
	Destination *net.IPNet
	Gateway     net.IP
	GatewayRef  *supervisor.Ref
	Metric      int
	Table       int
}

func (s *Route) route(env *supervisor.Env) (*netlink.Route, error) {
	name, err := env.Require(s.LinkRef)
	if err != nil {
		return nil, err
	}
	l, err := s.NL.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("link %s: %w", name, err)
	}
	gw := s.Gateway
	if s.GatewayRef != nil {
		v, err := env.Require(*s.GatewayRef)
		if err != nil {
			return nil, fmt.Errorf("gateway: %w", err)
		}
		if gw = net.ParseIP(strings.TrimSpace(v)); gw == nil {
			return nil, fmt.Errorf("gateway %q from %s/%s is not an IP address", v, s.GatewayRef.Service, s.GatewayRef.Key)
		}
	}
	return &netlink.Route{LinkIndex: l.Attrs().Index, Dst: s.Destination, Gw: gw, Priority: s.Metric, Table: s.table(), Protocol: Proto}, nil
}

// Run adds the route unless it is there, and keeps it there: a route
// deleted by hand is put back, and so is one the kernel dropped when the
// link's last IPv4 address went (pppd sets ppp0's address in steps as IPCP
// completes; a DHCP lease can change the address). The kernel announces
// no deletion for those, so an address change on the link is a reason to
// look too. While the route cannot be put back, the service is not ready
// and tries again every 2 s.
func (s *Route) Run(ctx context.Context, env *supervisor.Env) error {
	// Subscribed before the route is added, so that no change goes unseen.
	routes := make(chan netlink.RouteUpdate, 64)
	addrs := make(chan netlink.AddrUpdate, 64)
	logErr := func(err error) {
		if ctx.Err() == nil { // not the subscription closing as we stop
			env.Log.Warn("netlink updates", "err", err)
		}
	}
	if err := netlink.RouteSubscribeWithOptions(routes, ctx.Done(), netlink.RouteSubscribeOptions{ErrorCallback: logErr}); err != nil {
		return fmt.Errorf("subscribe to route updates: %w", err)
	}
	if err := netlink.AddrSubscribeWithOptions(addrs, ctx.Done(), netlink.AddrSubscribeOptions{ErrorCallback: logErr}); err != nil {
		return fmt.Errorf("subscribe to address updates: %w", err)
	}
	r, err := s.route(env)
	if err != nil {
		return err
	}
	if !s.present(r) {
		if err := s.NL.RouteReplace(r); err != nil {
			return fmt.Errorf("add route %s via %v: %w", s.Destination, r.Gw, err)
		}
	}
	dst, _ := netip.ParsePrefix(s.Destination.String())
	Destination.Set(env, dst)
	if gw, ok := netip.AddrFromSlice(r.Gw); ok {
		Gateway.Set(env, gw.Unmap())
	}
	env.Ready()
	var retry <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case u, ok := <-routes:
			if !ok {
				return errors.New("route updates stopped")
			}
			if u.Type != unix.RTM_DELROUTE || u.Table != s.table() || u.Dst == nil || u.Dst.String() != s.Destination.String() {
				continue
			}
		case u, ok := <-addrs:
			if !ok {
				return errors.New("address updates stopped")
			}
			if u.LinkIndex != r.LinkIndex {
				continue
			}
		case <-retry:
		}
		if s.present(r) {
			continue
		}
		if err := s.NL.RouteReplace(r); err != nil {
			if retry == nil {
				env.Log.Warn("route gone; cannot put it back yet", "destination", s.Destination, "err", err)
				env.NotReady()
			}
			retry = time.After(2 * time.Second)
			continue
		}
		env.Log.Info("route gone; put back", "destination", s.Destination, "gateway", r.Gw)
		env.Ready()
		retry = nil
	}
}

// family and table say where the kernel keeps this route.
func (s *Route) family() int {
	if s.Destination.IP.To4() == nil {
		return netlink.FAMILY_V6
	}
	return netlink.FAMILY_V4
}

func (s *Route) table() int {
	if s.Table == 0 {
		return unix.RT_TABLE_MAIN
	}
	return s.Table
}

// live lists the kernel's routes to this destination in this table.
func (s *Route) live() ([]netlink.Route, error) {
	return s.NL.RouteListFiltered(s.family(), &netlink.Route{Table: s.table(), Dst: s.Destination},
		netlink.RT_FILTER_TABLE|netlink.RT_FILTER_DST)
}

func (s *Route) present(r *netlink.Route) bool {
	routes, err := s.live()
	if err != nil {
		return false
	}
	for _, have := range routes {
		if have.LinkIndex == r.LinkIndex && have.Gw.Equal(r.Gw) && have.Priority == kernelMetric(s.family(), r.Priority) {
			return true
		}
	}
	return false
}

// kernelMetric is the metric the kernel stores: IPv6 routes without one get 1024.
func kernelMetric(family, metric int) int {
	if family == netlink.FAMILY_V6 && metric == 0 {
		return 1024
	}
	return metric
}

// Remove deletes the route roostd added: the declaration's destination,
// table and metric, with roostd's mark (Proto), and the declared gateway
// if it is a fixed one. One gateway read from another service's output is
// whichever the route had; its link is the one the kernel shows, since a
// fresh instance cannot read the link service's output. Neither can be
// another route service's: the kernel keeps one route for a destination,
// table and metric. A route to the same destination added by hand or by
// another program (the kernel's "proto boot", "ra", "dhcp"), or found in
// place when roostd started, stays.
func (s *Route) Remove(context.Context) error {
	routes, err := s.live()
	if err != nil {
		return fmt.Errorf("list routes to %s: %w", s.Destination, err)
	}
	for _, r := range routes {
		if !s.added(r) {
			continue
		}
		if err := s.NL.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("delete route %s via %v: %w", s.Destination, r.Gw, err)
		}
	}
	return nil
}

// added says whether a live route to the destination, in the table, is
// the one this service added.
func (s *Route) added(r netlink.Route) bool {
	return r.Protocol == Proto && r.Priority == kernelMetric(s.family(), s.Metric) &&
		(s.GatewayRef != nil || s.Gateway == nil && r.Gw == nil || r.Gw.Equal(s.Gateway))
}

// Sysctl sets kernel parameters (net.* ones are per network namespace).
// With a StateDir it keeps, in $STATE/sysctl, the value each one had
// before roostd first changed it, and Remove puts those back.
type Sysctl struct {
	ProcSys  string // /proc/sys
	Values   map[string]string
	StateDir string // $STATE; "" keeps no record, and Remove leaves the values
}

func (s *Sysctl) restore() SysctlRestore {
	r := SysctlRestore{ProcSys: s.ProcSys}
	if s.StateDir != "" {
		r.Dir = filepath.Join(s.StateDir, "sysctl")
	}
	return r
}

// keys are the parameters in the order they are written: the ones that
// set others (ip_forward sets every conf/*/forwarding, conf/all sets every
// link's) before those they would override, so a link's own value set in
// the same service stands; Remove restores in the reverse order.
func (s *Sysctl) keys() []string {
	rank := func(k string) int {
		switch {
		case k == "net.ipv4.ip_forward":
			return 0
		case strings.Contains(k, ".conf.all."):
			return 1
		case strings.Contains(k, ".conf.default."):
			return 2
		}
		return 3
	}
	keys := make([]string, 0, len(s.Values))
	for k := range s.Values {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int { return cmp.Or(cmp.Compare(rank(a), rank(b)), strings.Compare(a, b)) })
	return keys
}

func sysctlPath(key string) string { return strings.ReplaceAll(key, ".", "/") }

// Run writes the values that differ.
func (s *Sysctl) Run(ctx context.Context, env *supervisor.Env) error {
	r := s.restore()
	for _, k := range s.keys() {
		v := s.Values[k]
		wrote, err := r.Set(sysctlPath(k), v)
		if errors.Is(err, ErrNotRecorded) {
			env.Log.Warn("state folder", "err", err)
		} else if err != nil {
			return err
		}
		if wrote {
			env.Log.Info("sysctl set", "key", k, "value", v)
		}
	}
	env.Ready()
	<-ctx.Done()
	return nil
}

// Remove puts back the value each parameter had before roostd first set
// it, as recorded in $STATE/sysctl, across restarts of roostd. A parameter
// roostd found as it wanted it was not changed, and is left as it is; so
// is every one when there is no StateDir. Forwarding parameters too: a
// dropped "net.ipv4.ip_forward": "1" turns forwarding off again if it was
// off.
func (s *Sysctl) Remove(context.Context) error {
	r := s.restore()
	keys := s.keys()
	var errs []error
	for i := len(keys) - 1; i >= 0; i-- {
		errs = append(errs, r.Restore(sysctlPath(keys[i])))
	}
	return errors.Join(errs...)
}
