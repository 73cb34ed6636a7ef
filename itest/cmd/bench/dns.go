package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/roostrouter/roost/itest/isp"
	"github.com/roostrouter/roost/itest/labnet"
)

// dnsBenchRouter is the router of the DNS benchmark: a static WAN and
// LAN; dnsService is added for roostd's own forwarder (no rate limit, so
// that the load generator measures the forwarder, not the limiter).
const (
	dnsBenchRouter = `{
  "hostname": "rotuer", "board": "lab", "ssh": { "disabled": true },
  "services": {
    "wan": { "kind": "link", "interface": "wan" },
    "lan": { "kind": "bridge", "name": "br-lan" },
    "lan0": { "kind": "link", "interface": "lan0", "bridge": "lan" },
    "lan1": { "kind": "link", "interface": "lan1", "bridge": "lan" },
    "wan-addr": { "kind": "address", "link": "wan", "address": "192.0.2.2/24" },
    "lan-addr": { "kind": "address", "link": "lan", "address": "192.168.1.1/24" }%s
  }
}`
	dnsService = `,
    "lan-dns": { "kind": "dns", "link": "lan", "hostname": "rotuer", "upstreams": ["192.0.2.53"], "rateLimit": 100000000 }`
)

// The benchmark's load: cachedNames asked over and over (after a first
// pass fills the cache), uncachedNames each asked once; latencies at a
// steady latencyQPS that neither server saturates.
const (
	cachedNames   = 1000
	uncachedNames = 50000
	latencyQPS    = 1000
	latencyCount  = 5000
)

// dnsRun is one server's numbers.
type dnsRun struct {
	cachedQPS, uncachedQPS float64
	cachedLat, uncachedLat []time.Duration // sorted
	lost                   int
	rss, hwm               string // the server process's, after the load
	baselineRSS            string // roostd's, without a dns service (dnsmasq's run)
}

// benchDNS measures roostd's dns service beside dnsmasq on the same lab
// network: the LAN host (dnsperf) asks the router, whose forwarder asks
// nsd at the ISP. Queries a second at full load (100 outstanding) and
// latency percentiles at a steady 1,000 a second, for cached and uncached
// names, and the server's memory after.
func benchDNS(roostd string) error {
	for _, tool := range []string{"dnsperf", "nsd", "dnsmasq"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s is not installed (make deps installs it)", tool)
		}
	}
	servers := []struct {
		name  string
		start func(n *labnet.Net, work string) (pid int, stop func(), err error)
	}{
		{"roostd (dhcp/dns)", func(n *labnet.Net, work string) (int, func(), error) {
			return startBenchRoostd(roostd, n, work, dnsService)
		}},
		{"dnsmasq 2.90", func(n *labnet.Net, work string) (int, func(), error) {
			return startBenchDnsmasq(roostd, n, work)
		}},
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "DNS forwarder (LAN host → router → nsd at the ISP)\tserver\tqps\tp50 ms\tp99 ms\t\n")
	var mem []string
	for _, s := range servers {
		r, err := dnsBenchRun(s.start)
		if err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		fmt.Fprintf(tw, "cached (%d names)\t%s\t%.0f\t%s\t%s\t\n", cachedNames, s.name, r.cachedQPS, pct(r.cachedLat, 50), pct(r.cachedLat, 99))
		fmt.Fprintf(tw, "uncached (%d names, once each)\t%s\t%.0f\t%s\t%s\t\n", uncachedNames, s.name, r.uncachedQPS, pct(r.uncachedLat, 50), pct(r.uncachedLat, 99))
		m := fmt.Sprintf("%s: RSS %s, peak %s after the load", s.name, r.rss, r.hwm)
		if r.baselineRSS != "" {
			m += fmt.Sprintf(" (roostd beside it, without a dns service: RSS %s)", r.baselineRSS)
		}
		if r.lost > 0 {
			m += fmt.Sprintf("; %d queries lost", r.lost)
		}
		mem = append(mem, m)
	}
	tw.Flush()
	for _, m := range mem {
		fmt.Println(m)
	}
	return nil
}

