package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/roostrouter/roost/itest/isp"
	"github.com/roostrouter/roost/itest/labnet"
)

// addressTimers are the ISP's: a renewal every 2 s, so that a renumbering
// reaches the router within seconds, as it would at T1 on a real line.
var addressTimers = isp.Times{Renew: 2, Rebind: 4, Preferred: 30, Valid: 40}

// routerStack is a way to run the router's addressing: roostd with
// docs/rotuer-dhcp.json, or what an OpenWrt-like Linux router runs.
type routerStack struct {
	name  string
	start func(n *labnet.Net, work string) (stop func(), err error)
}

// ispServer4 is the ISP's DHCPv4 server in a run: kea, or a second
// implementation that answers a router's renewals differently.
type ispServer4 struct {
	name string
	// start runs it in n's ISP namespace with its files in dir; nil: kea.
	start func(n *labnet.Net, dir string) (stop func(), err error)
}

// benchAddressing times, for roostd and for dhcpcd + dnsmasq on the same
// lab network and ISP (kea), how long after the WAN link comes up the LAN
// host reaches the ISP over IPv4 and over IPv6 (a SLAAC address in the
// delegated prefix), and how long after the ISP renumbers the LAN host
// holds a preferred address in the new prefix. A second row set has
// dnsmasq as the ISP's DHCPv4 server (kea-dhcp6 still for IPv6), for the
// IPv4 row only.
func benchAddressing(roostd string) error {
	stacks := []routerStack{
		{"roostd", func(n *labnet.Net, work string) (func(), error) { return startRoostd(roostd, n, work) }},
		{"dhcpcd 9.4 + dnsmasq 2.90", startDhcpcdDnsmasq},
	}
	isps := []ispServer4{
		{name: "kea 2.2"},
		{name: "dnsmasq 2.90", start: func(n *labnet.Net, dir string) (func(), error) {
			s, err := isp.StartServer4(isp.NewDnsmasq4(dir, n.ISP), isp.V4{Times: isp.Times{Valid: addressTimers.Valid}})
			if err != nil {
				return nil, err
			}
			return s.Stop, nil
		}},
	}
	const runs = 3
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "addressing (renew every 2 s; median of %d)\tISP's DHCPv4\trouter\ts\truns\t\n", runs)
	for _, server := range isps {
		for _, st := range stacks {
			var v4, v6, renumber []time.Duration
			for i := 0; i < runs; i++ {
				a, b, c, err := addressRun(st, server)
				if err != nil {
					return fmt.Errorf("%s with %s at the ISP: %w", st.name, server.name, err)
				}
				v4, v6, renumber = append(v4, a), append(v6, b), append(renumber, c)
			}
			rows := []struct {
				what string
				ds   []time.Duration
			}{
				{"WAN link up → LAN host reaches the ISP, IPv4", v4},
				{"WAN link up → LAN host reaches the ISP, IPv6", v6},
				{"ISP renumbers → LAN host's new address preferred", renumber},
			}
			if server.start != nil {
				rows = rows[:1] // IPv6 is kea-dhcp6's either way
			}
			for _, r := range rows {
				sorted := slices.Clone(r.ds)
				slices.Sort(sorted)
				var all []string
				for _, d := range r.ds {
					all = append(all, fmt.Sprintf("%.2f", d.Seconds()))
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%.2f\t%s\t\n", r.what, server.name, st.name, sorted[len(sorted)/2].Seconds(), strings.Join(all, " "))
			}
		}
	}
	return tw.Flush()
}

