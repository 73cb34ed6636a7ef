package itest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/roostrouter/roost/itest/labnet"
	"github.com/roostrouter/roost/itest/vm"
	"github.com/roostrouter/roost/updater/storepath"
)

// The router VM updated as a user updates a router: systems built by the
// Nix library (roost.lib.mkSystem from prebuilt inputs, with the real
// nix-build) in the LAN host's Nix store, sent and activated by roost
// rebuild from the LAN host.

// vmSystemExpr is a qemu-x86_64 system from roost.lib.mkSystem: modules
// is a list of module files, one a line, in load order; params are more
// kernel parameters, separated by spaces, after the VM's own.
const vmSystemExpr = `
{ repo, config, roostd, checker, kernel, initrd, modules, name, params }:
let words = s: sep: builtins.filter (w: builtins.isString w && w != "") (builtins.split sep s); in
(import (/. + repo + "/nix") { }).mkSystem {
  board = "qemu-x86_64";
  inherit roostd checker kernel initrd name;
  config = builtins.fromJSON config;
  modules = words modules "\n";
  kernelParams = [ "panic=-1" "quiet" ] ++ words params " ";
}
`

// vmSystems builds the router VM's systems from vm.NixInputs: Debian's
// kernel and the modules of vm.RouterModules, an initrd whose /init is the
// roostd under test; and the config and roostd given.
type vmSystems struct {
	t       *testing.T
	n       *nixStore
	in      *vm.NixInputs
	modules string // in.Modules, one a line
}

func newVMSystems(t *testing.T, n *nixStore) *vmSystems {
	in, err := vm.WriteNixInputs(t.TempDir(), roostd, vm.RouterModules())
	if err != nil {
		t.Fatal(err)
	}
	return &vmSystems{t: t, n: n, in: in, modules: strings.Join(in.Modules, "\n")}
}

// build builds a system called name with config and agent as its
// bin/roostd; the roostd under test checks the config.
func (v *vmSystems) build(name string, config []byte, agent string) string {
	v.t.Helper()
	return v.buildBoot(name, config, agent, "", "")
}

// buildBoot is build with what the system boots changed: params, kernel
// parameters after the VM's own, and an initrd other than the one whose
// /init is roostd ("": that one).
func (v *vmSystems) buildBoot(name string, config []byte, agent, params, initrd string) string {
	v.t.Helper()
	if initrd == "" {
		initrd = v.in.Initrd
	}
	return v.n.build(vmSystemExpr, "repo", repoRoot(v.t), "config", string(config), "roostd", agent, "checker", roostd,
		"kernel", v.in.Kernel, "initrd", initrd, "modules", v.modules, "name", name, "params", params)
}

// disk makes a router disk whose generation 1 is sys, from its closure
// in the Nix store.
func (v *vmSystems) disk(sys string) *vm.RouterDisk {
	v.t.Helper()
	p, err := storepath.Parse(sys)
	if err != nil {
		v.t.Fatal(err)
	}
	d, err := vm.BuildRouterDiskFromExport(v.t.TempDir(), bytes.NewReader(v.n.export(v.n.closure(sys))), p)
	if err != nil {
		v.t.Fatal(err)
	}
	return d
}

// buildCrashRoostd builds itest/vm/cmd/crashroostd: it passes the
// hand-over's start check and exits 1 at run.
func buildCrashRoostd(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "roostd")
	cmd := exec.Command("go", "build", "-o", out, "github.com/roostrouter/roost/itest/vm/cmd/crashroostd")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build crashroostd: %v\n%s", err, b)
	}
	return out
}

// vmRebuild is what roost rebuild --json says, with the transfer's
// details.
type vmRebuild struct {
	rebuildJSON
	Mode    string  `json:"mode"`
	Deltas  int     `json:"deltas"`
	Seconds float64 `json:"seconds"` // the transfer's
}

// rebuild runs roost rebuild --json from the LAN host and says how long
// it took.
func (l *routerVMLab) rebuild(args ...string) (vmRebuild, time.Duration) {
	l.t.Helper()
	start := time.Now()
	out := l.mustRoost(append([]string{"rebuild", "--host", "rotuer", "--json"}, args...)...)
	took := time.Since(start)
	var res vmRebuild
	mustJSON(l.t, "roost rebuild --json", out, &res)
	return res, took
}

