package itest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/roostrouter/roost/itest/labnet"
)

// selfUpgradeExpr is a lab system that carries its own roostd: the binary
// at the path roostd (imported with builtins.path), in a package named
// name, linked from the system's bin/roostd as roost.lib.mkSystem does.
const selfUpgradeExpr = `
{ config, roostd, name }:
let
` + nixMk + `  bin = builtins.path { path = roostd; name = "roostd-bin"; };
  pkg = mk name [] ''
    ${bb} mkdir -p $out/bin
    ${bb} cp ${bin} $out/bin/roostd
    ${bb} chmod 555 $out/bin/roostd
  '';
  configFile = builtins.toFile "config.json" config;
in mk "system" [ pkg ] ''
  ${bb} mkdir -p $out/etc/roost $out/bin
  ${bb} cp ${configFile} $out/etc/roost/config.json
  ${bb} ln -s ${pkg}/bin/roostd $out/bin/roostd
''
`

// buildRoostd builds roostd with version set (and for goarch, if given)
// into a temporary folder.
func buildRoostd(t *testing.T, version, goarch string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "roostd")
	cmd := exec.Command("go", "build", "-ldflags", "-X main.version="+version, "-o", out, "github.com/roostrouter/roost/agent/cmd/roostd")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if goarch != "" {
		cmd.Env = append(cmd.Env, "GOARCH="+goarch)
	}
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build roostd %s: %v\n%s", version, err, b)
	}
	return out
}

// systemWith builds the lab system carrying the roostd binary bin.
func (s *safetyLab) systemWith(bin, name string) string {
	return s.l.nix.build(selfUpgradeExpr, "config", labConfig(s.t, s.l.key, nil), "roostd", bin, "name", name)
}

// agentStatus is what roostd status says of the agent.
type agentStatus struct {
	Agent      string `json:"agent"`
	Version    string `json:"version"`
	Current    string `json:"currentSystem"`
	Generation int    `json:"generation"`
	Pending    *struct {
		System   string    `json:"system"`
		Deadline time.Time `json:"deadline"`
	} `json:"pendingActivation"`
}

var agentPID = regexp.MustCompile(`, pid (\d+)$`)

func (st agentStatus) pid() string {
	if m := agentPID.FindStringSubmatch(st.Agent); m != nil {
		return m[1]
	}
	return ""
}

func (s *safetyLab) agentStatus() agentStatus {
	s.t.Helper()
	st, err := s.tryAgentStatus()
	if err != nil {
		s.fatalf("%v", err)
	}
	return st
}