func pct(sorted []time.Duration, p int) string {
	if len(sorted) == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", float64(sorted[min(len(sorted)-1, len(sorted)*p/100)])/float64(time.Millisecond))
}

// dnsBenchRun sets up the lab network and nsd, starts a server on the
// router, and runs the load.
func dnsBenchRun(start func(n *labnet.Net, work string) (int, func(), error)) (r dnsRun, err error) {
	work, err := os.MkdirTemp("", "dnsbench-")
	if err != nil {
		return r, err
	}
	defer os.RemoveAll(work)
	defer func() {
		if err != nil {
			err = fmt.Errorf("%w\n%s", err, logTails(work))
		}
	}()
	n := labnet.New(fmt.Sprintf("db%d-", os.Getpid()))
	if err = n.Up(); err != nil {
		return r, err
	}
	defer n.Down()
	nsdDir := filepath.Join(work, "nsd")
	os.Mkdir(nsdDir, 0o700)
	ns, err := isp.StartNSD(nsdDir, n.ISP, "isp", isp.DNS1)
	if err != nil {
		return r, err
	}
	defer ns.Stop()
	pid, stop, err := start(n, work)
	if err != nil {
		return r, err
	}
	defer stop()
	if err = labnet.Wait(20*time.Second, 100*time.Millisecond, func() bool {
		out, _ := exec.Command("ip", "netns", "exec", n.LAN, "dig", "@192.168.1.1", "+short", "+time=1", "+tries=1", "ready.bench.isp.example").Output()
		return strings.TrimSpace(string(out)) == "198.51.100.90"
	}); err != nil {
		return r, fmt.Errorf("the router never answered DNS")
	}
	write := func(name string, count int, prefix string) (string, error) {
		file := filepath.Join(work, name)
		var b strings.Builder
		for i := 0; i < count; i++ {
			fmt.Fprintf(&b, "%s%d.bench.isp.example A\n", prefix, i)
		}
		return file, os.WriteFile(file, []byte(b.String()), 0o644)
	}
	cached, err := write("cached.txt", cachedNames, "c")
	if err != nil {
		return r, err
	}
	uncached, err := write("uncached.txt", uncachedNames, "u")
	if err != nil {
		return r, err
	}
	uncachedLat, err := write("uncached-latency.txt", latencyCount, "l")
	if err != nil {
		return r, err
	}
	// Fill the cache, then measure; every run is bounded in count (-n)
	// and time (-l).
	if _, err = dnsperf(n, "-d", cached, "-n", "1", "-l", "30"); err != nil {
		return r, err
	}
	full, err := dnsperf(n, "-d", cached, "-n", "300", "-l", "5", "-c", "4", "-q", "100")
	if err != nil {
		return r, err
	}
	steady, err := dnsperf(n, "-d", cached, "-n", strconv.Itoa(latencyCount/cachedNames), "-l", "30", "-Q", strconv.Itoa(latencyQPS), "-v")
	if err != nil {
		return r, err
	}
	fresh, err := dnsperf(n, "-d", uncached, "-n", "1", "-l", "60", "-c", "4", "-q", "100")
	if err != nil {
		return r, err
	}
	freshSteady, err := dnsperf(n, "-d", uncachedLat, "-n", "1", "-l", "30", "-Q", strconv.Itoa(latencyQPS), "-v")
	if err != nil {
		return r, err
	}
	r.cachedQPS, r.uncachedQPS = full.qps, fresh.qps
	r.cachedLat, r.uncachedLat = steady.latencies, freshSteady.latencies
	r.lost = full.lost + steady.lost + fresh.lost + freshSteady.lost
	r.rss, r.hwm = procMem(pid)
	if b, err := os.ReadFile(filepath.Join(work, "baseline-pid")); err == nil {
		r.baselineRSS, _ = procMem(atoi(string(b)))
	}
	return r, nil
}

func atoi(s string) int {
	v, _ := strconv.Atoi(strings.TrimSpace(s))
	return v
}