// addressRun is one run of st with server4 at the ISP; with a server
// other than kea it measures IPv4 only.
func addressRun(st routerStack, server4 ispServer4) (v4, v6, renumber time.Duration, err error) {
	work, err := os.MkdirTemp("", "addrbench-")
	if err != nil {
		return
	}
	defer os.RemoveAll(work)
	defer func() {
		if err != nil {
			err = fmt.Errorf("%w\n%s", err, logTails(work))
		}
	}()
	n := labnet.New(fmt.Sprintf("ad%d-", os.Getpid()))
	n.DynamicLAN = true
	if err = n.Up(); err != nil {
		return
	}
	defer n.Down()
	// The WAN starts without carrier: the ISP's end is down (keeping its
	// IPv6 address, which the kernel would otherwise drop).
	if err = labnet.Run("ip", "netns", "exec", n.ISP, "sysctl", "-q", "-w", "net.ipv6.conf.isp0.keep_addr_on_down=1"); err != nil {
		return
	}
	if err = labnet.Run("ip", "-n", n.ISP, "link", "set", "isp0", "down"); err != nil {
		return
	}
	stop, err := st.start(n, work)
	if err != nil {
		return
	}
	defer stop()
	type keaRun struct {
		kea    **isp.Kea
		binary string
		config string
	}
	var k4, k6 *isp.Kea
	keas := []keaRun{{&k6, "kea-dhcp6", isp.Kea6Config(addressTimers, "2001:db8:100::")}}
	if server4.start == nil {
		keas = append(keas, keaRun{&k4, "kea-dhcp4", isp.Kea4Config(addressTimers)})
	} else {
		dir := filepath.Join(work, "dhcp4")
		os.Mkdir(dir, 0o700)
		var stop4 func()
		if stop4, err = server4.start(n, dir); err != nil {
			return
		}
		defer stop4()
	}
	for _, k := range keas {
		dir := filepath.Join(work, k.binary)
		os.Mkdir(dir, 0o700)
		if *k.kea, err = isp.StartKea(dir, n.ISP, k.binary, k.config, false); err != nil {
			return
		}
		defer (*k.kea).Stop()
	}
	script, err := labnet.UdhcpcScript(work)
	if err != nil {
		return
	}
	udhcpc := exec.Command("ip", "netns", "exec", n.LAN, "/bin/busybox", "udhcpc", "-i", "eth0", "-f", "-t", "0", "-T", "1", "-A", "1", "-s", script)
	if err = udhcpc.Start(); err != nil {
		return
	}
	defer func() { udhcpc.Process.Kill(); udhcpc.Wait() }()
	time.Sleep(2 * time.Second) // the router's LAN side is up; its WAN has no carrier

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	t0 := time.Now()
	if err = labnet.Run("ip", "-n", n.ISP, "link", "set", "isp0", "up"); err != nil {
		return
	}
	if err = n.RouteDelegations(); err != nil {
		return
	}
	go func() {
		// The ISP's router advertises once its link-local address is usable.
		for ctx.Err() == nil && isp.Advertise(ctx, n.ISP, "isp0", time.Second) != nil {
			time.Sleep(20 * time.Millisecond)
		}
	}()
	reach := func(addr string) func() bool {
		return func() bool {
			return labnet.Reaches(n.LAN, addr)
		}
	}
	d4, d6 := make(chan error, 1), make(chan error, 1)
	go func() { d4 <- labnet.Wait(60*time.Second, 10*time.Millisecond, reach("198.51.100.1")) }()
	if server4.start == nil {
		go func() { d6 <- labnet.Wait(60*time.Second, 10*time.Millisecond, reach("2001:db8:0:1::1")) }()
	}
	if err = <-d4; err != nil {
		return 0, 0, 0, fmt.Errorf("the LAN host never reached the ISP over IPv4")
	}
	v4 = time.Since(t0)
	if server4.start != nil {
		return
	}
	if err = <-d6; err != nil {
		return 0, 0, 0, fmt.Errorf("the LAN host never reached the ISP over IPv6:\n%s", netState(n))
	}
	v6 = time.Since(t0)

	// The ISP renumbers: a new pool, the old leases forgotten.
	k6.Stop()
	os.Remove(filepath.Join(k6.Dir, "leases6.csv"))
	os.WriteFile(filepath.Join(k6.Dir, "kea.json"), []byte(fmt.Sprintf(isp.Kea6Config(addressTimers, "2001:db8:200::"), k6.Dir)), 0o644)
	t0 = time.Now()
	if err = k6.Start(); err != nil {
		return
	}
	if err = labnet.Wait(60*time.Second, 10*time.Millisecond, func() bool {
		out, _ := exec.Command("ip", "-n", n.LAN, "-6", "-o", "addr", "show", "dev", "eth0").Output()
		for _, l := range strings.Split(string(out), "\n") {
			if strings.Contains(l, " 2001:db8:200:1:") && !strings.Contains(l, "tentative") && !strings.Contains(l, "deprecated") {
				return true
			}
		}
		return false
	}); err != nil {
		return 0, 0, 0, errors.New("the LAN host never took an address in the new prefix")
	}
	renumber = time.Since(t0)
	return
}

func startRoostd(roostd string, n *labnet.Net, work string) (func(), error) {
	cmd := exec.Command("ip", "netns", "exec", n.Router, roostd, "run", "--root", filepath.Join(work, "root"),
		"--state", filepath.Join(work, "state"), "--config", "docs/rotuer-dhcp.json")
	log, _ := os.Create(filepath.Join(work, "roostd.log"))
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return func() { cmd.Process.Kill(); cmd.Wait(); log.Close() }, nil
}

