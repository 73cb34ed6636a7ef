// Command kexecinit is the /init of the kexec and watchdog test VMs
// (itest/kexec_test.go): it drives updater/kexec and updater/watchdog on
// a real kernel and says what happened on the console, in lines that
// start with "KEXECTEST [uptime]". What it does is the kernel command
// line's kexectest= step:
//
//	kexec           load /kexec/kernel, /kexec/initrd and /kexec/cmdline, and kexec into them
//	marker          say "BOOTED marker=<roost.marker>", then power off (or idle, with kexectest.idle=1)
//	watchdog        arm /dev/watchdog, feed it through a Ratchet whose health check always fails,
//	                so it is fed for the grace (kexectest.grace seconds) only; then idle until the reset
//	watchdog-kexec  arm /dev/watchdog, feed it, and kexec as kexec does, leaving it armed
//	kexec-or-watchdog  kexec; if the kernel refuses, say so and go on as watchdog does
//
// Before any step it loads the modules that /modules lists (a file and its
// parameters a line), and, if /dev/watchdog then exists (and not
// kexectest.nowatchdog=1: an init that never starts the agent), says its
// boot status; a boot that the watchdog caused says "WATCHDOG RESET SEEN"
// and powers off.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/roostrouter/roost/itest/vm/guest"
	"github.com/roostrouter/roost/updater/kexec"
	"github.com/roostrouter/roost/updater/watchdog"
)

func main() {
	if err := mountAll(); err != nil {
		say("mount: %v", err)
	}
	args := cmdline()
	b, _ := os.ReadFile("/proc/cmdline")
	say("init started: kexectest=%s; /proc/cmdline %q", args["kexectest"], strings.TrimSpace(string(b)))
	guest.LoadModules("/modules", say)
	if err := run(args); err != nil {
		say("FAILED: %v", err)
	}
	guest.PowerOff(say)
}

func run(args map[string]string) error {
	step := args["kexectest"]
	var dev *watchdog.Device
	if args["kexectest.nowatchdog"] != "1" {
		var err error
		if dev, err = checkWatchdog(step == "watchdog" || step == "watchdog-kexec" || step == "kexec-or-watchdog"); err != nil {
			return err
		}
	}
	switch step {
	case "kexec":
		return kexecInto()
	case "marker":
		if ram, err := kexec.SystemRAM(); err == nil {
			say("system RAM %v", ram)
		}
		say("BOOTED marker=%s", args["roost.marker"])
		if args["kexectest.idle"] == "1" {
			idle()
		}
		return nil
	case "watchdog":
		return starve(dev, seconds(args, "kexectest.timeout", 4), seconds(args, "kexectest.grace", 6))
	case "kexec-or-watchdog":
		err := kexecInto()
		say("KEXEC REFUSED: %v", err)
		return starve(dev, seconds(args, "kexectest.timeout", 4), seconds(args, "kexectest.grace", 6))
	case "watchdog-kexec":
		if _, err := setTimeout(dev, seconds(args, "kexectest.timeout", 10)); err != nil {
			return err
		}
		return kexecInto()
	}
	return fmt.Errorf("unknown step kexectest=%q", step)
}

// checkWatchdog opens /dev/watchdog if it exists and says its boot status:
// a reset by the watchdog ends the test. It keeps the device open only if
// keep; closing it leaves it armed, as the package promises, so a boot
// that only looks at it disarms it again.
func checkWatchdog(keep bool) (*watchdog.Device, error) {
	if _, err := os.Stat("/dev/watchdog"); err != nil {
		return nil, nil
	}
	dev, err := watchdog.Open("/dev/watchdog")
	if err != nil {
		return nil, err
	}
	info, _ := dev.Info()
	status, err := dev.BootStatus()
	if err != nil {
		return nil, err
	}
	say("watchdog %q options %#x boot status %#x", info.Identity, info.Options, status)
	if status&watchdog.CardReset != 0 {
		say("WATCHDOG RESET SEEN: this boot follows a reset by the watchdog")
		if err := dev.Disarm(); err != nil {
			say("disarm: %v (nowayout)", err)
		}
		guest.PowerOff(say)
	}
	if !keep {
		return nil, dev.Disarm()
	}
	return dev, nil
}

