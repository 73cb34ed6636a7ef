package guest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/roostrouter/roost/agent/boot"
)

// MountAll mounts what a Linux system has and roostd expects (/proc,
// /sys, /dev, /run, /tmp); the initramfs itself is the writable root.
func MountAll() error {
	for _, m := range []struct{ fs, dir string }{
		{"proc", "/proc"}, {"sysfs", "/sys"}, {"devtmpfs", "/dev"}, {"tmpfs", "/run"}, {"tmpfs", "/tmp"},
	} {
		if err := os.MkdirAll(m.dir, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(m.fs, m.dir, m.fs, unix.MS_NOSUID, ""); err != nil {
			return fmt.Errorf("mount %s on %s: %w", m.fs, m.dir, err)
		}
	}
	return nil
}

// Console makes /dev/console the process's stdin, stdout and stderr: a
// test's initramfs has no device nodes, so the kernel could not open one
// for its init. /dev must be mounted (devtmpfs).
func Console() error {
	f, err := os.OpenFile("/dev/console", os.O_RDWR, 0)
	if err != nil {
		return err
	}
	for fd := range 3 {
		if err := unix.Dup2(int(f.Fd()), fd); err != nil {
			return err
		}
	}
	return nil
}

// Uptime is seconds since the kernel booted (/proc must be mounted).
func Uptime() float64 {
	b, _ := os.ReadFile("/proc/uptime")
	f, _ := strconv.ParseFloat(strings.Fields(string(b) + " 0")[0], 64)
	return f
}

// LoadModules loads the modules a list names (roostd init's format,
// boot.ParseModules; files relative to the list's folder), saying each
// on say. A list that is not there loads nothing.
func LoadModules(list string, say func(format string, a ...any)) {
	b, err := os.ReadFile(list)
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	if err != nil {
		say("modules list %s: %v", list, err)
		return
	}
	mods, err := boot.ParseModules(string(b))
	if err != nil {
		say("modules list %s: %v", list, err)
		return
	}
	for _, mod := range mods {
		m, err := os.Open(filepath.Join(filepath.Dir(list), mod.File))
		if err != nil {
			say("module %s: %v", mod.File, err)
			continue
		}
		err = unix.FinitModule(int(m.Fd()), mod.Params, 0)
		m.Close()
		say("module %s %q: %v", mod.File, mod.Params, err)
	}
}

// PowerOff syncs and powers the VM off (QEMU ends), saying so on say.
func PowerOff(say func(format string, a ...any)) {
	say("powering off")
	unix.Sync()
	unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	select {}
}
