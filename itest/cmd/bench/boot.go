package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"

	"github.com/roostrouter/roost/itest/isp"
	"github.com/roostrouter/roost/itest/labnet"
	"github.com/roostrouter/roost/itest/vm"
)

// benchBoot times the router VM (board qemu-x86_64: QEMU under TCG with
// one CPU and 256 MB, Debian's kernel, roostd init as PID 1, booting its
// generation from its own disk, its NICs bridged into the lab's
// namespaces) from QEMU's start until its agent is ready, its SSH endpoint
// answers a host on the LAN, and a LAN host has both families (IPv4 from
// the router's DHCP server, IPv6 by SLAAC in the /64 the router announces
// out of the prefix kea delegated to it); and beside it, the same times
// for a full reboot of that VM, from `roostd reboot` (the clean shutdown,
// QEMU's restart, the boot). Each run boots a fresh copy of the disk,
// against a fresh ISP.
func benchBoot(bin string) error {
	const runs = 3
	b, err := newBootBench(filepath.Join(bin, "roostd"))
	if err != nil {
		return err
	}
	defer b.close()
	var first, reboot []bootTimes
	for i := range runs {
		f, r, err := b.run(i)
		if err != nil {
			return fmt.Errorf("router VM boot, run %d: %w", i+1, err)
		}
		first, reboot = append(first, f), append(reboot, r)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "router VM boot (qemu-x86_64, TCG, 1 CPU, 256 MB; s, median of %d)\tfirst boot\tfull reboot\truns: first boot | reboot\t\n", runs)
	fmt.Fprintf(tw, "\tfrom QEMU's start\tfrom roostd reboot\t\t\n")
	for _, row := range []struct {
		what string
		of   func(bootTimes) time.Duration
	}{
		{"the VM is down (QEMU ended)", func(t bootTimes) time.Duration { return t.down }},
		{"roostd init: agent ready", func(t bootTimes) time.Duration { return t.ready }},
		{"SSH answers (a host on the LAN)", func(t bootTimes) time.Duration { return t.ssh }},
		{"LAN host has IPv4 (DHCP) and IPv6 (SLAAC, delegated prefix)", func(t bootTimes) time.Duration { return t.lan }},
	} {
		f, r := bootMedian(first, row.of), bootMedian(reboot, row.of)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s | %s\t\n", row.what, f, r, bootRuns(first, row.of), bootRuns(reboot, row.of))
	}
	return tw.Flush()
}

// bootTimes are one boot's times, from QEMU's start (a first boot) or
// from the reboot command (a reboot; down is when QEMU ended).
type bootTimes struct{ down, ready, ssh, lan time.Duration }

func bootMedian(ts []bootTimes, of func(bootTimes) time.Duration) string {
	var ds []time.Duration
	for _, t := range ts {
		ds = append(ds, of(t))
	}
	slices.Sort(ds)
	if len(ds) == 0 || ds[len(ds)/2] == 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f", ds[len(ds)/2].Seconds())
}

func bootRuns(ts []bootTimes, of func(bootTimes) time.Duration) string {
	var all []string
	for _, t := range ts {
		if of(t) == 0 {
			return "–"
		}
		all = append(all, fmt.Sprintf("%.1f", of(t).Seconds()))
	}
	return strings.Join(all, " ")
}

// bootBench is the lab around the router VM: the ISP's router
// advertisements (kea runs per run), the LAN host, and a probe: a host
// with a fixed address (192.168.1.2) on the router's second LAN port, which
// asks for SSH without waiting for DHCP.
type bootBench struct {
	work   string
	net    *labnet.Net
	probe  string
	nics   []vm.NIC
	disk   *vm.RouterDisk // pristine: each run boots a copy
	key    string
	stopRA context.CancelFunc
}

