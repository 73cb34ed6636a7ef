package vm

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/roostrouter/roost/boards"
)

// The qemu-mipsel board as a router VM: Debian's 4kc-malta kernel, an
// initrd whose /init is roostd (roostd init), and the board's flash as
// three disk files (MIPSFlash), which init makes MTD devices by block2mtd.

// MIPSBoard is the board the router VM is.
const MIPSBoard = "qemu-mipsel"

// MIPSInitrdModules are what the router VM's initrd loads: the flash (its
// virtio disks, block2mtd over them, squashfs for the image slots, jffs2
// for the data partition; mtdblock is built in) and the hardware random
// number generator roostd's SSH endpoint waits for (see InitrdModules).
var MIPSInitrdModules = []string{"virtio_pci", "virtio_blk", "block2mtd", "squashfs", "jffs2", "virtio_rng"}

// MIPSRouterModules are what a qemu-mipsel system loads at boot: its NICs
// and the board's watchdog, softdog (boards.json).
var MIPSRouterModules = []string{"virtio_net", "watchdog", "softdog"}

// mipsModuleDir is the malta kernel's modules folder.
func mipsModuleDir() (string, error) {
	dirs, _ := filepath.Glob(filepath.Join(MIPSKernelDir, "lib/modules/*-4kc-malta"))
	if len(dirs) == 0 {
		return "", fmt.Errorf("no 4kc-malta modules in %s/lib/modules: make vmdeps unpacks Debian's linux-image-4kc-malta (mipsel) there", MIPSKernelDir)
	}
	return dirs[len(dirs)-1], nil
}

// MIPSModuleClosure lists the malta kernel's module files for names and
// what they depend on, dependencies first. Debian's package has no
// modules.dep (depmod makes it on installation), so the dependencies are
// each module's own, its .modinfo section's depends=.
func MIPSModuleClosure(names []string) ([]string, error) {
	base, err := mipsModuleDir()
	if err != nil {
		return nil, err
	}
	byName := map[string]string{}
	err = filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".ko") {
			byName[modName(p)] = p
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	builtin, _ := os.ReadFile(filepath.Join(base, "modules.builtin"))
	var out []string
	seen := map[string]bool{}
	var visit func(name string) error
	visit = func(name string) error {
		name = strings.ReplaceAll(name, "-", "_")
		if seen[name] {
			return nil
		}
		seen[name] = true
		file, ok := byName[name]
		if !ok {
			if bytes.Contains(builtin, []byte("/"+name+".ko")) || bytes.Contains(builtin, []byte("/"+strings.ReplaceAll(name, "_", "-")+".ko")) {
				return nil
			}
			return fmt.Errorf("%s has no module %s", base, name)
		}
		deps, err := moduleDepends(file)
		if err != nil {
			return err
		}
		for _, d := range deps {
			if err := visit(d); err != nil {
				return err
			}
		}
		out = append(out, file)
		return nil
	}
	for _, n := range names {
		if err := visit(n); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// moduleDepends reads a module's depends= from its .modinfo section.
func moduleDepends(file string) ([]string, error) {
	f, err := elf.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	s := f.Section(".modinfo")
	if s == nil {
		return nil, fmt.Errorf("%s: no .modinfo section", file)
	}
	b, err := s.Data()
	if err != nil {
		return nil, fmt.Errorf("%s: .modinfo: %w", file, err)
	}
	for _, kv := range bytes.Split(b, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("depends=")); ok {
			if len(v) == 0 {
				return nil, nil
			}
			return strings.Split(string(v), ","), nil
		}
	}
	return nil, nil
}

// MIPSRouterInitrd is a newc archive (uncompressed: the image's squashfs
// compresses it) whose /init is roostd, with /dev/console, /board and
// /modules listing the modules of MIPSInitrdModules in lib/modules.
func MIPSRouterInitrd(roostd string) ([]byte, error) {
	mods, err := MIPSModuleClosure(MIPSInitrdModules)
	if err != nil {
		return nil, err
	}
	return routerInitrd(roostd, MIPSBoard, mods)
}

// WriteMIPSNixInputs writes into dir what roost.lib.mkSystem takes for a
// qemu-mipsel system: the initrd for roostd (a static mipsle binary), and
// the module files of MIPSRouterModules with what they depend on; the
// kernel is the malta one (MIPSKernel).
func WriteMIPSNixInputs(dir, roostd string) (*NixInputs, error) {
	kernel, err := MIPSKernel()
	if err != nil {
		return nil, err
	}
	in := &NixInputs{Kernel: kernel, Initrd: filepath.Join(dir, "initrd")}
	archive, err := MIPSRouterInitrd(roostd)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(in.Initrd, archive, 0o644); err != nil {
		return nil, err
	}
	mods, err := MIPSModuleClosure(MIPSRouterModules)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "modules"), 0o755); err != nil {
		return nil, err
	}
	for _, m := range mods {
		data, err := os.ReadFile(m)
		if err != nil {
			return nil, err
		}
		file := filepath.Join(dir, "modules", modName(m)+".ko")
		if err := os.WriteFile(file, data, 0o644); err != nil {
			return nil, err
		}
		in.Modules = append(in.Modules, file)
	}
	return in, nil
}

// MIPSFlash is the router VM's flash: a disk file for each of the board's
// block2mtd flashes, in the board's order (vda, vdb, vdc), which QEMU
// attaches in that order.
type MIPSFlash struct {
	Disks []FlashDisk
}

// FlashDisk is one flash disk: the disk's name in the guest, the MTD
// partition block2mtd makes of it, and its file on the host.
type FlashDisk struct {
	Name, Partition, File string
	Bytes                 int64
}

// Disk is the disk file holding partition ("image-a", "data").
func (f *MIPSFlash) Disk(partition string) (string, error) {
	for _, d := range f.Disks {
		if d.Partition == partition {
			return d.File, nil
		}
	}
	return "", fmt.Errorf("the flash has no partition %q", partition)
}

// MakeMIPSFlash makes the board's flash in dir: the first image slot
// holding image (a squashfs, roost image's), padded with 0xff to the
// slot's size, and every other partition erased (all 0xff: an empty slot,
// an empty jffs2).
func MakeMIPSFlash(dir, image string) (*MIPSFlash, error) {
	b, err := boards.Lookup(MIPSBoard)
	if err != nil {
		return nil, err
	}
	img, err := os.ReadFile(image)
	if err != nil {
		return nil, err
	}
	f := &MIPSFlash{}
	written := false
	for _, fl := range b.Flash {
		if fl.Kind != boards.FlashBlock2MTD {
			continue
		}
		p := fl.Partitions[0]
		d := FlashDisk{Name: fl.Name, Partition: p.Name, File: filepath.Join(dir, p.Name+".img"), Bytes: int64(*p.Size)}
		var data []byte
		if p.Use == boards.UseImage && !written {
			if int64(len(img)) > d.Bytes {
				return nil, fmt.Errorf("image %s (%d bytes) does not fit slot %s (%d bytes)", image, len(img), p.Name, d.Bytes)
			}
			data, written = img, true
		}
		if err := writeErased(d.File, data, d.Bytes); err != nil {
			return nil, err
		}
		f.Disks = append(f.Disks, d)
	}
	if !written {
		return nil, errors.New("board " + MIPSBoard + " has no block2mtd image slot")
	}
	return f, nil
}

// writeErased writes file: data, then 0xff up to size bytes.
func writeErased(file string, data []byte, size int64) error {
	buf := bytes.Repeat([]byte{0xff}, int(size))
	copy(buf, data)
	return os.WriteFile(file, buf, 0o644)
}
