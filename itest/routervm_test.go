package itest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/roostrouter/roost/itest/isp"
	"github.com/roostrouter/roost/itest/labnet"
	"github.com/roostrouter/roost/itest/vm"
)

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
	// lap is the LAN host as a laptop: its home (that SSH key and
	// known_hosts, ~/.ssh/config naming the router rotuer) and Nix store,
	// for roost.
	lap *laptop
	// entry is what the test bootloader booted last, its kernel and
	// initrd copied into bootDir.
	entry   *vm.BootEntry
	bootDir string
}

func startRouterVMLab(t *testing.T) *routerVMLab {
	need(t, "qemu-system-x86_64", "mke2fs", "debugfs", "e2fsck", "kea-dhcp4", "kea-dhcp6", "ssh", "ssh-keygen", "ping", "dig", "/bin/busybox", "nix-build")
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
	lap := newLaptop(t)
	l := &routerVMLab{t: t, net: n, nics: nics, lap: lap,
		key: filepath.Join(lap.home, ".ssh/id_ed25519"), known: filepath.Join(lap.home, ".ssh/known_hosts")}
	os.WriteFile(filepath.Join(lap.home, ".ssh/config"), []byte("Host rotuer\n  HostName 192.168.1.1\n  User root\n  IdentityFile ~/.ssh/id_ed25519\n"), 0o600)
	waitLinkLocal(t, n.ISP, "isp0")
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := isp.Advertise(ctx, n.ISP, "isp0", time.Second); err != nil {
		t.Fatal(err)
	}
	// Two-minute leases: under TCG and a ping flood through the VM (the
	// hand-over and trial tests), a 12 s lease (isp.Short4) can lapse
	// when a renewal's answer comes late, and its loss would show as
	// the hand-over's. Renewals have their own tests (TestDHCP4*).
	startKea(t, n.ISP, "kea-dhcp4", isp.Kea4Config(isp.Times{Renew: 60, Rebind: 105, Valid: 120}))
	l.kea6 = startKea6(t, n.ISP)
	return l
}

// config is the lab's DHCP config (docs/rotuer-dhcp.json) on the VM's
// board, letting the LAN host's key in.
func (l *routerVMLab) config() []byte { return l.configWith(nil) }

// configWith is config with hosts that the LAN's DNS forwarder answers
// for (lan-dns's hosts): a config change a user sees from the LAN.
func (l *routerVMLab) configWith(hosts map[string][]string) []byte {
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
	if hosts != nil {
		cfg["services"].(map[string]any)["lan-dns"].(map[string]any)["hosts"] = hosts
	}
	b, _ = json.MarshalIndent(cfg, "", "  ")
	return b
}

