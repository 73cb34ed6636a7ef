package vm

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// NIC is one of a router VM's network cards: a tap on the host, and the
// card's MAC address.
type NIC struct{ Tap, MAC string }

// Wire hands the links of namespace ns (the lab's router namespace) over
// to a router VM: each is bridged to a new tap, and gives its MAC address
// to the VM's NIC on that tap, so that the VM takes the link's place in
// the lab (the ISP routes delegated prefixes to the link-local address
// that MAC makes). The NICs are in the order of links: eth0, eth1, ….
func Wire(ns string, links []string) ([]NIC, error) {
	var nics []NIC
	for i, link := range links {
		mac, err := linkMAC(ns, link)
		if err != nil {
			return nil, err
		}
		tap, br := fmt.Sprintf("vm%d", i), fmt.Sprintf("vmbr%d", i)
		ip := func(args ...string) []string { return append([]string{"ip", "-n", ns}, args...) }
		for _, cmd := range [][]string{
			// The link must not keep the MAC it gives the VM: the bridge
			// would take frames for the VM as its own.
			ip("link", "set", link, "address", fmt.Sprintf("0a:00:00:00:%02x:%02x", i, 1)),
			ip("tuntap", "add", "dev", tap, "mode", "tap"),
			// No snooping: the VM's multicast (RS, DHCPv6, MLD) passes as
			// on a wire.
			ip("link", "add", br, "type", "bridge", "mcast_snooping", "0", "forward_delay", "0"),
			// The wire's own parts stay silent: no addresses, no RS.
			{"ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv6.conf." + br + ".disable_ipv6=1",
				"net.ipv6.conf." + tap + ".disable_ipv6=1", "net.ipv6.conf." + link + ".disable_ipv6=1"},
			ip("link", "set", link, "master", br),
			ip("link", "set", tap, "master", br),
			ip("link", "set", br, "up"), ip("link", "set", tap, "up"), ip("link", "set", link, "up"),
		} {
			if out, err := exec.Command(cmd[0], cmd[1:]...).CombinedOutput(); err != nil {
				return nil, fmt.Errorf("%s: %v: %s", strings.Join(cmd, " "), err, out)
			}
		}
		nics = append(nics, NIC{Tap: tap, MAC: mac})
	}
	return nics, nil
}

func linkMAC(ns, link string) (string, error) {
	out, err := exec.Command("ip", "-n", ns, "-j", "link", "show", "dev", link).Output()
	if err != nil {
		return "", fmt.Errorf("ip -n %s link show %s: %w", ns, link, err)
	}
	var l []struct {
		Address string `json:"address"`
	}
	if err := json.Unmarshal(out, &l); err != nil || len(l) != 1 {
		return "", fmt.Errorf("ip -j link show %s: %q", link, out)
	}
	return l[0].Address, nil
}

// RouterOptions say how a router VM runs.
type RouterOptions struct {
	Disk *RouterDisk
	// Boot is what the bootloader boots (ReadBootEntry); nil: the disk's
	// Kernel, Initrd and Cmdline, its first generation's.
	Boot    *BootEntry
	NetNS   string // where QEMU runs: the namespace of the NICs' taps
	NICs    []NIC
	Memory  int // MiB; default 256, the board's RAM
	Console io.Writer
}

// Router is a running router VM; its Events are QEMU's (QMP): a WATCHDOG
// event tells a reset by the watchdog from a reboot.
type Router struct {
	cmd  *exec.Cmd
	done chan error
	qmpEvents
}

// StartRouter boots the disk's system as a bootloader would (its kernel,
// initrd and kernel parameters, or o.Boot's) in QEMU, with the disk as
// virtio disk vda, the NICs as virtio cards, the board's watchdog (an
// i6300esb whose expiry resets the machine) and the console on o.Console.
// QEMU runs with -no-reboot: a reboot, a reset by the watchdog and a
// power off all end it with status 0 (Events tell them apart).
func StartRouter(ctx context.Context, o RouterOptions) (*Router, error) {
	if o.Memory == 0 {
		o.Memory = 256
	}
	boot := o.Boot
	if boot == nil {
		boot = &BootEntry{Kernel: o.Disk.Kernel, Initrd: o.Disk.Initrd, Cmdline: o.Disk.Cmdline}
	}
	dir, err := os.MkdirTemp("", "roost-router-vm-")
	if err != nil {
		return nil, err
	}
	qmp := filepath.Join(dir, "qmp")
	args := []string{"netns", "exec", o.NetNS, "qemu-system-x86_64",
		"-accel", "tcg", "-m", strconv.Itoa(o.Memory), "-smp", "1",
		"-nodefaults", "-no-reboot", "-display", "none", "-serial", "stdio",
		"-kernel", boot.Kernel, "-initrd", boot.Initrd, "-append", boot.Cmdline,
		"-drive", "file=" + o.Disk.Image + ",format=raw,if=virtio",
		// The board's hardware RNG (see InitrdModules), fed from the host.
		"-device", "virtio-rng-pci",
		// The board's watchdog (boards.json); QEMU 7.2 names its action so.
		"-device", "i6300esb", "-action", "watchdog=reset",
		"-qmp", "unix:" + qmp + ",server=on,wait=off"}
	for i, n := range o.NICs {
		args = append(args, "-netdev", fmt.Sprintf("tap,id=n%d,ifname=%s,script=no,downscript=no", i, n.Tap),
			"-device", fmt.Sprintf("virtio-net-pci,netdev=n%d,mac=%s", i, n.MAC))
	}
	cmd := exec.CommandContext(ctx, "ip", args...)
	cmd.Stdout, cmd.Stderr = o.Console, o.Console
	cmd.WaitDelay = 5 * time.Second
	r := &Router{cmd: cmd, done: make(chan error, 1)}
	r.start = time.Now()
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("qemu: %w", err)
	}
	go func() {
		err := cmd.Wait()
		os.RemoveAll(dir)
		r.done <- err
	}()
	go r.listen(qmp)
	return r, nil
}

// Wait waits up to d for QEMU to end, and returns how it ended: nil for
// status 0 (the VM rebooted, was reset or powered off).
func (r *Router) Wait(d time.Duration) error {
	select {
	case err := <-r.done:
		r.done <- err
		return err
	case <-time.After(d):
		return fmt.Errorf("the VM still runs after %s", d)
	}
}

// Exited says whether QEMU has ended (a kexec does not end it).
func (r *Router) Exited() bool {
	select {
	case err := <-r.done:
		r.done <- err
		return true
	default:
		return false
	}
}

// Kill ends QEMU at once: a power cut.
func (r *Router) Kill() {
	r.cmd.Process.Kill()
	r.Wait(10 * time.Second)
}
