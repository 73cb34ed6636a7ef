package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/roostrouter/roost/itest/labnet"
	"github.com/roostrouter/roost/itest/opensshd"
)

// otaLink is a link the over-the-air benchmark models with its proxy.
type otaLink struct {
	name  string
	delay time.Duration // one way
	rate  int64         // bits per second each way; 0 for no limit
}

var otaLinks = []otaLink{
	{"lan", time.Millisecond, 0},
	{"10ms", 10 * time.Millisecond, 0},
	{"remote", 30 * time.Millisecond, 20_000_000},
}

func (l otaLink) String() string {
	rate := "no bandwidth limit"
	if l.rate > 0 {
		rate = fmt.Sprintf("%d Mbit/s", l.rate/1_000_000)
	}
	return fmt.Sprintf("%s: %s each way, %s", l.name, l.delay, rate)
}

// otaBench is the lab of the over-the-air benchmark: a laptop namespace
// with a Nix store holding two versions of a system, and a router
// namespace with roostd and, beside it, OpenSSH servers with Nix (each
// into a store of its own) for nix-copy-closure and nix copy.
type otaBench struct {
	self, roostd, roost string
	work, home, key     string
	lap, rtr            string
	nixLap              string
	systems             map[string]string
	closurePaths        int
	cleanups            []func()
}

// benchOTA measures rebuilds of a 512-path closure between two network
// namespaces joined by veth, over each modelled link: roost rebuild to
// roostd, beside nix-copy-closure --to and nix copy --to ssh:// to a real
// Nix over OpenSSH (Nix 2.8 at both ends): fresh, an upgrade of a dozen Go
// binaries, and a no-op, with the router's CPU time and peak memory for
// each, and the floor of a no-op (an ssh command that does nothing).
func benchOTA(roostd, roost string, scale int, links string) error {
	b := &otaBench{roostd: roostd, roost: roost, systems: map[string]string{}}
	defer func() {
		for i := len(b.cleanups) - 1; i >= 0; i-- {
			b.cleanups[i]()
		}
	}()
	if err := b.setUp(scale); err != nil {
		return err
	}
	for i, l := range otaLinks {
		if links != "" && !strings.Contains(","+links+",", ","+l.name+",") {
			continue
		}
		rows, err := b.run(i, l)
		if err != nil {
			return err
		}
		printOTA(l, rows)
	}
	return nil
}

