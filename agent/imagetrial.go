package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/roostrouter/roost/agent/boot"
	"github.com/roostrouter/roost/updater/activate"
	"github.com/roostrouter/roost/updater/maintenance"
	"github.com/roostrouter/roost/updater/slots"
)

// An image's trial boot, the agent's part: the maintenance wrote a slot
// and named it for the next boot only (updater/slots); here the agent
// that boots takes the trial up, makes the slot the default when roost
// confirms it, and otherwise says the router no longer deserves its
// watchdog fed, as for a kernel's trial (trial.go).

func (a *Agent) bootID() string {
	b, _ := os.ReadFile(filepath.Join(a.opts.Root, "proc/sys/kernel/random/boot_id"))
	return strings.TrimSpace(string(b))
}

// recoverImageTrial, at the agent's start: on the trial's boot it waits
// for the confirmation until the deadline; on another boot the trial
// failed, and is recorded as rolled back.
func (a *Agent) recoverImageTrial() {
	st, err := slots.Load(a.opts.State)
	if err != nil || st.Trial == nil {
		if err != nil {
			a.opts.Log.Error("image slots", "err", err)
		}
		return
	}
	t := st.Trial
	running, _ := maintenance.RunningSlot(a.opts.Root, boot.StorageDir)
	id := a.bootID()
	switch {
	case id == t.FromBoot:
		return // the boot that wrote it: the maintenance reboots
	case running == t.Slot && (t.Booted == "" || t.Booted == id):
		if t.Booted == "" {
			t.Booted = id
			if err := slots.Save(a.opts.State, st); err != nil {
				a.opts.Log.Error("image trial: record the boot", "err", err)
			}
		}
		a.opts.Log.Info("image trial boot: awaiting confirmation", "slot", t.Slot, "deadline", t.Deadline)
		wait := time.Until(t.Deadline)
		a.imageTrialTimer = time.AfterFunc(wait, func() {
			a.trialFailed(fmt.Errorf("the image in %s was not confirmed by %s", t.Slot, t.Deadline.Format(time.TimeOnly)), t.Watchdog)
		})
		return
	}
	by := "a reboot"
	if t.Watchdog {
		by = "the watchdog"
	}
	reason := "its agent never started (the kernel, init or the image failed on the way)"
	if t.Booted != "" {
		reason = "its agent ran, but no confirmation came by " + t.Deadline.Format(time.TimeOnly)
	}
	st.Last = fmt.Sprintf("trial of the image in %s failed: rolled back by %s to %s: %s", t.Slot, by, running, reason)
	st.Trial, st.LastToken = nil, t.Token
	a.opts.Log.Error("IMAGE TRIAL FAILED", "slot", t.Slot, "running", running, "why", st.Last)
	if err := slots.Save(a.opts.State, st); err != nil {
		a.opts.Log.Error("image trial: record its failure", "err", err)
	}
}

// errNoImageTrial: the token is not an image trial's.
var errNoImageTrial = errors.New("no image trial")

// confirmImage makes the trial's slot the default, if token is its.
func (a *Agent) confirmImage(token string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	st, err := slots.Load(a.opts.State)
	if err != nil {
		return err
	}
	t := st.Trial
	if t == nil || t.Token != token {
		if t == nil && token != "" && token == st.LastToken {
			return fmt.Errorf("the image was rolled back before this confirmation: %s", st.Last)
		}
		return errNoImageTrial
	}
	running, _ := maintenance.RunningSlot(a.opts.Root, boot.StorageDir)
	switch {
	case a.bootID() == t.FromBoot:
		return fmt.Errorf("the image in %s %s: confirm once the router is back from its trial boot", t.Slot, activate.NotBootedYet)
	case running != t.Slot:
		return fmt.Errorf("the trial of the image in %s ended without this confirmation: the router runs %s", t.Slot, running)
	case time.Now().After(t.Deadline):
		return fmt.Errorf("too late: the image in %s was not confirmed by %s, and the router is going back to %s", t.Slot, t.Deadline.Format(time.TimeOnly), t.Previous)
	}
	st.Default, st.Trial, st.LastToken = t.Slot, nil, t.Token
	st.Last = fmt.Sprintf("the image in %s was confirmed at %s: it is the default", t.Slot, time.Now().Format(time.DateTime))
	if err := slots.Save(a.opts.State, st); err != nil {
		return fmt.Errorf("make %s the default slot: %w", t.Slot, err)
	}
	if a.imageTrialTimer != nil {
		a.imageTrialTimer.Stop()
	}
	a.opts.Log.Info("image trial confirmed: it is the default", "slot", t.Slot)
	return nil
}
