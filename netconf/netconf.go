// Package netconf applies links, bridges, VLANs, addresses, routes and
// sysctls through netlink, as services of the agent's supervisor. Applying
// is idempotent: state that is already right is left alone, so a restarted
// roostd adopts the live network without a single netlink change. It never
// touches a link the config does not name.
package netconf

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
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
	env.SetOutput("ifname", a.Name)
	env.SetOutput("ifindex", strconv.Itoa(a.Index))
	env.SetOutput("mtu", strconv.Itoa(a.MTU))
	if len(a.HardwareAddr) > 0 {
		env.SetOutput("mac", a.HardwareAddr.String())
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

// Remove takes the link out of its bridge; the device itself is not ours.
func (s *Link) Remove(context.Context) error {
	if s.BridgeRef == nil {
		return nil
	}
	l, err := s.NL.LinkByName(s.Device)
	if err != nil || l.Attrs().MasterIndex == 0 {
		return nil
	}
	return s.NL.LinkSetNoMaster(l)
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

// Remove deletes the bridge.
func (s *Bridge) Remove(context.Context) error { return deleteLink(s.NL, s.Name) }

func deleteLink(h *netlink.Handle, name string) error {
	l, err := h.LinkByName(name)
	if err != nil {
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
				err = fmt.Errorf("%w: this kernel has no 802.1Q VLAN support (CONFIG_VLAN_8021Q)", err)
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

// Remove deletes the VLAN device.
func (s *VLAN) Remove(context.Context) error { return deleteLink(s.NL, s.Name) }

// Address puts a static address on a link.
type Address struct {
	NL      *netlink.Handle
	LinkRef supervisor.Ref
	Prefix  *net.IPNet // the address and its prefix length
	link    string
}

// Run adds the address unless it is there.
func (s *Address) Run(ctx context.Context, env *supervisor.Env) error {
	name, err := env.Require(s.LinkRef)
	if err != nil {
		return err
	}
	s.link = name
	l, err := s.NL.LinkByName(name)
	if err != nil {
		return fmt.Errorf("link %s: %w", name, err)
	}
	if !hasAddr(s.NL, l, s.Prefix) {
		addr := &netlink.Addr{IPNet: s.Prefix}
		if s.Prefix.IP.To4() == nil {
			addr.Flags = unix.IFA_F_NODAD // a static router address: no duplicate detection delay
		}
		if err := s.NL.AddrAdd(l, addr); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("add address %s to %s: %w", s.Prefix, name, err)
		}
	}
	ones, _ := s.Prefix.Mask.Size()
	env.SetOutput("ifname", name)
	env.SetOutput("address", s.Prefix.IP.String())
	env.SetOutput("prefix-length", strconv.Itoa(ones))
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

// Remove deletes the address.
func (s *Address) Remove(context.Context) error {
	links, _ := s.NL.LinkList()
	for _, l := range links {
		if hasAddr(s.NL, l, s.Prefix) {
			if err := s.NL.AddrDel(l, &netlink.Addr{IPNet: s.Prefix}); err != nil {
				return fmt.Errorf("delete address %s from %s: %w", s.Prefix, l.Attrs().Name, err)
			}
		}
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
	return &netlink.Route{LinkIndex: l.Attrs().Index, Dst: s.Destination, Gw: gw, Priority: s.Metric, Table: s.table()}, nil
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
	env.SetOutput("destination", s.Destination.String())
	if r.Gw != nil {
		env.SetOutput("gateway", r.Gw.String())
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

// Remove deletes the route, whichever gateway it had.
func (s *Route) Remove(context.Context) error {
	routes, err := s.live()
	if err != nil {
		return err
	}
	for _, r := range routes {
		if r.Priority == kernelMetric(s.family(), s.Metric) {
			if err := s.NL.RouteDel(&r); err != nil {
				return fmt.Errorf("delete route %s: %w", s.Destination, err)
			}
		}
	}
	return nil
}

// Sysctl sets kernel parameters (net.* ones are per network namespace).
type Sysctl struct {
	ProcSys string // /proc/sys
	Values  map[string]string
}

func (s *Sysctl) file(key string) string {
	return filepath.Join(s.ProcSys, strings.ReplaceAll(key, ".", "/"))
}

// Run writes the values that differ.
func (s *Sysctl) Run(ctx context.Context, env *supervisor.Env) error {
	for k, v := range s.Values {
		cur, err := os.ReadFile(s.file(k))
		if err != nil {
			return fmt.Errorf("sysctl %s: %w", k, err)
		}
		if strings.TrimSpace(string(cur)) == v {
			continue
		}
		if err := os.WriteFile(s.file(k), []byte(v), 0o644); err != nil {
			return fmt.Errorf("set sysctl %s to %s: %w", k, v, err)
		}
		env.Log.Info("sysctl set", "key", k, "value", v)
	}
	env.Ready()
	<-ctx.Done()
	return nil
}

// Remove leaves the values: the kernel's defaults are not known.
func (s *Sysctl) Remove(context.Context) error { return nil }
