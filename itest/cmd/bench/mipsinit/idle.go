package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/roostrouter/roost/itest/vm/guest"
)

// idleRoostd runs roostd with the router's config until every service is
// up, leaves it idle, and reports its resident set and the RAM left.
func idleRoostd(spec Spec) {
	const name = "idle-roostd"
	if err := os.MkdirAll("/persist/roost", 0o700); err != nil {
		bench(name, "error=%q", err.Error())
		return
	}
	log, err := os.Create("/run/roostd.log")
	if err != nil {
		bench(name, "error=%q", err.Error())
		return
	}
	defer log.Close()
	cmd := exec.Command(roostd, "run", "--root", "/", "--state", "/persist/roost", "--config", config)
	cmd.Env = []string{"PATH=" + payload + "/bin", "HOME=/"}
	cmd.Stdout, cmd.Stderr = log, log
	started := guest.Uptime()
	if err := cmd.Start(); err != nil {
		bench(name, "error=%q", err.Error())
		return
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		if s := stop(cmd.Process, exited); s != "exit 0" {
			say("roostd on SIGTERM: %s", s)
		}
	}()
	up, total, notUp, err := waitUp(exited, 45*time.Second, 4*time.Minute)
	upAt := guest.Uptime()
	if err != nil || len(notUp) > 0 {
		b, _ := os.ReadFile("/run/roostd.log")
		say("roostd's log:\n%s", b)
	}
	if err != nil {
		bench(name, "error=%q", err.Error())
		return
	}
	time.Sleep(time.Duration(spec.IdleSeconds) * time.Second)
	st := procStatus(cmd.Process.Pid)
	mem := meminfo()
	bench(name, "rss=%d hwm=%d anon=%d file=%d children=%d memavail=%d memfree=%d up=%d/%d notup=%s started=%.1f upat=%.1f idle=%d",
		st["VmRSS"], st["VmHWM"], st["RssAnon"], st["RssFile"], childrenRSS(cmd.Process.Pid), mem["MemAvailable"], mem["MemFree"],
		up, total, orNone(notUp), started, upAt, spec.IdleSeconds)
}

// waitUp polls roostd status --json until every service is up, or until
// what is not up has stayed so for settle (a service that fails on this
// kernel, and those that wait for it), or the timeout, and says how many
// are up.
func waitUp(exited chan error, settle, timeout time.Duration) (up, total int, notUp []string, err error) {
	deadline := time.Now().Add(timeout)
	last, since := "", time.Now()
	for {
		select {
		case err := <-exited:
			exited <- err
			return 0, 0, nil, fmt.Errorf("roostd exited: %v", err)
		case <-time.After(2 * time.Second):
		}
		up, total, notUp, err = status()
		if err == nil && total > 0 && up == total {
			return up, total, nil, nil
		}
		if now := strings.Join(notUp, ","); now != last || err != nil {
			last, since = now, time.Now()
		}
		switch {
		case err == nil && total > 0 && time.Since(since) > settle:
			return up, total, notUp, nil // measured as it is; notup says what is not up
		case time.Now().After(deadline) && err != nil:
			return up, total, notUp, err
		case time.Now().After(deadline):
			return up, total, notUp, nil
		}
	}
}

func status() (up, total int, notUp []string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, roostd, "status", "--json", "--root", "/").Output()
	if err != nil {
		return 0, 0, nil, fmt.Errorf("roostd status: %w", err)
	}
	var st struct {
		Agent    string `json:"agent"`
		Services []struct {
			Name  string `json:"name"`
			State string `json:"state"`
		} `json:"services"`
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return 0, 0, nil, fmt.Errorf("roostd status: %w", err)
	}
	for _, s := range st.Services {
		if s.State == "up" {
			up++
		} else {
			notUp = append(notUp, s.Name+":"+s.State)
		}
	}
	return up, len(st.Services), notUp, nil
}

// childrenRSS is the resident set of pid's children, in KiB.
func childrenRSS(pid int) int64 {
	dirs, _ := filepath.Glob("/proc/[0-9]*/status")
	var sum int64
	for _, d := range dirs {
		b, err := os.ReadFile(d)
		if err != nil || !strings.Contains(string(b), "\nPPid:\t"+strconv.Itoa(pid)+"\n") {
			continue
		}
		n, _ := strconv.Atoi(filepath.Base(filepath.Dir(d)))
		sum += procStatus(n)["VmRSS"]
	}
	return sum
}

