package vm

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"github.com/roostrouter/roost/agent/handover"
	"github.com/roostrouter/roost/firewall"
	"github.com/roostrouter/roost/updater/generations"
	"github.com/roostrouter/roost/updater/store"
	"github.com/roostrouter/roost/updater/storepath"
)

// RouterModules are the kernel modules a qemu-x86_64 system of the lab's
// config loads at boot: its NICs, the LAN's bridge, the firewall's
// (nft_objref for its named counters: firewall.KernelModules lacks it,
// since a kernel that can run modprobe loads it by itself, and a router's
// initrd has no modprobe) and the board's watchdog (the watchdog core and
// i6300esb; init gives them the board's moduleParams as it loads them).
// The initrd loads the rest (InitrdModules).
func RouterModules() []string {
	return slices.Concat([]string{"virtio_net", "bridge", "nft_objref", "watchdog", "i6300esb"}, firewall.KernelModules)
}

// NixInputs are the prebuilt inputs roost.lib.mkSystem takes for a
// qemu-x86_64 system with Debian's kernel: files on this machine, which
// the library imports into the store.
type NixInputs struct {
	Kernel  string   // the kernel image (in /boot)
	Initrd  string   // the initrd, whose /init is roostd (RouterInitrd)
	Modules []string // module files, uncompressed, dependencies first
}

// WriteNixInputs writes into dir the initrd for roostd and the module
// files that names need (with what they depend on), for Debian's newest
// kernel (Kernel).
func WriteNixInputs(dir, roostd string, names []string) (*NixInputs, error) {
	image, version, err := Kernel()
	if err != nil {
		return nil, err
	}
	in := &NixInputs{Kernel: image, Initrd: filepath.Join(dir, "initrd")}
	archive, err := RouterInitrd(roostd, version)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "modules"), 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(in.Initrd, archive, 0o644); err != nil {
		return nil, err
	}
	mods, err := moduleClosure(filepath.Join("/lib/modules", version), names)
	if err != nil {
		return nil, err
	}
	for _, m := range mods {
		data, err := readModule(m)
		if err != nil {
			return nil, err
		}
		// The library names a module's store path after its file: keep
		// the module's name, as modprobe would know it.
		file := filepath.Join(dir, "modules", modName(m)+".ko")
		if err := os.WriteFile(file, data, 0o644); err != nil {
			return nil, err
		}
		in.Modules = append(in.Modules, file)
	}
	return in, nil
}

// BuildRouterDiskFromExport makes, in dir, a disk whose one generation is
// system, a system built by roost.lib.mkSystem: export is nix-store
// --export of system's closure (references first, as Nix writes it),
// imported into a store below dir/root by the router's own store code;
// then the profile's system-1-link, an empty state folder, and an ext4
// image of that root by mke2fs -d (no root privileges needed). The disk's
// Kernel, Initrd and Cmdline are the system's.
func BuildRouterDiskFromExport(dir string, export io.Reader, system storepath.Path) (*RouterDisk, error) {
	root := filepath.Join(dir, "root")
	s := store.New(root, store.Options{})
	txn, err := s.Lock(context.Background(), "BuildRouterDiskFromExport", func(string) {})
	if err != nil {
		return nil, err
	}
	_, err = txn.ImportExport(context.Background(), export, nil)
	txn.Close()
	if err != nil {
		return nil, fmt.Errorf("import %s's closure: %w", system, err)
	}
	if _, _, err := generations.System(root, nil).Set(system); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(root, "persist/roost"), 0o700); err != nil {
		return nil, err
	}
	d := &RouterDisk{Image: filepath.Join(dir, "disk.img"), System: system}
	for _, f := range []struct {
		part string
		to   *string
	}{{"kernel", &d.Kernel}, {"initrd", &d.Initrd}} {
		if *f.to, err = handover.Resolve(root, system.String()+"/"+f.part); err != nil {
			return nil, fmt.Errorf("system %s: %w (a qemu-x86_64 system has a kernel and an initrd)", system, err)
		}
	}
	cmdline, err := os.ReadFile(filepath.Join(root, system.String(), "cmdline"))
	if err != nil {
		return nil, fmt.Errorf("system %s: %w", system, err)
	}
	d.Cmdline = strings.TrimSpace(string(cmdline))
	if out, err := exec.Command("mke2fs", "-q", "-t", "ext4", "-L", "roost", "-d", root, d.Image, "512M").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("mke2fs -d %s: %v: %s", root, err, out)
	}
	return d, nil
}
