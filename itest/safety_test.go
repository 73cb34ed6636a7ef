package itest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/roostrouter/roost/itest/labnet"
)

// The safety net's fault matrix: each fault of issue 12 driven end to end
// in the lab's namespaces, with real roost (on the LAN host) and roostd (on
// the router), checking what a user would: which system runs, that roostd
// status answers, that the LAN still reaches the ISP, and that nothing is
// open from the WAN while the router starts.

// safetyLab is the lab router, reached from the LAN host by a laptop.
type safetyLab struct {
	*agentLab
	l *laptop
}

const labISP = "198.51.100.1"

// labConfig is docs/rotuer.json letting the laptop in; edit changes it.
func labConfig(t *testing.T, key string, edit func(map[string]any)) string {
	var cfg map[string]any
	if err := json.Unmarshal(exampleConfig(t), &cfg); err != nil {
		t.Fatal(err)
	}
	cfg["ssh"].(map[string]any)["authorizedKeys"] = []string{key}
	if edit != nil {
		edit(cfg)
	}
	b, _ := json.Marshal(cfg)
	return string(b)
}

// startSafetyLab starts roostd on the lab config (edited by edit) with env
// added to its environment, and waits until every service is up.
func startSafetyLab(t *testing.T, env []string, edit func(map[string]any)) *safetyLab {
	need(t, "nft", "nmap", "ssh")
	l := newLaptop(t)
	s := &safetyLab{l: l}
	s.agentLab = startAgentLabEnv(t, []byte(labConfig(t, l.key, edit)), env)
	// Absolute paths: OpenSSH takes ~ from the password database, not HOME.
	os.WriteFile(filepath.Join(l.home, ".ssh/config"), []byte(fmt.Sprintf("Host rotuer\n  HostName 192.168.1.1\n  User root\n  IdentityFile %[1]s/.ssh/id_ed25519\n  UserKnownHostsFile %[1]s/.ssh/known_hosts\n", l.home)), 0o600)
	return s
}

// system builds a system with the lab config, edited by edit.
func (s *safetyLab) system(version string, edit func(map[string]any)) string {
	return s.l.nix.build(otaSystemExpr, "version", version, "config", labConfig(s.t, s.l.key, edit), "blobs", "1")
}

// roost runs roost on the LAN host, for two minutes at most: a router that
// deadlocks must fail the test, not hang it.
func (s *safetyLab) roost(args ...string) result {
	s.t.Helper()
	cmd := append(append([]string{"timeout", "120", "env"}, s.l.env()...), append([]string{roost}, args...)...)
	return run(s.t, nil, nil, "ip", labnet.In(s.net.LAN, cmd...)[1:]...)
}

// fatalf fails the test with roostd's log first and the reason last, so
// that the reason survives an output cut to its end.
func (s *safetyLab) fatalf(format string, args ...any) {
	s.t.Helper()
	s.t.Fatalf("roostd's log:\n%s\nFAILED: "+format, append([]any{s.log.String()}, args...)...)
}