// tryAgentStatus is roostd status, which may fail: a request in flight as
// the agent hands over ends with the old agent.
func (s *safetyLab) tryAgentStatus() (agentStatus, error) {
	r := s.roostd("status", "--json", "--state", s.state)
	var st agentStatus
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &st) != nil {
		return st, fmt.Errorf("roostd status does not answer: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	return st, nil
}

// waitAgent waits until the agent's status satisfies ok; a status that
// fails on the way (a hand-over under way) is asked again.
func (s *safetyLab) waitAgent(what string, within time.Duration, ok func(agentStatus) bool) agentStatus {
	s.t.Helper()
	var st agentStatus
	if labnet.Wait(within, 100*time.Millisecond, func() bool {
		got, err := s.tryAgentStatus()
		st = got
		return err == nil && ok(st)
	}) != nil {
		s.fatalf("the agent is never %s: %+v", what, st)
	}
	return st
}

// settled waits until the kernel has finished with the router's links:
// each has its IPv6 link-local address past duplicate address detection
// (a late one would show in a netlink monitor as the hand-over's doing).
func (s *safetyLab) settled() {
	s.t.Helper()
	var out string
	if labnet.Wait(10*time.Second, 100*time.Millisecond, func() bool {
		for _, dev := range []string{"wan", "lan0", "br-lan"} {
			out = mustRun(s.t, nil, "ip", "-n", s.net.Router, "-6", "addr", "show", "dev", dev, "scope", "link")
			if !strings.Contains(out, "fe80:") || strings.Contains(out, "tentative") {
				return false
			}
		}
		return true
	}) != nil {
		s.t.Fatalf("the router's links never settled:\n%s", out)
	}
}

// handoverTimes are the hand-over durations the new agents logged: until
// they ran, and until SSH accepted again.
func handoverTimes(log string) (running, ssh []string) {
	for _, m := range regexp.MustCompile(`took over in place from the previous roostd" handover=(\S+)`).FindAllStringSubmatch(log, -1) {
		running = append(running, m[1])
	}
	for _, m := range regexp.MustCompile(`took the listening sockets over from the previous roostd" .*handover=(\S+)`).FindAllStringSubmatch(log, -1) {
		ssh = append(ssh, m[1])
	}
	return running, ssh
}

// TestSelfUpgrade: the agent replaces itself in place when a switch brings
// another roostd, with the confirm-or-rollback promise kept across the
// hand-over both ways; a roostd that does not run is refused at once.
func TestSelfUpgrade(t *testing.T) {
	need(t, "go", "nix-build")
	v2 := buildRoostd(t, "v2", "")

	// (a) A switch to a system with a new roostd: the agent hands over in
	// place (the same PID), adopts the network without a netlink change,
	// forwards every packet of a flood across it, and the rebuild confirms
	// over a new connection, answered by the new agent.
	t.Run("InPlace", func(t *testing.T) {
		s := startSafetyLab(t, nil, nil)
		s.waitServices("up", allUp)
		// The first system carries the very roostd that runs: the same
		// bytes, so nothing is handed over.
		sys1 := s.systemWith(roostd, "roostd-dev")
		s.mustRoost("rebuild", "--host", "rotuer", "--system", sys1, "--accept-new-host-key")
		s.healthy(sys1, 1, 10*time.Second)
		before := s.agentStatus()
		if before.Version != "dev" || before.pid() == "" || strings.Contains(s.log.String(), "handing over") {
			s.fatalf("a system carrying the running roostd's bytes: %+v", before)
		}
		sys2 := s.systemWith(v2, "roostd-v2")
		s.mustRoost("copy", "--host", "rotuer", sys2) // the flood spans the hand-over, not the transfer

		s.settled()
		mon := exec.Command("ip", "-ts", "-n", s.net.Router, "monitor", "link", "address", "route")
		var events bytes.Buffer
		mon.Stdout = &events
		if err := mon.Start(); err != nil {
			t.Fatal(err)
		}
		ping := exec.Command("ip", labnet.In(s.net.LAN, "ping", "-f", "-w", "8", "-W", "1", labISP)[1:]...)
		var out bytes.Buffer
		ping.Stdout, ping.Stderr = &out, &out
		if err := ping.Start(); err != nil {
			t.Fatal(err)
		}
		flood := time.Now()
		time.Sleep(500 * time.Millisecond)
		var res rebuildJSON
		start := time.Now()
		if err := json.Unmarshal([]byte(s.mustRoost("rebuild", "--host", "rotuer", "--system", sys2, "--json")), &res); err != nil {
			t.Fatal(err)
		}
		rebuilt := time.Since(start)
		if !res.Confirmed || res.Generation != 2 {
			t.Fatalf("rebuild to the new roostd: %+v", res)
		}
		if time.Since(flood) > 7*time.Second {
			t.Fatalf("the rebuild took %s: the hand-over was not inside the flood", rebuilt)
		}
		if err := ping.Wait(); err != nil {
			t.Fatalf("ping: %v\n%s", err, out.String())
		}
		time.Sleep(300 * time.Millisecond)
		mon.Process.Kill()
		mon.Wait()
		var sent, received int
		fmt.Sscanf(out.String()[strings.Index(out.String(), "---\n")+4:], "%d packets transmitted, %d received", &sent, &received)
		if sent < 1000 || received != sent {
			t.Errorf("ping flood across the hand-over: %d sent, %d received\n%s", sent, received, out.String())
		}
		if strings.TrimSpace(events.String()) != "" {
			t.Errorf("the hand-over changed the network:\n%s\nroostd:\n%s", events.String(), s.log.String())
		}
		after := s.waitAgent("the new roostd, confirmed", 5*time.Second, func(st agentStatus) bool {
			return st.Version == "v2" && st.Current == sys2 && st.Generation == 2 && st.Pending == nil
		})
		if after.pid() != before.pid() {
			t.Errorf("the agent's PID changed across the hand-over: %s, was %s", after.pid(), before.pid())
		}
		if st := s.mustRoost("status", "--host", "rotuer"); !strings.Contains(st, "roostd v2, pid "+before.pid()) {
			t.Errorf("roost status does not show the new roostd in the same process:\n%s", st)
		}
		s.healthy(sys2, 2, 5*time.Second)
		running, ssh := handoverTimes(s.log.String())
		if len(running) != 1 || len(ssh) != 1 {
			s.fatalf("%d hand-overs logged (%d SSH take-overs), want 1:", len(running), len(ssh))
		}
		if i, j := strings.Index(s.log.String(), "handing over"), strings.Index(s.log.String(), "took the listening sockets over"); i >= 0 && j > i {
			t.Logf("the hand-over, as roostd logged it:\n%s", s.log.String()[strings.LastIndex(s.log.String()[:i], "\n")+1:j])
		}
		t.Logf("hand-over to roostd v2 in place (pid %s): new agent running %s and SSH accepting %s after the old one began; rebuild (activate, hand-over, confirm) %s; ping flood %d sent, %d received; no netlink change",
			before.pid(), running[0], ssh[0], rebuilt.Round(time.Millisecond), sent, received)
	})

	// (b) A system whose roostd does not run (a script that fails, a binary
	// for another architecture) is rolled back in the same rebuild, which
	// says why; the running agent stays.
	t.Run("DoesNotRun", func(t *testing.T) {
		s := startSafetyLab(t, nil, nil)
		sys1 := s.first()
		before := s.agentStatus()
		broken := filepath.Join(t.TempDir(), "roostd")
		os.WriteFile(broken, []byte("#!/bin/sh\necho 'roostd: cannot start' >&2\nexit 1\n"), 0o755)
		other := "arm64"
		if runtime.GOARCH == other {
			other = "amd64"
		}
		for _, tc := range []struct{ name, bin, why string }{
			{"roostd-fails", broken, "exit status 1: roostd: cannot start"},
			{"roostd-" + other, buildRoostd(t, "v2-"+other, other), "exec format error"},
		} {
			bad := s.systemWith(tc.bin, tc.name)
			r := s.roost("rebuild", "--host", "rotuer", "--system", bad)
			for _, want := range []string{"the new roostd " + bad + "/bin/roostd does not run", tc.why, "rolled back to generation 1"} {
				if r.code == 0 || !strings.Contains(r.stderr, want) {
					t.Fatalf("rebuild to %s: exit %d, no %q:\n%s%s", tc.name, r.code, want, r.stdout, r.stderr)
				}
			}
			s.healthy(sys1, 1, 2*time.Second)
			if st := s.agentStatus(); st.Version != "dev" || st.pid() != before.pid() {
				t.Fatalf("after refusing %s the agent is %q, was %q", tc.name, st.Agent, before.Agent)
			}
			t.Logf("%s refused: %s", tc.name, strings.TrimSpace(r.stderr))
		}
		if strings.Contains(s.log.String(), "handing over") {
			t.Fatalf("handed over to a roostd that does not run:\n%s", s.log.String())
		}
	})

	// (c) A switch to a new roostd that is never confirmed: the new agent's
	// timer, armed with the activation's own deadline, rolls back, and
	// the previous system's roostd is handed back to, in place again.
	t.Run("Unconfirmed", func(t *testing.T) {
		s := startSafetyLab(t, nil, nil)
		s.waitServices("up", allUp)
		sys1 := s.systemWith(roostd, "roostd-dev")
		s.mustRoost("rebuild", "--host", "rotuer", "--system", sys1, "--accept-new-host-key")
		s.healthy(sys1, 1, 10*time.Second)
		before := s.agentStatus()
		sys2 := s.systemWith(v2, "roostd-v2")
		s.activateUnconfirmed(sys2, "10s")
		activated := time.Now()
		up := s.waitAgent("the new roostd awaiting confirmation", 5*time.Second, func(st agentStatus) bool {
			return st.Version == "v2" && st.Current == sys2 && st.Pending != nil
		})
		// The new agent keeps the activation's own deadline, from before
		// the hand-over.
		if d := up.Pending.Deadline.Sub(activated); d > 10*time.Second || d < 9*time.Second {
			t.Errorf("the new agent awaits confirmation until %s after the activation, want its own 10s", d)
		}
		back := s.waitAgent("the previous roostd again", 25*time.Second, func(st agentStatus) bool {
			return st.Version == "dev" && st.Current == sys1 && st.Generation == 1 && st.Pending == nil
		})
		if time.Now().Before(up.Pending.Deadline) {
			t.Errorf("rolled back before the deadline %s", up.Pending.Deadline)
		}
		if up.pid() != before.pid() || back.pid() != before.pid() {
			t.Errorf("PIDs: %s, then %s (v2), then %s: want one process", before.pid(), up.pid(), back.pid())
		}
		s.healthy(sys1, 1, 5*time.Second)
		log := s.log.String()
		if n := strings.Count(log, "handing over to the running system's roostd"); n != 2 {
			t.Fatalf("%d hand-overs, want 2 (to v2 and back):\n%s", n, log)
		}
		if !strings.Contains(log, "activation not confirmed in time: rolling back") {
			t.Fatalf("the new agent's timer did not roll back:\n%s", log)
		}
		running, _ := handoverTimes(log)
		t.Logf("unconfirmed switch to roostd v2 rolled back by the new agent and handed back (pid %s); hand-overs took %v", before.pid(), running)
	})
}
