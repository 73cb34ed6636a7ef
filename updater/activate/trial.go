package activate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/roostrouter/roost/boards"
	"github.com/roostrouter/roost/updater/store"
	"github.com/roostrouter/roost/updater/storepath"
)

// Trial boots. A switch to a system whose kernel, initrd, command line or
// modules differ from the booted system's cannot run in place: it becomes
// generation N without becoming the boot default, and the router boots it
// as a trial (kexec, or a reboot with a one-shot entry) with
// roost.generation=N roost.trial=1. Only a confirmation that reaches the
// trial boot makes N the default. Anything else ends in the default, the
// last good generation: a trial that hangs or is not confirmed by its
// deadline stops feeding the watchdog (see agent/health), which resets the
// router; a board without one reboots. The next boot finds the trial
// still pending from another boot and records it as rolled back.
//
// Boots are told apart by the kernel's boot_id: the pending trial keeps
// the boot that activated it (FromBoot) and, once its agent runs, the
// trial boot (Booted).

// Ways a trial boots.
const (
	BootKexec  = "kexec"
	BootReboot = "reboot"
)

// NotBootedYet is in the refusal of a trial's confirmation that reaches
// the boot it started from (an agent stopping for the kexec): roost tries
// again once the router is back.
const NotBootedYet = "has not booted yet"

// TrialBoot is a switch that boots: how, and where it got to.
type TrialBoot struct {
	Generation int    `json:"generation"`
	Method     string `json:"method"` // BootKexec or BootReboot
	Why        string `json:"why"`    // why it boots, and why this way
	Cmdline    string `json:"cmdline"`
	// Watchdog: the board has a watchdog, which resets a trial that
	// hangs or is not confirmed.
	Watchdog bool   `json:"watchdog,omitempty"`
	FromBoot string `json:"fromBoot,omitempty"` // the boot that activated it
	Booted   string `json:"booted,omitempty"`   // the trial boot, once its agent ran
}

// bootParts are what a running system cannot change in place.
var bootParts = []string{boards.PartKernel, boards.PartInitrd, boards.PartCmdline, boards.PartModules}

// needsBoot says why system cannot run in place of the booted system, or
// "" if it can (no system was booted: the lab).
func (a *Activator) needsBoot(system storepath.Path) string {
	target, err := os.Readlink(BootedLink(a.Store.Root))
	if err != nil {
		return ""
	}
	booted, err := storepath.FromLink(target)
	if err != nil || booted == system {
		return ""
	}
	for _, part := range bootParts {
		if !samePart(filepath.Join(a.Store.PhysicalPath(booted), part), filepath.Join(a.Store.PhysicalPath(system), part)) {
			return fmt.Sprintf("its %s differs from the booted system's", part)
		}
	}
	return ""
}

// samePart says whether two systems' parts are the same: both absent, the
// same link, or the same bytes (a command line written anew).
func samePart(a, b string) bool {
	la, erra := os.Readlink(a)
	lb, errb := os.Readlink(b)
	if erra == nil || errb == nil {
		return erra == nil && errb == nil && la == lb
	}
	ca, erra := os.ReadFile(a)
	cb, errb := os.ReadFile(b)
	if erra != nil || errb != nil {
		return errors.Is(erra, os.ErrNotExist) && errors.Is(errb, os.ErrNotExist)
	}
	return bytes.Equal(bytes.TrimSpace(ca), bytes.TrimSpace(cb))
}

// planTrial decides how system boots as generation n: method as asked
// ("" for the board's choice), its command line.
func (a *Activator) planTrial(system storepath.Path, n int, method, why string) (*TrialBoot, error) {
	dir := a.Store.PhysicalPath(system)
	b, err := SystemBoard(dir, system)
	if err != nil {
		return nil, err
	}
	def, how := b.TrialMethod()
	switch method {
	case "":
		method = def
		why += "; by " + def + ": " + how
	case BootKexec:
		if !b.Kexec {
			return nil, fmt.Errorf("board %s cannot kexec: use --reboot (or nothing: the board chooses %s)", b.Name, def)
		}
		why += "; by kexec, as asked"
	case BootReboot:
		why += "; by a reboot, as asked"
	default:
		return nil, fmt.Errorf("unknown boot method %q: want kexec or reboot", method)
	}
	cmdline, err := os.ReadFile(filepath.Join(dir, boards.PartCmdline))
	if err != nil {
		return nil, fmt.Errorf("system %s: read its kernel command line: %w", system, err)
	}
	from, err := a.bootID()
	if err != nil {
		return nil, err
	}
	return &TrialBoot{Generation: n, Method: method, Why: why, Watchdog: b.Watchdog != nil, FromBoot: from,
		Cmdline: fmt.Sprintf("%s roost.generation=%d roost.trial=1", strings.TrimSpace(string(cmdline)), n)}, nil
}

