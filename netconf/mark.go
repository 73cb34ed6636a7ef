package netconf

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// Proto marks the addresses and routes roostd adds: the kernel keeps it
// with them (an address's IFA_PROTO, a route's protocol), so a later
// roostd, which never saw them added, can tell them from ones added by
// hand or by another program, and Remove deletes only its own. `ip route`
// shows it as "proto 114" (Debian 12's iproute2 shows no address's
// protocol; later ones do). Linux keeps an address's protocol from 5.18 on.
const Proto = 114

// ifaProto is IFA_PROTO (linux/if_addr.h, Linux 5.18), which
// golang.org/x/sys/unix and vishvananda/netlink do not name yet.
const ifaProto = 11

// addAddr adds addr to link with roostd's mark. vishvananda/netlink
// cannot set IFA_PROTO, so the request is built here; it goes out on a
// socket of the calling thread's network namespace, which is the one of
// roostd's handle (roostd has one namespace).
func addAddr(link netlink.Link, addr *netlink.Addr) error {
	family := netlink.FAMILY_V6
	ip := addr.IP.To16()
	if ip4 := addr.IP.To4(); ip4 != nil {
		family, ip = netlink.FAMILY_V4, ip4
	}
	req := nl.NewNetlinkRequest(unix.RTM_NEWADDR, unix.NLM_F_CREATE|unix.NLM_F_EXCL|unix.NLM_F_ACK)
	msg := nl.NewIfAddrmsg(family)
	ones, _ := addr.Mask.Size()
	msg.Prefixlen = uint8(ones)
	msg.Index = uint32(link.Attrs().Index)
	req.AddData(msg)
	req.AddData(nl.NewRtAttr(unix.IFA_LOCAL, ip))
	req.AddData(nl.NewRtAttr(unix.IFA_ADDRESS, ip))
	if addr.Flags != 0 {
		b := make([]byte, 4)
		nl.NativeEndian().PutUint32(b, uint32(addr.Flags))
		req.AddData(nl.NewRtAttr(unix.IFA_FLAGS, b))
	}
	// As `ip addr add … brd +` and vishvananda/netlink do: the subnet's
	// broadcast address, where the subnet has one (RFC 3021).
	if family == netlink.FAMILY_V4 && ones < 31 {
		brd := make(net.IP, 4)
		for i := range brd {
			brd[i] = ip[i] | ^addr.Mask[len(addr.Mask)-4+i]
		}
		req.AddData(nl.NewRtAttr(unix.IFA_BROADCAST, brd))
	}
	req.AddData(nl.NewRtAttr(ifaProto, nl.Uint8Attr(Proto)))
	_, err := req.Execute(unix.NETLINK_ROUTE, 0)
	if err != nil {
		return fmt.Errorf("add address %s/%d to %s: %w", addr.IP, ones, link.Attrs().Name, err)
	}
	return nil
}

// liveAddr is an address as the kernel lists it, with its protocol.
type liveAddr struct {
	Index  int // the link's
	Prefix netip.Prefix
	Proto  uint8
}

// listAddrs dumps the addresses of family in roostd's network namespace
// (see addAddr), with their protocols.
func listAddrs(family int) ([]liveAddr, error) {
	req := nl.NewNetlinkRequest(unix.RTM_GETADDR, unix.NLM_F_DUMP)
	req.AddData(nl.NewIfAddrmsg(family))
	msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWADDR)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	var out []liveAddr
	for _, m := range msgs {
		if len(m) < unix.SizeofIfAddrmsg {
			continue
		}
		msg := nl.DeserializeIfAddrmsg(m)
		attrs, err := nl.ParseRouteAttr(m[msg.Len():])
		if err != nil {
			return nil, fmt.Errorf("list addresses: %w", err)
		}
		a := liveAddr{Index: int(msg.Index)}
		var local, address []byte
		for _, at := range attrs {
			switch at.Attr.Type {
			case unix.IFA_LOCAL:
				local = at.Value
			case unix.IFA_ADDRESS:
				address = at.Value
			case ifaProto:
				if len(at.Value) > 0 {
					a.Proto = at.Value[0]
				}
			}
		}
		if local == nil { // IPv6 sends only IFA_ADDRESS
			local = address
		}
		ip, ok := netip.AddrFromSlice(local)
		if !ok {
			continue
		}
		a.Prefix = netip.PrefixFrom(ip.Unmap(), int(msg.Prefixlen))
		out = append(out, a)
	}
	return out, nil
}

// addrToRemove is the index of the link from which an address service's
// Remove deletes p: the one where p carries roostd's mark; 0 when roostd's
// copy is gone already. It refuses to guess, with an error that says what
// to do, when p carries the mark on several links (two address services
// declare one address: which one was this service's is not known) or when
// the kernel keeps no address protocols at all (Linux before 5.18, where
// roostd's copy cannot be told from one added by hand).
func addrToRemove(live []liveAddr, p netip.Prefix) (int, error) {
	var marked []int
	found, protos := false, false
	for _, a := range live {
		protos = protos || a.Proto != 0
		if a.Prefix != p {
			continue
		}
		found = true
		if a.Proto == Proto {
			marked = append(marked, a.Index)
		}
	}
	switch {
	case len(marked) == 1:
		return marked[0], nil
	case len(marked) > 1:
		return 0, fmt.Errorf("address %s is roostd's on %d links (indexes %v), and which was this service's is not known: delete it by hand (ip address del %s dev …)", p, len(marked), marked, p)
	case found && !protos:
		return 0, fmt.Errorf("this kernel keeps no address protocols (Linux before 5.18), so roostd cannot tell its address %s from one added by hand: delete it by hand (ip address del %s dev …)", p, p)
	}
	return 0, nil
}
