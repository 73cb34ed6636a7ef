package vm

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	hostimage "github.com/roostrouter/roost/hosttool/image"
	"github.com/roostrouter/roost/updater/nar"
	"github.com/roostrouter/roost/updater/nixexport"
	"github.com/roostrouter/roost/updater/nixhash"
	"github.com/roostrouter/roost/updater/storepath"
)

// InitrdModules are what the qemu-x86_64 board's initrd loads to reach
// its disk (virtio, ext4 with its checksums), and its hardware random
// number generator (virtio-rng, as a router's SoC has one): without it
// the kernel's random numbers are not ready for many seconds after a boot
// under TCG, and roostd's SSH and DHCP wait for them. The rest is the
// system's.
var InitrdModules = []string{"virtio_pci", "virtio_blk", "crc32c_generic", "ext4", "virtio_rng"}

// RouterSystem is the system BuildRouterDisk installs: what
// roost.lib.mkSystem builds for the qemu-x86_64 board, with Debian's
// kernel.
type RouterSystem struct {
	Roostd  string   // roostd for amd64, static (CGO_ENABLED=0)
	Config  []byte   // its etc/roost/config.json
	Cmdline string   // kernel parameters, the board's first
	Modules []string // modules to load at boot, by name (their dependencies come too)
}

// RouterDisk is a router VM's disk image and the system on it.
type RouterDisk struct {
	Image  string // ext4: nix/ (store, registry, profile) and persist/roost
	System storepath.Path
	// Kernel and Initrd are the system's, Cmdline its kernel parameters,
	// from the files the image was made of: a bootloader's view of them.
	Kernel, Initrd, Cmdline string
}

// BuildRouterDisk makes, in dir, a disk whose one generation is s: its
// store paths (the kernel and modules, roostd, the initrd, the system)
// imported into a store below dir/root by the router's own store code,
// the profile's system-1-link, and an empty state folder; then an ext4
// image of that root by mke2fs -d (no root privileges needed).
func BuildRouterDisk(dir string, s RouterSystem) (*RouterDisk, error) {
	image, version, err := Kernel()
	if err != nil {
		return nil, err
	}
	b := &diskBuilder{StoreBuilder: StoreBuilder{Src: filepath.Join(dir, "src")}, root: filepath.Join(dir, "root")}
	linux, modules, err := b.kernel(image, version, s.Modules)
	if err != nil {
		return nil, err
	}
	agent, err := b.Add("roostd", nil, map[string]string{"bin/roostd": "copy:" + s.Roostd})
	if err != nil {
		return nil, err
	}
	initrd, err := b.initrd(s.Roostd, version)
	if err != nil {
		return nil, err
	}
	sys, err := b.Add("roost-system-qemu-x86_64", []storepath.Path{agent, linux, initrd}, map[string]string{
		"bin/roostd":            "link:" + agent.String() + "/bin/roostd",
		"etc/roost/config.json": "data:" + string(s.Config),
		"board":                 "data:qemu-x86_64\n",
		"cmdline":               "data:" + s.Cmdline + "\n",
		"kernel":                "link:" + linux.String() + "/bzImage",
		"initrd":                "link:" + initrd.String() + "/initrd",
		"modules":               "data:" + modules,
	})
	if err != nil {
		return nil, err
	}
	if err := b.Install(b.root, sys); err != nil {
		return nil, err
	}
	d := &RouterDisk{Image: filepath.Join(dir, "disk.img"), System: sys, Cmdline: s.Cmdline,
		Kernel: filepath.Join(b.root, linux.String(), "bzImage"), Initrd: filepath.Join(b.root, initrd.String(), "initrd")}
	if err := hostimage.Ext4(context.Background(), b.root, d.Image, 512<<20, func(string) {}); err != nil {
		return nil, err
	}
	return d, nil
}

// diskBuilder makes the qemu-x86_64 system's store paths and installs
// them below root.
type diskBuilder struct {
	StoreBuilder
	root string
}

// StoreBuilder makes store paths below Src and a nix-store --export
// stream of them in the order made (references first), which Install
// imports: the store paths of a system made without Nix.
type StoreBuilder struct {
	Src    string
	export bytes.Buffer
}

