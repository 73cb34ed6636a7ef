package itest

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/roostrouter/roost/itest/vm"
)

// Trial boots on the router VM (docs/kexec.md): a switch to a system whose
// kernel command line or initrd differs is booted with kexec as a trial,
// armed by the board's watchdog (QEMU's i6300esb: its reset ends QEMU,
// which runs with -no-reboot, and QMP's WATCHDOG event tells it from a
// reboot). Only a confirmation that reaches the trial boot makes the new
// generation the boot default; the test's bootloader (vm.ReadBootEntry)
// boots whatever the router left as the default when QEMU ends.

// trialRebuild is what roost rebuild --json says of a switch that boots.
type trialRebuild struct {
	vmRebuild
	Trial *struct {
		Generation int    `json:"generation"`
		Method     string `json:"method"`
		Why        string `json:"why"`
	} `json:"trial"`
}

// trialLab is the router VM lab with the VM running and its console.
type trialLab struct {
	*routerVMLab
	r *vm.Router
	c *timedConsole
}

// TestKernelTrialInVM: roost rebuild from the LAN host to systems that
// boot differently from the one the router booted.
//   - Confirms: the same kernel with another parameter is kexec'd into
//     (QEMU goes on) with roost.trial=1, confirmed, and is the default:
//     roost reboot then boots it, without roost.trial.
//   - Panics: a kernel that panics and hangs (panic=0, no init: it cannot
//     mount a root) is reset by the watchdog it cannot feed; the router
//     boots the default and records the rollback, which roost rebuild
//     and roost status say.
//   - InitNeverStartsRoostd: an initrd whose /init never starts roostd
//     (kexecinit, idle): likewise.
//   - BrokenSSH: a system whose SSH refuses the LAN host's key: its agent
//     runs, but no confirmation comes by the deadline: likewise.
func TestKernelTrialInVM(t *testing.T) {
	need(t, "go", "ssh-keygen")
	l := &trialLab{routerVMLab: startRouterVMLab(t)}
	systems := newVMSystems(t, l.lap.nix)
	m := marker(t)
	idle := filepath.Join(t.TempDir(), "initrd")
	if err := os.WriteFile(idle, initramfs(t, buildKexecInit(t, "amd64")), 0o644); err != nil {
		t.Fatal(err)
	}
	s1 := systems.build("roost-system-dev", l.config(), roostd)
	s2 := systems.buildBoot("roost-system-dev", l.config(), roostd, "roost.test=2", "")
	// The later panic= wins over the VM's panic=-1: the kernel finds no
	// init, cannot mount a root ("VFS: Unable to mount root fs") and hangs.
	panics := systems.buildBoot("roost-system-panics", l.config(), roostd, "roost.test=3 panic=0 rdinit=/nonexistent", "")
	noAgent := systems.buildBoot("roost-system-no-agent", l.config(), roostd,
		"roost.test=4 kexectest=marker kexectest.idle=1 kexectest.nowatchdog=1 roost.marker="+m, idle)
	noSSH := systems.buildBoot("roost-system-no-ssh", l.configKeys(otherKey(t)), roostd, "roost.test=5", "")
	l.disk = systems.disk(s1)

	_, hostKey := l.bootFirst(s1)

	if !t.Run("Confirms", func(t *testing.T) {
		c := l.c
		var res trialRebuild
		start := time.Now()
		mustJSON(t, "roost rebuild --json", l.mustRoost("rebuild", "--host", "rotuer", "--json", "--system", s2), &res)
		took := time.Since(start)
		if !res.Confirmed || res.Generation != 2 || res.System != s2 || res.Trial == nil || res.Trial.Method != "kexec" || res.Trial.Generation != 2 {
			t.Fatalf("rebuild: %+v, trial %+v; want generation 2 confirmed after a kexec trial", res, res.Trial)
		}
		if l.r.Exited() {
			t.Fatal("QEMU ended: the trial boot was no kexec")
		}
		if e, ok := l.r.Event("WATCHDOG"); ok {
			t.Fatalf("the watchdog fired: %v", e)
		}
		_, downAt := c.waitFor(t, "system down: kexec", 0, time.Second)
		booting, _ := c.waitFor(t, "msg=booting", 1, time.Second)
		if !strings.Contains(booting, "generation=2") || !strings.Contains(booting, "trial=true") {
			t.Fatalf("the kexec'd boot says %q, want generation 2 as a trial (roost.generation=2 roost.trial=1)", booting)
		}
		_, readyAt := c.waitFor(t, "agent ready", 1, time.Second)
		st := l.waitAllUp(true) // the same host key after the kexec
		if st.Current != s2 || st.Booted != s2 || st.Generation != 2 || st.Pending != nil {
			t.Fatalf("after the confirmed trial: %+v; want %s booted, generation 2 the default", st, s2)
		}
		t.Logf("kexec trial confirmed: roost rebuild %.1fs (sent %d of %d paths); the kexec'd boot's agent ready %.1fs after \"system down: kexec\"; %s",
			took.Seconds(), res.SentPaths, res.ClosurePaths, (readyAt - downAt).Seconds(), res.Trial.Why)

		l.r, l.c = l.reboot(l.r, l.c, hostKey)
		if e := l.entry; e.Generation != 2 || e.System.String() != s2 || e.Once || strings.Contains(e.Cmdline, "roost.trial") || !strings.Contains(e.Cmdline, "roost.test=2") {
			t.Fatalf("the bootloader booted %+v after the reboot; want generation 2's entry, not a trial", e)
		}
		if booting, _ := l.c.waitFor(t, "msg=booting", 0, time.Second); !strings.Contains(booting, "generation=2") || strings.Contains(booting, "trial=true") {
			t.Fatalf("the boot after the reboot says %q, want generation 2, not a trial", booting)
		}
		if st := l.waitAllUp(true); st.Current != s2 || st.Booted != s2 || st.Generation != 2 {
			t.Fatalf("after the reboot: %+v; want %s, generation 2", st, s2)
		}
	}) {
		return
	}

	if !t.Run("Panics", func(t *testing.T) {
		f := l.failingTrial(t, panics, s2, "3m")
		f.console.waitFor(t, "VFS: Unable to mount root fs", 0, time.Second)
		if !strings.Contains(f.res.stderr, f.why) {
			t.Fatalf("roost rebuild: exit %d, no %q:\n%s%s", f.res.code, f.why, f.res.stdout, f.res.stderr)
		}
	}) {
		return
	}

	if !t.Run("InitNeverStartsRoostd", func(t *testing.T) {
		f := l.failingTrial(t, noAgent, s2, "3m")
		f.console.waitFor(t, "BOOTED marker="+m, 0, time.Second)
		if !strings.Contains(f.res.stderr, f.why) {
			t.Fatalf("roost rebuild: exit %d, no %q:\n%s%s", f.res.code, f.why, f.res.stdout, f.res.stderr)
		}
	}) {
		return
	}

	if !t.Run("BrokenSSH", func(t *testing.T) {
		f := l.failingTrial(t, noSSH, s2, "45s")
		// The trial's agent ran (the first boot's agent, then its own):
		// what failed is the confirmation. roost, refused by the trial's
		// SSH, tries on until the default is back and says why.
		f.console.waitFor(t, "agent ready", 1, time.Second)
		for _, want := range []string{"refused every key", "its watchdog resets it into the last good generation", f.why, "its agent ran, but no confirmation came by"} {
			if !strings.Contains(f.res.stderr, want) {
				t.Fatalf("roost rebuild: exit %d, no %q:\n%s%s", f.res.code, want, f.res.stdout, f.res.stderr)
			}
		}
	}) {
		return
	}

	if res := l.ssh(true, "roostd", "poweroff"); res.code != 0 && res.code != 255 {
		t.Fatalf("roostd poweroff: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	if err := l.r.Wait(time.Minute); err != nil {
		t.Fatalf("the VM after roostd poweroff: %v", err)
	}
}

// bootFirst boots the VM on its disk, whose generation 1 is sys, and
// checks that it runs sys, reached from the LAN host; known_hosts learns
// the router's key, which it returns.
func (l *trialLab) bootFirst(sys string) (first vmStatus, hostKey string) {
	t := l.t
	t.Helper()
	l.r, l.c = l.boot()
	l.c.waitFor(t, "agent ready", 0, 2*time.Minute)
	l.lanAddresses()
	l.reaches()
	first = l.waitAllUp(false)
	hostKey = first.service("ssh").Outputs["host-key"]
	if first.Current != sys || first.Generation != 1 || hostKey == "" {
		t.Fatalf("the first boot runs %+v, want %s", first, sys)
	}
	return first, hostKey
}

// failedTrial is a trial that the watchdog ended: what roost rebuild
// said, the console of the boot that kexec'd into it (the trial's boot
// follows on it), and the rollback's reason as the contract words it.
type failedTrial struct {
	res     result
	console *timedConsole
	why     string
}

// failingTrial rebuilds to sys, a trial that is never confirmed, with
// confirmTimeout: the router kexecs into it (QEMU goes on); the watchdog
// resets it (QEMU ends after its WATCHDOG event, and init never said it
// rebooted); the test's bootloader boots the default, back, again; the
// router records the rollback and deletes the trial's generation. It logs
// the figures.
func (l *trialLab) failingTrial(t *testing.T, sys, back, confirmTimeout string) failedTrial {
	before := l.status(true)
	if before.Current != back || before.Pending != nil {
		t.Fatalf("before the trial: %+v; want %s running, nothing pending", before, back)
	}
	gen := l.lastGeneration() + 1
	c, r := l.c, l.r
	start := time.Now()
	done := l.roostAsync("rebuild", "--host", "rotuer", "--system", sys, "--confirm-timeout", confirmTimeout)
	var down time.Time
	for deadline := start.Add(5 * time.Minute); down.IsZero(); time.Sleep(100 * time.Millisecond) {
		if _, at, ok := c.find("system down: kexec", 0); ok {
			down = c.start.Add(at)
			continue
		}
		select {
		case res := <-done:
			t.Fatalf("roost rebuild ended before the router kexec'd: exit %d\n%s%s", res.code, res.stdout, res.stderr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the router did not kexec within 5 minutes of roost rebuild")
		}
	}
	reset := waitEvent(t, r, "WATCHDOG", 5*time.Minute)
	if err := r.Wait(time.Minute); err != nil {
		t.Fatalf("QEMU after the watchdog's reset: %v", err)
	}
	if line, _, ok := c.find("system down: reboot", 0); ok {
		t.Fatalf("init rebooted (%q): the reset was not the watchdog's alone", line)
	}
	resetAt := r.Started().Add(reset.At)

	l.r, l.c = l.boot()
	if e := l.entry; e.Generation != before.Generation || e.System.String() != back || e.Once {
		t.Fatalf("the bootloader booted %+v after the reset; want the default, generation %d (%s)", e, before.Generation, back)
	}
	_, ready := l.c.waitFor(t, "agent ready", 0, 2*time.Minute)
	readyAt := l.c.start.Add(ready)
	var res result
	select {
	case res = <-done:
	case <-time.After(5 * time.Minute):
		t.Fatal("roost rebuild did not return within 5 minutes of the VM's new start")
	}
	took := time.Since(start)
	if res.code == 0 {
		t.Fatalf("roost rebuild to a trial that failed succeeded:\n%s%s", res.stdout, res.stderr)
	}
	why := fmt.Sprintf("trial of generation %d failed: rolled back by the watchdog", gen)
	st := l.waitAllUp(true)
	if st.Current != back || st.Booted != back || st.Generation != before.Generation || st.Pending != nil ||
		st.LastRollback == nil || st.LastRollback.System != sys || !strings.Contains(st.LastRollback.Why, why) {
		t.Fatalf("after the failed trial: %+v, last rollback %+v; want %s, generation %d, the rollback of %s: %s", st, st.LastRollback, back, before.Generation, sys, why)
	}
	if out := l.mustRoost("status", "--host", "rotuer"); !strings.Contains(out, "last rollback") || !strings.Contains(out, why) {
		t.Errorf("roost status does not say the rollback:\n%s", out)
	}
	if slices.Contains(l.generations(), sys) {
		t.Errorf("the failed trial's generation %d (%s) is still on the router", gen, sys)
	}
	lines := strings.Split(strings.TrimSpace(res.stderr), "\n")
	t.Logf("failed trial of generation %d: kexec %.1fs after roost rebuild started; the watchdog reset the VM %.1fs after the kexec; the default's agent ready %.1fs after the reset (down %.1fs from the kexec); roost rebuild failed after %.1fs; the router says: %s; roost's last line: %s",
		gen, down.Sub(start).Seconds(), resetAt.Sub(down).Seconds(), readyAt.Sub(resetAt).Seconds(), readyAt.Sub(down).Seconds(), took.Seconds(),
		st.LastRollback.Why, lines[len(lines)-1])
	return failedTrial{res: res, console: c, why: why}
}

// waitEvent waits up to d for QEMU's first QMP event called name; QEMU
// ending without it fails the test.
func waitEvent(t *testing.T, r *vm.Router, name string, d time.Duration) vm.Event {
	t.Helper()
	deadline := time.Now().Add(d)
	for ; time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if e, ok := r.Event(name); ok {
			return e
		}
		if soon := time.Now().Add(2 * time.Second); r.Exited() && soon.Before(deadline) {
			deadline = soon // the socket may still hold QEMU's last events
		}
	}
	t.Fatalf("no %s event from QEMU within %s (QEMU ended: %v): events %v", name, d, r.Exited(), r.Events())
	return vm.Event{}
}

// lastGeneration is the router's newest generation's number.
func (l *routerVMLab) lastGeneration() int {
	l.t.Helper()
	var gens []generation
	mustJSON(l.t, "roostd generations --json", l.ssh(true, "roostd", "generations", "--json").stdout, &gens)
	n := 0
	for _, g := range gens {
		n = max(n, g.Number)
	}
	return n
}

// configKeys is the lab's config with SSH letting in only key (an
// authorized_keys line).
func (l *routerVMLab) configKeys(key string) []byte {
	var cfg map[string]any
	if err := json.Unmarshal(l.config(), &cfg); err != nil {
		l.t.Fatal(err)
	}
	cfg["ssh"].(map[string]any)["authorizedKeys"] = []string{key}
	b, _ := json.MarshalIndent(cfg, "", "  ")
	return b
}

// otherKey is the public key of an SSH key no one here uses.
func otherKey(t *testing.T) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "other")
	mustRun(t, nil, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "someone-else", "-f", file)
	return strings.TrimSpace(string(readFile(t, file+".pub")))
}
