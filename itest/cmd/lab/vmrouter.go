package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/roostrouter/roost/itest/labnet"
	"github.com/roostrouter/roost/itest/vm"
	"github.com/roostrouter/roost/updater/storepath"
)

// The router as a QEMU VM (--router vm): the system the library builds
// for board qemu-x86_64 (Debian's kernel, an initrd whose /init is
// roostd, the modules the config needs) installed as generation 1 of the
// VM's own disk, which it boots with roostd init as PID 1. A detached
// `lab vm-router` runs QEMU, so that the VM outlives make lab; down
// powers the VM off with roostd poweroff over SSH.

// vmNeeds says what the VM lab lacks, and how to get it.
func vmNeeds() error {
	for _, tool := range []string{"qemu-system-x86_64", "mke2fs"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("ROUTER=vm needs %s: make vmdeps installs it", tool)
		}
	}
	if _, _, err := vm.Kernel(); err != nil {
		return fmt.Errorf("ROUTER=vm: %w", err)
	}
	return nil
}

// vmInputs writes the prebuilt inputs of the VM's system (the initrd, the
// modules) and returns the arguments that give them to docs/rotuer.nix.
func (l *lab) vmInputs() (systemArgs, error) {
	in, err := vm.WriteNixInputs(l.path("vm"), filepath.Join(l.bin, "roostd"), vm.RouterModules())
	if err != nil {
		return systemArgs{}, err
	}
	return systemArgs{board: "qemu-x86_64", kernel: in.Kernel, initrd: in.Initrd, modules: in.Modules,
		kernelParams: []string{"panic=-1", "quiet"}}, nil
}

// vmSpec is what up tells lab vm-router: the disk and where its NICs go.
type vmSpec struct {
	Disk  vm.RouterDisk
	NetNS string
	NICs  []vm.NIC
}

// startVM makes the VM's disk with sys as generation 1, bridges the
// router namespace's links to the VM's NICs, and boots it.
func (l *lab) startVM(n *labnet.Net, sys string) error {
	p, err := storepath.Parse(sys)
	if err != nil {
		return err
	}
	export, err := l.exportClosure(sys)
	if err != nil {
		return err
	}
	disk, err := vm.BuildRouterDiskFromExport(l.path("vm"), bytes.NewReader(export), p)
	if err != nil {
		return err
	}
	nics, err := vm.Wire(n.Router, []string{"wan", "lan0", "lan1"})
	if err != nil {
		return err
	}
	spec, _ := json.Marshal(vmSpec{Disk: *disk, NetNS: n.Router, NICs: nics})
	if err := os.WriteFile(l.path("vm", "router.json"), spec, 0o644); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	_, version, _ := vm.Kernel()
	if err := detach(l.dir, "vm", exec.Command(self, "vm-router", l.dir)); err != nil {
		return err
	}
	l.booted = time.Now()
	fmt.Printf("the router is a QEMU x86_64 VM (TCG, 256 MB, Debian's kernel %s) booting generation 1 of its disk\n", version)
	fmt.Printf("  (%s, mke2fs -d of that system's closure), its NICs bridged into %s (console: %s)\n",
		rel(disk.Image), n.Router, rel(l.routerLog()))
	return nil
}

// waitAgentReady waits until the VM's init says its agent serves.
func (l *lab) waitAgentReady() error {
	err := labnet.Wait(2*time.Minute, 100*time.Millisecond, func() bool {
		b, _ := os.ReadFile(l.routerLog())
		return bytes.Contains(b, []byte("agent ready")) || l.pid("vm") == 0
	})
	b, _ := os.ReadFile(l.routerLog())
	if err != nil || !bytes.Contains(b, []byte("agent ready")) {
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		return fmt.Errorf("the router VM's agent never became ready; the end of its console (%s):\n%s",
			rel(l.routerLog()), strings.Join(lines[max(0, len(lines)-30):], "\n"))
	}
	fmt.Printf("the router VM's agent is ready %.1f s after QEMU started\n", time.Since(l.booted).Seconds())
	return nil
}