// startTrial makes system generation n, not the default, with the pending
// trial written (the commit point), and has the boot prepared. The caller
// holds a.mu and the store's lock (txn).
func (a *Activator) startTrial(txn *store.Txn, p *Pending, method, why string) error {
	g, err := a.Profile.Add(p.System)
	if err != nil {
		return err
	}
	if p.Trial, err = a.planTrial(p.System, g.Number, method, why); err != nil {
		a.Profile.Delete(g.Number)
		return err
	}
	if err := a.writePending(*p); err != nil {
		a.Profile.Delete(g.Number)
		return err
	}
	return a.release(txn, p.System, nil)
}

func (a *Activator) bootID() (string, error) {
	if a.BootID != nil {
		return a.BootID()
	}
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "", fmt.Errorf("read the boot's id: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// trialState is where a pending trial stands, seen from this boot.
type trialState int

const (
	trialNotBooted trialState = iota // this is the boot that activated it
	trialRunning                     // this is the trial boot
	trialFailed                      // another boot: the trial ended without a confirmation
)

func (a *Activator) trialState(p Pending) trialState {
	id, err := a.bootID()
	if err != nil || id == p.Trial.FromBoot {
		return trialNotBooted
	}
	if target, err := os.Readlink(BootedLink(a.Store.Root)); err == nil {
		if booted, err := storepath.FromLink(target); err == nil && booted == p.System && (p.Trial.Booted == "" || p.Trial.Booted == id) {
			return trialRunning
		}
	}
	return trialFailed
}

// recoverTrial, at the agent's start, takes up a pending trial: on the
// trial boot it records that the agent ran and waits for the confirmation;
// on another boot the trial failed, and is recorded as rolled back. The
// caller holds a.mu.
func (a *Activator) recoverTrial(ctx context.Context, p Pending) error {
	switch a.trialState(p) {
	case trialNotBooted:
		// The agent restarted before the boot: the trial does not happen.
		return a.rollback(ctx, p, fmt.Sprintf("the trial boot of generation %d did not happen: the agent restarted before it", p.Trial.Generation))
	case trialRunning:
		if p.Trial.Booted == "" {
			p.Trial.Booted, _ = a.bootID()
			if err := a.writePending(p); err != nil {
				return err
			}
		}
		a.Log.Info("trial boot: awaiting confirmation", "generation", p.Trial.Generation, "deadline", p.Deadline)
		a.arm(p)
		return nil
	}
	by := "a restart"
	if p.Trial.Watchdog {
		by = "the watchdog"
	}
	reason := "its agent never started (the kernel or init failed on the way)"
	if p.Trial.Booted != "" {
		reason = "its agent ran, but no confirmation came by " + p.Deadline.Format(time.TimeOnly)
	}
	return a.rollback(ctx, p, fmt.Sprintf("trial of generation %d failed: rolled back by %s: %s", p.Trial.Generation, by, reason))
}

// trialExpired is the deadline of a trial without its confirmation. The
// caller holds a.mu.
func (a *Activator) trialExpired(p Pending) {
	if a.trialState(p) != trialRunning {
		a.rollbackNow(p, fmt.Sprintf("the trial boot of generation %d did not happen by its deadline, %s", p.Trial.Generation, p.Deadline.Format(time.TimeOnly)))
		return
	}
	why := fmt.Sprintf("trial of generation %d not confirmed by %s", p.Trial.Generation, p.Deadline.Format(time.TimeOnly))
	a.Log.Error("TRIAL NOT CONFIRMED: back to the boot default", "generation", p.Trial.Generation, "by", map[bool]string{true: "the watchdog", false: "a reboot"}[p.Trial.Watchdog])
	if a.TrialFailed != nil {
		a.TrialFailed(errors.New(why), p.Trial.Watchdog)
	}
}

// confirmTrial makes the trial's generation the boot default. The caller
// holds a.mu.
func (a *Activator) confirmTrial(p Pending) error {
	switch a.trialState(p) {
	case trialNotBooted:
		return fmt.Errorf("generation %d %s: confirm once the router is back from its trial boot", p.Trial.Generation, NotBootedYet)
	case trialFailed:
		return fmt.Errorf("the trial of generation %d ended without this confirmation", p.Trial.Generation)
	}
	if a.Now().After(p.Deadline) {
		return fmt.Errorf("too late: the trial of generation %d was not confirmed by %s, and the router is going back to generation %d", p.Trial.Generation, p.Deadline.Format(time.TimeOnly), p.PrevGeneration)
	}
	err := a.withLock(context.Background(), func(*store.Txn) error { return a.Profile.SwitchTo(p.Trial.Generation) })
	if err != nil {
		return fmt.Errorf("make generation %d the boot default: %w", p.Trial.Generation, err)
	}
	a.Log.Info("trial confirmed: it is the boot default", "generation", p.Trial.Generation, "system", p.System)
	return nil
}
