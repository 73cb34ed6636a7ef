package vm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// MIPSRouterOptions say what the MIPS router VM boots: the qemu-mipsel
// board (QEMU's malta, 64 MiB) with its flash, one NIC on QEMU's user
// network as its WAN (eth0: 10.0.2.15/24, gateway 10.0.2.2), and the
// host's loopback port SSHPort forwarded to the guest's port 22.
type MIPSRouterOptions struct {
	// Kernel, Initrd and Cmdline are what the boot loader boots: a
	// system's kernel, initrd and cmdline (the VM's boot loader is QEMU's
	// -kernel, which a reset boots again).
	Kernel, Initrd, Cmdline string
	Flash                   *MIPSFlash
	Memory                  int // MiB; default 64, the board's RAM
	SSHPort                 int // the host's port on 127.0.0.1; 0: a free one
	// NoReboot makes a reboot or a reset (softdog's) end QEMU instead of
	// booting again, as Wait then tells.
	NoReboot bool
	Console  io.Writer // also receives the console, as it comes
}

// MIPSRouter is a running MIPS router VM. Its console is in Console; a
// power cut (Kill) and a new start on the same flash (Restart) keep the
// SSH port. Its Events are the current run's QMP events.
type MIPSRouter struct {
	opts    MIPSRouterOptions
	dir     string
	console *ConsoleLog

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan error
	qmp  *qmpEvents
}

// StartMIPSRouter boots the VM. Close it when done.
func StartMIPSRouter(o MIPSRouterOptions) (*MIPSRouter, error) {
	if o.Memory == 0 {
		o.Memory = 64
	}
	if o.Flash == nil || len(o.Flash.Disks) == 0 {
		return nil, errors.New("the MIPS router needs its flash (MakeMIPSFlash)")
	}
	if len(o.Flash.Disks) > len(mipsDiskSlots) {
		return nil, fmt.Errorf("%d flash disks: the malta board has PCI slots with interrupts for %d", len(o.Flash.Disks), len(mipsDiskSlots))
	}
	if o.SSHPort == 0 {
		p, err := freePort()
		if err != nil {
			return nil, err
		}
		o.SSHPort = p
	}
	dir, err := os.MkdirTemp("", "roost-mips-router-")
	if err != nil {
		return nil, err
	}
	r := &MIPSRouter{opts: o, dir: dir, console: &ConsoleLog{}}
	if err := r.start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return r, nil
}

// freePort is a TCP port on 127.0.0.1 that nothing listens on now.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// args is QEMU's command line.
// mipsDiskSlots are the malta's PCI slots with interrupts left for the
// flash disks, after the NIC's (0x0b) and the RNG's (0x0c).
var mipsDiskSlots = []int{0x12, 0x13, 0x14, 0x15}

func (r *MIPSRouter) args(qmp string) []string {
	o := r.opts
	args := []string{"qemu-system-mipsel", "-M", "malta", "-cpu", "24Kc", "-m", strconv.Itoa(o.Memory),
		"-vga", "none", "-display", "none", "-serial", "stdio", "-nic", "none",
		"-kernel", o.Kernel, "-initrd", o.Initrd, "-append", o.Cmdline,
		"-qmp", "unix:" + qmp + ",server=on,wait=off"}
	if o.NoReboot {
		args = append(args, "-no-reboot")
	}
	// The flash first, in the board's order: vda, vdb, … as the guest
	// probes them. romfile= : no option ROM, which Debian's QEMU may lack.
	// Explicit PCI slots: Linux routes the malta's interrupts for some
	// slots only (arch/mips/pci/fixup-malta.c); a device QEMU places
	// elsewhere got its interrupts late or never (sends that stalled).
	for i, d := range o.Flash.Disks {
		args = append(args, "-drive", fmt.Sprintf("file=%s,format=raw,if=none,id=flash%d,cache=writeback", d.File, i),
			"-device", fmt.Sprintf("virtio-blk-pci,drive=flash%d,romfile=,addr=%#x", i, mipsDiskSlots[i]))
	}
	// restrict=on: the guest reaches nothing outside; only the forwarded
	// port reaches it, on the host's loopback.
	args = append(args, "-netdev", fmt.Sprintf("user,id=wan,restrict=on,hostfwd=tcp:127.0.0.1:%d-:22", o.SSHPort),
		"-device", "virtio-net-pci,netdev=wan,romfile=,addr=0x0b",
		"-device", "virtio-rng-pci,addr=0x0c")
	return args
}