// Add makes a store path called name from files: path → "data:" contents,
// "copy:" a host file, or "link:" a symlink's target. Its hash is its
// contents' (a fixed-output path's, in spirit).
func (b *StoreBuilder) Add(name string, refs []storepath.Path, files map[string]string) (storepath.Path, error) {
	dir := filepath.Join(b.Src, name)
	for p, spec := range files {
		if err := writeSpec(filepath.Join(dir, p), spec); err != nil {
			return "", fmt.Errorf("%s: %w", name, err)
		}
	}
	var n bytes.Buffer
	if err := nar.Dump(&n, dir); err != nil {
		return "", err
	}
	sum := sha256.Sum256(append([]byte(name+"\x00"), n.Bytes()...))
	path, err := storepath.ParseBase(nixhash.EncodeNix32(sum[:20]) + "-" + name)
	if err != nil {
		return "", err
	}
	nixexport.WriteNext(&b.export, true)
	b.export.Write(n.Bytes())
	return path, nixexport.WriteTrailer(&b.export, nixexport.Trailer{Path: path, References: refs})
}

func writeSpec(file, spec string) error {
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return err
	}
	kind, arg, _ := strings.Cut(spec, ":")
	switch kind {
	case "data":
		return os.WriteFile(file, []byte(arg), 0o444)
	case "link":
		return os.Symlink(arg, file)
	case "copy":
		data, err := os.ReadFile(arg)
		if err != nil {
			return err
		}
		mode := os.FileMode(0o444)
		if fi, err := os.Stat(arg); err == nil && fi.Mode()&0o111 != 0 {
			mode = 0o555
		}
		return os.WriteFile(file, data, mode)
	}
	return fmt.Errorf("bad file spec %q", spec)
}

// Install imports the paths made into the store below root, makes sys
// generation 1, the profile's default, and makes the state folder, as
// roost image does (hosttool/image). It ends the export stream: nothing
// is added after it.
func (b *StoreBuilder) Install(root string, sys storepath.Path) error {
	nixexport.WriteNext(&b.export, false)
	return hostimage.Root(context.Background(), root, &b.export, sys)
}

// kernel makes the kernel's store path: its image and the modules the
// system loads, and returns the system's modules list.
func (b *diskBuilder) kernel(image, version string, names []string) (storepath.Path, string, error) {
	base := filepath.Join("/lib/modules", version)
	mods, err := moduleClosure(base, names)
	if err != nil {
		return "", "", err
	}
	files := map[string]string{"bzImage": "copy:" + image}
	var rel []string
	for _, m := range mods {
		data, err := readModule(m)
		if err != nil {
			return "", "", err
		}
		r, _ := filepath.Rel("/", strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(m, ".xz"), ".zst"), ".gz"))
		files[r] = "data:" + string(data)
		rel = append(rel, r)
	}
	linux, err := b.Add("linux-"+version, nil, files)
	if err != nil {
		return "", "", err
	}
	var list strings.Builder
	list.WriteString("# kernel modules roostd init loads at boot, in order\n")
	for _, r := range rel {
		fmt.Fprintf(&list, "%s/%s\n", linux, r)
	}
	return linux, list.String(), nil
}

// initrd makes the initrd's store path: /init is roostd, with the board's
// name and the modules that reach the disk (see agent/boot).
func (b *diskBuilder) initrd(roostd, version string) (storepath.Path, error) {
	archive, err := RouterInitrd(roostd, version)
	if err != nil {
		return "", err
	}
	return b.Add("initrd-qemu-x86_64", nil, map[string]string{"initrd": "data:" + string(archive)})
}

// RouterInitrd is a newc archive whose /init is roostd (roostd init),
// with /dev/console, /board, and /modules listing the modules in
// lib/modules that reach the qemu-x86_64 board's disk.
func RouterInitrd(roostd, version string) ([]byte, error) {
	mods, err := moduleClosure(filepath.Join("/lib/modules", version), InitrdModules)
	if err != nil {
		return nil, err
	}
	return routerInitrd(roostd, "qemu-x86_64", mods)
}

// routerInitrd is a newc archive whose /init is roostd (roostd init), with
// /dev/console, /board naming board, and /modules listing the module
// files mods (dependencies first) in lib/modules, decompressed.
func routerInitrd(roostd, board string, mods []string) ([]byte, error) {
	bin, err := os.ReadFile(roostd)
	if err != nil {
		return nil, err
	}
	a := &cpioWriter{}
	for _, d := range []string{"dev", "lib", "lib/modules", "proc", "sys", "run"} {
		a.dir(d)
	}
	a.entry("tmp", 0o041777, nil)
	a.charDev("dev/console", 0o600, 5, 1)
	a.file("init", bin, 0o755)
	a.file("board", []byte(board+"\n"), 0o644)
	var list strings.Builder
	for _, m := range mods {
		data, err := readModule(m)
		if err != nil {
			return nil, err
		}
		name := "lib/modules/" + modName(m) + ".ko"
		a.file(name, data, 0o644)
		fmt.Fprintln(&list, name)
	}
	a.file("modules", []byte(list.String()), 0o644)
	return a.close(), nil
}