// idleDebian runs Debian's dnsmasq (DHCP server and DNS forwarder on the
// LAN, as roostd's config has them) and dropbear (SSH on the LAN address)
// idle, and reports their resident sets and the RAM left.
func idleDebian(spec Spec) {
	const name = "idle-debian"
	ap, err := netip.ParseAddrPort(spec.SSHListen)
	if err != nil {
		bench(name, "error=%q", err.Error())
		return
	}
	lan, err := lanInterface(ap.Addr())
	if err != nil {
		bench(name, "error=%q", err.Error())
		return
	}
	if out, err := debian("dropbearkey", "-t", "ed25519", "-f", "/run/dropbear_ed25519").CombinedOutput(); err != nil {
		bench(name, "error=%q", fmt.Sprintf("dropbearkey: %v: %s", err, out))
		return
	}
	net3 := strings.Join(strings.Split(ap.Addr().String(), ".")[:3], ".")
	procs := []*exec.Cmd{
		debian("dnsmasq", "-k", "-C", "/dev/null", "--user=root", "--group=root", "--no-resolv", "--server=192.0.2.53",
			"--interface="+lan, "--bind-interfaces", "--dhcp-range="+net3+".100,"+net3+".199,12h", "--domain=home.arpa",
			"--dhcp-leasefile=/run/dnsmasq.leases", "--pid-file=/run/dnsmasq.pid", "--log-facility=-"),
		debian("dropbear", "-F", "-E", "-r", "/run/dropbear_ed25519", "-p", spec.SSHListen, "-P", "/run/dropbear.pid"),
	}
	logs := make([]strings.Builder, len(procs))
	exited := make([]chan error, len(procs))
	for i, p := range procs {
		p.Stdout, p.Stderr = &logs[i], &logs[i]
		if err := p.Start(); err != nil {
			bench(name, "error=%q", fmt.Sprintf("%s: %v", p.Args[3], err))
			return
		}
		exited[i] = make(chan error, 1)
		go func() { exited[i] <- p.Wait() }()
		defer stop(p.Process, exited[i])
	}
	time.Sleep(time.Duration(spec.IdleSeconds) * time.Second)
	var rss, hwm []int64
	for i, p := range procs {
		select {
		case err := <-exited[i]:
			exited[i] <- err
			bench(name, "error=%q", fmt.Sprintf("%s exited: %v: %s", p.Args[3], err, logs[i].String()))
			return
		default:
		}
		st := procStatus(p.Process.Pid)
		rss, hwm = append(rss, st["VmRSS"]), append(hwm, st["VmHWM"])
	}
	mem := meminfo()
	bench(name, "rss=%d hwm=%d dnsmasq=%d dropbear=%d memavail=%d memfree=%d lan=%s idle=%d",
		rss[0]+rss[1], hwm[0]+hwm[1], rss[0], rss[1], mem["MemAvailable"], mem["MemFree"], lan, spec.IdleSeconds)
}

// debian is a command running one of Debian's programs through its own
// dynamic loader and libraries (the initramfs has no /lib).
func debian(prog string, args ...string) *exec.Cmd {
	cmd := exec.Command(loader, append([]string{"--library-path", debLib, filepath.Join(debBin, prog)}, args...)...)
	cmd.Env = []string{"PATH=" + debBin, "HOME=/"}
	return cmd
}

// lanInterface is the interface holding addr; roostd's config put it
// there, and if roostd took it away when it stopped, it goes on the
// board's first LAN port, eth1.
func lanInterface(addr netip.Addr) (string, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return "", err
	}
	for _, i := range ifs {
		addrs, _ := i.Addrs()
		if slices.ContainsFunc(addrs, func(a net.Addr) bool {
			p, err := netip.ParsePrefix(a.String())
			return err == nil && p.Addr() == addr
		}) {
			return i.Name, nil
		}
	}
	l, err := netlink.LinkByName("eth1")
	if err != nil {
		return "", fmt.Errorf("eth1: %w", err)
	}
	a, err := netlink.ParseAddr(addr.String() + "/24")
	if err != nil {
		return "", err
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return "", fmt.Errorf("eth1 up: %w", err)
	}
	if err := netlink.AddrAdd(l, a); err != nil {
		return "", fmt.Errorf("add %s to eth1: %w", a, err)
	}
	return "eth1", nil
}

// stop ends a process with SIGTERM (SIGKILL 20 s later) and says how it
// ended.
func stop(p *os.Process, exited chan error) string {
	p.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		exited <- err
		if err != nil {
			return err.Error()
		}
		return "exit 0"
	case <-time.After(20 * time.Second):
		p.Kill()
		return "still running 20 s after SIGTERM; killed"
	}
}

// orNone joins names with commas, "-" for none.
func orNone(names []string) string {
	if len(names) == 0 {
		return "-"
	}
	return strings.Join(names, ",")
}
