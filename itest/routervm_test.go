package itest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roostrouter/roost/firewall"
	"github.com/roostrouter/roost/itest/isp"
	"github.com/roostrouter/roost/itest/labnet"
	"github.com/roostrouter/roost/itest/vm"
)

// console is a VM's console as it comes, each line with when it came.
type console struct {
	mu      sync.Mutex
	start   time.Time
	lines   []string
	at      []time.Duration
	partial string
}

func (c *console) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.partial + strings.ReplaceAll(string(p), "\r", "")
	for {
		line, rest, ok := strings.Cut(s, "\n")
		if !ok {
			break
		}
		c.lines, c.at, s = append(c.lines, line), append(c.at, time.Since(c.start)), rest
	}
	c.partial = s
	return len(p), nil
}

func (c *console) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.Join(c.lines, "\n") + "\n" + c.partial
}

// waitFor waits up to d for a line holding s, and returns when it came.
func (c *console) waitFor(t *testing.T, s string, d time.Duration) time.Duration {
	t.Helper()
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		c.mu.Lock()
		for i, l := range c.lines {
			if strings.Contains(l, s) {
				c.mu.Unlock()
				return c.at[i]
			}
		}
		c.mu.Unlock()
	}
	t.Fatalf("the console never said %q within %s:\n%s", s, d, c.String())
	return 0
}

// routerVMLab is the lab with a QEMU VM as the router: the ISP (kea4,
// kea6 with prefix delegation, router advertisements) and the LAN host in
// namespaces, the VM's NICs bridged into the router namespace in place
// of roostd's links.
type routerVMLab struct {
	t          *testing.T
	net        *labnet.Net
	nics       []vm.NIC
	kea6       *isp.Kea
	disk       *vm.RouterDisk
	key, known string // the LAN host's SSH key and known_hosts
}

func startRouterVMLab(t *testing.T) *routerVMLab {
	need(t, "qemu-system-x86_64", "mke2fs", "kea-dhcp4", "kea-dhcp6", "ssh", "ssh-keygen", "ping", "/bin/busybox")
	if _, _, err := vm.Kernel(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(err)
		}
		t.Skipf("SKIPPED: %v", err)
	}
	n := labnet.New(fmt.Sprintf("rv%d-", os.Getpid()%100000))
	n.DynamicLAN = true
	if err := n.Up(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Down)
	nics, err := vm.Wire(n.Router, []string{"wan", "lan0", "lan1"})
	if err != nil {
		t.Fatal(err)
	}
	l := &routerVMLab{t: t, net: n, nics: nics, known: filepath.Join(t.TempDir(), "known_hosts")}
	waitLinkLocal(t, n.ISP, "isp0")
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := isp.Advertise(ctx, n.ISP, "isp0", time.Second); err != nil {
		t.Fatal(err)
	}
	startKea4(t, n.ISP)
	l.kea6 = startKea6(t, n.ISP)
	l.key = filepath.Join(t.TempDir(), "id_ed25519")
	mustRun(t, nil, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "lan-host", "-f", l.key)
	return l
}

// config is the lab's DHCP config (docs/rotuer-dhcp.json) on the VM's
// board, letting the LAN host's key in.
func (l *routerVMLab) config() []byte {
	var cfg map[string]any
	b, err := os.ReadFile("../docs/rotuer-dhcp.json")
	if err == nil {
		err = json.Unmarshal(b, &cfg)
	}
	pub, _ := os.ReadFile(l.key + ".pub")
	if err != nil || len(pub) == 0 {
		l.t.Fatalf("config: %v", err)
	}
	cfg["board"] = "qemu-x86_64"
	cfg["ssh"].(map[string]any)["authorizedKeys"] = []string{strings.TrimSpace(string(pub))}
	b, _ = json.MarshalIndent(cfg, "", "  ")
	return b
}

// boot starts the VM on the lab's disk.
func (l *routerVMLab) boot() (*vm.Router, *console) {
	c := &console{start: time.Now()}
	r, err := vm.StartRouter(context.Background(), vm.RouterOptions{Disk: l.disk, NetNS: l.net.Router, NICs: l.nics, Console: c})
	if err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() {
		r.Kill()
		if l.t.Failed() || os.Getenv("ROOST_SHOW_CONSOLE") != "" {
			l.t.Logf("the VM's console:\n%s", c.String())
		}
	})
	return r, c
}