// flood pings the ISP from the LAN host through the router as fast as
// it answers, for about d: a count of packets, measured first, so that
// ping stops sending and waits for the last replies (a ping stopped by a
// signal counts the one in flight as lost). wait says what was sent and
// received, and when the flood ended.
func (l *routerVMLab) flood(d time.Duration) (wait func() (sent, received int, ended time.Time)) {
	l.t.Helper()
	stats := func(s string) (sent, received int) {
		if i := strings.Index(s, "---\n"); i >= 0 {
			fmt.Sscanf(s[i+4:], "%d packets transmitted, %d received", &sent, &received)
		}
		return sent, received
	}
	start := time.Now()
	sample := run(l.t, nil, nil, "ip", labnet.In(l.net.LAN, "ping", "-f", "-c", "2000", "-W", "2", labISP)[1:]...)
	n, _ := stats(sample.stdout)
	if n == 0 {
		l.t.Fatalf("ping: exit %d\n%s%s", sample.code, sample.stdout, sample.stderr)
	}
	count := int(float64(n) / time.Since(start).Seconds() * d.Seconds())
	ping := exec.Command("ip", labnet.In(l.net.LAN, "ping", "-f", "-c", fmt.Sprint(count), "-W", "2", labISP)[1:]...)
	var out bytes.Buffer
	ping.Stdout, ping.Stderr = &out, &out
	if err := ping.Start(); err != nil {
		l.t.Fatal(err)
	}
	return func() (sent, received int, ended time.Time) {
		l.t.Helper()
		err := ping.Wait()
		ended = time.Now()
		if sent, received = stats(out.String()); sent == 0 {
			l.t.Fatalf("ping: %v\n%s", err, out.String())
		}
		return sent, received, ended
	}
}

