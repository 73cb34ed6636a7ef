package itest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/roostrouter/roost/itest/isp"
	"github.com/roostrouter/roost/itest/labnet"
)

// dhcpLab is the lab on DHCP (docs/rotuer-dhcp.json): kea-dhcp4 and
// kea-dhcp6 with prefix delegation and router advertisements at the ISP,
// and a LAN host that has no address until the router gives it one.
type dhcpLab struct {
	*agentLab
	kea4, kea6 *isp.Kea
}

func startDHCPLab(t *testing.T) *dhcpLab {
	need(t, "ip", "ping", "kea-dhcp4", "kea-dhcp6", "/bin/busybox")
	n := labnet.New(fmt.Sprintf("rh%d-", os.Getpid()%100000))
	n.DynamicLAN = true
	if err := n.Up(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Down)
	cfg, err := os.ReadFile("../docs/rotuer-dhcp.json")
	if err != nil {
		t.Fatal(err)
	}
	a := &agentLab{t: t, net: n, root: t.TempDir(), state: t.TempDir(), config: filepath.Join(t.TempDir(), "config.json")}
	os.WriteFile(a.config, cfg, 0o644)
	l := &dhcpLab{agentLab: a}
	a.start()
	t.Cleanup(a.stop)
	// The ISP's side has a link-local address once roostd brings wan up.
	waitLinkLocal(t, n.ISP, "isp0")
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := isp.Advertise(ctx, n.ISP, "isp0", time.Second); err != nil {
		t.Fatal(err)
	}
	l.kea4 = startKea4(t, n.ISP)
	l.kea6 = startKea6(t, n.ISP)
	return l
}

// udhcpc runs busybox udhcpc on the LAN host until it holds a lease, and
// returns the address it configured.
func (l *dhcpLab) udhcpc() string {
	t := l.t
	t.Helper()
	script, err := labnet.UdhcpcScript(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	r := run(t, nil, nil, "ip", labnet.In(l.net.LAN, "/bin/busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-f", "-t", "20", "-T", "1", "-s", script)[1:]...)
	m := regexp.MustCompile(`lease of (\S+) obtained`).FindStringSubmatch(r.stdout + r.stderr)
	if m == nil {
		t.Fatalf("udhcpc on the LAN host:\n%s%s\nroostd:\n%s", r.stdout, r.stderr, l.log.String())
	}
	return m[1]
}

// TestLabOnDHCP: the example DHCP config in the lab. The router takes its
// WAN addresses and a /56 from kea and its IPv6 default route from the
// ISP's advertisements; the LAN host gets IPv4 by DHCP and IPv6 by SLAAC
// from the router and reaches the ISP over both.
func TestLabOnDHCP(t *testing.T) {
	l := startDHCPLab(t)
	l.waitServices("up", allUp)
	v4 := l.udhcpc()
	if !strings.HasPrefix(v4, "192.168.1.1") {
		t.Fatalf("the LAN host got %s, outside the pool", v4)
	}
	v6, _ := hostAddr6(t, l.net.LAN, "eth0", "2001:db8:100:1:", func(flags string) bool { return !strings.Contains(flags, "tentative") })
	routes := mustRun(t, nil, "ip", "-n", l.net.Router, "-6", "route", "show", "default")
	if !strings.Contains(routes, "via fe80::ff:fe00:1 dev wan proto ra") {
		t.Fatalf("the router's IPv6 default route is not the ISP's advertised one:\n%s", routes)
	}
	l.ping("198.51.100.1")
	l.ping("2001:db8:0:1::1")
	t.Logf("LAN host: %s and %s", v4, v6)

	t.Run("hostile packets", func(t *testing.T) { l.hostile(t) })
}