func newBootBench(roostd string) (b *bootBench, err error) {
	for _, tool := range []string{"qemu-system-x86_64", "mke2fs", "kea-dhcp4", "kea-dhcp6", "ssh", "ssh-keygen", "/bin/busybox"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("the router VM's boot needs %s: make vmdeps installs what is missing", tool)
		}
	}
	if _, _, err := vm.Kernel(); err != nil {
		return nil, err
	}
	b = &bootBench{stopRA: func() {}}
	if b.work, err = os.MkdirTemp("", "bootbench-"); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			b.close()
		}
	}()
	prefix := fmt.Sprintf("bt%d-", os.Getpid()%100000)
	b.net, b.probe = labnet.New(prefix), prefix+"probe"
	b.net.DynamicLAN = true
	if err := b.net.Up(); err != nil {
		return nil, err
	}
	// The LAN host's spare link goes to the router's lan1, a port of the
	// LAN bridge: the probe takes it.
	for _, args := range [][]string{
		{"ip", "netns", "add", b.probe},
		{"ip", "-n", b.net.LAN, "link", "set", "spare", "netns", b.probe},
		{"ip", "-n", b.probe, "addr", "add", "192.168.1.2/24", "dev", "spare"},
		{"ip", "-n", b.probe, "link", "set", "spare", "up"},
		{"ip", "-n", b.probe, "link", "set", "lo", "up"},
	} {
		if err := labnet.Run(args...); err != nil {
			return nil, err
		}
	}
	if b.nics, err = vm.Wire(b.net.Router, []string{"wan", "lan0", "lan1"}); err != nil {
		return nil, err
	}
	if err := labnet.WaitLinkLocal(b.net.ISP, "isp0", 10*time.Second); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.stopRA = cancel
	if err := isp.Advertise(ctx, b.net.ISP, "isp0", time.Second); err != nil {
		return nil, err
	}
	b.key = filepath.Join(b.work, "id_ed25519")
	if err := labnet.Run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "boot-bench", "-f", b.key); err != nil {
		return nil, err
	}
	config, err := b.config()
	if err != nil {
		return nil, err
	}
	b.disk, err = vm.BuildRouterDisk(filepath.Join(b.work, "disk"), vm.RouterSystem{Roostd: roostd, Config: config,
		Cmdline: "console=ttyS0 panic=-1 quiet", Modules: vm.RouterModules()})
	return b, err
}

// config is the lab's DHCP config (docs/rotuer-dhcp.json) on the VM's
// board, letting the bench's key in.
func (b *bootBench) config() ([]byte, error) {
	var cfg map[string]any
	data, err := os.ReadFile("docs/rotuer-dhcp.json")
	if err == nil {
		err = json.Unmarshal(data, &cfg)
	}
	if err != nil {
		return nil, fmt.Errorf("the example config: %w (run from the repository's top folder)", err)
	}
	pub, err := os.ReadFile(b.key + ".pub")
	if err != nil {
		return nil, err
	}
	cfg["board"] = "qemu-x86_64"
	cfg["ssh"].(map[string]any)["authorizedKeys"] = []string{strings.TrimSpace(string(pub))}
	return json.Marshal(cfg)
}

func (b *bootBench) close() {
	b.stopRA()
	exec.Command("ip", "netns", "del", b.probe).Run()
	if b.net != nil {
		b.net.Down()
	}
	os.RemoveAll(b.work)
}