// setUp makes the namespaces, the laptop's key and store, and the OpenSSH
// servers.
func (b *otaBench) setUp(scale int) error {
	var err error
	if b.self, err = os.Executable(); err != nil {
		return err
	}
	if b.work, err = os.MkdirTemp("", "otabench-"); err != nil {
		return err
	}
	b.cleanups = append(b.cleanups, func() { os.RemoveAll(b.work) })
	suffix := strconv.Itoa(os.Getpid())
	b.lap, b.rtr = "rb-lap-"+suffix, "rb-rtr-"+suffix
	for _, ns := range []string{b.lap, b.rtr} {
		if err := labnet.Run("ip", "netns", "add", ns); err != nil {
			return err
		}
		b.cleanups = append(b.cleanups, func() { exec.Command("ip", "netns", "del", ns).Run() })
		if err := labnet.Run("ip", "-n", ns, "link", "set", "lo", "up"); err != nil {
			return err
		}
	}
	for _, args := range [][]string{
		{"ip", "link", "add", "rbl" + suffix, "type", "veth", "peer", "name", "rbr" + suffix},
		{"ip", "link", "set", "rbl" + suffix, "netns", b.lap},
		{"ip", "link", "set", "rbr" + suffix, "netns", b.rtr},
		{"ip", "-n", b.lap, "addr", "add", "10.213.0.1/30", "dev", "rbl" + suffix},
		{"ip", "-n", b.rtr, "addr", "add", "10.213.0.2/30", "dev", "rbr" + suffix},
		{"ip", "-n", b.lap, "link", "set", "rbl" + suffix, "up"},
		{"ip", "-n", b.rtr, "link", "set", "rbr" + suffix, "up"},
	} {
		if err := labnet.Run(args...); err != nil {
			return err
		}
	}

	// The laptop: a key, and a Nix store holding two versions of a system:
	// 500 small paths, and a dozen real Go binaries rebuilt at a new version.
	b.home = filepath.Join(b.work, "home")
	os.MkdirAll(filepath.Join(b.home, ".ssh"), 0o700)
	b.key = filepath.Join(b.home, ".ssh/id_ed25519")
	if err := labnet.Run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", b.key); err != nil {
		return err
	}
	// A real router's config names its board, whose RAM bounds a delta's
	// base (an eighth of it); without one the router assumes 4 MiB, less
	// than these binaries.
	config := fmt.Sprintf(`{"board": "lab", "ssh": {"listen": ["10.213.0.2:2222"], "authorizedKeys": [%q]}}`, b.pubKey())
	b.nixLap = filepath.Join(b.work, "nix-laptop")
	for _, v := range []string{"1", "2"} {
		stream := filepath.Join(b.work, "export-"+v)
		sys, err := writeSystem(stream, b.work, v, 500/scale, config)
		if err != nil {
			return err
		}
		if _, err := timed(stream, false, "nix-store", append(nixOpts(b.nixLap), "--import")...); err != nil {
			return err
		}
		b.systems[v] = sys
	}
	b.closurePaths = 500/scale + len(programs)*3

	// nix-store on the router, as the OpenSSH servers run it: under a
	// wrapper that records its CPU time and peak memory.
	wrap := filepath.Join(b.work, "wrap")
	os.MkdirAll(wrap, 0o755)
	script := fmt.Sprintf("#!/bin/sh\nexec %s rusage %s /usr/bin/nix-store \"$@\"\n", b.self, filepath.Join(b.work, "rusage-nix"))
	if err := os.WriteFile(filepath.Join(wrap, "nix-store"), []byte(script), 0o755); err != nil {
		return err
	}
	for i, port := range []string{"2223", "2224"} {
		dir := filepath.Join(b.work, fmt.Sprintf("sshd%d", i+1))
		os.MkdirAll(dir, 0o700)
		sshd, err := opensshd.Start(opensshd.Options{Dir: dir, Listen: "10.213.0.2:" + port, AuthorizedKeys: b.pubKey() + "\n",
			Path: wrap + ":/usr/bin:/bin", Env: []string{"NIX_REMOTE=" + filepath.Join(b.work, fmt.Sprintf("nix-target%d", i+1))}, Netns: b.rtr})
		if err != nil {
			return err
		}
		b.cleanups = append(b.cleanups, sshd.Stop)
	}
	return nil
}

func (b *otaBench) pubKey() string {
	pub, _ := os.ReadFile(b.key + ".pub")
	return strings.TrimSpace(string(pub))
}

// otaRow is one measured command.
type otaRow struct {
	name, tool string
	seconds    float64
	wire       int64
	sent       string
	cpu        time.Duration // on the router; -1 if not measured
	rss        int64         // the router's peak, bytes
}

// startRouter starts a fresh roostd for link i (an empty store and state)
// and empties the Nix servers' stores.
func (b *otaBench) startRouter(i int) (pid int, stop func(), err error) {
	root := filepath.Join(b.work, fmt.Sprintf("router-%d", i))
	state := filepath.Join(b.work, fmt.Sprintf("state-%d", i))
	os.MkdirAll(state, 0o700)
	os.WriteFile(filepath.Join(state, "authorized_keys"), []byte(b.pubKey()+"\n"), 0o600)
	boot := filepath.Join(b.work, "boot.json")
	os.WriteFile(boot, []byte(`{"board": "lab", "ssh": {"listen": ["10.213.0.2:2222"]}}`), 0o644)
	for _, s := range []string{"nix-target1", "nix-target2"} {
		os.RemoveAll(filepath.Join(b.work, s))
	}
	agent := exec.Command("ip", "netns", "exec", b.rtr, b.roostd, "run", "--root", root, "--state", state, "--config", boot)
	agentLog, _ := os.Create(filepath.Join(b.work, fmt.Sprintf("roostd-%d.log", i)))
	agent.Stdout, agent.Stderr = agentLog, agentLog
	if err := agent.Start(); err != nil {
		return 0, nil, err
	}
	stop = func() { agent.Process.Kill(); agent.Wait(); agentLog.Close() }
	up := labnet.Wait(10*time.Second, 50*time.Millisecond, func() bool {
		return exec.Command("ip", "netns", "exec", b.rtr, "bash", "-c", "exec 3<>/dev/tcp/10.213.0.2/2222").Run() == nil
	})
	if up != nil {
		stop()
		log, _ := os.ReadFile(agentLog.Name())
		return 0, nil, fmt.Errorf("roostd did not listen: %s", log)
	}
	// ip netns exec runs roostd in its own process; look for it below ip
	// if this ip forks.
	pid = agent.Process.Pid
	if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); filepath.Base(exe) != filepath.Base(b.roostd) {
		kids, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
		if f := strings.Fields(string(kids)); len(f) > 0 {
			pid, _ = strconv.Atoi(f[0])
		}
	}
	return pid, stop, nil
}

