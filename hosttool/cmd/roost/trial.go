package main

import (
	"errors"
	"fmt"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/roostrouter/roost/updater/activate"
	"github.com/roostrouter/roost/updater/transfer"
)

// trialResult is a trial boot (activate.TrialBoot: the new system's
// kernel, initrd or command line differ from the booted system's, so the
// router boots it as a trial, the boot default only once confirmed) as
// `roost rebuild --json` reports it.
type trialResult struct {
	Generation  int     `json:"generation"`
	Method      string  `json:"method"` // "kexec" or "reboot"
	Why         string  `json:"why"`
	DownSeconds float64 `json:"downSeconds"` // from the router's answer until its connection dropped
	UpSeconds   float64 `json:"upSeconds"`   // from the router's answer until the new boot confirmed
}

// trialMargin is how long after the confirmation's timeout rebuild still
// tries to reach the router: a failed trial is a watchdog reset and a
// boot of the last good generation, which then says why it rolled back.
const trialMargin = 3 * time.Minute

// trialWait is how long rebuild waits for a trial boot.
type trialWait struct {
	timeout time.Duration // the confirmation's (--confirm-timeout)
	margin  time.Duration // after it (trialMargin)
}

// bootMethod is how --kexec or --reboot ask a changed kernel to boot: ""
// lets the router's board decide.
func bootMethod(mode activate.Mode, kexec, reboot bool) (string, error) {
	switch {
	case kexec && reboot:
		return "", errors.New("give --kexec or --reboot, not both (neither: the router's board decides)")
	case (kexec || reboot) && mode == activate.Boot:
		return "", errors.New("--kexec and --reboot say how a switch boots a changed kernel; boot only makes the new system the default for the next boot")
	case kexec:
		return "kexec", nil
	case reboot:
		return "reboot", nil
	}
	return "", nil
}

// confirmTrial follows a trial boot: the router goes down (kexec or
// reboot) after its answer on client and comes back, with the host key it
// had (hostKey, a fingerprint), either on the trial generation, which a
// new connection confirms, or, if the trial failed, on the last good
// generation, which says why it rolled back.
func (e *env) confirmTrial(f *flags, client *ssh.Client, hostKey string, act activate.Report, w trialWait, res *rebuildResult) error {
	t := act.Trial
	r := &restart{f: f, hostKey: hostKey, start: time.Now(), what: fmt.Sprintf("the trial boot of generation %d", t.Generation), trial: true}
	res.Trial = &trialResult{Generation: t.Generation, Method: t.Method, Why: t.Why}
	if !*f.json {
		e.printActivated(*res)
		fmt.Fprintf(e.stdout, "generation %d changes the kernel: trial boot by %s%s; waiting for the router to come back\n", t.Generation, t.Method, parenthesized(t.Why))
	}
	down, err := e.down(r, client, w.timeout)
	if err != nil {
		if e.ctx.Err() != nil {
			return err
		}
		// Its answer, not this wait, says what became of the trial.
		fmt.Fprintf(e.stderr, "roost: %s answered for the trial boot, but did not go down (%v): asking it to confirm anyway\n", *f.host, err)
	}
	res.Trial.DownSeconds = down.Seconds()
	_, err = e.back(r, r.start.Add(w.timeout+w.margin), "roostd confirm "+act.Token)
	var nb *notBackError
	var ce *commandError
	switch {
	case errors.As(err, &nb):
		return fmt.Errorf("the router did not come back after the trial boot of generation %d: if the trial hung, its watchdog resets it into %s; check with roost status --host %s (%v)",
			t.Generation, lastGood(res.running), *f.host, nb)
	case errors.As(err, &ce):
		return confirmError(ce.err)
	case err != nil:
		return err
	}
	res.Trial.UpSeconds = time.Since(r.start).Seconds()
	return nil
}

// lastGood names the generation a failed trial falls back to: the boot
// default the router had before it.
func lastGood(r *transfer.Running) string {
	if r == nil || r.Generation == 0 {
		return "the last good generation"
	}
	return fmt.Sprintf("generation %d", r.Generation)
}

func parenthesized(s string) string {
	if s == "" {
		return ""
	}
	return " (" + s + ")"
}
