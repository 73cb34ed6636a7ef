package itest

import (
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/roostrouter/roost/itest/labnet"
)

// The three ways a rebuild reaches the router VM, side by side: a switch
// of services alone, a trial boot by kexec, a trial boot by a full reboot.
// Each is timed from roost rebuild's start to its confirmed answer, under
// a steady ping from the LAN host to the ISP, whose longest silence is the
// downtime the LAN sees. make bench (itest/cmd/bench, table "methods")
// runs this test and reads its BENCH lines.

// TestBootMethodsInVM: three rebuilds from the LAN host, in turn.
//   - service: a config change (a lan-dns host): confirmed, the same
//     agent process, no ping lost.
//   - kexec: another kernel parameter (roost.test=2): a kexec trial
//     (QEMU goes on), confirmed, the new generation the default.
//   - reboot: --reboot to another parameter (roost.test=3): the router
//     writes the one-shot entry and reboots (QEMU ends); the test's
//     bootloader boots that entry as a trial, roost rebuild confirms it;
//     then the generation is the default and the one-shot entry is gone
//     (roost reboot boots the default, not a trial).
//
// Each logs "BENCH boot-method NAME confirmed=S downtime=S sent=N
// received=N" (seconds).
func TestBootMethodsInVM(t *testing.T) {
	need(t, "go", "ping")
	l := &trialLab{routerVMLab: startRouterVMLab(t)}
	systems := newVMSystems(t, l.lap.nix)
	nas := map[string][]string{"nas": {"192.168.1.10"}}
	s1 := systems.build("roost-system-dev", l.config(), roostd)
	service := systems.build("roost-system-dev", l.configWith(nas), roostd)
	kexec := systems.buildBoot("roost-system-dev", l.configWith(nas), roostd, "roost.test=2", "")
	reboot := systems.buildBoot("roost-system-dev", l.configWith(nas), roostd, "roost.test=3", "")
	l.disk = systems.disk(s1)

	first, hostKey := l.bootFirst(s1)

	if !t.Run("service", func(t *testing.T) {
		p := l.startPing(t)
		var res trialRebuild
		start := time.Now()
		mustJSON(t, "roost rebuild --json", l.mustRoost("rebuild", "--host", "rotuer", "--json", "--system", service), &res)
		took := time.Since(start)
		s := p.stop(t, start.Add(took))
		if !res.Confirmed || res.Generation != 2 || res.System != service || res.Trial != nil {
			t.Fatalf("rebuild: %+v, trial %+v; want generation 2 confirmed, no trial", res, res.Trial)
		}
		st := l.waitAllUp(true)
		if st.Current != service || st.Generation != 2 || st.pid() != first.pid() || st.Pending != nil {
			t.Fatalf("after the config change: %+v; want %s, generation 2, the same agent (pid %s)", st, service, first.pid())
		}
		if got := l.lookup("nas.home.arpa"); got != "192.168.1.10" {
			t.Fatalf("nas.home.arpa is %q after the rebuild, want 192.168.1.10", got)
		}
		if s.sent < 20 || s.received != s.sent {
			t.Errorf("ping across a switch of services: %d sent, %d received; want none lost", s.sent, s.received)
		}
		logMethod(t, "service", took, s)
	}) {
		return
	}

	if !t.Run("kexec", func(t *testing.T) {
		p := l.startPing(t)
		var res trialRebuild
		start := time.Now()
		mustJSON(t, "roost rebuild --json", l.mustRoost("rebuild", "--host", "rotuer", "--json", "--system", kexec), &res)
		took := time.Since(start)
		s := p.stop(t, start.Add(took))
		if !res.Confirmed || res.Generation != 3 || res.System != kexec || res.Trial == nil || res.Trial.Method != "kexec" || res.Trial.Generation != 3 {
			t.Fatalf("rebuild: %+v, trial %+v; want generation 3 confirmed after a kexec trial", res, res.Trial)
		}
		if l.r.Exited() {
			t.Fatal("QEMU ended: the trial boot was no kexec")
		}
		if booting, _ := l.c.waitFor(t, "msg=booting", 1, time.Second); !strings.Contains(booting, "generation=3") || !strings.Contains(booting, "trial=true") {
			t.Fatalf("the kexec'd boot says %q, want generation 3 as a trial", booting)
		}
		if st := l.waitAllUp(true); st.Current != kexec || st.Booted != kexec || st.Generation != 3 || st.Pending != nil {
			t.Fatalf("after the kexec trial: %+v; want %s booted, generation 3 the default", st, kexec)
		}
		logMethod(t, "kexec", took, s)
	}) {
		return
	}

	if !t.Run("reboot", func(t *testing.T) {
		p := l.startPing(t)
		start := time.Now()
		done := timedResult(l.roostAsync("rebuild", "--host", "rotuer", "--json", "--reboot", "--system", reboot))
		// The bootloader's part: QEMU runs with -no-reboot, so the
		// router's reboot ends it, and the test boots the disk again.
		for deadline := start.Add(5 * time.Minute); !l.r.Exited(); time.Sleep(100 * time.Millisecond) {
			select {
			case r := <-done:
				t.Fatalf("roost rebuild --reboot ended before the VM went down: exit %d\n%s%s", r.code, r.stdout, r.stderr)
			default:
			}
			if time.Now().After(deadline) {
				t.Fatal("the VM did not go down within 5 minutes of roost rebuild --reboot")
			}
		}
		if err := l.r.Wait(10 * time.Second); err != nil {
			t.Fatalf("the VM after roost rebuild --reboot: %v", err)
		}
		l.c.waitFor(t, "system down: reboot", 0, time.Second)
		l.r, l.c = l.boot()
		if e := l.entry; !e.Once || e.Generation != 4 || e.System.String() != reboot ||
			!strings.Contains(e.Cmdline, "roost.trial=1") || !strings.Contains(e.Cmdline, "roost.test=3") {
			t.Fatalf("the bootloader booted %+v; want the one-shot entry of generation 4 as a trial", e)
		}
		var r timed
		select {
		case r = <-done:
		case <-time.After(5 * time.Minute):
			t.Fatal("roost rebuild --reboot did not return within 5 minutes of the VM's new start")
		}
		if r.code != 0 {
			t.Fatalf("roost rebuild --reboot: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		took := r.at.Sub(start)
		s := p.stop(t, r.at)
		var res trialRebuild
		mustJSON(t, "roost rebuild --json", r.stdout, &res)
		if !res.Confirmed || res.Generation != 4 || res.System != reboot || res.Trial == nil || res.Trial.Method != "reboot" || res.Trial.Generation != 4 {
			t.Fatalf("rebuild: %+v, trial %+v; want generation 4 confirmed after a trial by reboot", res, res.Trial)
		}
		if st := l.waitAllUp(true); st.Current != reboot || st.Booted != reboot || st.Generation != 4 || st.Pending != nil {
			t.Fatalf("after the trial by reboot: %+v; want %s booted, generation 4 the default", st, reboot)
		}
		logMethod(t, "reboot", took, s)

		l.r, l.c = l.reboot(l.r, l.c, hostKey)
		if e := l.entry; e.Once || e.Generation != 4 || e.System.String() != reboot || strings.Contains(e.Cmdline, "roost.trial") {
			t.Fatalf("the bootloader booted %+v after roost reboot; want generation 4, the default, with no one-shot entry left", e)
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

// logMethod logs a case's figures in the form itest/cmd/bench parses.
func logMethod(t *testing.T, name string, took time.Duration, s pingStats) {
	t.Helper()
	t.Logf("BENCH boot-method %s confirmed=%.2f downtime=%.2f sent=%d received=%d",
		name, took.Seconds(), s.longestGap.Seconds(), s.sent, s.received)
}

// timed is a command's result and when it came.
type timed struct {
	result
	at time.Time
}

// timedResult notes when the result on c comes.
func timedResult(c <-chan result) <-chan timed {
	out := make(chan timed, 1)
	go func() {
		r := <-c
		out <- timed{r, time.Now()}
	}()
	return out
}

// pingInterval is how often the LAN host pings the ISP: the downtime's
// resolution.
const pingInterval = 50 * time.Millisecond

// lanPing is ping from the LAN host to the ISP through the router, every
// pingInterval, each reply with its time (-D); each reply waited for 1 s.
type lanPing struct {
	cmd *exec.Cmd
	out *timedConsole
}

// startPing starts the ping and waits for its first reply.
func (l *routerVMLab) startPing(t *testing.T) *lanPing {
	t.Helper()
	p := &lanPing{out: newTimedConsole()}
	p.out.show = false
	p.cmd = exec.Command("ip", labnet.In(l.net.LAN, "ping", "-D", "-n", "-i", fmt.Sprint(pingInterval.Seconds()), "-W", "1", labISP)[1:]...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.cmd.Process.Kill(); p.cmd.Wait() })
	if _, ok := p.replyAfter(time.Time{}, 10*time.Second); !ok {
		t.Fatalf("no ping reply from the ISP within 10 s:\n%s", p.out.String())
	}
	return p
}

// pingReply is a reply line of ping -D: its time and sequence number.
var pingReply = regexp.MustCompile(`^\[(\d+\.\d+)\] \d+ bytes from [^:]+: icmp_seq=(\d+) `)

// replies are the ping's replies so far, in the order they came, without
// duplicates (DUP!).
func (p *lanPing) replies() (at []time.Time, seqs []int) {
	for _, line := range p.lines() {
		if at1, seq, ok := parseReply(line); ok {
			at, seqs = append(at, at1), append(seqs, seq)
		}
	}
	return at, seqs
}

func (p *lanPing) lines() []string {
	p.out.mu.Lock()
	defer p.out.mu.Unlock()
	return slices.Clone(p.out.lines)
}

func parseReply(line string) (time.Time, int, bool) {
	m := pingReply.FindStringSubmatch(line)
	if m == nil || strings.Contains(line, "DUP!") {
		return time.Time{}, 0, false
	}
	sec, err1 := strconv.ParseFloat(m[1], 64)
	seq, err2 := strconv.Atoi(m[2])
	return time.Unix(0, int64(sec*1e9)), seq, err1 == nil && err2 == nil
}

// replyAfter waits up to d for a reply later than after.
func (p *lanPing) replyAfter(after time.Time, d time.Duration) (time.Time, bool) {
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		lines := p.lines()
		for i := len(lines) - 1; i >= 0; i-- {
			if at, _, ok := parseReply(lines[i]); ok {
				if at.After(after) {
					return at, true
				}
				break
			}
		}
	}
	return time.Time{}, false
}

// pingStats is what a ping saw: the packets up to its last reply (those
// sent after it were in flight when it stopped), the replies among them,
// and the longest time between two replies.
type pingStats struct {
	sent, received int
	longestGap     time.Duration
}

// stop stops the ping once the LAN reaches the ISP again after end (the
// rebuild's answer: a router back from a boot may still be getting its
// WAN lease), and a second later.
func (p *lanPing) stop(t *testing.T, end time.Time) pingStats {
	t.Helper()
	if _, ok := p.replyAfter(end, 2*time.Minute); !ok {
		lines := p.lines()
		t.Fatalf("the LAN host does not reach the ISP 2 minutes after the rebuild; ping's last lines:\n%s", strings.Join(lines[max(0, len(lines)-20):], "\n"))
	}
	time.Sleep(time.Second)
	p.cmd.Process.Signal(os.Interrupt)
	p.cmd.Wait()
	at, seqs := p.replies()
	// Sequence numbers start at 1 and wrap after 65535 (an hour at
	// pingInterval): far longer than a rebuild.
	s := pingStats{sent: slices.Max(seqs), received: len(seqs)}
	for i := 1; i < len(at); i++ {
		s.longestGap = max(s.longestGap, at[i].Sub(at[i-1]))
	}
	return s
}
