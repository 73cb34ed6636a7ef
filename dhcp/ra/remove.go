package ra

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/mdlayher/ndp"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/roostrouter/roost/netconf"
)

// finalAdvertisements is how many final advertisements Remove sends, a
// moment apart: a multicast can be lost (on Wi-Fi above all), and RFC 4861
// 6.2.5 allows up to three (MAX_FINAL_RTR_ADVERTISEMENTS).
const finalAdvertisements = 3

// linkRecord is where Run notes the link its LinkRef named, for Remove:
// the state file is named by the link, and a fresh instance, perhaps in a
// later roostd, has no outputs to read.
func (s *Service) linkRecord() string {
	return filepath.Join(s.StateDir, "ra-link-"+s.LinkRef.Service)
}

// Remove undoes the service when the config drops it or changes it. The
// LAN is told at once, with final advertisements (RFC 4861 6.2.5): router
// lifetime 0, so hosts drop their default route through the router, and
// each prefix it announced that is still valid with preferred and valid
// lifetimes 0 (RFC 7084 L-13's choice (a), as no later advertisement will
// count a valid lifetime down), so hosts stop using their addresses in it
// and drop its on-link route (hosts that follow RFC 4862 5.5.3 e) keep
// the address, deprecated, up to two hours). The DNS servers it announced
// (the router's addresses in them) get lifetime 0 too. Then the router's
// ::1 in each prefix comes off the LAN, and the state file and the link
// record go. A changed service is removed and started again, so hosts see
// the prefix withdrawn and, at the new service's first advertisement, back.
func (s *Service) Remove(ctx context.Context) error {
	if s.StateDir == "" {
		return nil
	}
	ifname := netconf.RememberedLink(s.linkRecord())
	if ifname == "" {
		return nil // it never ran: nothing of its own
	}
	var errs []error
	list, err := s.read(ifname)
	errs = append(errs, err)
	named := readServers(s.dnsFile(ifname))
	if link, err := s.NL.LinkByName(ifname); err == nil && len(list) > 0 {
		errs = append(errs, s.sendFinal(ctx, ifname, list, named))
		for _, a := range list {
			router := &net.IPNet{IP: a.Prefix.Addr().Next().AsSlice(), Mask: net.CIDRMask(64, 128)}
			if err := s.NL.AddrDel(link, &netlink.Addr{IPNet: router}); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
				errs = append(errs, fmt.Errorf("ra: delete %s from %s: %w", router, ifname, err))
			}
		}
	}
	for _, f := range []string{s.stateFile(ifname), s.dnsFile(ifname), s.linkRecord()} {
		if err := os.Remove(f); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("ra: remove %s: %w", f, err))
		}
	}
	return errors.Join(errs...)
}

// sendFinal sends the final advertisements on ifname.
func (s *Service) sendFinal(ctx context.Context, ifname string, list []announced, named []netip.Addr) error {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return fmt.Errorf("ra: final advertisement on %s: %w", ifname, err)
	}
	conn, _, err := ndp.Listen(ifi, ndp.LinkLocal)
	if err != nil {
		return fmt.Errorf("ra: final advertisement on %s: %w", ifname, err)
	}
	defer conn.Close()
	ra := finalAdvertisement(ifi.HardwareAddr, list, named, s.now())
	for i := range finalAdvertisements {
		if i > 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(200 * time.Millisecond):
			}
		}
		if err := conn.WriteTo(ra, nil, netip.MustParseAddr("ff02::1")); err != nil {
			return fmt.Errorf("ra: final advertisement on %s: %w", ifname, err)
		}
	}
	return nil
}

// finalAdvertisement withdraws the router and every prefix of list still
// valid at now, with the DNS servers announced: the router's addresses in
// them, and the named servers handed out last.
func finalAdvertisement(mac net.HardwareAddr, list []announced, named []netip.Addr, now time.Time) *ndp.RouterAdvertisement {
	var opts []ndp.Option
	dns := slices.Clone(named)
	for _, a := range list {
		if !a.ValidUntil.After(now) {
			continue // the hosts let it go already
		}
		opts = append(opts, &ndp.PrefixInformation{PrefixLength: 64, OnLink: true, AutonomousAddressConfiguration: true,
			Prefix: a.Prefix.Addr()})
		if !a.Deprecated {
			dns = append(dns, a.Prefix.Addr().Next())
		}
	}
	if len(dns) > 0 {
		opts = append(opts, &ndp.RecursiveDNSServer{Servers: dns})
	}
	if len(mac) > 0 {
		opts = append(opts, &ndp.LinkLayerAddress{Direction: ndp.Source, Addr: mac})
	}
	return &ndp.RouterAdvertisement{CurrentHopLimit: 64, Options: opts}
}
