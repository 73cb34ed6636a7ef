// Package labnet builds the lab's network: namespaces for an ISP, the router
// and a LAN host, joined by veth pairs, with the ISP and LAN sides
// addressed. The router's side is left to roostd.
//
//	ISP  isp0 192.0.2.1/24 2001:db8:0:1::1/64, lo 198.51.100.1 ("the internet")
//	     └── router wan
//	router lan0 ── LAN eth0 192.168.1.100/24 fd00:1::100/64
//	router lan1 ── LAN spare (down: an unplugged port)
package labnet

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// The ISP delegates /56s out of DelegationPool (and out of RenumberedPool
// when a test renumbers) and routes both to the router's WAN link-local
// address.
const (
	DelegationPool  = "2001:db8:100::/48"
	RenumberedPool  = "2001:db8:200::/48"
	RouterLinkLocal = "fe80::ff:fe00:2"
)

// KernelModules are the modules the lab's links need (veth pairs, the
// router's bridge), for a kernel that has them as modules (the test VM's).
var KernelModules = []string{"veth", "bridge"}

// Net is a lab network; its namespaces are Prefix+"isp", "router", "lan".
type Net struct {
	ISP, Router, LAN string
	// DynamicLAN leaves the LAN host without addresses or routes: it gets
	// them from the router (DHCPv4 and router advertisements).
	DynamicLAN bool
}

// New names a lab network; prefix keeps parallel labs apart.
func New(prefix string) *Net {
	return &Net{ISP: prefix + "isp", Router: prefix + "router", LAN: prefix + "lan"}
}

// Run runs a command, its output in the error if it fails.
func Run(args ...string) error {
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Reaches says whether a ping from namespace ns to addr is answered within
// a second.
func Reaches(ns, addr string) bool {
	return exec.Command("ip", "netns", "exec", ns, "ping", "-c", "1", "-W", "1", addr).Run() == nil
}

// Up creates the namespaces and links, replacing leftovers of an earlier run.
func (n *Net) Up() error {
	n.Down()
	for _, ns := range []string{n.ISP, n.Router, n.LAN} {
		if err := Run("ip", "netns", "add", ns); err != nil {
			return err
		}
		if err := Run("ip", "-n", ns, "link", "set", "lo", "up"); err != nil {
			return err
		}
	}
	for _, s := range [][]string{
		// Fixed MACs give fixed link-local addresses: the ISP routes the
		// prefixes it delegates to the router's (RouterLinkLocal).
		{"ip", "-n", n.ISP, "link", "add", "isp0", "address", "02:00:00:00:00:01", "type", "veth", "peer", "name", "wan", "address", "02:00:00:00:00:02", "netns", n.Router},
		{"ip", "-n", n.LAN, "link", "add", "eth0", "type", "veth", "peer", "name", "lan0", "netns", n.Router},
		{"ip", "-n", n.LAN, "link", "add", "spare", "type", "veth", "peer", "name", "lan1", "netns", n.Router},
		{"ip", "-n", n.ISP, "addr", "add", "192.0.2.1/24", "dev", "isp0"},
		{"ip", "-n", n.ISP, "addr", "add", "2001:db8:0:1::1/64", "dev", "isp0", "nodad"},
		{"ip", "-n", n.ISP, "addr", "add", "198.51.100.1/32", "dev", "lo"},
		{"ip", "-n", n.ISP, "link", "set", "isp0", "up"},
		{"ip", "-n", n.ISP, "route", "add", "192.168.1.0/24", "via", "192.0.2.2"},
		{"ip", "-n", n.ISP, "route", "add", "fd00:1::/64", "via", "2001:db8:0:1::2"},
		{"ip", "-n", n.LAN, "link", "set", "eth0", "up"},
	} {
		if err := Run(s...); err != nil {
			n.Down()
			return err
		}
	}
	if err := n.RouteDelegations(); err != nil {
		n.Down()
		return err
	}
	if n.DynamicLAN {
		return nil
	}
	for _, s := range [][]string{
		{"ip", "-n", n.LAN, "addr", "add", "192.168.1.100/24", "dev", "eth0"},
		{"ip", "-n", n.LAN, "addr", "add", "fd00:1::100/64", "dev", "eth0", "nodad"},
		{"ip", "-n", n.LAN, "route", "add", "default", "via", "192.168.1.1"},
		{"ip", "-n", n.LAN, "route", "add", "default", "via", "fd00:1::1"},
	} {
		if err := Run(s...); err != nil {
			n.Down()
			return err
		}
	}
	return nil
}

// RouteDelegations routes the prefixes the ISP delegates to the router;
// the kernel drops these routes when isp0 goes down, so a test that takes
// the link down and up calls it again.
func (n *Net) RouteDelegations() error {
	for _, pool := range []string{DelegationPool, RenumberedPool} {
		if err := Run("ip", "-n", n.ISP, "route", "replace", pool, "via", RouterLinkLocal, "dev", "isp0"); err != nil {
			return err
		}
	}
	return nil
}

// Down removes the namespaces and with them every link in them.
func (n *Net) Down() {
	for _, ns := range []string{n.ISP, n.Router, n.LAN} {
		exec.Command("ip", "netns", "del", ns).Run()
	}
}

// UdhcpcScript writes into dir the script busybox udhcpc runs on the LAN
// host to take the lease the router gives (udhcpc -s), and returns its path.
func UdhcpcScript(dir string) (string, error) {
	script := filepath.Join(dir, "udhcpc.sh")
	return script, os.WriteFile(script, []byte(`#!/bin/sh
# The LAN host's udhcpc script: configure what the router leased, and say
# which DNS servers it was handed.
case "$1" in
bound|renew)
	ip -4 addr flush dev "$interface"
	ip addr add "$ip/$mask" dev "$interface"
	ip route replace default via "$router" dev "$interface"
	echo "udhcpc: dns $dns"
	;;
esac
`), 0o755)
}

// Wait calls ok every poll until it is true, for at most d.
func Wait(d, poll time.Duration, ok func() bool) error {
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(poll) {
		if ok() {
			return nil
		}
	}
	return errors.New("timed out")
}

// WaitLinkLocal waits, for at most d, until dev in ns has a link-local
// address that has passed duplicate address detection.
func WaitLinkLocal(ns, dev string, d time.Duration) error {
	err := Wait(d, 100*time.Millisecond, func() bool {
		out, _ := exec.Command("ip", "-n", ns, "-6", "addr", "show", "dev", dev).Output()
		return strings.Contains(string(out), "fe80:") && !strings.Contains(string(out), "tentative")
	})
	if err != nil {
		return fmt.Errorf("%s in %s has no usable link-local address", dev, ns)
	}
	return nil
}

// In prefixes a command to run it in namespace ns.
func In(ns string, args ...string) []string {
	return append([]string{"ip", "netns", "exec", ns}, args...)
}
