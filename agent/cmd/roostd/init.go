package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"syscall"
	"time"

	"github.com/roostrouter/roost/agent/boot"
	"github.com/roostrouter/roost/updater/watchdog"
)

// runInit is PID 1: the initrd's /init (see agent/boot). It never returns.
func runInit(e *env, args []string) error {
	if os.Getpid() != 1 {
		return errors.New("roostd init is the router's PID 1 (its initrd's /init); the agent alone is roostd run")
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("from", "init")
	if len(args) > 0 {
		// The kernel passes the command line's words it does not know.
		log.Info("arguments ignored", "args", args)
	}
	// Not e.ctx: SIGTERM asks PID 1 to reboot, it must not cancel it.
	ctx := context.Background()
	in := boot.New(boot.Options{Root: "/", Log: log, Mounter: boot.Linux{}, Kernel: boot.Linux{},
		Procs: boot.NewReaper(ctx), Clock: watchdog.SystemClock{}, Requests: boot.Signals()})
	err := in.Run(ctx)
	// PID 1 must not exit (the kernel would panic): nothing is left to do
	// but say why, and let the watchdog or a power cycle end it.
	log.Error("INIT STOPPED: reset the router", "err", err)
	for {
		time.Sleep(time.Hour)
	}
}

// runPower asks roostd init to reboot, power off, halt or kexec.
func runPower(e *env, r boot.Request, args []string) error {
	f := newFlags(e, r.String())
	pos, err := f.parse(args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return fmt.Errorf("usage: roostd %s", r)
	}
	if err := boot.Ask(*f.root, r, syscall.Kill); err != nil {
		return err
	}
	if *f.json {
		printJSON(e.stdout, map[string]string{"requested": r.String()})
		return nil
	}
	fmt.Fprintf(e.stdout, "%s requested: roostd init stops the agent and every process, syncs and unmounts first\n", r)
	return nil
}
