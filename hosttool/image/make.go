package image

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// DefaultDiskBytes is the size of an ext4 image when none is asked for:
// room for the first system and a few upgrades beside it, as the VM
// tests' disks have (the file is sparse).
const DefaultDiskBytes = 512 << 20

// tools are the programs images are made with, and the Debian package
// each comes in.
var tools = map[string]string{"mksquashfs": "squashfs-tools", "ubinize": "mtd-utils", "mke2fs": "e2fsprogs"}

// Make packs root into file as plan says and returns the image's size.
// diskBytes sizes an ext4 image (0: DefaultDiskBytes); log receives
// progress lines.
func Make(ctx context.Context, plan Plan, root, file string, diskBytes uint64, log func(string)) (uint64, error) {
	dir := filepath.Dir(file)
	tmp, err := os.MkdirTemp(dir, ".roost-image-")
	if err != nil {
		return 0, fmt.Errorf("make a temporary folder beside %s: %w", file, err)
	}
	defer os.RemoveAll(tmp)
	out := filepath.Join(tmp, "image")
	switch plan.Kind {
	case KindSquashfs:
		err = Squashfs(ctx, root, out, log)
	case KindUBI:
		sq := filepath.Join(tmp, "root.squashfs")
		if err = Squashfs(ctx, root, sq, log); err == nil {
			err = UBI(ctx, sq, out, plan.Partition, plan.EraseBlockBytes, plan.PageBytes, log)
		}
	case KindExt4:
		if diskBytes == 0 {
			diskBytes = DefaultDiskBytes
		}
		err = Ext4(ctx, root, out, diskBytes, log)
	default:
		err = fmt.Errorf("unknown image kind %q", plan.Kind)
	}
	if err != nil {
		return 0, err
	}
	fi, err := os.Stat(out)
	if err != nil {
		return 0, err
	}
	size := uint64(fi.Size())
	if err := plan.Fits(size); err != nil {
		return size, err
	}
	return size, commit(out, file)
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
	return run(ctx, "mksquashfs", root, file, "-comp", "xz", "-noappend", "-all-root", "-no-progress", "-quiet")
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
	return run(ctx, "ubinize", "-o", file, "-p", fmt.Sprint(eraseBlock), "-m", fmt.Sprint(page), cfg)
}

// Ext4 makes file an ext4 image of size bytes holding root (mke2fs -d:
// no root privileges needed).
func Ext4(ctx context.Context, root, file string, size uint64, log func(string)) error {
	log(fmt.Sprintf("mke2fs -t ext4 -d %s (%d MiB)", root, size>>20))
	return run(ctx, "mke2fs", "-q", "-t", "ext4", "-L", "roost", "-d", root, file, fmt.Sprintf("%dk", size>>10))
}

// run runs a tool, saying which Debian package to install if it is missing.
func run(ctx context.Context, tool string, args ...string) error {
	path, err := lookPath(tool, []string{"/usr/sbin", "/sbin"})
	if err != nil {
		return err
	}
	out, err := exec.CommandContext(ctx, path, args...).CombinedOutput()
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