// ssh runs a roostd command on the router from the LAN host, over the
// router's SSH endpoint, with OpenSSH; strict refuses a host key that
// known_hosts does not already hold.
func (l *routerVMLab) ssh(strict bool, args ...string) result {
	l.t.Helper()
	check := "accept-new"
	if strict {
		check = "yes"
	}
	ssh := []string{"ssh", "-F", "none", "-i", l.key, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
		"-o", "ConnectTimeout=20", "-o", "UserKnownHostsFile=" + l.known, "-o", "StrictHostKeyChecking=" + check, "root@192.168.1.1"}
	return run(l.t, nil, nil, "ip", labnet.In(l.net.LAN, append(ssh, args...)...)[1:]...)
}

// vmStatus is what roostd status --json says over SSH.
type vmStatus struct {
	Agent      string          `json:"agent"`
	Current    string          `json:"currentSystem"`
	Booted     string          `json:"bootedSystem"`
	Generation int             `json:"generation"`
	Services   []serviceStatus `json:"services"`
}

func (s vmStatus) service(name string) serviceStatus {
	for _, x := range s.Services {
		if x.Name == name {
			return x
		}
	}
	return serviceStatus{}
}

func (l *routerVMLab) status(strict bool) vmStatus {
	l.t.Helper()
	r := l.ssh(strict, "roostd", "status", "--json")
	var st vmStatus
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &st) != nil {
		l.t.Fatalf("roostd status over SSH: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	return st
}

// waitAllUp polls roostd status over SSH until every service is up.
func (l *routerVMLab) waitAllUp(strict bool) vmStatus {
	l.t.Helper()
	var st vmStatus
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		st = l.status(strict)
		up := map[string]serviceStatus{}
		for _, s := range st.Services {
			up[s.Name] = s
		}
		if len(up) > 0 && allUp(up) {
			return st
		}
	}
	l.t.Fatalf("the router's services never all came up: %+v", st.Services)
	return st
}

// lanAddresses gets the LAN host an IPv4 lease from the router (udhcpc)
// and waits for its SLAAC address in the delegated prefix.
func (l *routerVMLab) lanAddresses() (v4, v6 string) {
	t := l.t
	t.Helper()
	script, err := labnet.UdhcpcScript(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	r := run(t, nil, nil, "ip", labnet.In(l.net.LAN, "/bin/busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-f", "-t", "60", "-T", "1", "-s", script)[1:]...)
	m := regexp.MustCompile(`lease of (\S+) obtained`).FindStringSubmatch(r.stdout + r.stderr)
	if m == nil {
		t.Fatalf("udhcpc on the LAN host:\n%s%s", r.stdout, r.stderr)
	}
	v6, _ = hostAddr6(t, l.net.LAN, "eth0", "2001:db8:100:1:", func(flags string) bool { return !strings.Contains(flags, "tentative") })
	return m[1], v6
}

// reaches waits until the LAN host reaches the ISP over both families.
func (l *routerVMLab) reaches() {
	l.t.Helper()
	for _, addr := range []string{"198.51.100.1", "2001:db8:0:1::1"} {
		if err := labnet.Wait(30*time.Second, 200*time.Millisecond, func() bool { return labnet.Reaches(l.net.LAN, addr) }); err != nil {
			l.t.Fatalf("the LAN host does not reach the ISP's %s through the router", addr)
		}
	}
}

// duids lists the client DUIDs in kea-dhcp6's lease file, which has a
// line for each lease kea gave or extended.
func (l *routerVMLab) duids() (duids []string, lines int) {
	b, _ := os.ReadFile(filepath.Join(l.kea6.Dir, "leases6.csv"))
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n")[1:] {
		lines++
		if f := strings.Split(line, ","); len(f) > 1 && !slices.Contains(duids, f[1]) {
			duids = append(duids, f[1])
		}
	}
	return duids, lines
}

