package client6

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/dhcpv6/nclient6"

	"github.com/roostrouter/roost/netconf"
)

// linkRecord is where Run notes the link its LinkRef named, for Remove:
// the binding file is named by the link, and a fresh instance, perhaps in
// a later roostd, has no outputs to read.
func (c *Client) linkRecord() string {
	return filepath.Join(c.StateDir, "dhcp6-link-"+c.LinkRef.Service)
}

// sysctls keeps accept_ra's value from before the client's first write.
func (c *Client) sysctls() netconf.SysctlRestore {
	return netconf.SysctlRestore{ProcSys: c.ProcSys, Dir: filepath.Join(c.StateDir, "sysctl")}
}

func acceptRA(ifname string) string { return "net/ipv6/conf/" + ifname + "/accept_ra" }

// Remove undoes the client when the config drops it or changes it. A
// binding still valid is released to its server, whatever ReleaseOnStop
// says (that one is about roostd stopping, where a restart should keep the
// prefix): a dropped client's binding would otherwise stay the ISP's
// until it expires, renewed by nobody. A changed client therefore starts
// over with a Solicit, and the ISP may delegate another prefix. Then the
// IA_NA addresses come off the link (the client adds no route: the WAN's
// default route comes from the ISP's router advertisements, and no
// unreachable route is added for the delegated prefix), the link's
// accept_ra gets its value from before the client back, and the binding
// file and the link record go. The DUID stays: it is the router's, and
// the next client uses it. Every step is tried; the errors are joined.
func (c *Client) Remove(ctx context.Context) error {
	ifname := netconf.RememberedLink(c.linkRecord())
	if ifname == "" {
		return nil // it never ran: nothing of its own
	}
	var errs []error
	link, err := c.NL.LinkByName(ifname)
	if b := c.kept(ifname); b != nil && err == nil {
		if _, _, valid := b.times(); time.Now().Before(b.acquired.Add(valid)) {
			errs = append(errs, c.releaseOn(ctx, ifname, b))
		} else {
			c.withdraw(link, b) // the kernel has let them go already; to be sure
		}
	}
	if c.ProcSys != "" {
		errs = append(errs, c.sysctls().Restore(acceptRA(ifname)))
	}
	for _, f := range []string{c.leaseFile(ifname), c.linkRecord()} {
		if err := os.Remove(f); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove %s: %w", f, err))
		}
	}
	return errors.Join(errs...)
}

// releaseOn opens the client's port on ifname, as Run does, and releases b.
func (c *Client) releaseOn(ctx context.Context, ifname string, b *binding) error {
	link, err := c.NL.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("dhcp6: release on %s: %w", ifname, err)
	}
	defer c.withdraw(link, b) // even if the release cannot be sent
	conn, err := listen(ctx, ifname)
	if err != nil {
		return fmt.Errorf("dhcp6: release: %w", err)
	}
	// The hardware address only keys new exchanges; a Release carries the
	// client ID and IAs of the binding itself.
	hw := link.Attrs().HardwareAddr
	if len(hw) < 4 {
		hw = net.HardwareAddr{0x02, 0, 0, 0, 0, 0}
	}
	nc, err := nclient6.NewWithConn(conn, hw, nclient6.WithTimeout(time.Second), nclient6.WithRetry(1))
	if err != nil {
		conn.Close()
		return fmt.Errorf("dhcp6: release on %s: %w", ifname, err)
	}
	defer nc.Close()
	all := &net.UDPAddr{IP: dhcpv6.AllDHCPRelayAgentsAndServers, Port: dhcpv6.DefaultServerPort, Zone: ifname}
	return c.release(nc, all, link, b)
}
