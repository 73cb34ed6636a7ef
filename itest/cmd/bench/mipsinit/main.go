// Command mipsinit is the /init of make bench's MIPS VM (itest/cmd/bench,
// mips.go): on QEMU's malta with Debian's 4kc-malta kernel and the
// qemu-mipsel board's flash (virtio disks made MTD devices by block2mtd,
// as roostd init makes them), it measures roostd idle with a router's
// config, a delta upgrade's decode (updater/maintenance.Receive) and an
// image write (updater/image.Write), and beside each what Debian's mipsel
// tools do in the same VM (dnsmasq and dropbear idle, zstd --patch-from,
// flashcp). Each figure is a console line "BENCH mips CASE key=value ...";
// "BENCH mips done" ends the run, and the VM powers off.
//
// The disks: the board's block2mtd flashes in its order (image-a holding
// the old image, image-b blank, data), then the payload, a squashfs with
// bin/roostd, the images' files in img/ and Debian's programs and their
// libraries in deb/.
//
// Each measured operation runs in a child process (this program again,
// or Debian's), so that its peak resident set (VmHWM) is its own; it and
// the lowest MemAvailable while the operation runs are sampled every
// 50 ms (see measure). Before the delta's decode, roostd's own RAM check
// (maintenance.CheckMemory) decides whether it runs: one that does not
// fit would have the OOM killer end it, or the kernel panic.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/roostrouter/roost/itest/vm/guest"
)

// SpecFile is the run's Spec in the initramfs.
const SpecFile = "/etc/bench.json"

// Spec is what the host tells the run.
type Spec struct {
	Board       string `json:"board"`
	Payload     string `json:"payload"` // the payload's disk (vdd)
	IdleSeconds int    `json:"idleSeconds"`
	// The running slot's image (in image-a) and the new one.
	OldBytes  int64  `json:"oldBytes"`
	OldSHA256 string `json:"oldSHA256"`
	NewBytes  int64  `json:"newBytes"`
	NewSHA256 string `json:"newSHA256"`
	// PatchBytes is zstd's own patch's size.
	PatchBytes int64    `json:"patchBytes"`
	Debian     bool     `json:"debian"` // deb/ holds the competitors
	SSHListen  string   `json:"sshListen"`
	Running    string   `json:"running"` // the image slot holding the old image
	Spare      string   `json:"spare"`   // the one the new image goes into
	Phases     []string `json:"phases"`  // idle, upgrade
	// MaintenanceMB, if set, replaces the board's budget in roostd's RAM
	// check: a run with more RAM stands for a bigger router.
	MaintenanceMB int `json:"maintenanceMB"`
}

const (
	payload  = "/payload"
	config   = "/etc/roost.json" // the router's config, in the initramfs
	roostd   = payload + "/bin/roostd"
	debLib   = payload + "/deb/lib"
	debBin   = payload + "/deb/bin"
	loader   = debLib + "/ld.so.1"
	newImage = "/run/new.img" // the received image, in RAM as on a router
)

func main() {
	if len(os.Args) > 1 {
		os.Exit(child(os.Args[1], os.Args[2:]))
	}
	if err := guest.MountAll(); err != nil {
		fmt.Println("mipsinit:", err)
	} else if err := guest.Console(); err != nil {
		fmt.Println("mipsinit:", err)
	}
	say("init started")
	if err := run(); err != nil {
		bench("error", "error=%q", err.Error())
	}
	bench("done", "uptime=%.1f", guest.Uptime())
	guest.PowerOff(say)
}

func run() error {
	b, err := os.ReadFile(SpecFile)
	if err != nil {
		return err
	}
	var spec Spec
	if err := json.Unmarshal(b, &spec); err != nil {
		return fmt.Errorf("%s: %w", SpecFile, err)
	}
	guest.LoadModules("/modules", say)
	if err := flash(spec); err != nil {
		return err
	}
	bench("boot", "uptime=%.1f %s", guest.Uptime(), memLine())
	if slices.Contains(spec.Phases, "idle") {
		idleRoostd(spec)
		if spec.Debian {
			idleDebian(spec)
		}
	}
	if slices.Contains(spec.Phases, "upgrade") {
		bench("upgrade-start", "%s", memLine())
		upgrade(spec)
	}
	return nil
}

// bench prints a BENCH line.
func bench(name, format string, a ...any) {
	fmt.Printf("BENCH mips %s %s\n", name, fmt.Sprintf(format, a...))
}

func say(format string, a ...any) {
	fmt.Printf("mipsinit: %s\n", strings.TrimRight(fmt.Sprintf(format, a...), "\n"))
}