// run measures every case and tool over link l (the i-th), with a fresh
// router, fresh proxies and a fresh delta cache.
func (b *otaBench) run(i int, l otaLink) ([]otaRow, error) {
	agentPID, stopAgent, err := b.startRouter(i)
	if err != nil {
		return nil, err
	}
	defer stopAgent()
	stats := map[string]string{}
	ports := map[string]string{}
	for j, name := range []string{"roostd", "sshd1", "sshd2"} {
		stats[name] = filepath.Join(b.work, fmt.Sprintf("stats-%d-%s", i, name))
		ports[name] = strconv.Itoa(12222 + 10*i + j)
		args := []string{"netns", "exec", b.lap, b.self, "delay-proxy", "--listen", "127.0.0.1:" + ports[name],
			"--to", "10.213.0.2:" + strconv.Itoa(2222+j), "--delay", l.delay.String(), "--rate", strconv.FormatInt(l.rate, 10), "--stats", stats[name]}
		p := exec.Command("ip", args...)
		out, _ := p.StdoutPipe()
		if err := p.Start(); err != nil {
			return nil, err
		}
		defer func() { p.Process.Kill(); p.Wait() }()
		if line, _ := bufio.NewReader(out).ReadString('\n'); line != "ready\n" {
			return nil, fmt.Errorf("delay proxy did not start")
		}
	}
	os.WriteFile(filepath.Join(b.home, ".ssh/config"), []byte("Host rotuer\n  HostName 127.0.0.1\n  Port "+ports["roostd"]+"\n  User root\n"), 0o600)
	// A fresh delta cache: each link pays for its deltas once.
	env := []string{"HOME=" + b.home, "NIX_REMOTE=" + b.nixLap, "SSH_AUTH_SOCK=", "XDG_CACHE_HOME=" + filepath.Join(b.work, fmt.Sprintf("cache-%d", i))}
	sshArgs := func(port string) []string {
		return []string{"-p", port, "-i", b.key, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"}
	}

	var rows []otaRow
	// measure runs argv in the laptop's namespace and reads what crossed
	// the proxy named by via, and what the router spent (rusage: the Nix
	// servers' record, or the agent's counters).
	measure := func(name, tool, via, rusage string, argv ...string) error {
		os.Remove(stats[via])
		nixRusage := filepath.Join(b.work, "rusage-nix")
		os.Remove(nixRusage)
		cpu0, _ := procCPU(agentPID)
		resetPeak(agentPID)
		cmdEnv := append(append([]string(nil), env...), "NIX_SSHOPTS="+strings.Join(sshArgs(ports[via]), " "))
		cmd := exec.Command("ip", append([]string{"netns", "exec", b.lap, "env"}, append(cmdEnv, argv...)...)...)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		start := time.Now()
		out, err := cmd.Output()
		secs := time.Since(start).Seconds()
		if err != nil {
			return fmt.Errorf("%s: %v\n%s%s", strings.Join(argv, " "), err, out, stderr.String())
		}
		// The proxy writes its counts as the connection closes, and the
		// wrapper the router's nix-store's usage as it exits: both may come
		// after the command has returned.
		written := func(file string) bool { _, err := os.Stat(file); return err == nil }
		labnet.Wait(3*time.Second, 10*time.Millisecond, func() bool {
			return written(stats[via]) && (rusage != "nix" || written(nixRusage))
		})
		r := otaRow{name: name, tool: tool, seconds: secs, wire: wireBytes(stats[via]), sent: "-", cpu: -1}
		switch rusage {
		case "roostd":
			cpu1, _ := procCPU(agentPID)
			r.cpu, r.rss = cpu1-cpu0, procPeak(agentPID)
			var rj struct {
				SentPaths int `json:"sentPaths"`
			}
			if json.Unmarshal(out, &rj) == nil {
				r.sent = strconv.Itoa(rj.SentPaths)
			}
		case "nix":
			r.cpu, r.rss = readRusage(nixRusage)
		}
		rows = append(rows, r)
		return nil
	}
	cases := []struct{ name, system string }{
		{fmt.Sprintf("(a) fresh %d-path closure", b.closurePaths), b.systems["1"]},
		{"(b) upgrade: 12 Go binaries at a new version", b.systems["2"]},
		{"(c) no-op", b.systems["2"]},
	}
	for _, tool := range []struct{ name, via, rusage string }{{"roost rebuild", "roostd", "roostd"}, {"nix-copy-closure --to", "sshd1", "nix"}, {"nix copy --to ssh://", "sshd2", "nix"}} {
		for _, c := range cases {
			var argv []string
			switch tool.via {
			case "roostd":
				argv = []string{b.roost, "rebuild", "--host", "rotuer", "--system", c.system, "--accept-new-host-key", "--json"}
			case "sshd1":
				argv = []string{"nix-copy-closure", "--to", "root@127.0.0.1", c.system}
			default:
				argv = []string{"nix", "--extra-experimental-features", "nix-command", "copy", "--to", "ssh://root@127.0.0.1", c.system}
			}
			if err := measure(c.name, tool.name, tool.via, tool.rusage, argv...); err != nil {
				return nil, err
			}
		}
	}
	// The floor of a no-op: a connection that runs one command that does
	// nothing, to OpenSSH and to roostd's own SSH, over the same link.
	floor := "(c) no-op: the floor"
	if err := measure(floor, "ssh host true (OpenSSH)", "sshd1", "", append(append([]string{"ssh"}, sshArgs(ports["sshd1"])...), "root@127.0.0.1", "true")...); err != nil {
		return nil, err
	}
	if err := measure(floor, "ssh host roostd version (roostd)", "roostd", "roostd", append(append([]string{"ssh"}, sshArgs(ports["roostd"])...), "root@127.0.0.1", "roostd", "version")...); err != nil {
		return nil, err
	}
	return rows, nil
}

func printOTA(l otaLink, rows []otaRow) {
	fmt.Printf("over-the-air, %s (veth between two namespaces through a userspace proxy that models the link: this kernel has no netem)\n", l)
	fmt.Println("router CPU and peak RSS: roostd's process for roost (its SSH server included, the peak includes its idle memory), the nix-store --serve process for Nix (sshd not included)")
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "case\ttool\tseconds\tMB on the wire\tpaths sent\trouter CPU s\trouter peak RSS MB\t")
	for _, r := range rows {
		cpu, rss := "-", "-"
		if r.cpu >= 0 {
			cpu, rss = fmt.Sprintf("%.2f", r.cpu.Seconds()), fmt.Sprintf("%.1f", float64(r.rss)/1e6)
		}
		fmt.Fprintf(tw, "%s\t%s\t%.2f\t%.2f\t%s\t%s\t%s\t\n", r.name, r.tool, r.seconds, float64(r.wire)/1e6, r.sent, cpu, rss)
	}
	fmt.Fprintln(tw, "\t\t\t\t\t\t\t")
	tw.Flush()
}

// wireBytes adds up the byte counts a proxy wrote, both ways.
func wireBytes(file string) int64 {
	var wire int64
	if b, err := os.ReadFile(file); err == nil {
		for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			var up, down int64
			fmt.Sscan(l, &up, &down)
			wire += up + down
		}
	}
	return wire
}