func (r *MIPSRouter) start() error {
	qmp := filepath.Join(r.dir, "qmp")
	os.Remove(qmp)
	args := r.args(qmp)
	cmd := exec.Command(args[0], args[1:]...)
	var w io.Writer = r.console
	if r.opts.Console != nil {
		w = io.MultiWriter(r.console, r.opts.Console)
	}
	cmd.Stdout, cmd.Stderr = w, w
	cmd.WaitDelay = 5 * time.Second
	q := &qmpEvents{start: time.Now()}
	r.console.Write([]byte(fmt.Sprintf("--- roost: qemu-system-mipsel starts (SSH on 127.0.0.1:%d) ---\n", r.opts.SSHPort)))
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("qemu-system-mipsel: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	go q.listen(qmp)
	r.mu.Lock()
	r.cmd, r.done, r.qmp = cmd, done, q
	r.mu.Unlock()
	return nil
}

// SSHAddr is where the host reaches the router's SSH endpoint.
func (r *MIPSRouter) SSHAddr() string { return "127.0.0.1:" + strconv.Itoa(r.opts.SSHPort) }

// SSHPort is the host's port forwarded to the router's port 22.
func (r *MIPSRouter) SSHPort() int { return r.opts.SSHPort }

// Flash is the router's flash: its disk files.
func (r *MIPSRouter) Flash() *MIPSFlash { return r.opts.Flash }

// Console is the console of every run so far.
func (r *MIPSRouter) Console() *ConsoleLog { return r.console }

// Events are the current run's QMP events (RESET, SHUTDOWN, …).
func (r *MIPSRouter) Events() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.qmp.Events()
}

// Wait waits up to d for QEMU to end (the guest powered off; with
// NoReboot, also rebooted or reset): nil for status 0.
func (r *MIPSRouter) Wait(d time.Duration) error {
	r.mu.Lock()
	done := r.done
	r.mu.Unlock()
	select {
	case err := <-done:
		done <- err
		return err
	case <-time.After(d):
		return fmt.Errorf("the MIPS router VM still runs after %s", d)
	}
}

// Exited says whether QEMU has ended.
func (r *MIPSRouter) Exited() bool {
	r.mu.Lock()
	done := r.done
	r.mu.Unlock()
	select {
	case err := <-done:
		done <- err
		return true
	default:
		return false
	}
}

// Kill ends QEMU at once: a power cut. What QEMU has written to the disk
// files is there (it writes through to the host's page cache).
func (r *MIPSRouter) Kill() {
	r.mu.Lock()
	cmd := r.cmd
	r.mu.Unlock()
	if !r.Exited() {
		cmd.Process.Kill()
		r.Wait(10 * time.Second)
		r.console.Write([]byte("--- roost: power cut (QEMU killed) ---\n"))
	}
}

// Restart boots the VM again on the same flash and SSH port, after a
// power cut if it still runs. opts, if given, changes what it boots
// (Kernel, Initrd, Cmdline), as a board's boot loader would boot another
// kernel from its flash.
func (r *MIPSRouter) Restart(change func(o *MIPSRouterOptions)) error {
	r.Kill()
	if change != nil {
		change(&r.opts)
	}
	return r.start()
}

// Close kills QEMU and removes its files (not the flash).
func (r *MIPSRouter) Close() {
	r.Kill()
	os.RemoveAll(r.dir)
}

// ConsoleLog is a VM's console, kept whole, with a wait for a line.
// Lines count from 0 over every run of the VM.
type ConsoleLog struct {
	mu      sync.Mutex
	lines   []string
	partial string
}

func (c *ConsoleLog) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.partial + strings.ReplaceAll(string(p), "\r", "")
	for {
		line, rest, ok := strings.Cut(s, "\n")
		if !ok {
			break
		}
		c.lines, s = append(c.lines, line), rest
	}
	c.partial = s
	return len(p), nil
}

// Mark is the number of whole lines so far: WaitFor(…, Mark()) waits for
// what comes after now.
func (c *ConsoleLog) Mark() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.lines)
}

// String is the whole console.
func (c *ConsoleLog) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.Join(c.lines, "\n") + "\n" + c.partial
}

// Find is the first line from line number from on holding s, and its
// number.
func (c *ConsoleLog) Find(s string, from int) (string, int, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := max(from, 0); i < len(c.lines); i++ {
		if strings.Contains(c.lines[i], s) {
			return c.lines[i], i, true
		}
	}
	return "", 0, false
}

// WaitFor waits until ctx ends for a line from line number from on that
// holds s, and returns it and its number.
func (c *ConsoleLog) WaitFor(ctx context.Context, s string, from int) (string, int, error) {
	for {
		if l, n, ok := c.Find(s, from); ok {
			return l, n, nil
		}
		select {
		case <-ctx.Done():
			return "", 0, fmt.Errorf("the console did not say %q: %w", s, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
