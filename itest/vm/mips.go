package vm

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// MIPSKernelDir is where make vmdeps unpacks Debian's linux-image-*-4kc-malta
// (mipsel): a router's kernel, with nf_tables, nfnetlink and xfrm_user as
// modules that nothing loads.
const MIPSKernelDir = "/var/cache/roost-vm/mipsel"

// MIPSKernel finds the newest malta kernel image in MIPSKernelDir.
func MIPSKernel() (string, error) {
	images, _ := filepath.Glob(filepath.Join(MIPSKernelDir, "boot", "vmlinuz-*-4kc-malta"))
	if len(images) == 0 {
		return "", fmt.Errorf("no 4kc-malta kernel in %s/boot: make vmdeps unpacks Debian's linux-image-4kc-malta (mipsel) there", MIPSKernelDir)
	}
	sort.Strings(images)
	return images[len(images)-1], nil
}

// File is a file in the initramfs.
type File struct {
	Name string // path, relative to the root
	Data []byte
	Perm uint32
}

// MIPSOptions say what the malta VM boots. Nothing is shared with the host
// (another architecture): the initramfs is the whole system, and the
// console is the only way out.
type MIPSOptions struct {
	Init    []byte // the /init program: a static mipsle binary
	Files   []File
	Memory  int           // MiB; default 64, a small router's
	Timeout time.Duration // default 5 minutes
	Console io.Writer     // the console, as it comes
}

// RunMIPS boots Debian's 4kc-malta kernel on QEMU's malta board (a 24Kc:
// MIPS32r2 without an FPU, as in many routers) with an initramfs of Init
// and Files, and returns the console once the VM powers off.
func RunMIPS(ctx context.Context, o MIPSOptions) (string, error) {
	image, err := MIPSKernel()
	if err != nil {
		return "", err
	}
	if o.Memory == 0 {
		o.Memory = 64
	}
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Minute
	}
	dir, err := os.MkdirTemp("", "roost-mips-vm-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	initrd := filepath.Join(dir, "initrd.cpio.gz")
	archive, err := mipsInitramfs(o.Init, o.Files)
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(initrd, archive, 0o644); err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	// -vga none and -nic none: the malta board's default VGA and NIC
	// want option ROMs that Debian's QEMU packages do not all ship.
	// -no-reboot: the board resets where a PC would power off.
	qemu := exec.CommandContext(ctx, "qemu-system-mipsel",
		"-M", "malta", "-cpu", "24Kc", "-m", strconv.Itoa(o.Memory),
		"-vga", "none", "-nographic", "-nic", "none", "-no-reboot",
		"-kernel", image, "-initrd", initrd,
		"-append", "console=ttyS0 panic=-1 quiet")
	var console bytes.Buffer
	w := io.Writer(&console)
	if o.Console != nil {
		w = io.MultiWriter(&console, o.Console)
	}
	qemu.Stdout, qemu.Stderr = w, w
	err = qemu.Run()
	if ctx.Err() != nil {
		return console.String(), fmt.Errorf("the MIPS VM did not power off within %s:\n%s", o.Timeout, tail(console.String(), 40))
	}
	if err != nil {
		return console.String(), fmt.Errorf("qemu-system-mipsel: %v\n%s", err, tail(console.String(), 40))
	}
	return console.String(), nil
}

// mipsInitramfs is a gzipped newc archive of init and files, with the
// folders they are in (the kernel makes none).
func mipsInitramfs(init []byte, files []File) ([]byte, error) {
	if len(init) == 0 {
		return nil, errors.New("no /init program")
	}
	a := &cpioWriter{}
	made := map[string]bool{}
	var mkdir func(d string)
	mkdir = func(d string) {
		if d == "." || d == "/" || made[d] {
			return
		}
		mkdir(path.Dir(d))
		made[d] = true
		a.dir(d)
	}
	a.file("init", init, 0o755)
	for _, f := range files {
		name := path.Clean(f.Name)
		if path.IsAbs(name) || name == "init" || name == ".." || strings.HasPrefix(name, "../") {
			return nil, fmt.Errorf("initramfs file %q: want a relative path other than init", f.Name)
		}
		mkdir(path.Dir(name))
		a.file(name, f.Data, f.Perm)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	if _, err := zw.Write(a.close()); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return gz.Bytes(), nil
}