// run boots a copy of the disk, reboots it with roostd reboot, and powers
// it off.
func (b *bootBench) run(i int) (first, reboot bootTimes, err error) {
	dir := filepath.Join(b.work, fmt.Sprintf("run%d", i))
	if err = os.MkdirAll(dir, 0o755); err != nil {
		return
	}
	for _, k := range []struct{ binary, config string }{
		{"kea-dhcp4", isp.Kea4Config(isp.Lab)}, {"kea-dhcp6", isp.Kea6Config(isp.Lab, "2001:db8:100::")},
	} {
		var kea *isp.Kea
		if err = os.Mkdir(filepath.Join(dir, k.binary), 0o700); err != nil {
			return
		}
		if kea, err = isp.StartKea(filepath.Join(dir, k.binary), b.net.ISP, k.binary, k.config, false); err != nil {
			return
		}
		defer kea.Stop()
	}
	disk := *b.disk
	disk.Image = filepath.Join(dir, "disk.img")
	if err = labnet.Run("cp", "--sparse=always", b.disk.Image, disk.Image); err != nil {
		return
	}
	known := filepath.Join(dir, "known_hosts") // a fresh disk makes a new host key

	start := time.Now()
	lan, err := b.lanHost(dir)
	if err != nil {
		return
	}
	r, c, err := b.boot(&disk)
	if err != nil {
		lan.stop()
		return
	}
	defer func() { r.Kill() }()
	first, err = b.measure(start, c, lan)
	lan.stop()
	if err != nil {
		return first, reboot, fmt.Errorf("first boot: %w\n%s", err, c.tail())
	}

	start = time.Now()
	b.ssh(known, "roostd", "reboot") // its connection may end before it answers
	if err = r.Wait(time.Minute); err != nil {
		return first, reboot, fmt.Errorf("the VM after roostd reboot: %w\n%s", err, c.tail())
	}
	down := time.Since(start)
	if !c.said("system down: reboot") {
		return first, reboot, fmt.Errorf("QEMU ended after roostd reboot, but init did not say it rebooted:\n%s", c.tail())
	}
	// The LAN host asks anew once the router is down, as one that joins
	// the LAN would: a host that kept its lease and address would show
	// nothing of the reboot.
	if lan, err = b.lanHost(dir); err != nil {
		return
	}
	defer lan.stop()
	if r, c, err = b.boot(&disk); err != nil {
		return
	}
	if reboot, err = b.measure(start, c, lan); err != nil {
		return first, reboot, fmt.Errorf("after roostd reboot: %w\n%s", err, c.tail())
	}
	reboot.down = down
	b.ssh(known, "roostd", "poweroff")
	if err = r.Wait(time.Minute); err != nil {
		return first, reboot, fmt.Errorf("the VM after roostd poweroff: %w", err)
	}
	return first, reboot, nil
}

// boot starts QEMU on disk.
func (b *bootBench) boot(disk *vm.RouterDisk) (*vm.Router, *bootConsole, error) {
	c := &bootConsole{}
	r, err := vm.StartRouter(context.Background(), vm.RouterOptions{Disk: disk, NetNS: b.net.Router, NICs: b.nics, Console: c})
	return r, c, err
}

// measure waits for the three marks of a boot that began at start: the
// agent ready (the console), SSH answering the probe, the LAN host with
// both families.
func (b *bootBench) measure(start time.Time, c *bootConsole, lan *bootLAN) (bootTimes, error) {
	deadline := start.Add(2 * time.Minute)
	type answer struct {
		at  time.Time
		err error
	}
	sshc := make(chan answer, 1)
	go func() {
		at, err := sshAnswers(b.probe, "192.168.1.1:22", deadline)
		sshc <- answer{at, err}
	}()
	both, err := lan.both(deadline)
	ssh := <-sshc
	switch {
	case err != nil:
		return bootTimes{}, err
	case ssh.err != nil:
		return bootTimes{}, ssh.err
	case c.readyAt().IsZero():
		return bootTimes{}, fmt.Errorf("init never said its agent was ready")
	}
	return bootTimes{ready: c.readyAt().Sub(start), ssh: ssh.at.Sub(start), lan: both.Sub(start)}, nil
}

// ssh runs a command on the router from the probe, with OpenSSH.
func (b *bootBench) ssh(known string, args ...string) error {
	ssh := []string{"ssh", "-F", "none", "-i", b.key, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
		"-o", "ServerAliveInterval=2", "-o", "ServerAliveCountMax=2",
		"-o", "UserKnownHostsFile=" + known, "-o", "StrictHostKeyChecking=accept-new", "root@192.168.1.1"}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return exec.CommandContext(ctx, "ip", labnet.In(b.probe, append(ssh, args...)...)[1:]...).Run()
}

// bootLAN is the LAN host asking the router for its addresses: its old
// ones dropped, udhcpc running, SLAAC waiting for an advertisement.
type bootLAN struct {
	ns     string
	udhcpc *exec.Cmd
	log    string
}

