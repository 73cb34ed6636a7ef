package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/roostrouter/roost/agent/boot"
	"github.com/roostrouter/roost/agent/control"
	"github.com/roostrouter/roost/agent/handover"
	"github.com/roostrouter/roost/agent/health"
	"github.com/roostrouter/roost/boards"
	"github.com/roostrouter/roost/updater/activate"
	"github.com/roostrouter/roost/updater/atomicfile"
	"github.com/roostrouter/roost/updater/kexec"
	"github.com/roostrouter/roost/updater/storepath"
)

// Trial boots, the agent's part (see updater/activate's trial.go for the
// whole): ready the boot before answering, ask init for it once answered,
// and say when the router no longer deserves its watchdog being fed.

// BootOnceFile is the bootloader's one-shot entry in the state folder: the
// generation that the next boot, and only that one, boots as a trial
// (as grub-reboot's entry, which the bootloader clears when it uses it).
func BootOnceFile(state string) string { return filepath.Join(state, "boot-once") }

// prepareBoot loads the trial's kernel for kexec, or writes the one-shot
// entry for a reboot. Either way roostd init must be there to boot it.
func (a *Agent) prepareBoot(ctx context.Context, system storepath.Path, t activate.TrialBoot) error {
	if _, err := os.Stat(boot.MarkerFile(a.opts.Root)); err != nil {
		return fmt.Errorf("generation %d must boot to run, and roostd init does not run here to boot it (%v): use roost rebuild boot, then reboot", t.Generation, err)
	}
	if t.Method == activate.BootReboot {
		return atomicfile.WriteFile(BootOnceFile(a.opts.State), []byte(strconv.Itoa(t.Generation)+"\n"), 0o644)
	}
	part := func(name string) (string, error) {
		return handover.Resolve(a.opts.Root, filepath.Join(system.String(), name))
	}
	k, err := part(boards.PartKernel)
	if err != nil {
		return err
	}
	initrd, err := part(boards.PartInitrd)
	if err != nil {
		return err
	}
	if err := kexec.Load(kexec.Kernel{Kernel: k, Initrd: initrd, Cmdline: t.Cmdline}); err != nil {
		return fmt.Errorf("load generation %d's kernel for kexec: %w; roost rebuild --reboot boots it by a reboot instead", t.Generation, err)
	}
	a.opts.Log.Info("trial kernel loaded for kexec", "generation", t.Generation, "cmdline", t.Cmdline)
	return nil
}

// bootTrial asks init for the trial boot once the caller has its answer.
func (a *Agent) bootTrial(ctx context.Context, t activate.TrialBoot) {
	req := boot.Kexec
	if t.Method == activate.BootReboot {
		req = boot.Reboot
	}
	ask := func() {
		a.opts.Log.Info("booting the trial", "generation", t.Generation, "by", t.Method)
		if err := boot.Ask(a.opts.Root, req, syscall.Kill); err != nil {
			a.opts.Log.Error("TRIAL BOOT NOT STARTED: it rolls back at its deadline", "generation", t.Generation, "err", err)
		}
	}
	if !control.AfterReply(ctx, ask) {
		ask()
	}
}

// trialFailed: a trial boot passed its deadline unconfirmed. The health
// file says so, and init stops feeding the watchdog; without one, the
// agent asks init to reboot into the default.
func (a *Agent) trialFailed(why error, watchdog bool) {
	a.mu.Lock()
	a.unhealthy = why
	a.mu.Unlock()
	a.writeHealth()
	reboot := func() {
		if err := boot.Ask(a.opts.Root, boot.Reboot, syscall.Kill); err != nil {
			a.opts.Log.Error("reboot after the failed trial", "err", err)
		}
	}
	if !watchdog {
		reboot()
		return
	}
	// A watchdog that init could not arm never resets: reboot later.
	time.AfterFunc(watchdogBackstop, func() {
		a.opts.Log.Error("the watchdog did not reset the router after the failed trial: rebooting", "after", watchdogBackstop)
		reboot()
	})
}

// watchdogBackstop is how long after a failed trial the agent waits for
// the watchdog's reset before it reboots itself: well past the grace and
// the timeout of boards.json's watchdogs together.
const watchdogBackstop = 5 * time.Minute

// writeHealth tells init whether the router deserves the watchdog fed.
func (a *Agent) writeHealth() {
	a.mu.Lock()
	problem := a.unhealthy
	a.mu.Unlock()
	if err := health.Write(a.opts.Root, problem); err != nil {
		a.opts.Log.Warn("health file", "err", err)
	}
}
