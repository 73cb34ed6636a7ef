package vm

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"
)

// DirectOptions say what StartDirect boots: a kernel and an initramfs,
// nothing shared with the host, the console the only way out (the kexec
// and watchdog tests, whose guest replaces its own kernel).
type DirectOptions struct {
	Arch     string // "x86_64" (Debian's amd64 kernel's machine) or "mipsel" (malta, 24Kc)
	Kernel   string // the kernel file QEMU loads
	Initrd   []byte // optional
	Append   string
	Memory   int  // MiB; default 512 on x86_64, 64 on mipsel
	Watchdog bool // x86_64: an i6300esb whose expiry resets the machine
	NoReboot bool // a reset ends QEMU instead of rebooting
	Console  io.Writer
}

// Direct is a running VM of StartDirect; its Events are QEMU's.
type Direct struct {
	cmd  *exec.Cmd
	done chan error
	dir  string
	qmpEvents
}

// Initramfs is a gzipped newc archive with init as /init and files.
func Initramfs(init []byte, files []File) ([]byte, error) { return mipsInitramfs(init, files) }

// StartDirect boots the VM and listens to QEMU's events (QMP).
func StartDirect(ctx context.Context, o DirectOptions) (*Direct, error) {
	dir, err := os.MkdirTemp("", "roost-direct-vm-")
	if err != nil {
		return nil, err
	}
	d := &Direct{dir: dir, done: make(chan error, 1)}
	args, err := directArgs(o, dir)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	d.cmd = exec.CommandContext(ctx, args[0], args[1:]...)
	d.cmd.Stdout, d.cmd.Stderr = o.Console, o.Console
	d.cmd.WaitDelay = 5 * time.Second
	d.start = time.Now()
	if err := d.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("%s: %w", args[0], err)
	}
	go func() { d.done <- d.cmd.Wait() }()
	go d.listen(filepath.Join(dir, "qmp"))
	return d, nil
}

func directArgs(o DirectOptions, dir string) ([]string, error) {
	var args []string
	switch o.Arch {
	case "x86_64":
		if o.Memory == 0 {
			o.Memory = 512
		}
		args = []string{"qemu-system-x86_64", "-accel", "tcg", "-smp", "1", "-nodefaults", "-display", "none", "-serial", "stdio"}
		if o.Watchdog {
			args = append(args, "-device", "i6300esb", "-action", "watchdog=reset")
		}
	case "mipsel":
		if o.Memory == 0 {
			o.Memory = 64
		}
		args = []string{"qemu-system-mipsel", "-M", "malta", "-cpu", "24Kc", "-vga", "none", "-display", "none", "-serial", "stdio"}
		if o.Watchdog {
			return nil, fmt.Errorf("QEMU's malta has no watchdog device")
		}
	default:
		return nil, fmt.Errorf("no VM for architecture %q", o.Arch)
	}
	args = append(args, "-m", strconv.Itoa(o.Memory), "-nic", "none", "-kernel", o.Kernel, "-append", o.Append,
		"-qmp", "unix:"+filepath.Join(dir, "qmp")+",server=on,wait=off")
	if o.NoReboot {
		args = append(args, "-no-reboot")
	}
	if len(o.Initrd) > 0 {
		f := filepath.Join(dir, "initrd")
		if err := os.WriteFile(f, o.Initrd, 0o644); err != nil {
			return nil, err
		}
		args = append(args, "-initrd", f)
	}
	return args, nil
}

// Wait waits up to timeout for QEMU to end: nil for status 0.
func (d *Direct) Wait(timeout time.Duration) error {
	select {
	case err := <-d.done:
		d.done <- err
		return err
	case <-time.After(timeout):
		return fmt.Errorf("the VM still runs after %s", timeout)
	}
}

// Kill ends QEMU and removes its files.
func (d *Direct) Kill() {
	d.cmd.Process.Kill()
	d.Wait(10 * time.Second)
	os.RemoveAll(d.dir)
}