func (b *bootBench) lanHost(dir string) (*bootLAN, error) {
	if err := labnet.Run("ip", "-n", b.net.LAN, "addr", "flush", "dev", "eth0", "scope", "global"); err != nil {
		return nil, err
	}
	script, err := labnet.UdhcpcScript(dir)
	if err != nil {
		return nil, err
	}
	log, err := os.Create(filepath.Join(dir, "udhcpc.log"))
	if err != nil {
		return nil, err
	}
	defer log.Close()
	cmd := exec.Command("ip", labnet.In(b.net.LAN, "/bin/busybox", "udhcpc", "-i", "eth0", "-f", "-t", "150", "-T", "1", "-s", script)[1:]...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return &bootLAN{ns: b.net.LAN, udhcpc: cmd, log: log.Name()}, nil
}

func (l *bootLAN) stop() {
	l.udhcpc.Process.Kill()
	l.udhcpc.Wait()
}

// both waits until the LAN host has an IPv4 address and a preferred
// IPv6 address in the delegated prefix, and returns when it first did.
func (l *bootLAN) both(deadline time.Time) (time.Time, error) {
	for ; time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		out, _ := exec.Command("ip", "-n", l.ns, "-o", "addr", "show", "dev", "eth0", "scope", "global").Output()
		var v4, v6 bool
		for _, line := range strings.Split(string(out), "\n") {
			v4 = v4 || strings.Contains(line, " inet ")
			v6 = v6 || strings.Contains(line, " inet6 2001:db8:100:") && !strings.Contains(line, "tentative") && !strings.Contains(line, "deprecated")
		}
		if v4 && v6 {
			return time.Now(), nil
		}
	}
	out, _ := exec.Command("ip", "-n", l.ns, "addr", "show", "dev", "eth0").CombinedOutput()
	log, _ := os.ReadFile(l.log)
	return time.Time{}, fmt.Errorf("the LAN host never had both families:\n%sudhcpc:\n%s", out, log)
}

// sshAnswers waits in namespace ns until the SSH server at addr sends
// its banner, and returns when it did. The socket must be made in ns: the
// goroutine's thread enters it and is never unlocked, so it ends with the
// goroutine instead of going back to the pool in the wrong namespace.
func sshAnswers(ns, addr string, deadline time.Time) (time.Time, error) {
	type answer struct {
		at  time.Time
		err error
	}
	c := make(chan answer, 1)
	go func() {
		runtime.LockOSThread()
		f, err := os.Open("/run/netns/" + ns)
		if err == nil {
			err = unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
			f.Close()
		}
		if err != nil {
			c <- answer{err: fmt.Errorf("enter namespace %s: %w", ns, err)}
			return
		}
		for ; time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			conn, err := net.DialTimeout("tcp", addr, 250*time.Millisecond)
			if err != nil {
				continue
			}
			conn.SetReadDeadline(time.Now().Add(2 * time.Second))
			banner := make([]byte, 4)
			_, err = io.ReadFull(conn, banner)
			conn.Close()
			if err == nil && string(banner) == "SSH-" {
				c <- answer{at: time.Now()}
				return
			}
		}
		c <- answer{err: fmt.Errorf("no SSH banner from %s", addr)}
	}()
	a := <-c
	return a.at, a.err
}

// bootConsole keeps a VM's console, and when init said its agent was
// ready.
type bootConsole struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	ready time.Time
}

func (c *bootConsole) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.buf.Write(p)
	if c.ready.IsZero() && bytes.Contains(c.buf.Bytes(), []byte("agent ready")) {
		c.ready = time.Now()
	}
	return len(p), nil
}

func (c *bootConsole) readyAt() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ready
}

func (c *bootConsole) said(s string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Contains(c.buf.Bytes(), []byte(s))
}

// tail is the console's last lines, to say why a run failed.
func (c *bootConsole) tail() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	lines := strings.Split(strings.TrimSpace(c.buf.String()), "\n")
	return "the VM's console, its end:\n" + strings.Join(lines[max(0, len(lines)-30):], "\n")
}