// startDhcpcdDnsmasq sets the router up as a Linux router without roost
// would be: a bridge, nftables masquerade, dhcpcd on the WAN (DHCPv4, and
// DHCPv6 with the LAN's /64 from the delegation) and dnsmasq on the LAN
// (DHCPv4 and router advertisements built from br-lan's addresses). Each
// daemon runs in a private mount namespace so that its lease and pid files
// stay in the run's folder.
func startDhcpcdDnsmasq(n *labnet.Net, work string) (func(), error) {
	for _, args := range [][]string{
		{"link", "add", "br-lan", "type", "bridge"},
		{"link", "set", "lan0", "master", "br-lan"},
		{"link", "set", "lan1", "master", "br-lan"},
		{"link", "set", "wan", "up"}, {"link", "set", "lan0", "up"}, {"link", "set", "lan1", "up"}, {"link", "set", "br-lan", "up"},
		{"addr", "add", "192.168.1.1/24", "dev", "br-lan"},
	} {
		if err := labnet.Run(append([]string{"ip", "-n", n.Router}, args...)...); err != nil {
			return nil, err
		}
	}
	for _, kv := range []string{"net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"} {
		if err := labnet.Run("ip", "netns", "exec", n.Router, "sysctl", "-q", "-w", kv); err != nil {
			return nil, err
		}
	}
	if err := labnet.Run("ip", "netns", "exec", n.Router, "nft", "add table ip nat; add chain ip nat post { type nat hook postrouting priority 100; }; add rule ip nat post oifname wan masquerade"); err != nil {
		return nil, err
	}
	conf := filepath.Join(work, "dhcpcd.conf")
	// No hooks at all: dhcpcd's hooks write /etc/resolv.conf and set the
	// hostname, which are the host's (script /bin/true runs none of them).
	os.WriteFile(conf, []byte(`allowinterfaces wan
script /bin/true
nohook resolv.conf, hostname, ntp
interface wan
	ipv6rs
	ia_na 1
	ia_pd 2//56 br-lan/1/64
`), 0o644)
	// Each daemon gets private /run, /var/lib, /etc/resolv.conf and
	// hostname: nothing it writes can reach the host's.
	resolv := filepath.Join(work, "resolv.conf")
	os.WriteFile(resolv, nil, 0o644)
	private := func(name, script string) (*exec.Cmd, error) {
		cmd := exec.Command("ip", "netns", "exec", n.Router, "unshare", "-m", "-u", "sh", "-c",
			"mount -t tmpfs none /run && mount -t tmpfs none /var/lib && mount --bind "+resolv+" /etc/resolv.conf && "+
				"mkdir -p /run/dhcpcd /var/lib/dhcpcd /var/lib/misc && exec "+script)
		log, _ := os.Create(filepath.Join(work, name+".log"))
		cmd.Stdout, cmd.Stderr = log, log
		return cmd, cmd.Start()
	}
	dhcpcd, err := private("dhcpcd", "dhcpcd -B -f "+conf+" wan")
	if err != nil {
		return nil, err
	}
	dnsmasq, err := private("dnsmasq", "dnsmasq -k -C /dev/null -u root --pid-file= --port=0 --interface=br-lan --bind-dynamic "+
		"--dhcp-range=192.168.1.100,192.168.1.199,12h --enable-ra --dhcp-range=::,constructor:br-lan,ra-only --ra-param=br-lan,10 "+
		"--dhcp-leasefile="+filepath.Join(work, "dnsmasq.leases"))
	if err != nil {
		dhcpcd.Process.Kill()
		dhcpcd.Wait()
		return nil, err
	}
	return func() {
		for _, c := range []*exec.Cmd{dhcpcd, dnsmasq} {
			stopGently(c)
		}
	}, nil
}

// stopGently stops a daemon with SIGTERM, and SIGKILL if it is still
// there after 5 s: dhcpcd takes its privilege-separated helpers down with
// it on SIGTERM, and leaves them running on SIGKILL.
func stopGently(c *exec.Cmd) {
	c.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { c.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		c.Process.Kill()
		<-done
	}
}

// logTails is the end of each log in work, to say why a run failed.
func logTails(work string) string {
	var b strings.Builder
	logs, _ := filepath.Glob(filepath.Join(work, "*.log"))
	more, _ := filepath.Glob(filepath.Join(work, "*", "*.log"))
	for _, l := range append(logs, more...) {
		data, _ := os.ReadFile(l)
		lines := strings.Split(strings.TrimSpace(string(data)), "\n")
		fmt.Fprintf(&b, "--- %s\n%s\n", l, strings.Join(lines[max(0, len(lines)-15):], "\n"))
	}
	return b.String()
}

// netState is the lab's IPv6 addresses and routes, to say why a run failed.
func netState(n *labnet.Net) string {
	var b strings.Builder
	for _, ns := range []string{n.ISP, n.Router, n.LAN} {
		for _, what := range []string{"addr", "route"} {
			out, _ := exec.Command("ip", "-n", ns, "-6", what).CombinedOutput()
			fmt.Fprintf(&b, "--- %s: ip -6 %s\n%s", ns, what, out)
		}
	}
	return b.String()
}