func setTimeout(dev *watchdog.Device, d time.Duration) (time.Duration, error) {
	if dev == nil {
		return 0, fmt.Errorf("no /dev/watchdog")
	}
	got, err := dev.SetTimeout(d)
	if err != nil {
		return 0, err
	}
	read, err := dev.Timeout()
	if err != nil {
		return 0, err
	}
	say("watchdog timeout set to %s, reads back %s", got, read)
	return got, dev.Feed()
}

// starve feeds through a Ratchet that is never healthy: fed during the
// grace only. Then it says when the last feed was and idles.
func starve(dev *watchdog.Device, timeout, grace time.Duration) error {
	if _, err := setTimeout(dev, timeout); err != nil {
		return err
	}
	clock := watchdog.SystemClock{}
	booted, err := watchdog.Booted(clock, "/proc/uptime")
	if err != nil {
		return err
	}
	f := &sayFeeder{dev: dev}
	r, err := watchdog.NewRatchet(f, clock, watchdog.RatchetConfig{
		Booted: booted, Grace: grace, Every: time.Second,
		Healthy: func() error { return fmt.Errorf("the test's health check never passes") },
		Log:     slog.New(slog.NewTextHandler(os.Stdout, nil)),
	})
	if err != nil {
		return err
	}
	err = r.Run(context.Background())
	say("LAST FEED at %.3f; ratchet: %v", f.last, err)
	idle()
	return nil
}

type sayFeeder struct {
	dev  *watchdog.Device
	last float64
}

func (f *sayFeeder) Feed() error {
	err := f.dev.Feed()
	f.last = guest.Uptime()
	say("fed: %v", err)
	return err
}

// kexecInto loads /kexec/* with updater/kexec and starts it.
func kexecInto() error {
	cmd, err := os.ReadFile("/kexec/cmdline")
	if err != nil {
		return err
	}
	k := kexec.Kernel{Kernel: "/kexec/kernel", Cmdline: strings.TrimSpace(string(cmd))}
	if _, err := os.Stat("/kexec/initrd"); err == nil {
		k.Initrd = "/kexec/initrd"
	}
	if ram, err := kexec.SystemRAM(); err == nil {
		say("system RAM %v", ram)
	}
	start := time.Now()
	if err := kexec.Load(k); err != nil {
		return err
	}
	say("LOADED in %.3f s (kexec_loaded %v); executing the new kernel with %q", time.Since(start).Seconds(), kexec.Loaded(), k.Cmdline)
	return kexec.Exec()
}

// idle says the time every 250 ms until something ends the machine.
func idle() {
	for {
		time.Sleep(250 * time.Millisecond)
		say("tick")
	}
}

func seconds(args map[string]string, key string, def int) time.Duration {
	if n, err := strconv.Atoi(args[key]); err == nil && n > 0 {
		def = n
	}
	return time.Duration(def) * time.Second
}

func say(format string, a ...any) {
	fmt.Printf("KEXECTEST [%9.3f] %s\n", guest.Uptime(), fmt.Sprintf(format, a...))
}

func cmdline() map[string]string {
	b, _ := os.ReadFile("/proc/cmdline")
	m := map[string]string{}
	for _, f := range strings.Fields(string(b)) {
		k, v, _ := strings.Cut(f, "=")
		m[k] = v
	}
	return m
}

// mountAll mounts /proc, /sys and /dev, and makes the console this
// process's output (the initramfs has no device nodes).
func mountAll() error {
	for _, m := range []struct{ fs, dir string }{{"proc", "/proc"}, {"sysfs", "/sys"}, {"devtmpfs", "/dev"}} {
		if err := os.MkdirAll(m.dir, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(m.fs, m.dir, m.fs, 0, ""); err != nil {
			return fmt.Errorf("%s on %s: %w", m.fs, m.dir, err)
		}
	}
	return guest.Console()
}
