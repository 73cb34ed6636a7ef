// Package boards describes the hardware roost runs on: architecture, the
// devices behind the logical interface names a config uses (wan, lan0, …),
// storage and upgrade method, kexec, watchdog and RAM.
package boards

import (
	"fmt"
	"sort"
	"strings"
)

// Board is one kind of router.
type Board struct {
	Name   string
	GOARCH string
	GOMIPS string // "softfloat" for MIPS boards without an FPU
	// Interfaces maps logical names to the kernel's device names.
	Interfaces map[string]string
	RAMMB      int
	// Upgrade is how a system that replaces the running one is installed:
	// "kexec" (a trial boot) or "pivot" (a read-only image rewritten from RAM).
	Upgrade  string
	Kexec    bool
	Watchdog string // device, e.g. /dev/watchdog; "" if none
}

// known is every board roost supports.
var known = map[string]Board{
	// lab: network namespaces on the development machine (make lab, itest).
	"lab": {
		Name: "lab", GOARCH: "amd64", RAMMB: 512, Upgrade: "kexec",
		Interfaces: map[string]string{"wan": "wan", "lan0": "lan0", "lan1": "lan1"},
	},
	// qemu-x86_64: a QEMU VM with three virtio NICs and an i6300esb watchdog.
	"qemu-x86_64": {
		Name: "qemu-x86_64", GOARCH: "amd64", RAMMB: 256, Upgrade: "kexec", Kexec: true, Watchdog: "/dev/watchdog",
		Interfaces: map[string]string{"wan": "eth0", "lan0": "eth1", "lan1": "eth2"},
	},
}

// Lookup returns the board called name.
func Lookup(name string) (Board, error) {
	b, ok := known[name]
	if !ok {
		return Board{}, fmt.Errorf("unknown board %q (known: %s)", name, strings.Join(Names(), ", "))
	}
	return b, nil
}

// Names lists the known boards.
func Names() []string {
	var out []string
	for n := range known {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Device returns the kernel's name for a logical interface.
func (b Board) Device(logical string) (string, bool) {
	d, ok := b.Interfaces[logical]
	return d, ok
}

// InterfaceNames lists the board's logical interfaces.
func (b Board) InterfaceNames() []string {
	var out []string
	for n := range b.Interfaces {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
