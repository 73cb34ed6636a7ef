package image

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/roostrouter/roost/updater/storepath"
)

// DefaultDiskBytes is the size of an ext4 image when none is asked for:
// room for the first system and a few upgrades beside it, as the VM
// tests' disks have (the file is sparse).
const DefaultDiskBytes = 512 << 20

// tools are the programs images are made with, and the Debian package
// each comes in.
var tools = map[string]string{
	"mksquashfs": "squashfs-tools", "ubinize": "mtd-utils", "mke2fs": "e2fsprogs",
	"mkimage": "u-boot-tools", "dumpimage": "u-boot-tools", "lzma_alone": "lzma-alone",
	"dtc": "device-tree-compiler", "fdtput": "device-tree-compiler", "fdtget": "device-tree-compiler",
}

// Input is what an image is made of.
type Input struct {
	Root string // the folder Root laid out
	// System is the system in Root whose kernel, initrd, cmdline and
	// device tree a boot image (uimage, fit) takes.
	System storepath.Path
	// DTB is a device tree file to boot instead of the system's
	// dtbs/<boot.deviceTree>; "" for the system's.
	DTB       string
	DiskBytes uint64 // an ext4 image's size; 0 for DefaultDiskBytes
}

// Result is what Make built.
type Result struct {
	Bytes uint64    // the image's size
	Boot  *BootInfo // what U-Boot boots in it; nil for the root alone
}

// Make packs root into file as plan says and returns the image's size:
// Build for an image of the root alone. diskBytes sizes an ext4 image (0:
// DefaultDiskBytes); log receives progress lines.
func Make(ctx context.Context, plan Plan, root, file string, diskBytes uint64, log func(string)) (uint64, error) {
	res, err := Build(ctx, plan, Input{Root: root, DiskBytes: diskBytes}, file, log)
	return res.Bytes, err
}

// Build packs in into file as plan says; log receives progress lines.
func Build(ctx context.Context, plan Plan, in Input, file string, log func(string)) (Result, error) {
	var res Result
	tmp, err := os.MkdirTemp(filepath.Dir(file), ".roost-image-")
	if err != nil {
		return res, fmt.Errorf("make a temporary folder beside %s: %w", file, err)
	}
	defer os.RemoveAll(tmp)
	out := filepath.Join(tmp, "image")
	sq := filepath.Join(tmp, "root.squashfs")
	switch plan.Kind {
	case KindSquashfs:
		err = Squashfs(ctx, in.Root, out, log)
	case KindUBI:
		if err = Squashfs(ctx, in.Root, sq, log); err == nil {
			err = UBI(ctx, sq, out, plan.Partition, plan.EraseBlockBytes, plan.PageBytes, log)
		}
	case KindUImage, KindFIT:
		res.Boot, err = makeBoot(ctx, plan, in, sq, out, tmp, log)
	case KindExt4:
		if in.DiskBytes == 0 {
			in.DiskBytes = DefaultDiskBytes
		}
		err = Ext4(ctx, in.Root, out, in.DiskBytes, log)
	default:
		err = fmt.Errorf("unknown image kind %q", plan.Kind)
	}
	if err != nil {
		return res, err
	}
	fi, err := os.Stat(out)
	if err != nil {
		return res, err
	}
	res.Bytes = uint64(fi.Size())
	if err := plan.Fits(res.Bytes); err != nil {
		return res, err
	}
	return res, commit(out, file)
}

// makeBoot builds the squashfs and the boot image around it into out.
func makeBoot(ctx context.Context, plan Plan, in Input, sq, out, tmp string, log func(string)) (*BootInfo, error) {
	if in.System == "" {
		return nil, fmt.Errorf("a %s image for board %s boots the system's kernel: say which system", plan.Kind, plan.Board)
	}
	parts, err := readBootParts(in.Root, in.System, plan.Boot, in.DTB)
	if err != nil {
		return nil, err
	}
	if err := Squashfs(ctx, in.Root, sq, log); err != nil {
		return nil, err
	}
	if plan.Kind == KindUImage {
		return UImage(ctx, plan, parts, sq, out, tmp, log)
	}
	return FIT(ctx, plan, parts, sq, out, tmp, log)
}

// commit syncs tmp and renames it to file, then syncs file's folder.
func commit(tmp, file string) error {
	f, err := os.OpenFile(tmp, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	if err := errors.Join(f.Sync(), f.Close()); err != nil {
		return fmt.Errorf("sync %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, file); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(file))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Squashfs packs root into file, xz-compressed, every file root's.
func Squashfs(ctx context.Context, root, file string, log func(string)) error {
	log(fmt.Sprintf("mksquashfs %s (xz)", root))
	return run(ctx, nil, "mksquashfs", root, file, "-comp", "xz", "-noappend", "-all-root", "-no-progress", "-quiet")
}

// UBI makes file a UBI image for a NAND of the given erase block and page
// sizes, holding one dynamic volume called volume with squashfs's bytes.
func UBI(ctx context.Context, squashfs, file, volume string, eraseBlock, page int, log func(string)) error {
	if eraseBlock <= 0 || page <= 0 {
		return fmt.Errorf("a UBI image needs the NAND's erase block and page sizes (boards.json's eraseBlockBytes, pageBytes)")
	}
	cfg := filepath.Join(filepath.Dir(file), "ubinize.cfg")
	// Dynamic, as OpenWrt makes its fit volume; no autoresize: the board's
	// other volumes (bootloader environment, recovery) keep their room.
	ini := fmt.Sprintf("[%s]\nmode=ubi\nimage=%s\nvol_id=0\nvol_type=dynamic\nvol_name=%s\n", volume, squashfs, volume)
	if err := os.WriteFile(cfg, []byte(ini), 0o644); err != nil {
		return err
	}
	log(fmt.Sprintf("ubinize volume %s (erase block %d, page %d)", volume, eraseBlock, page))
	return run(ctx, nil, "ubinize", "-o", file, "-p", fmt.Sprint(eraseBlock), "-m", fmt.Sprint(page), cfg)
}

// Ext4 makes file an ext4 image of size bytes holding root (mke2fs -d:
// no root privileges needed).
func Ext4(ctx context.Context, root, file string, size uint64, log func(string)) error {
	log(fmt.Sprintf("mke2fs -t ext4 -d %s (%d MiB)", root, size>>20))
	return run(ctx, nil, "mke2fs", "-q", "-t", "ext4", "-L", "roost", "-d", root, file, fmt.Sprintf("%dk", size>>10))
}

// run runs a tool with env added to its environment, saying which Debian
// package to install if it is missing.
func run(ctx context.Context, env []string, tool string, args ...string) error {
	path, err := lookPath(tool, []string{"/usr/sbin", "/sbin"})
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, path, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", tool, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// lookPath finds tool in PATH or the sbin folders, where Debian puts
// mke2fs and which a user's PATH often lacks.
func lookPath(tool string, sbin []string) (string, error) {
	if p, err := exec.LookPath(tool); err == nil {
		return p, nil
	}
	for _, d := range sbin {
		if p, err := exec.LookPath(filepath.Join(d, tool)); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s is not installed: install Debian's %s (apt-get install %s)", tool, tools[tool], tools[tool])
}