func (s *safetyLab) mustRoost(args ...string) string {
	s.t.Helper()
	r := s.roost(args...)
	if r.code != 0 {
		s.fatalf("roost %s: exit %d\n%s\n%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// ssh runs OpenSSH's client on the LAN host against the router.
func (s *safetyLab) ssh(args ...string) result {
	s.t.Helper()
	base := []string{"env", "HOME=" + s.l.home, "ssh", "-F", filepath.Join(s.l.home, ".ssh/config")}
	return run(s.t, nil, nil, "ip", labnet.In(s.net.LAN, append(base, args...)...)[1:]...)
}

// roostd runs a roostd command on the router, as its owner would in a
// shell there: through the control socket to the running agent.
func (s *safetyLab) roostd(args ...string) result {
	s.t.Helper()
	return run(s.t, nil, nil, "ip", labnet.In(s.net.Router, append([]string{"timeout", "120", roostd}, append(args, "--root", s.root)...)...)[1:]...)
}

type safetyStatus struct {
	Current       string `json:"currentSystem"`
	Generation    int    `json:"generation"`
	ConfigProblem string `json:"configProblem"`
	Pending       *struct {
		System        string `json:"system"`
		RollbackError string `json:"rollbackError"`
	} `json:"pendingActivation"`
	Services []serviceStatus `json:"services"`
}

// status is roostd status --json, which must answer.
func (s *safetyLab) status() safetyStatus {
	s.t.Helper()
	r := s.roostd("status", "--json", "--state", s.state)
	var st safetyStatus
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &st) != nil {
		s.fatalf("roostd status does not answer: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	return st
}

// healthy checks that the router runs want (at generation gen) with
// nothing pending, answers status, and forwards the LAN to the ISP.
func (s *safetyLab) healthy(want string, gen int, within time.Duration) {
	s.t.Helper()
	var st safetyStatus
	if labnet.Wait(within, 100*time.Millisecond, func() bool {
		st = s.status()
		return st.Current == want && st.Generation == gen && st.Pending == nil
	}) != nil {
		s.fatalf("the router runs %s (generation %d, pending %+v), want %s (generation %d)", st.Current, st.Generation, st.Pending, want, gen)
	}
	s.waitServices("up again", allUp)
	s.ping(labISP)
}

// first rebuilds to a first system, confirmed.
func (s *safetyLab) first() string {
	s.t.Helper()
	s.waitServices("up", allUp)
	sys := s.system("1.0", nil)
	s.mustRoost("rebuild", "--host", "rotuer", "--system", sys, "--accept-new-host-key")
	s.healthy(sys, 1, 10*time.Second)
	return sys
}

// activateUnconfirmed copies sys and activates it with no confirmation to
// come, as a laptop that died would leave it.
func (s *safetyLab) activateUnconfirmed(sys, timeout string) {
	s.t.Helper()
	s.mustRoost("copy", "--host", "rotuer", sys)
	if r := s.roostd("activate", "switch", sys, "--confirm-timeout", timeout); r.code != 0 {
		s.t.Fatalf("activate: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
}

// badConfig makes a config that does not validate.
func badConfig(cfg map[string]any) {
	cfg["services"].(map[string]any)["broken"] = map[string]any{"kind": "no-such-kind"}
}

func TestSafetyNet(t *testing.T) {
	// 1. gc while a switch waits for its confirmation keeps the previous
	// generation, says so, and the rollback happens.
	t.Run("GCInConfirmWindow", func(t *testing.T) {
		s := startSafetyLab(t, nil, nil)
		sys1 := s.first()
		sys2 := s.system("2.0", nil)
		s.activateUnconfirmed(sys2, "6s")
		var res struct {
			Generations []int                  `json:"deletedGenerations"`
			Held        []struct{ Why string } `json:"held"`
		}
		out := s.mustRoost("gc", "--host", "rotuer", "--keep", "1", "--json")
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatalf("roost gc --json: %v: %s", err, out)
		}
		if len(res.Generations) != 0 || len(res.Held) == 0 || !strings.Contains(res.Held[0].Why, "awaiting confirmation") {
			t.Fatalf("gc in the confirm window deleted generations %v, held %+v", res.Generations, res.Held)
		}
		text := s.mustRoost("gc", "--host", "rotuer", "--keep", "1")
		if !strings.Contains(text, "kept ") || !strings.Contains(text, "awaiting confirmation") {
			t.Errorf("roost gc does not say what it kept for the rollback:\n%s", text)
		}
		s.healthy(sys1, 1, 15*time.Second)
	})

	// 2. A failed activation is undone at once, through roostd's SSH and
	// through the control socket, and rollback answers after it.
	t.Run("FailedActivation", func(t *testing.T) {
		s := startSafetyLab(t, nil, nil)
		sys1 := s.first()
		bad := s.system("bad", badConfig)
		start := time.Now()
		r := s.roost("rebuild", "--host", "rotuer", "--system", bad)
		if r.code == 0 || !strings.Contains(r.stderr, "no-such-kind") || !strings.Contains(r.stderr, "rolled back") {
			t.Fatalf("rebuild to a bad config: exit %d\n%s", r.code, r.stderr)
		}
		s.healthy(sys1, 1, 2*time.Second)
		r = s.roostd("activate", "switch", bad, "--confirm-timeout", "60s")
		if r.code == 0 || !strings.Contains(r.stderr, "no-such-kind") {
			t.Fatalf("activate of a bad config through the control socket: exit %d\n%s", r.code, r.stderr)
		}
		s.healthy(sys1, 1, 2*time.Second)
		if r := s.roostd("rollback"); !strings.Contains(r.stdout+r.stderr, "generation") {
			t.Fatalf("rollback after a failed activation: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		if d := time.Since(start); d > 30*time.Second {
			t.Fatalf("failed activations took %s: something waited", d)
		}
	})

	// 3. A crash in the middle of an activation whose config is bad: the
	// agent comes up, rolls back first, and runs the previous system; and a
	// running system whose config is bad falls back to the last good
	// generation's config, loudly.
	t.Run("CrashWithBadConfig", func(t *testing.T) {
		s := startSafetyLab(t, []string{"ROOST_CRASH_AT=activate-switched:2"}, nil)
		sys1 := s.first()
		bad := s.system("bad", badConfig)
		s.mustRoost("copy", "--host", "rotuer", bad)
		s.roostd("activate", "switch", bad, "--confirm-timeout", "60s") // killed midway
		s.cmd.Wait()                                                    // the first activation went through; this one crashed
		s.cmd, s.env = nil, nil
		if st, _ := os.Readlink(filepath.Join(s.root, "run/current-system")); st != bad {
			t.Fatalf("the crash did not land after the switch: current-system is %s", st)
		}
		s.start()
		s.healthy(sys1, 1, 15*time.Second)

		s.stop()
		os.Remove(filepath.Join(s.root, "run/current-system"))
		os.Symlink(bad, filepath.Join(s.root, "run/current-system"))
		s.start()
		var st safetyStatus
		labnet.Wait(10*time.Second, 100*time.Millisecond, func() bool { st = s.status(); return st.ConfigProblem != "" })
		if !strings.Contains(st.ConfigProblem, "generation 1's config") {
			t.Fatalf("status does not say that the config fell back: %+v", st)
		}
		s.waitServices("up on the fallback config", allUp)
		s.ping(labISP)
	})

	// 4. A stalled store writer does not delay the rollback.
	t.Run("StalledWriter", func(t *testing.T) {
		s := startSafetyLab(t, nil, nil)
		sys1 := s.first()
		sys2 := s.system("2.0", nil)
		stream := s.l.nix.export(s.l.nix.closure(s.system("3.0", nil)))
		imp := exec.Command("ip", labnet.In(s.net.Router, roostd, "store", "import", "--root", s.root)[1:]...)
		stdin, _ := imp.StdinPipe()
		var impErr bytes.Buffer
		imp.Stderr = &impErr
		if err := imp.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { stdin.Close(); imp.Wait() }()
		stdin.Write(stream[:len(stream)/2]) // then the peer stalls, connected
		time.Sleep(time.Second)
		s.activateUnconfirmed(sys2, "3s")
		deadline := time.Now().Add(3 * time.Second)
		s.healthy(sys1, 1, 8*time.Second)
		if late := time.Since(deadline); late > 5*time.Second {
			t.Fatalf("the rollback came %s after its deadline, behind a stalled writer", late)
		}
	})

	// 5. A confirmation over the connection that activated is refused; over
	// a new one it is accepted.
	t.Run("ConfirmOverNewConnection", func(t *testing.T) {
		s := startSafetyLab(t, nil, nil)
		s.first()
		sys2 := s.system("2.0", nil)
		s.mustRoost("copy", "--host", "rotuer", sys2)
		ctl := filepath.Join(s.l.home, "ctl")
		master := exec.Command("ip", labnet.In(s.net.LAN, "env", "HOME="+s.l.home, "ssh", "-F", filepath.Join(s.l.home, ".ssh/config"),
			"-o", "ControlMaster=yes", "-o", "ControlPath="+ctl, "-N", "rotuer")[1:]...)
		if err := master.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { master.Process.Kill(); master.Wait() }()
		labnet.Wait(5*time.Second, 50*time.Millisecond, func() bool { _, err := os.Stat(ctl); return err == nil })
		r := s.ssh("-o", "ControlPath="+ctl, "rotuer", "roostd", "activate", "switch", sys2, "--confirm-timeout", "30s", "--json")
		var act struct{ Token string }
		if json.Unmarshal([]byte(r.stdout), &act); act.Token == "" {
			t.Fatalf("activate over the shared connection: exit %d %s%s", r.code, r.stdout, r.stderr)
		}
		r = s.ssh("-o", "ControlPath="+ctl, "rotuer", "roostd", "confirm", act.Token)
		if r.code == 0 || !strings.Contains(r.stderr, "new connection") {
			t.Fatalf("confirm over the activating connection: exit %d %s%s", r.code, r.stdout, r.stderr)
		}
		r = s.ssh("-o", "ControlPath=none", "rotuer", "roostd", "confirm", act.Token)
		if r.code != 0 {
			t.Fatalf("confirm over a new connection: exit %d %s%s", r.code, r.stdout, r.stderr)
		}
		s.healthy(sys2, 2, 5*time.Second)
	})

	// 6. SSH that cannot listen fails alone; the network comes up, and SSH
	// comes once the port is free.
	t.Run("SSHCannotListen", func(t *testing.T) {
		s := &safetyLab{l: newLaptop(t)}
		need(t, "busybox")
		n := labnet.New(fmt.Sprintf("rs%d-", os.Getpid()%100000))
		if err := n.Up(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(n.Down)
		squat := exec.Command("ip", labnet.In(n.Router, "busybox", "nc", "-l", "-p", "22")[1:]...)
		if err := squat.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { squat.Process.Kill(); squat.Wait() }()
		time.Sleep(200 * time.Millisecond)
		s.agentLab = startAgentLabOn(t, n, []byte(labConfig(t, s.l.key, nil)), nil)
		var svcs map[string]serviceStatus
		labnet.Wait(15*time.Second, 100*time.Millisecond, func() bool {
			svcs = s.services()
			return svcs["ssh"].State == "failed" && svcs["firewall"].State == "up" && svcs["default"].State == "up"
		})
		if svcs["ssh"].State != "failed" || !strings.Contains(svcs["ssh"].LastError, "address already in use") {
			s.fatalf("ssh with its port taken: %+v", svcs["ssh"])
		}
		s.ping(labISP)
		squat.Process.Kill()
		squat.Wait()
		s.waitServicesFor(70*time.Second, "all up once the port is free", allUp)
	})

	// 7a. From a first boot, forwarding is never on before the firewall is
	// in force, and nothing is open from the WAN while the router starts.
	t.Run("FirewallBeforeForwarding", func(t *testing.T) {
		n := labnet.New(fmt.Sprintf("rf%d-", os.Getpid()%100000))
		if err := n.Up(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(n.Down)
		l := newLaptop(t)
		// SSH on every address: the firewall must keep it from the WAN.
		cfg := labConfig(t, l.key, func(c map[string]any) { c["ssh"].(map[string]any)["listen"] = []string{":22"} })
		watch := watchForwarding(t, n.Router)
		scan := scanWAN(t, n.ISP, "192.0.2.2")
		a := startAgentLabOn(t, n, []byte(cfg), nil)
		a.waitServices("up", allUp)
		time.Sleep(time.Second)
		for _, line := range watch() {
			// Forwarding (either family) on while the ruleset is not
			// loaded. Samples taken between the two sysctl writes
			// ("1 0 1") are fine: the firewall is already in force.
			if f := strings.Fields(line); len(f) == 3 && (f[0] == "1" || f[1] == "1") && f[2] == "0" {
				t.Fatalf("forwarding was on before the firewall was in force (forward4 forward6 ruleset): %q\n%s", line, a.log.String())
			}
		}
		if open := scan(); len(open) > 0 {
			t.Fatalf("open from the WAN during start-up: %v", open)
		}
		a.ping(labISP)
	})

	// 7b. A firewall that cannot be applied leaves forwarding off, and status
	// says so; the rest comes up.
	t.Run("FirewallCannotApply", func(t *testing.T) {
		n := labnet.New(fmt.Sprintf("rw%d-", os.Getpid()%100000))
		if err := n.Up(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(n.Down)
		// A table of roost's name owned by another process: the kernel
		// refuses roostd every change to it (nftables' owner flag).
		owner := exec.Command("ip", labnet.In(n.Router, "nft", "-i")[1:]...)
		ownerIn, _ := owner.StdinPipe()
		if err := owner.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { ownerIn.Close(); owner.Wait() }()
		io.WriteString(ownerIn, "add table inet roost { flags owner; }\n")
		labnet.Wait(5*time.Second, 50*time.Millisecond, func() bool {
			return strings.Contains(mustRun(t, nil, "ip", labnet.In(n.Router, "nft", "list", "tables")[1:]...), "roost")
		})
		l := newLaptop(t)
		a := startAgentLabOn(t, n, []byte(labConfig(t, l.key, nil)), nil)
		var svcs map[string]serviceStatus
		labnet.Wait(15*time.Second, 100*time.Millisecond, func() bool {
			svcs = a.services()
			return svcs["firewall"].State == "failed" && svcs["default"].State == "up" && svcs["ssh"].State == "up"
		})
		fw := svcs["firewall"]
		if fw.State != "failed" || !strings.Contains(fw.LastError, "forwarding is off") {
			t.Fatalf("a firewall that cannot apply: %+v\n%s", fw, a.log.String())
		}
		for _, k := range []string{"net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"} {
			if v := strings.TrimSpace(mustRun(t, nil, "ip", labnet.In(n.Router, "sysctl", "-n", k)[1:]...)); v != "0" {
				t.Errorf("%s is %s while the firewall is not in force", k, v)
			}
		}
		if svcs["forwarding"].State == "up" {
			t.Errorf("the forwarding sysctls ran without a firewall: %+v", svcs["forwarding"])
		}
		if labnet.Reaches(n.LAN, labISP) {
			t.Error("the LAN reaches the ISP through a router without its firewall")
		}
	})

	// 11. A state folder roostd cannot write fails SSH alone, naming the
	// path; the network comes up.
	t.Run("UnwritableState", func(t *testing.T) {
		l := newLaptop(t)
		s := &safetyLab{l: l}
		n := labnet.New(fmt.Sprintf("ru%d-", os.Getpid()%100000))
		if err := n.Up(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(n.Down)
		s.agentLab = newAgentLab(t, n, []byte(labConfig(t, l.key, nil)), nil)
		s.state = filepath.Join(t.TempDir(), "not-a-folder")
		os.WriteFile(s.state, []byte("a file where the state folder should be"), 0o600)
		s.start()
		t.Cleanup(s.stop)
		var svcs map[string]serviceStatus
		labnet.Wait(15*time.Second, 100*time.Millisecond, func() bool {
			svcs = s.services()
			return svcs["ssh"].State == "failed" && svcs["default"].State == "up"
		})
		if !strings.Contains(svcs["ssh"].LastError, s.state) {
			s.fatalf("ssh with an unwritable state folder: %+v", svcs["ssh"])
		}
		s.ping(labISP)
	})
}

// watchForwarding samples, in ns, the forwarding sysctls and whether
// roost's firewall (with its port forward, so the whole ruleset and not
// the start-up policy) is in force, as fast as it can; the returned
// function stops it and returns the samples, "f4 f6 ruleset" a line.
func watchForwarding(t *testing.T, ns string) func() []string {
	script := `while :; do
  f4=$(cat /proc/sys/net/ipv4/ip_forward); f6=$(cat /proc/sys/net/ipv6/conf/all/forwarding)
  r=$(nft list chain inet roost prerouting 2>/dev/null | grep -c dnat)
  echo "$f4 $f6 $r"
done`
	cmd := exec.Command("ip", labnet.In(ns, "sh", "-c", script)[1:]...)
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan []string, 1)
	go func() {
		var all []string
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			all = append(all, sc.Text())
		}
		lines <- all
	}()
	return func() []string {
		cmd.Process.Kill()
		cmd.Wait()
		all := <-lines
		if len(all) < 10 {
			t.Fatalf("the forwarding watch took only %d samples", len(all))
		}
		return all
	}
}

// scanWAN runs nmap from the ISP against the router's WAN address again
// and again until stopped, and returns the open ports it ever saw.
func scanWAN(t *testing.T, ns, addr string) func() []string {
	stop := make(chan struct{})
	found := make(chan []string, 1)
	go func() {
		var open []string
		for {
			select {
			case <-stop:
				found <- open
				return
			default:
			}
			out, _ := exec.Command("ip", labnet.In(ns, "nmap", "-Pn", "-n", "-T5", "--max-retries", "0", "-p", "22,53,80,8080", addr)[1:]...).Output()
			for _, line := range strings.Split(string(out), "\n") {
				if strings.Contains(line, " open ") {
					open = append(open, line)
				}
			}
		}
	}()
	return func() []string { close(stop); return <-found }
}
