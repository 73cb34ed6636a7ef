package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/roostrouter/roost/hosttool/sshclient"
	"github.com/roostrouter/roost/updater/activate"
	"github.com/roostrouter/roost/updater/storepath"
	"github.com/roostrouter/roost/updater/transfer"
)

// TestBootMethod: --kexec and --reboot become roostd activate's
// --boot-method; neither lets the router's board decide; both, or either
// with boot, is refused.
func TestBootMethod(t *testing.T) {
	sys := mustPath(t, trialPrevious)
	for _, tc := range []struct {
		mode          activate.Mode
		kexec, reboot bool
		want, err     string
	}{
		{activate.Switch, false, false, "roostd activate switch " + sys.String() + " --confirm-timeout 1m30s --json", ""},
		{activate.Switch, true, false, "roostd activate switch " + sys.String() + " --confirm-timeout 1m30s --json --boot-method kexec", ""},
		{activate.Switch, false, true, "roostd activate switch " + sys.String() + " --confirm-timeout 1m30s --json --boot-method reboot", ""},
		{activate.Test, true, false, "roostd activate test " + sys.String() + " --confirm-timeout 1m30s --json --boot-method kexec", ""},
		{activate.Switch, true, true, "", "give --kexec or --reboot, not both"},
		{activate.Boot, true, false, "", "boot only makes the new system the default for the next boot"},
		{activate.Boot, false, false, "roostd activate boot " + sys.String() + " --confirm-timeout 1m30s --json", ""},
	} {
		method, err := bootMethod(tc.mode, tc.kexec, tc.reboot)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("bootMethod(%s, kexec %v, reboot %v): %q, %v; want an error saying %q", tc.mode, tc.kexec, tc.reboot, method, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if got := activateCommand(tc.mode, sys, 90*time.Second, method); got != tc.want {
			t.Errorf("kexec %v, reboot %v: %q, want %q", tc.kexec, tc.reboot, got, tc.want)
		}
	}
}

func mustPath(t *testing.T, full string) storepath.Path {
	t.Helper()
	p, err := storepath.Parse(full)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

const (
	trialSystem   = "/nix/store/11111111111111111111111111111111-system"
	trialPrevious = "/nix/store/00000000000000000000000000000000-system"
	trialToken    = "0123456789abcdef"
	trialRolled   = "the activation of " + trialSystem + " was rolled back at 12:00:00: trial of generation 5 failed: rolled back by the watchdog: " +
		"unhealthy: trial of generation 5 not confirmed by 11:59:59; the router runs " + trialPrevious
)

// trialRouter plays roostd activate and confirm on a rebooter: activate
// answers a trial boot of generation 5 by the method asked (kexec if
// none) and restarts the router, unless stay; confirm succeeds on a
// later boot, unless rollBack.
func trialRouter(stay, rollBack bool) func(r *rebooter, boot int, args []string, stdout, stderr io.Writer) int {
	return func(r *rebooter, boot int, args []string, stdout, stderr io.Writer) int {
		switch {
		case len(args) > 2 && args[1] == "activate":
			method := "kexec"
			if len(args) > 3 && args[len(args)-2] == "--boot-method" {
				method = args[len(args)-1]
			}
			fmt.Fprintf(stdout, `{"mode": "switch", "system": %q, "generation": 5, "newGeneration": true, "previousSystem": %q, "token": %q,
				"deadline": %q, "changes": [], "trial": {"generation": 5, "method": %q, "why": "the kernel command line differs from the booted system's"}}`,
				trialSystem, trialPrevious, trialToken, time.Now().Add(time.Minute).Format(time.RFC3339), method)
			if !stay {
				r.restart()
			}
			return 0
		case strings.Join(args, " ") == "roostd confirm "+trialToken && rollBack:
			fmt.Fprintln(stderr, "roostd: "+trialRolled)
			return 1
		case strings.Join(args, " ") == "roostd confirm "+trialToken && boot > 1:
			fmt.Fprintln(stdout, "confirmed")
			return 0
		}
		fmt.Fprintln(stderr, "roostd: unknown token")
		return 1
	}
}

// TestTrialBoot: a trial boot's answer is followed through the router
// going down and coming back with the same host key, and confirmed on
// the new connection; a router that rolled the trial back says why, and
// one that does not come back is an error that says where to look.
func TestTrialBoot(t *testing.T) {
	key := newHostKey(t)
	for _, tc := range []struct {
		name     string
		r        *rebooter
		method   string
		json     bool
		wait     trialWait
		wantErr  string
		wantDown bool // the router went down before the confirmation
	}{
		{"kexec", &rebooter{keys: []ssh.Signer{key}, down: time.Second, other: trialRouter(false, false)}, "kexec", false, trialWait{10 * time.Second, time.Second}, "", true},
		{"kexec, on a terminal", &rebooter{keys: []ssh.Signer{key}, down: 2500 * time.Millisecond, other: trialRouter(false, false)}, "kexec", false, trialWait{10 * time.Second, time.Second}, "", true},
		{"reboot, as JSON", &rebooter{keys: []ssh.Signer{key}, down: time.Second, other: trialRouter(false, false)}, "reboot", true, trialWait{10 * time.Second, time.Second}, "", true},
		{"the board decides", &rebooter{keys: []ssh.Signer{key}, down: 200 * time.Millisecond, other: trialRouter(false, false)}, "", true, trialWait{10 * time.Second, time.Second}, "", true},
		{"rolled back by the watchdog", &rebooter{keys: []ssh.Signer{key}, down: time.Second, other: trialRouter(false, true)}, "kexec", false, trialWait{10 * time.Second, time.Second},
			"the router rolled the new system back: " + trialRolled, true},
		{"never back", &rebooter{keys: []ssh.Signer{key}, down: time.Hour, other: trialRouter(false, false)}, "kexec", false, trialWait{time.Second, time.Second},
			"the router did not come back after the trial boot of generation 5: if the trial hung, its watchdog resets it into generation 4; check with roost status --host rotuer", true},
		{"back with another key", &rebooter{keys: []ssh.Signer{key, newHostKey(t)}, down: 200 * time.Millisecond, other: trialRouter(false, false)}, "kexec", false, trialWait{10 * time.Second, time.Second},
			"not with the host key it had before the trial boot of generation 5", true},
		{"never down, rolled back", &rebooter{keys: []ssh.Signer{key}, other: trialRouter(true, true)}, "kexec", false, trialWait{time.Second, time.Second},
			"the router rolled the new system back: " + trialRolled, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("HOME", startRebooter(t, tc.r))
			e, out, errb := testEnv(func(string) string { return "" })
			e.tty = strings.HasSuffix(tc.name, "on a terminal")
			f := newFlags(e, "rebuild")
			args := []string{"--host", "rotuer"}
			if tc.json {
				args = append(args, "--json")
			}
			if _, err := f.parse(args); err != nil {
				t.Fatal(err)
			}
			var hostKey ssh.PublicKey
			client, err := e.dialWith(f, func(o *sshclient.Options) { o.HostKey = func(_ string, k ssh.PublicKey) { hostKey = k } })
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()
			sys := mustPath(t, trialSystem)
			res := rebuildResult{Mode: activate.Switch, System: sys, copyResult: copyResult{running: &transfer.Running{Generation: 4}}}
			cmd := activateCommand(activate.Switch, sys, tc.wait.timeout, tc.method)
			err = e.activate(f, client, ssh.FingerprintSHA256(hostKey), cmd, tc.wait, &res)
			if err == nil {
				err = e.printResult(f, res)
			}

			tc.r.mu.Lock()
			calls := tc.r.calls
			tc.r.mu.Unlock()
			if len(calls) == 0 || calls[0] != cmd {
				t.Errorf("roostd ran %q, want %q first", calls, cmd)
			}
			if went := strings.Contains(errb.String(), "roost: rotuer went down"); went != tc.wantDown {
				t.Errorf("stderr %q: said it went down: %v, want %v", errb.String(), went, tc.wantDown)
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || res.Confirmed {
					t.Fatalf("err %v (confirmed: %v), want an error saying %q", err, res.Confirmed, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("%v\n%s", err, errb.String())
			}
			method := tc.method
			if method == "" {
				method = "kexec"
			}
			if !res.Confirmed || res.Trial == nil || res.Trial.Generation != 5 || res.Trial.Method != method ||
				res.Trial.DownSeconds <= 0 || res.Trial.UpSeconds < tc.r.down.Seconds() || res.Trial.UpSeconds < res.Trial.DownSeconds {
				t.Fatalf("result %+v, trial %+v", res, res.Trial)
			}
			if !strings.Contains(errb.String(), "\nroost: rotuer answers SSH again") {
				t.Errorf("stderr %q does not say on a line of its own that the router answered again", errb.String())
			}
			if counted := strings.Contains(errb.String(), "\r\x1b[Kroost: waiting for rotuer: "); counted != e.tty {
				t.Errorf("stderr %q: counted the seconds: %v, on a terminal: %v", errb.String(), counted, e.tty)
			}
			if tc.json {
				checkTrialJSON(t, out.Bytes(), method)
				return
			}
			lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
			want := []string{
				"sent 0 of 0 paths (0 as deltas): 0.0 MiB of NAR (0.0 MiB on the wire) of the closure's 0.0 MiB, in 0.0s",
				"generation 5 changes the kernel: trial boot by kexec (the kernel command line differs from the booted system's); waiting for the router to come back",
				fmt.Sprintf("generation 5 booted by kexec in %.1fs and confirmed: it is the boot default", res.Trial.UpSeconds),
			}
			if strings.Join(lines, "\n") != strings.Join(want, "\n") {
				t.Fatalf("printed\n%s\nwant\n%s", out.String(), strings.Join(want, "\n"))
			}
		})
	}
}

// checkTrialJSON checks that rebuild --json reports the trial boot with
// the fields scripts read.
func checkTrialJSON(t *testing.T, out []byte, method string) {
	t.Helper()
	var doc struct {
		Confirmed bool                       `json:"confirmed"`
		Trial     map[string]json.RawMessage `json:"trial"`
	}
	if err := json.Unmarshal(out, &doc); err != nil || !oneJSON(out) {
		t.Fatalf("rebuild --json printed %q: %v", out, err)
	}
	for _, k := range []string{"generation", "method", "why", "downSeconds", "upSeconds"} {
		if _, ok := doc.Trial[k]; !ok {
			t.Errorf("rebuild --json printed %s: no trial.%s", out, k)
		}
	}
	if !doc.Confirmed || string(doc.Trial["generation"]) != "5" || string(doc.Trial["method"]) != `"`+method+`"` {
		t.Errorf("rebuild --json printed %s", out)
	}
}

// TestActivateWithoutTrial: an answer without a trial is confirmed as
// before, on a new connection, without waiting for the router to go down.
func TestActivateWithoutTrial(t *testing.T) {
	r := &rebooter{keys: []ssh.Signer{newHostKey(t)}, other: func(r *rebooter, boot int, args []string, stdout, stderr io.Writer) int {
		if args[1] == "activate" {
			fmt.Fprintf(stdout, `{"mode": "switch", "system": %q, "generation": 5, "token": %q, "changes": []}`, trialSystem, trialToken)
			return 0
		}
		if strings.Join(args, " ") == "roostd confirm "+trialToken {
			return 0
		}
		return 1
	}}
	t.Setenv("HOME", startRebooter(t, r))
	e, out, errb := testEnv(func(string) string { return "" })
	f := newFlags(e, "rebuild")
	if _, err := f.parse([]string{"--host", "rotuer"}); err != nil {
		t.Fatal(err)
	}
	client, err := e.dial(f)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	sys := mustPath(t, trialSystem)
	res := rebuildResult{Mode: activate.Switch, System: sys}
	start := time.Now()
	if err := e.activate(f, client, "", activateCommand(activate.Switch, sys, time.Minute, ""), trialWait{time.Minute, time.Second}, &res); err != nil {
		t.Fatalf("%v\n%s", err, errb.String())
	}
	if !res.Confirmed || res.Trial != nil || res.Generation != 5 || time.Since(start) > 5*time.Second {
		t.Fatalf("result %+v after %s", res, time.Since(start))
	}
	if out.Len() != 0 || errb.Len() != 0 {
		t.Fatalf("printed %q and %q while confirming", out.String(), errb.String())
	}
}

// TestEndedUnder: a command whose connection ended under it is told from
// a command that failed on the router.
func TestEndedUnder(t *testing.T) {
	closed := make(chan struct{})
	close(closed)
	open := make(chan struct{})
	for _, tc := range []struct {
		name   string
		err    error
		closed chan struct{}
		want   bool
	}{
		{"no exit status", fmt.Errorf("roostd confirm x: %w", &sshclient.ExitError{Status: -1}), open, true},
		{"cut as a channel opens", errors.New("ssh: unexpected packet in response to channel open: <nil>"), closed, true},
		{"the router's word", errors.New("the activation of x was rolled back at 12:00:00: why"), open, false},
		{"killed", fmt.Errorf("roostd confirm x: %w", &sshclient.ExitError{Status: -1, Signal: "KILL"}), open, false},
		{"exit status 1", fmt.Errorf("roostd confirm x: %w", &sshclient.ExitError{Status: 1}), open, false},
	} {
		if got := endedUnder(tc.err, tc.closed); got != tc.want {
			t.Errorf("%s: endedUnder(%v) = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
}