// procMem is a process's VmRSS and VmHWM.
func procMem(pid int) (rss, hwm string) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "?", "?"
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) == 3 && f[0] == "VmRSS:" {
			rss = kb(f[1])
		}
		if len(f) == 3 && f[0] == "VmHWM:" {
			hwm = kb(f[1])
		}
	}
	return rss, hwm
}

func kb(s string) string { return fmt.Sprintf("%.1f MB", float64(atoi(s))/1024) }

// perf is what a dnsperf run reports.
type perf struct {
	qps       float64
	lost      int
	latencies []time.Duration
}

var (
	qpsLine  = regexp.MustCompile(`Queries per second:\s+([0-9.]+)`)
	lostLine = regexp.MustCompile(`Queries lost:\s+(\d+)`)
)

// dnsperf runs dnsperf on the LAN host against the router.
func dnsperf(n *labnet.Net, args ...string) (perf, error) {
	cmd := exec.Command("ip", labnet.In(n.LAN, append([]string{"dnsperf", "-s", "192.168.1.1", "-t", "2"}, args...)...)[1:]...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return perf{}, fmt.Errorf("dnsperf %v: %v\n%s", args, err, out)
	}
	var p perf
	if m := qpsLine.FindSubmatch(out); m != nil {
		p.qps, _ = strconv.ParseFloat(string(m[1]), 64)
	}
	if m := lostLine.FindSubmatch(out); m != nil {
		p.lost = atoi(string(m[1]))
	}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 5 && f[0] == ">" {
			if s, err := strconv.ParseFloat(f[4], 64); err == nil {
				p.latencies = append(p.latencies, time.Duration(s*float64(time.Second)))
			}
		}
	}
	slices.Sort(p.latencies)
	return p, nil
}

// startBenchRoostd runs roostd on the router with the benchmark's router
// config and extra services.
func startBenchRoostd(roostd string, n *labnet.Net, work, extra string) (int, func(), error) {
	cfg := filepath.Join(work, "router.json")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(dnsBenchRouter, extra)), 0o644); err != nil {
		return 0, nil, err
	}
	cmd := exec.Command("ip", "netns", "exec", n.Router, roostd, "run", "--root", filepath.Join(work, "root"),
		"--state", filepath.Join(work, "state"), "--config", cfg)
	log, _ := os.Create(filepath.Join(work, "roostd.log"))
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return 0, nil, err
	}
	return cmd.Process.Pid, func() { cmd.Process.Kill(); cmd.Wait(); log.Close() }, nil
}

// startBenchDnsmasq runs roostd without a dns service (the links and
// addresses), and dnsmasq on the LAN as OpenWrt runs it: forwarding to the
// ISP's server, a cache big enough for the load, no DHCP, no files read.
func startBenchDnsmasq(roostd string, n *labnet.Net, work string) (int, func(), error) {
	rpid, stopRoostd, err := startBenchRoostd(roostd, n, work, "")
	if err != nil {
		return 0, nil, err
	}
	os.WriteFile(filepath.Join(work, "baseline-pid"), []byte(strconv.Itoa(rpid)), 0o644)
	if err := labnet.Wait(20*time.Second, 100*time.Millisecond, func() bool {
		out, _ := exec.Command("ip", "-n", n.Router, "-4", "addr", "show", "dev", "br-lan").Output()
		return strings.Contains(string(out), "192.168.1.1/24")
	}); err != nil {
		stopRoostd()
		return 0, nil, fmt.Errorf("the router's LAN address never came")
	}
	cmd := exec.Command("ip", "netns", "exec", n.Router, "dnsmasq", "-k", "-C", "/dev/null", "-u", "root", "--pid-file=",
		"--no-resolv", "--no-hosts", "--no-poll", "--server=192.0.2.53", "--interface=br-lan", "--bind-interfaces",
		"--cache-size=10000", "--dns-forward-max=1000", "--log-facility=-")
	log, _ := os.Create(filepath.Join(work, "dnsmasq.log"))
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		stopRoostd()
		return 0, nil, err
	}
	return cmd.Process.Pid, func() { stopGently(cmd); log.Close(); stopRoostd() }, nil
}