// TestBootGenerationInVM: the router is a QEMU VM booting its generation
// from its own disk (roostd init, PID 1): roostd runs the disk's system
// and config; the LAN host gets IPv4 from the router's DHCP server and
// IPv6 in the prefix kea delegates, and reaches the ISP over both;
// `roostd reboot` over SSH reboots cleanly (QEMU ends with status 0, the
// console shows the disk unmounted); the second boot of the same disk
// runs the same generation with the same SSH host key (known_hosts
// checked strictly) and DHCPv6 DUID; `roostd poweroff` powers it off.
func TestBootGenerationInVM(t *testing.T) {
	l := startRouterVMLab(t)
	var err error
	l.disk, err = vm.BuildRouterDisk(t.TempDir(), vm.RouterSystem{Roostd: roostd, Config: l.config(),
		Cmdline: "console=ttyS0 panic=-1 quiet",
		// nft_objref: the firewall's named counters; firewall.KernelModules
		// lacks it (the kernel loads it by itself only where it can run
		// modprobe, which a router's initrd has not).
		Modules: slices.Concat([]string{"virtio_net", "bridge", "nft_objref"}, firewall.KernelModules)})
	if err != nil {
		t.Fatal(err)
	}
	sys := l.disk.System.String()

	r, c := l.boot()
	up := c.waitFor(t, "agent ready", 2*time.Minute)
	v4, v6 := l.lanAddresses()
	both := time.Since(c.start)
	l.reaches()
	st := l.waitAllUp(false)
	if st.Current != sys || st.Booted != sys || st.Generation != 1 || !strings.Contains(st.Agent, "roostd") {
		t.Fatalf("status after the first boot: %+v; want %s, generation 1", st, sys)
	}
	hostKey := st.service("ssh").Outputs["host-key"]
	duids, leases := l.duids()
	t.Logf("first boot: agent ready %.1fs, LAN host has %s and %s %.1fs after QEMU started", up.Seconds(), v4, v6, both.Seconds())

	if res := l.ssh(true, "roostd", "reboot"); res.code != 0 && res.code != 255 {
		t.Fatalf("roostd reboot: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	if err := r.Wait(time.Minute); err != nil {
		t.Fatalf("the VM after roostd reboot: %v", err)
	}
	for _, want := range []string{`msg="agent stopped"`, "msg=unmounted from=init path=/persist", "msg=unmounted from=init path=/storage", "system down: reboot"} {
		c.waitFor(t, want, time.Second)
	}

	r, c = l.boot()
	up = c.waitFor(t, "agent ready", 2*time.Minute)
	l.reaches()
	back := time.Since(c.start)
	st = l.waitAllUp(true) // the same host key, or ssh refuses
	if st.Current != sys || st.Booted != sys || st.Generation != 1 {
		t.Fatalf("status after the reboot: %+v; want %s, generation 1", st, sys)
	}
	if res := l.ssh(true, "roostd", "store", "verify"); res.code != 0 {
		t.Fatalf("roostd store verify after the reboot: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	if k := st.service("ssh").Outputs["host-key"]; k != hostKey || k == "" {
		t.Fatalf("host key %q after the reboot, was %q", k, hostKey)
	}
	// The router renews within seconds (isp.Short6): what it sends
	// after the reboot is in kea's lease file.
	var d []string
	labnet.Wait(30*time.Second, 200*time.Millisecond, func() bool {
		var n int
		d, n = l.duids()
		return n > leases
	})
	if _, n := l.duids(); len(duids) != 1 || !slices.Equal(d, duids) || n <= leases {
		t.Fatalf("kea-dhcp6 saw DUIDs %q (%d leases), then %q (%d): want one, the same across the reboot", duids, leases, d, n)
	}
	t.Logf("second boot: agent ready %.1fs, LAN host reaches the ISP over both %.1fs after QEMU started", up.Seconds(), back.Seconds())

	if res := l.ssh(true, "roostd", "poweroff"); res.code != 0 && res.code != 255 {
		t.Fatalf("roostd poweroff: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	if err := r.Wait(time.Minute); err != nil {
		t.Fatalf("the VM after roostd poweroff: %v", err)
	}
	c.waitFor(t, "system down: poweroff", time.Second)
}
