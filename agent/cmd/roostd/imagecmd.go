package main

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/roostrouter/roost/agent"
	"github.com/roostrouter/roost/agent/handover"
	"github.com/roostrouter/roost/agent/maintain"
	"github.com/roostrouter/roost/updater/maintenance"
)

// runImage is roostd image plan|write: an image board's slots, and an
// image upgrade by pivot-to-maintenance.
func runImage(e *env, args []string) error {
	if len(args) == 0 || (args[0] != "plan" && args[0] != "write") {
		return errors.New("usage: roostd image plan [--json] | roostd image write --bytes N --sha256 HEX [--delta-base-bytes M --delta-base-sha256 HEX] [--system PATH] [--confirm-timeout 5m] [--json]")
	}
	if e.agent == nil {
		return fmt.Errorf("roostd image %s runs inside the agent: run it over SSH (roost rebuild does)", args[0])
	}
	if args[0] == "plan" {
		f := newFlags(e, "image plan")
		hash := f.Bool("hash", false, "hash the running slot's image (what a delta is made against)")
		if _, err := f.parse(args[1:]); err != nil {
			return err
		}
		info, err := e.agent.ImageInfo()
		if err != nil {
			return err
		}
		if *hash {
			if err := e.agent.HashRunningImage(&info); err != nil {
				return err
			}
		}
		if *f.json {
			printJSON(e.stdout, info)
			return nil
		}
		fmt.Fprintf(e.stdout, "board %s, slots %v: running %s, default %s\n", info.Board, info.Slots, info.Running, info.Default)
		for _, s := range info.Slots {
			if im, ok := info.Images[s]; ok {
				fmt.Fprintf(e.stdout, "  %s: %d bytes, sha256 %s, written %s\n", s, im.Bytes, im.SHA256, im.Written.Format(time.DateTime))
			}
		}
		return nil
	}
	f := newFlags(e, "image write")
	size := f.Int64("bytes", 0, "the image's size in `bytes`")
	sum := f.String("sha256", "", "the image's SHA-256, in hex")
	baseSize := f.Int64("delta-base-bytes", 0, "the image will come as a zstd delta against the running slot's first `bytes` bytes (counted in the RAM check)")
	baseSum := f.String("delta-base-sha256", "", "the SHA-256 of the delta's base")
	system := f.String("system", "", "the system the image boots, for the record")
	timeout := f.Duration("confirm-timeout", 5*time.Minute, "the trial boot rolls back unless confirmed within this after the write")
	if _, err := f.parse(args[1:]); err != nil {
		return err
	}
	w := maintenance.Want{Bytes: *size, SHA256: *sum}
	if *baseSize != 0 || *baseSum != "" {
		w.Delta = &maintenance.Delta{BaseBytes: *baseSize, BaseSHA256: *baseSum}
	}
	if w.Bytes <= 0 || w.Bytes > maintenance.MaxImage {
		return fmt.Errorf("--bytes %d: want the image's size, 1 to %d", w.Bytes, maintenance.MaxImage)
	}
	rep, err := e.agent.StartImageWrite(e.ctx, agent.ImageWrite{Want: w, System: *system, Timeout: *timeout})
	if err != nil {
		return err
	}
	if *f.json {
		printJSON(e.stdout, rep)
		return nil
	}
	fmt.Fprintf(e.stdout, "%s; send the image with roostd maintenance receive, and confirm with roostd confirm %s once the router is back\n", rep.Why, rep.Token)
	return nil
}

// runMaintain is roostd maintain: the agent's copy in RAM that writes the
// image (agent/maintain). The agent execs it; nobody else should.
func runMaintain(e *env, args []string) error {
	f := newFlags(e, "maintain")
	planFile := f.String("plan", "", "the maintenance plan `file`")
	if _, err := f.parse(args); err != nil {
		return err
	}
	plan, err := maintenance.ReadPlan(*planFile)
	if err != nil {
		return fmt.Errorf("%w: roostd maintain is started by the agent for an image upgrade, not by hand", err)
	}
	inherited, err := handover.FromEnv(e.getenv)
	if err != nil {
		e.log.Error("maintenance: SSH sockets not taken over (listened on anew)", "err", err)
	}
	os.Unsetenv(handover.EnvFDs)
	os.Unsetenv(handover.EnvSince)
	m, err := maintain.New(maintain.Options{Root: *f.root, Plan: plan, Log: e.log, Inherited: inherited, Kill: syscall.Kill})
	if err != nil {
		return err
	}
	return m.Run(e.ctx)
}