// runVMRouter is lab vm-router: it runs QEMU on the disk up made, the
// console appended to vm/console.log, until the VM powers off or SIGTERM
// (a power cut: down asks for roostd poweroff first). QEMU runs with
// -no-reboot, so a reboot ends it too: then it boots the VM again, as a
// router's reset would.
func runVMRouter(dir string) error {
	var spec vmSpec
	b, err := os.ReadFile(filepath.Join(dir, "vm", "router.json"))
	if err == nil {
		err = json.Unmarshal(b, &spec)
	}
	if err != nil {
		return fmt.Errorf("the VM's description: %w", err)
	}
	console, err := os.OpenFile(filepath.Join(dir, "vm", "console.log"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer console.Close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	for {
		w := &downWatcher{w: console}
		// As a bootloader: the profile's default, or a trial's one-shot entry.
		bootDir := filepath.Join(dir, "vm", "boot")
		if err := os.MkdirAll(bootDir, 0o755); err != nil {
			return err
		}
		entry, err := vm.ReadBootEntry(spec.Disk.Image, bootDir)
		if err != nil {
			return err
		}
		fmt.Fprintf(console, "lab: booting generation %d (%s)\n", entry.Generation, entry.Cmdline)
		r, err := vm.StartRouter(ctx, vm.RouterOptions{Disk: &spec.Disk, Boot: entry, NetNS: spec.NetNS, NICs: spec.NICs, Console: w})
		if err != nil {
			return err
		}
		err = r.Wait(100 * 365 * 24 * time.Hour)
		_, reset := r.Event("WATCHDOG")
		switch {
		case ctx.Err() != nil:
			fmt.Fprintln(console, "lab: QEMU stopped (SIGTERM)")
			return nil
		case err != nil:
			fmt.Fprintln(console, "lab: QEMU ended:", err)
			return err
		case reset:
			fmt.Fprintln(console, "lab: the watchdog reset the VM")
		case !w.rebooted():
			fmt.Fprintln(console, "lab: the VM powered off")
			return nil
		}
		fmt.Fprintln(console, "lab: the VM rebooted: booting it again")
	}
}

// downWatcher passes the console on and notes whether init said it
// reboots.
type downWatcher struct {
	w    *os.File
	mu   sync.Mutex
	tail []byte
	boot bool
}

func (d *downWatcher) Write(p []byte) (int, error) {
	d.mu.Lock()
	d.tail = append(d.tail, p...)
	if bytes.Contains(d.tail, []byte("system down: reboot")) {
		d.boot = true
	}
	d.tail = d.tail[max(0, len(d.tail)-64):]
	d.mu.Unlock()
	return d.w.Write(p)
}

func (d *downWatcher) rebooted() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.boot
}

// powerOffVM asks the VM's roostd to power off over SSH from the LAN
// host, as a user would, and waits for lab vm-router to end with it; a VM
// that does not is stopped (a power cut).
func (l *lab) powerOffVM(pid int) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ssh := exec.CommandContext(ctx, "ip", labnet.In(nsLAN, "ssh", "-F", l.path("home/.ssh/config"), "-i", l.path("home/.ssh/id_ed25519"),
		"-o", "UserKnownHostsFile="+l.path("home/.ssh/known_hosts"), "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
		"-o", "ServerAliveInterval=2", "-o", "ServerAliveCountMax=2", "rotuer", "roostd", "poweroff")[1:]...)
	out, _ := ssh.CombinedOutput()
	gone := func() bool { return syscall.Kill(pid, 0) != nil }
	if labnet.Wait(time.Minute, 100*time.Millisecond, gone) == nil {
		how := "QEMU ended, but its console does not say the system went down"
		if b, _ := os.ReadFile(l.path("vm", "console.log")); bytes.Contains(b, []byte("system down: poweroff")) {
			how = "its console: system down: poweroff"
		}
		fmt.Printf("the router VM powered off (roostd poweroff over SSH) in %.1f s (%s)\n", time.Since(start).Seconds(), how)
		return
	}
	fmt.Printf("the router VM did not power off (roostd poweroff over SSH: %s): stopping QEMU\n", strings.TrimSpace(string(out)))
	syscall.Kill(pid, syscall.SIGTERM)
	if labnet.Wait(15*time.Second, 100*time.Millisecond, gone) != nil {
		syscall.Kill(pid, syscall.SIGKILL)
	}
}
