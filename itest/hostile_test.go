package itest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv6"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// hostile sends malformed and forged DHCP and neighbor discovery packets
// to the router from the LAN host and from the ISP, and checks that each
// kind is dropped with a log line and that nothing changed: no service
// restarted, the router's addresses and routes and the LAN's leases are
// as they were, and no lease went to a forged request.
func (l *dhcpLab) hostile(t *testing.T) {
	before := l.services()
	state := func() string {
		var parts []string
		for _, args := range [][]string{{"-br", "addr"}, {"-4", "route"}, {"-6", "route"}} {
			parts = append(parts, mustRun(t, nil, "ip", append([]string{"-n", l.net.Router}, args...)...))
		}
		// Lifetimes count down; they are not state.
		return regexp.MustCompile(`expires \d+sec`).ReplaceAllString(strings.Join(parts, "\n"), "")
	}
	ipBefore := state()
	leases := func() string {
		b, _ := os.ReadFile(l.state + "/dhcpd4-br-lan.leases")
		return string(b)
	}
	leasesBefore := leases()

	hostMAC := strings.Fields(mustRun(t, nil, "ip", "-n", l.net.LAN, "-br", "link", "show", "eth0"))[2]
	for _, side := range []struct{ ns, part string }{{l.net.LAN, "hostile-lan"}, {l.net.ISP, "hostile-isp"}} {
		exe, _ := os.Executable()
		cmd := exec.Command("ip", "netns", "exec", side.ns, exe)
		cmd.Env = append(os.Environ(), "ROOST_HELPER="+side.part, "ROOST_HELPER_MAC="+hostMAC)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", side.part, err, out)
		}
	}
	wantLog := []string{
		"dropped a malformed DHCPv4 request on br-lan",
		"dhcpd4: dropped a malformed request",
		"dhcpd4: NAK",
		"dhcpd4: release refused",
		"dropped a malformed neighbor discovery packet on br-lan",
		"another router advertises on this LAN",
		"dropped a malformed DHCPv4 reply on wan",
		"dropped a malformed DHCPv6 reply on wan",
	}
	var missing []string
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		missing = nil
		for _, w := range wantLog {
			if !strings.Contains(l.log.String(), w) {
				missing = append(missing, w)
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
	}
	if len(missing) > 0 {
		t.Errorf("roostd did not log %q:\n%s", missing, l.log.String())
	}
	after := l.services()
	for name, s := range before {
		if a := after[name]; a.Starts != s.Starts || a.State != s.State {
			t.Errorf("service %s: %s after %d starts before, %s after %d starts after", name, s.State, s.Starts, a.State, a.Starts)
		}
	}
	if got := state(); got != ipBefore {
		t.Errorf("the router's addresses or routes changed:\nbefore:\n%s\nafter:\n%s", ipBefore, got)
	}
	if got := leases(); got != leasesBefore {
		t.Errorf("the lease database changed:\nbefore:\n%s\nafter:\n%s", leasesBefore, got)
	}
}

// udpTo sends each payload from port from to to:port out of dev.
func udpTo(dev string, from int, to string, port int, payloads ...[]byte) error {
	ifi, err := net.InterfaceByName(dev)
	if err != nil {
		return err
	}
	ip := net.ParseIP(to)
	family := unix.AF_INET6
	var local, remote unix.Sockaddr = &unix.SockaddrInet6{Port: from}, &unix.SockaddrInet6{Port: port, ZoneId: uint32(ifi.Index), Addr: [16]byte(ip.To16())}
	if ip4 := ip.To4(); ip4 != nil {
		family = unix.AF_INET
		local, remote = &unix.SockaddrInet4{Port: from}, &unix.SockaddrInet4{Port: port, Addr: [4]byte(ip4)}
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_BROADCAST, 1)
	if err := unix.SetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE, dev); err != nil {
		return err
	}
	if err := unix.Bind(fd, local); err != nil {
		return fmt.Errorf("bind port %d: %w", from, err)
	}
	for _, p := range payloads {
		if err := unix.Sendto(fd, p, 0, remote); err != nil {
			return fmt.Errorf("send to %s: %w", to, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// icmp6To sends raw ICMPv6 messages to ff02::2 on dev with hop limit 255,
// as neighbor discovery requires.
func icmp6To(dev string, msgs ...[]byte) error {
	c, err := icmp.ListenPacket("ip6:ipv6-icmp", "::")
	if err != nil {
		return err
	}
	defer c.Close()
	ifi, err := net.InterfaceByName(dev)
	if err != nil {
		return err
	}
	pc := c.IPv6PacketConn()
	pc.SetMulticastHopLimit(255)
	pc.SetMulticastInterface(ifi)
	for _, m := range msgs {
		if _, err := pc.WriteTo(m, &ipv6.ControlMessage{HopLimit: 255, IfIndex: ifi.Index}, &net.IPAddr{IP: net.ParseIP("ff02::2"), Zone: dev}); err != nil {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

func hostileLAN() error {
	mac, _ := net.ParseMAC(os.Getenv("ROOST_HELPER_MAC"))
	discover, _ := dhcpv4.NewDiscovery(mac)
	badCookie := discover.ToBytes()
	copy(badCookie[236:240], []byte{1, 2, 3, 4})
	overrun := append(discover.ToBytes()[:240], 53, 1, 1, 12, 200, 'x') // a hostname option longer than the packet
	reply, _ := dhcpv4.NewDiscovery(mac)
	reply.OpCode = dhcpv4.OpcodeBootReply
	stealRouter, _ := dhcpv4.NewDiscovery(net.HardwareAddr{2, 0xba, 0xd, 0, 0, 1},
		dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP("192.168.1.1"))))
	forgedRelease, _ := dhcpv4.NewDiscovery(mac, dhcpv4.WithMessageType(dhcpv4.MessageTypeRelease), dhcpv4.WithClientIP(net.ParseIP("192.168.1.250")))
	if err := udpTo("eth0", 68, "255.255.255.255", 67,
		[]byte("GET / HTTP/1.1\r\n\r\n"), badCookie, overrun, reply.ToBytes(), stealRouter.ToBytes(), forgedRelease.ToBytes()); err != nil {
		return err
	}
	// A router solicitation whose option has length 0 (RFC 4861 says
	// drop it), a truncated advertisement, and a rogue advertisement.
	rogue := []byte{134, 0, 0, 0, 64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0,
		3, 4, 64, 0xc0, 0, 0, 0x0e, 0x10, 0, 0, 0x0e, 0x10, 0, 0, 0, 0,
		0x20, 0x01, 0x0d, 0xb8, 0x0b, 0xad, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	return icmp6To("eth0", []byte{133, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0}, []byte{134, 0, 0, 0, 64}, rogue)
}

func hostileISP() error {
	// kea holds the server ports; the router's clients read any source port.
	if err := udpTo("isp0", 0, "255.255.255.255", 68, []byte("\x02\x01\x06garbage"), make([]byte, 300)); err != nil {
		return err
	}
	wrongXID, _ := dhcpv6.NewMessage()
	wrongXID.MessageType = dhcpv6.MessageTypeReply
	truncated := append(wrongXID.ToBytes(), 0, 3, 0, 40, 1, 2) // an IA_NA claiming 40 bytes with 2
	return udpTo("isp0", 0, "fe80::ff:fe00:2", 546, []byte{7}, truncated, wrongXID.ToBytes())
}