// boot starts the VM on the lab's disk as a bootloader would: the
// profile's default generation, or the one-shot entry the router left
// (vm.ReadBootEntry). QEMU must have ended.
func (l *routerVMLab) boot() (*vm.Router, *timedConsole) {
	if l.bootDir == "" {
		l.bootDir = l.t.TempDir()
	}
	e, err := vm.ReadBootEntry(l.disk.Image, l.bootDir)
	if err != nil {
		l.t.Fatalf("the test bootloader: %v", err)
	}
	for _, n := range e.Notes {
		l.t.Logf("the test bootloader: %s", n)
	}
	l.entry = e
	c := newTimedConsole()
	r, err := vm.StartRouter(context.Background(), vm.RouterOptions{Disk: l.disk, Boot: e, NetNS: l.net.Router, NICs: l.nics, Console: c})
	if err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() {
		r.Kill()
		if l.t.Failed() || os.Getenv("ROOST_SHOW_CONSOLE") != "" {
			l.t.Logf("the VM's console (generation %d: %s):\n%s\nQMP events: %v", e.Generation, e.Cmdline, c.String(), r.Events())
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
	Hostname   string          `json:"hostname"`
	Agent      string          `json:"agent"`
	Version    string          `json:"version"`
	Current    string          `json:"currentSystem"`
	Booted     string          `json:"bootedSystem"`
	Generation int             `json:"generation"`
	Services   []serviceStatus `json:"services"`
	Pending    *struct {
		System         string    `json:"system"`
		Deadline       time.Time `json:"deadline"`
		PrevSystem     string    `json:"previousSystem"`
		PrevGeneration int       `json:"previousGeneration"`
	} `json:"pendingActivation"`
	LastRollback *struct {
		System string `json:"system"`
		To     string `json:"to"`
		Why    string `json:"why"`
	} `json:"lastRollback"`
}

func (s vmStatus) pid() string { return agentStatus{Agent: s.Agent}.pid() }

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

// roost runs roost on the LAN host, the laptop, with its home and Nix
// store.
func (l *routerVMLab) roost(args ...string) result {
	l.t.Helper()
	return run(l.t, nil, l.lap.env(), "ip", labnet.In(l.net.LAN, append([]string{roost}, args...)...)[1:]...)
}

// roostAsync runs roost like roost, in the background: its result comes
// once it ends (exit -1: it did not run).
func (l *routerVMLab) roostAsync(args ...string) <-chan result {
	done := make(chan result, 1)
	go func() {
		cmd := exec.Command("ip", labnet.In(l.net.LAN, append([]string{roost}, args...)...)[1:]...)
		cmd.Env = append(os.Environ(), l.lap.env()...)
		var out, errb strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errb
		code := -1
		if err := cmd.Run(); err == nil || cmd.ProcessState != nil {
			code = cmd.ProcessState.ExitCode()
		}
		done <- result{stdout: out.String(), stderr: errb.String(), code: code}
	}()
	return done
}

func (l *routerVMLab) mustRoost(args ...string) string {
	l.t.Helper()
	r := l.roost(args...)
	if r.code != 0 {
		l.t.Fatalf("roost %s: exit %d\n%s%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// lookup asks the router's DNS forwarder for name's IPv4 addresses, from
// the LAN host.
func (l *routerVMLab) lookup(name string) string {
	l.t.Helper()
	r := run(l.t, nil, nil, "ip", labnet.In(l.net.LAN, "dig", "+short", "+time=2", "+tries=3", "@192.168.1.1", name, "A")[1:]...)
	if r.code != 0 {
		l.t.Fatalf("dig %s from the LAN host: exit %d\n%s%s", name, r.code, r.stdout, r.stderr)
	}
	return strings.TrimSpace(r.stdout)
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
// from its own disk (roostd init, PID 1), a system the Nix library built:
// roostd runs the disk's system and config; the LAN host gets IPv4 from
// the router's DHCP server and IPv6 in the prefix kea delegates, and
// reaches the ISP over both; `roostd reboot` over SSH reboots cleanly
// (QEMU ends with status 0, the console shows the disk unmounted); the
// second boot of the same disk runs the same generation with the same SSH
// host key (known_hosts checked strictly), DHCPv6 DUID, WAN address and
// delegated prefix. Then what a reboot is for: `roost rebuild boot`
// changes nothing until `roost reboot`, after which the new system runs;
// `roostd rollback --boot` changes nothing until the next reboot, which
// runs the previous generation; `roostd poweroff` powers it off.
func TestBootGenerationInVM(t *testing.T) {
	l := startRouterVMLab(t)
	systems := newVMSystems(t, l.lap.nix)
	sys := systems.build("roost-system-dev", l.config(), roostd)
	l.disk = systems.disk(sys)

	r, c := l.boot()
	_, up := c.waitFor(t, "agent ready", 0, 2*time.Minute)
	v4, v6 := l.lanAddresses()
	both := time.Since(c.start)
	l.reaches()
	st := l.waitAllUp(false)
	if st.Current != sys || st.Booted != sys || st.Generation != 1 || !strings.Contains(st.Agent, "roostd") {
		t.Fatalf("status after the first boot: %+v; want %s, generation 1", st, sys)
	}
	hostKey := st.service("ssh").Outputs["host-key"]
	wan, prefix := st.wanLeases()
	if wan == "" || !strings.HasPrefix(prefix, "2001:db8:") {
		t.Fatalf("the router's WAN has %q and %q: wan-dhcp %v, wan-dhcp6 %v", wan, prefix, st.service("wan-dhcp").Outputs, st.service("wan-dhcp6").Outputs)
	}
	duids, leases := l.duids()
	t.Logf("first boot: agent ready %.1fs, LAN host has %s and %s %.1fs after QEMU started; the router's WAN has %s and %s", up.Seconds(), v4, v6, both.Seconds(), wan, prefix)

	if res := l.ssh(true, "roostd", "reboot"); res.code != 0 && res.code != 255 {
		t.Fatalf("roostd reboot: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	if err := r.Wait(time.Minute); err != nil {
		t.Fatalf("the VM after roostd reboot: %v", err)
	}
	for _, want := range []string{`msg="agent stopped"`, "msg=unmounted from=init path=/persist", "msg=unmounted from=init path=/storage", "system down: reboot"} {
		c.waitFor(t, want, 0, time.Second)
	}

	r, c = l.boot()
	_, up = c.waitFor(t, "agent ready", 0, 2*time.Minute)
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
	if w, p := st.wanLeases(); w != wan || p != prefix {
		t.Fatalf("the WAN has %s and %s after the reboot, had %s and %s", w, p, wan, prefix)
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

	// roost rebuild boot: the new system is the next boot's, and nothing
	// changes before (the LAN's DNS does not know the new name).
	nas := map[string][]string{"nas": {"192.168.1.10"}}
	sys2 := systems.build("roost-system-dev", l.configWith(nas), roostd)
	res, took := l.rebuild("boot", "--system", sys2)
	if res.Mode != "boot" || res.Generation != 2 || res.Confirmed {
		t.Fatalf("roost rebuild boot: %+v", res)
	}
	before := st
	st = l.waitAllUp(true)
	if st.Current != sys || st.Booted != sys || st.Generation != 2 || st.pid() != before.pid() || st.Pending != nil || l.lookup("nas.home.arpa") != "" {
		t.Fatalf("after roost rebuild boot: %+v, nas.home.arpa %q; want %s running as before (pid %s), generation 2 the default", st, l.lookup("nas.home.arpa"), sys, before.pid())
	}
	t.Logf("roost rebuild boot: %.1fs (sent %d of %d paths); nothing changed until the reboot", took.Seconds(), res.SentPaths, res.ClosurePaths)

	r, c = l.reboot(r, c, hostKey)
	st = l.waitAllUp(true)
	if st.Current != sys2 || st.Booted != sys2 || st.Generation != 2 || l.lookup("nas.home.arpa") != "192.168.1.10" {
		t.Fatalf("after the reboot: %+v, nas.home.arpa %q; want %s, generation 2", st, l.lookup("nas.home.arpa"), sys2)
	}

	// roostd rollback --boot: the previous generation is the next boot's;
	// the running system stays until then.
	before = st
	var rolled struct {
		Generation int    `json:"generation"`
		System     string `json:"system"`
		Running    bool   `json:"running"`
	}
	out := l.ssh(true, "roostd", "rollback", "--boot", "--json")
	mustJSON(t, "roostd rollback --boot --json", out.stdout, &rolled)
	if out.code != 0 || rolled.Generation != 1 || rolled.System != sys || rolled.Running {
		t.Fatalf("roostd rollback --boot: exit %d, %+v\n%s", out.code, rolled, out.stderr)
	}
	st = l.waitAllUp(true)
	if st.Current != sys2 || st.Booted != sys2 || st.Generation != 1 || st.pid() != before.pid() || l.lookup("nas.home.arpa") != "192.168.1.10" {
		t.Fatalf("after roostd rollback --boot: %+v; want %s still running (pid %s), generation 1 the default", st, sys2, before.pid())
	}
	r, c = l.reboot(r, c, hostKey)
	st = l.waitAllUp(true)
	if st.Current != sys || st.Booted != sys || st.Generation != 1 || l.lookup("nas.home.arpa") != "" {
		t.Fatalf("after the reboot: %+v; want %s, generation 1", st, sys)
	}

	if res := l.ssh(true, "roostd", "poweroff"); res.code != 0 && res.code != 255 {
		t.Fatalf("roostd poweroff: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	if err := r.Wait(time.Minute); err != nil {
		t.Fatalf("the VM after roostd poweroff: %v", err)
	}
	c.waitFor(t, "system down: poweroff", 0, time.Second)
}

// wanLeases are what the router's WAN holds from the ISP: its DHCPv4
// address and its delegated prefix.
func (s vmStatus) wanLeases() (address, prefix string) {
	v6 := s.service("wan-dhcp6").Outputs
	return s.service("wan-dhcp").Outputs["address"], v6["prefix/0/prefix"] + "/" + v6["prefix/0/len"]
}

// reboot reboots the router with roost reboot from the LAN host, boots
// the VM again once QEMU ends (the bootloader's part), and checks what
// roost reboot says: the times, and the host key it had before.
func (l *routerVMLab) reboot(r *vm.Router, c *timedConsole, hostKey string) (*vm.Router, *timedConsole) {
	t := l.t
	t.Helper()
	done := l.roostAsync("reboot", "--host", "rotuer", "--json")
	if err := r.Wait(time.Minute); err != nil {
		t.Fatalf("the VM after roost reboot: %v", err)
	}
	c.waitFor(t, "system down: reboot", 0, time.Second)
	r, c = l.boot()
	var res result
	select {
	case res = <-done:
	case <-time.After(3 * time.Minute):
		t.Fatal("roost reboot did not return within 3 minutes of the VM's new start")
	}
	if res.code != 0 {
		t.Fatalf("roost reboot: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	var rb struct {
		DownSeconds float64 `json:"downSeconds"`
		UpSeconds   float64 `json:"upSeconds"`
		Waited      bool    `json:"waited"`
		HostKey     string  `json:"hostKey"`
		Generation  int     `json:"generation"`
	}
	mustJSON(t, "roost reboot --json", res.stdout, &rb)
	if !rb.Waited || rb.HostKey != hostKey || rb.UpSeconds <= rb.DownSeconds {
		t.Fatalf("roost reboot: exit %d, %+v (host key was %s)\n%s", res.code, rb, hostKey, res.stderr)
	}
	_, ready := c.waitFor(t, "agent ready", 0, time.Minute)
	t.Logf("roost reboot: down after %.1fs, SSH answering with the same host key after %.1fs (agent ready %.1fs after QEMU started)",
		rb.DownSeconds, rb.UpSeconds, ready.Seconds())
	return r, c
}
