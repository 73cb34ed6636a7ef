package isp

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/roostrouter/roost/itest/vm"
)

// PPPoE account the ISP knows (CHAP) and the addresses it hands out.
const (
	PPPoEUser     = "rotuer@isp.example"
	PPPoEPassword = "s3cret"
	PPPoELocal    = "198.51.100.1" // the ISP's end
	PPPoERemote   = "198.51.100.7" // the first of the routers' (each session takes the next free one)
)

// PPPoEModules are the kernel modules a PPPoE session needs, at either end.
var PPPoEModules = []string{"ppp_generic", "pppoe", "pppox"}

// PPPoEServer is the ISP's access concentrator: pppoe-server in kernel
// mode on isp0, CHAP, IPv4 and IPv6CP, LCP echo every second.
type PPPoEServer struct {
	ns  string
	cmd *exec.Cmd
}

// StartPPPoEServer starts it in namespace ns, its files in dir. It writes
// /etc/ppp/chap-secrets, so it runs only inside the test VM, whose /etc
// is an overlay.
func StartPPPoEServer(ns, dir string) (*PPPoEServer, error) {
	if !vm.Inside() {
		return nil, errors.New("the PPPoE server writes /etc/ppp: it runs only inside the test VM")
	}
	os.MkdirAll("/etc/ppp", 0o755)
	secrets := fmt.Sprintf("%q * %q *\n", PPPoEUser, PPPoEPassword)
	if err := os.WriteFile("/etc/ppp/chap-secrets", []byte(secrets), 0o600); err != nil {
		return nil, err
	}
	opts := filepath.Join(dir, "pppoe-server-options")
	os.WriteFile(opts, []byte("require-chap\nlcp-echo-interval 1\nlcp-echo-failure 3\nms-dns 192.0.2.53\n+ipv6\nnodefaultroute\n"), 0o644)
	s := &PPPoEServer{ns: ns}
	s.cmd = exec.Command("ip", "netns", "exec", ns, "pppoe-server", "-F", "-k", "-I", "isp0",
		"-L", PPPoELocal, "-R", PPPoERemote, "-N", "64", "-O", opts)
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start pppoe-server: %w", err)
	}
	return s, nil
}

// Stop kills the server and its sessions: the pppd processes in the ISP's
// namespace (the sessions detach from the server; the router's pppd, in
// another namespace of the same machine, stays).
func (s *PPPoEServer) Stop() {
	s.cmd.Process.Kill()
	s.cmd.Wait()
	out, _ := exec.Command("ip", "netns", "pids", s.ns).Output()
	for _, pid := range strings.Fields(string(out)) {
		if comm, _ := os.ReadFile("/proc/" + pid + "/comm"); strings.TrimSpace(string(comm)) == "pppd" {
			if n, err := strconv.Atoi(pid); err == nil {
				syscall.Kill(n, syscall.SIGKILL)
			}
		}
	}
}

// PPPoEConfig turns the static example config (docs/rotuer.json) into one
// whose WAN is PPPoE: the session on wan, the default routes of both
// families over it, the firewall's wan zone following it, and DHCPv6
// prefix delegation over it for the LAN.
func PPPoEConfig(example, passwordFile string) (string, error) {
	cfg := example
	for _, r := range [][2]string{
		{`"wan-addr": { "kind": "address", "link": "wan", "address": "192.0.2.2/24" },`,
			fmt.Sprintf(`"wan-ppp": { "kind": "pppoe", "link": "wan", "user": %q, "passwordFile": %q, "lcpEcho": { "interval": 1, "failures": 3 } },`, PPPoEUser, passwordFile)},
		{`"default": { "kind": "route", "link": "wan", "destination": "0.0.0.0/0", "gateway": "192.0.2.1", "after": ["wan-addr"] },`,
			`"default": { "kind": "route", "link": "wan-ppp", "destination": "0.0.0.0/0" },`},
		{`"wan-addr6": { "kind": "address", "link": "wan", "address": "2001:db8:0:1::2/64" },`, ``},
		{`"default6": { "kind": "route", "link": "wan", "destination": "::/0", "gateway": "2001:db8:0:1::1", "after": ["wan-addr6"] },`,
			`"default6": { "kind": "route", "link": "wan-ppp", "destination": "::/0" },`},
		{`"services": ["wan"], "interfaces": ["ppp0"]`, `"services": ["wan", "wan-ppp"]`},
		{`"forwarding":`, `"wan-dhcp6": { "kind": "dhcp6-client", "link": "wan-ppp", "prefixHint": 56 },
    "lan-ra": { "kind": "ra", "link": "lan", "prefixFrom": "wan-dhcp6", "subnet": 1, "interval": "2s" },
    "forwarding":`},
	} {
		if !strings.Contains(cfg, r[0]) {
			return "", fmt.Errorf("the example config has no %s to replace", r[0])
		}
		cfg = strings.Replace(cfg, r[0], r[1], 1)
	}
	return cfg, nil
}

// RouteDelegations routes the pool that kea-dhcp6 delegates from over a
// PPPoE session's interface, as a BNG does for the session's prefix.
func RouteDelegations(ns, dev, pool string) error {
	if out, err := exec.Command("ip", "-n", ns, "-6", "route", "replace", pool, "dev", dev).CombinedOutput(); err != nil {
		return fmt.Errorf("route %s over %s in %s: %v: %s", pool, dev, ns, err, out)
	}
	return nil
}

// PlainLinkLocal re-adds dev's link-local addresses that pppd set with a
// peer (fe80::a peer fe80::b) as plain fe80::a/64 addresses. kea-dhcp6
// 2.2 takes the peer's address as the interface's own on a point-to-point
// link and fails to bind to it ("Cannot assign requested address"); a BNG
// serves DHCPv6 on PPPoE sessions itself.
func PlainLinkLocal(ns, dev string) error {
	out, err := exec.Command("ip", "-n", ns, "-6", "-o", "addr", "show", "dev", dev, "scope", "link").Output()
	if err != nil {
		return fmt.Errorf("addresses of %s in %s: %w", dev, ns, err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		i := slices.Index(f, "peer")
		if len(f) < 4 || f[2] != "inet6" || i < 0 || i+1 >= len(f) {
			continue
		}
		local, _, _ := strings.Cut(f[3], "/")
		for _, args := range [][]string{
			{"addr", "del", f[3], "peer", f[i+1], "dev", dev},
			{"addr", "add", local + "/64", "dev", dev, "nodad"},
		} {
			if out, err := exec.Command("ip", append([]string{"-n", ns, "-6"}, args...)...).CombinedOutput(); err != nil {
				return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, out)
			}
		}
	}
	return nil
}
