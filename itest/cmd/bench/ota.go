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

// benchOTA measures rebuilds of a 500-path closure between two network
// namespaces joined by veth with 10 ms of delay each way: roost rebuild to
// roostd, beside nix-copy-closure --to a real Nix over OpenSSH (Nix 2.8 at
// both ends), fresh and no-op.
func benchOTA(roostd, roost string, scale int) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "otabench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	suffix := strconv.Itoa(os.Getpid())
	lap, rtr := "rb-lap-"+suffix, "rb-rtr-"+suffix
	var cleanups []func()
	defer func() {
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
	}()
	for _, ns := range []string{lap, rtr} {
		if err := labnet.Run("ip", "netns", "add", ns); err != nil {
			return err
		}
		cleanups = append(cleanups, func() { exec.Command("ip", "netns", "del", ns).Run() })
		if err := labnet.Run("ip", "-n", ns, "link", "set", "lo", "up"); err != nil {
			return err
		}
	}
	for _, args := range [][]string{
		{"ip", "link", "add", "rbl" + suffix, "type", "veth", "peer", "name", "rbr" + suffix},
		{"ip", "link", "set", "rbl" + suffix, "netns", lap},
		{"ip", "link", "set", "rbr" + suffix, "netns", rtr},
		{"ip", "-n", lap, "addr", "add", "10.213.0.1/30", "dev", "rbl" + suffix},
		{"ip", "-n", rtr, "addr", "add", "10.213.0.2/30", "dev", "rbr" + suffix},
		{"ip", "-n", lap, "link", "set", "rbl" + suffix, "up"},
		{"ip", "-n", rtr, "link", "set", "rbr" + suffix, "up"},
	} {
		if err := labnet.Run(args...); err != nil {
			return err
		}
	}

	// The laptop: a key, and a Nix store holding two versions of a system:
	// 500 small paths, and a dozen real Go binaries rebuilt at a new version.
	home := filepath.Join(work, "home")
	os.MkdirAll(filepath.Join(home, ".ssh"), 0o700)
	key := filepath.Join(home, ".ssh/id_ed25519")
	if err := labnet.Run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key); err != nil {
		return err
	}
	pub, _ := os.ReadFile(key + ".pub")
	pubKey := strings.TrimSpace(string(pub))
	// A real router's config names its board, whose RAM bounds a delta's
	// base (an eighth of it); without one the router assumes 4 MiB, less
	// than these binaries.
	config := fmt.Sprintf(`{"board": "lab", "ssh": {"listen": ["10.213.0.2:2222"], "authorizedKeys": [%q]}}`, pubKey)
	nixLap := filepath.Join(work, "nix-laptop")
	systems := map[string]string{}
	for _, v := range []string{"1", "2"} {
		stream := filepath.Join(work, "export-"+v)
		sys, err := writeSystem(stream, work, v, 500/scale, config)
		if err != nil {
			return err
		}
		if _, err := timed(stream, false, "nix-store", append(nixOpts(nixLap), "--import")...); err != nil {
			return err
		}
		systems[v] = sys
	}

	// The router: roostd, and beside it an OpenSSH server with Nix for
	// nix-copy-closure (into a store of its own).
	state := filepath.Join(work, "state")
	os.MkdirAll(state, 0o700)
	os.WriteFile(filepath.Join(state, "authorized_keys"), []byte(pubKey+"\n"), 0o600)
	boot := filepath.Join(work, "boot.json")
	os.WriteFile(boot, []byte(`{"board": "lab", "ssh": {"listen": ["10.213.0.2:2222"]}}`), 0o644)
	agent := exec.Command("ip", "netns", "exec", rtr, roostd, "run", "--root", filepath.Join(work, "router"), "--state", state, "--config", boot)
	agentLog, _ := os.Create(filepath.Join(work, "roostd.log"))
	agent.Stdout, agent.Stderr = agentLog, agentLog
	if err := agent.Start(); err != nil {
		return err
	}
	cleanups = append(cleanups, func() { agent.Process.Kill(); agent.Wait() })
	sshdDir := filepath.Join(work, "sshd")
	os.MkdirAll(sshdDir, 0o700)
	sshd, err := opensshd.Start(opensshd.Options{Dir: sshdDir, Listen: "10.213.0.2:2223", AuthorizedKeys: pubKey + "\n",
		Path: "/usr/bin:/bin", Env: []string{"NIX_REMOTE=" + filepath.Join(work, "nix-target")}, Netns: rtr})
	if err != nil {
		return err
	}
	cleanups = append(cleanups, sshd.Stop)
	sshd2Dir := filepath.Join(work, "sshd2")
	os.MkdirAll(sshd2Dir, 0o700)
	sshd2, err := opensshd.Start(opensshd.Options{Dir: sshd2Dir, Listen: "10.213.0.2:2224", AuthorizedKeys: pubKey + "\n",
		Path: "/usr/bin:/bin", Env: []string{"NIX_REMOTE=" + filepath.Join(work, "nix-target2")}, Netns: rtr})
	if err != nil {
		return err
	}
	cleanups = append(cleanups, sshd2.Stop)

	// The 10 ms link: delay proxies in the laptop's namespace.
	stats := map[string]string{}
	for name, ports := range map[string][2]string{"roostd": {"12222", "10.213.0.2:2222"}, "sshd": {"12223", "10.213.0.2:2223"}, "sshd2": {"12224", "10.213.0.2:2224"}} {
		stats[name] = filepath.Join(work, "stats-"+name)
		p := exec.Command("ip", "netns", "exec", lap, self, "delay-proxy", "--listen", "127.0.0.1:"+ports[0], "--to", ports[1], "--delay", "10ms", "--stats", stats[name])
		out, _ := p.StdoutPipe()
		if err := p.Start(); err != nil {
			return err
		}
		cleanups = append(cleanups, func() { p.Process.Kill(); p.Wait() })
		if line, _ := bufio.NewReader(out).ReadString('\n'); line != "ready\n" {
			return fmt.Errorf("delay proxy did not start")
		}
	}
	os.WriteFile(filepath.Join(home, ".ssh/config"), []byte("Host rotuer\n  HostName 127.0.0.1\n  Port 12222\n  User root\n"), 0o600)
	env := []string{"HOME=" + home, "NIX_REMOTE=" + nixLap, "SSH_AUTH_SOCK="}
	sshOpts := func(port string) string {
		return "NIX_SSHOPTS=-p " + port + " -i " + key + " -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
	}

	type row struct {
		name, tool string
		seconds    float64
		wire       int64
		sent       string
	}
	var rows []row
	measure := func(name, tool, statsName string, argv ...string) error {
		os.Remove(stats[statsName])
		cmdEnv := append(append([]string(nil), env...), sshOpts(map[string]string{"sshd": "12223", "sshd2": "12224"}[statsName]))
		cmd := exec.Command("ip", append([]string{"netns", "exec", lap, "env"}, append(cmdEnv, argv...)...)...)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		start := time.Now()
		out, err := cmd.Output()
		secs := time.Since(start).Seconds()
		if err != nil {
			return fmt.Errorf("%s: %v\n%s%s", strings.Join(argv, " "), err, out, stderr.String())
		}
		time.Sleep(50 * time.Millisecond) // the proxy writes its counts as the connection closes
		var wire int64
		if b, err := os.ReadFile(stats[statsName]); err == nil {
			for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
				var up, down int64
				fmt.Sscan(l, &up, &down)
				wire += up + down
			}
		}
		sent := "-"
		var rj struct {
			SentPaths int `json:"sentPaths"`
		}
		if json.Unmarshal(out, &rj) == nil && tool == "roost rebuild" {
			sent = strconv.Itoa(rj.SentPaths)
		}
		rows = append(rows, row{name: name, tool: tool, seconds: secs, wire: wire, sent: sent})
		return nil
	}
	cases := []struct{ name, system string }{
		{fmt.Sprintf("(a) fresh %d-path closure", 500/scale+len(programs)*3), systems["1"]},
		{"(b) upgrade: 12 Go binaries at a new version", systems["2"]},
		{"(c) no-op", systems["2"]},
	}
	for _, tool := range []struct{ name, stats string }{{"roost rebuild", "roostd"}, {"nix-copy-closure --to", "sshd"}, {"nix copy --to ssh://", "sshd2"}} {
		for _, c := range cases {
			var argv []string
			switch tool.stats {
			case "roostd":
				argv = []string{roost, "rebuild", "--host", "rotuer", "--system", c.system, "--accept-new-host-key", "--json"}
			case "sshd":
				argv = []string{"nix-copy-closure", "--to", "root@127.0.0.1", c.system}
			default:
				argv = []string{"nix", "--extra-experimental-features", "nix-command", "copy", "--to", "ssh://root@127.0.0.1", c.system}
			}
			if err := measure(c.name, tool.name, tool.stats, argv...); err != nil {
				return err
			}
		}
	}
	fmt.Println("over-the-air, veth between two namespaces, 10 ms each way (a userspace delay proxy: this kernel has no netem)")
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "case\ttool\tseconds\tMB on the wire\tpaths sent\t")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%.2f\t%.2f\t%s\t\n", r.name, r.tool, r.seconds, float64(r.wire)/1e6, r.sent)
	}
	fmt.Fprintln(tw, "\t\t\t\t\t")
	return tw.Flush()
}