// TestRouterRebuildInVM: roost rebuild from the LAN host to the router
// VM, as a user updates a router. A config change is applied (the LAN's
// DNS answers for a new name); a system with a new roostd is handed over
// to in place (same PID, roost status shows the new version) while a
// ping flood from the LAN host to the ISP loses nothing; a system whose
// roostd passes the start check but crashes as it runs is replaced by
// init with the previous generation's agent, and the rebuild says it was
// rolled back and why; roost rollback goes back a generation at once,
// handing back to the previous roostd.
func TestRouterRebuildInVM(t *testing.T) {
	need(t, "go")
	l := startRouterVMLab(t)
	systems := newVMSystems(t, l.lap.nix)
	v2, crash := buildRoostd(t, "v2", ""), buildCrashRoostd(t)
	nas := map[string][]string{"nas": {"192.168.1.10"}}
	s1 := systems.build("roost-system-dev", l.config(), roostd)
	s2 := systems.build("roost-system-dev", l.configWith(nas), roostd)
	s3 := systems.build("roost-system-v2", l.configWith(nas), v2)
	s4 := systems.build("roost-system-crash", l.configWith(nas), crash)
	l.disk = systems.disk(s1)

	r, c := l.boot()
	c.waitFor(t, "agent ready", 0, 2*time.Minute)
	l.lanAddresses()
	l.reaches()
	first := l.waitAllUp(false) // known_hosts learns the router's key
	if first.Current != s1 || first.Version != "dev" {
		t.Fatalf("the first boot runs %+v, want %s", first, s1)
	}

	t.Run("ConfigChange", func(t *testing.T) {
		if got := l.lookup("nas.home.arpa"); got != "" {
			t.Fatalf("nas.home.arpa is %q before the rebuild", got)
		}
		res, took := l.rebuild("--system", s2)
		if !res.Confirmed || res.Generation != 2 || res.System != s2 {
			t.Fatalf("rebuild: %+v", res)
		}
		if got := l.lookup("nas.home.arpa"); got != "192.168.1.10" {
			t.Fatalf("nas.home.arpa is %q after the rebuild, want 192.168.1.10", got)
		}
		st := l.waitAllUp(true)
		if st.Current != s2 || st.Generation != 2 || st.pid() != first.pid() || st.Pending != nil {
			t.Fatalf("after the config change: %+v (pid was %s)", st, first.pid())
		}
		t.Logf("config change: roost rebuild %.1fs (sent %d of %d paths, %d NAR bytes), same agent (pid %s)", took.Seconds(), res.SentPaths, res.ClosurePaths, res.SentNARBytes, st.pid())
	})

	t.Run("NewRoostd", func(t *testing.T) {
		before := l.status(true)
		wait := l.flood(25 * time.Second)
		time.Sleep(time.Second)
		res, took := l.rebuild("--system", s3)
		done := time.Now()
		sent, received, ended := wait()
		if !res.Confirmed || res.Generation != 3 || res.System != s3 {
			t.Fatalf("rebuild: %+v", res)
		}
		if ended.Before(done) {
			t.Fatalf("the ping flood ended before the rebuild (%s): it did not span it", took)
		}
		if sent < 100 || received != sent {
			t.Errorf("ping flood across the rebuild: %d sent, %d received", sent, received)
		}
		st := l.waitAllUp(true)
		if st.Version != "v2" || st.Current != s3 || st.Generation != 3 || st.pid() != before.pid() || st.Pending != nil {
			t.Fatalf("after the rebuild to roostd v2: %+v; want v2 in the same process (pid %s)", st, before.pid())
		}
		if out := l.mustRoost("status", "--host", "rotuer"); !strings.Contains(out, "roostd v2, pid "+before.pid()) {
			t.Errorf("roost status does not show roostd v2 in the same process:\n%s", out)
		}
		running, ssh := handoverTimes(c.String())
		if len(running) != 1 || len(ssh) != 1 {
			t.Fatalf("%d hand-overs on the console, want 1:\n%s", len(running), c.String())
		}
		t.Logf("new roostd: roost rebuild %.1fs (sent %d of %d paths: %d NAR bytes, %d on the wire, %d as deltas); hand-over in place (pid %s): new agent running %s, accepting SSH %s; ping flood %d sent, %d received",
			took.Seconds(), res.SentPaths, res.ClosurePaths, res.SentNARBytes, res.WireBytes, res.Deltas, st.pid(), running[0], ssh[0], sent, received)
	})

	t.Run("CrashingRoostd", func(t *testing.T) {
		before := l.status(true)
		start := time.Now()
		res := l.roost("rebuild", "--host", "rotuer", "--system", s4)
		took := time.Since(start)
		for _, want := range []string{"the router rolled the new system back", "the activation of " + s4 + " was rolled back", "its agent exited 3 times", "the router runs " + s3} {
			if res.code == 0 || !strings.Contains(res.stderr, want) {
				t.Fatalf("rebuild to a roostd that crashes: exit %d, no %q:\n%s%s", res.code, want, res.stdout, res.stderr)
			}
		}
		c.waitFor(t, "ROLLED BACK", 0, time.Second)
		st := l.waitAllUp(true)
		if st.Version != "v2" || st.Current != s3 || st.Generation != 3 || st.Pending != nil || st.LastRollback == nil || st.LastRollback.System != s4 {
			t.Fatalf("after the crashing roostd: %+v", st)
		}
		if st.pid() == before.pid() {
			t.Errorf("the agent's PID stayed %s: init did not start the previous agent anew", st.pid())
		}
		lines := strings.Split(strings.TrimSpace(res.stderr), "\n")
		t.Logf("crashing roostd: roost rebuild failed after %.1fs; its last lines:\n%s", took.Seconds(), strings.Join(lines[max(0, len(lines)-2):], "\n"))
	})

	t.Run("RollbackNow", func(t *testing.T) {
		before := l.status(true)
		var back struct {
			Generation int    `json:"generation"`
			System     string `json:"system"`
			Running    bool   `json:"running"`
		}
		mustJSON(t, "roost rollback --json", l.mustRoost("rollback", "--host", "rotuer", "--json"), &back)
		if back.Generation != 2 || back.System != s2 || !back.Running {
			t.Fatalf("roost rollback: %+v, want generation 2 running", back)
		}
		var st vmStatus
		if labnet.Wait(20*time.Second, 200*time.Millisecond, func() bool {
			var ok bool
			st, ok = l.tryStatus() // the hand-over ends open sessions
			return ok && st.Version == "dev"
		}) != nil {
			t.Fatalf("after roost rollback the agent is %q, want roostd dev", st.Agent)
		}
		st = l.waitAllUp(true)
		if st.Current != s2 || st.Generation != 2 || st.pid() != before.pid() {
			t.Fatalf("after roost rollback: %+v; want %s, generation 2, roostd dev in the same process (pid %s)", st, s2, before.pid())
		}
	})

	if res := l.ssh(true, "roostd", "poweroff"); res.code != 0 && res.code != 255 {
		t.Fatalf("roostd poweroff: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	if err := r.Wait(time.Minute); err != nil {
		t.Fatalf("the VM after roostd poweroff: %v", err)
	}
}
