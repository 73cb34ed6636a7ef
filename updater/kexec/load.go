package kexec

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Kernel is what Load loads: files on the router.
type Kernel struct {
	Kernel  string // bzImage (amd64), Image or Image.gz (arm64), ELF (MIPS), zImage (ARM)
	Initrd  string // optional
	Cmdline string
	// DTB is the device tree for ARM; default: the running kernel's,
	// /sys/firmware/fdt, with /chosen rewritten.
	DTB string
	// MIPSEnv is the firmware environment for MIPS (see MIPSOptions.Env).
	MIPSEnv []string
}

// Load loads k as the kernel that Exec starts, the way this architecture
// can: kexec_file_load where the kernel parses the image itself (amd64,
// arm64), else kexec_load with segments built here (mips, mipsle, mips64,
// mips64le, arm).
func Load(k Kernel) error {
	switch runtime.GOARCH {
	case "amd64", "arm64":
		return loadFile(k)
	case "mips", "mipsle", "mips64", "mips64le":
		return loadMIPS(k)
	case "arm":
		return loadARM(k)
	}
	return fmt.Errorf("kexec: no loader for %s", runtime.GOARCH)
}

func loadFile(k Kernel) error {
	kf, err := os.Open(k.Kernel)
	if err != nil {
		return fmt.Errorf("kexec: %w", err)
	}
	defer kf.Close()
	kfd, err := plainKernelFd(kf)
	if err != nil {
		return err
	}
	if kfd != int(kf.Fd()) {
		defer unix.Close(kfd)
	}
	initrdFd, flags := -1, 0
	if k.Initrd == "" {
		flags |= unix.KEXEC_FILE_NO_INITRAMFS
	} else {
		f, err := os.Open(k.Initrd)
		if err != nil {
			return fmt.Errorf("kexec: %w", err)
		}
		defer f.Close()
		initrdFd = int(f.Fd())
	}
	if err := kexecFileLoad(kfd, initrdFd, k.Cmdline, flags); err != nil {
		return fmt.Errorf("kexec_file_load %s (initrd %q, command line %q): %w%s", k.Kernel, k.Initrd, k.Cmdline, err, hint(err))
	}
	return nil
}

// plainKernelFd is kf, or, for a gzip-compressed arm64 Image (which
// kexec_file_load does not unpack), a memfd with it uncompressed.
func plainKernelFd(kf *os.File) (int, error) {
	magic := make([]byte, 2)
	if _, err := kf.ReadAt(magic, 0); err != nil || !bytes.Equal(magic, []byte{0x1f, 0x8b}) {
		return int(kf.Fd()), nil
	}
	zr, err := gzip.NewReader(kf)
	if err != nil {
		return -1, fmt.Errorf("kexec: %s: %w", kf.Name(), err)
	}
	fd, err := unix.MemfdCreate("kexec-kernel", unix.MFD_CLOEXEC)
	if err != nil {
		return -1, fmt.Errorf("kexec: memfd for the unpacked kernel: %w", err)
	}
	mf := os.NewFile(uintptr(fd), "kexec-kernel")
	if _, err := io.Copy(mf, io.LimitReader(zr, 256<<20)); err != nil {
		mf.Close()
		return -1, fmt.Errorf("kexec: unpack %s: %w", kf.Name(), err)
	}
	nfd, err := unix.Dup(fd)
	mf.Close()
	return nfd, err
}

func loadMIPS(k Kernel) error {
	kernel, initrd, ram, err := readParts(k)
	if err != nil {
		return err
	}
	img, err := MIPSImage(MIPSOptions{Kernel: kernel, Initrd: initrd, Cmdline: k.Cmdline, Env: k.MIPSEnv, RAM: ram, PageSize: uint64(os.Getpagesize())})
	if err != nil {
		return fmt.Errorf("kexec %s: %w", k.Kernel, err)
	}
	return LoadSegments(img)
}

func loadARM(k Kernel) error {
	kernel, initrd, ram, err := readParts(k)
	if err != nil {
		return err
	}
	dtbFile := k.DTB
	if dtbFile == "" {
		dtbFile = "/sys/firmware/fdt"
	}
	dtb, err := os.ReadFile(dtbFile)
	if err != nil {
		return fmt.Errorf("kexec: the device tree: %w", err)
	}
	img, err := ARMImage(ARMOptions{ZImage: kernel, DTB: dtb, Initrd: initrd, Cmdline: k.Cmdline, RAM: ram, PageSize: uint64(os.Getpagesize())})
	if err != nil {
		return fmt.Errorf("kexec %s: %w", k.Kernel, err)
	}
	return LoadSegments(img)
}

func readParts(k Kernel) (kernel, initrd []byte, ram []Range, err error) {
	if kernel, err = os.ReadFile(k.Kernel); err != nil {
		return nil, nil, nil, fmt.Errorf("kexec: %w", err)
	}
	if k.Initrd != "" {
		if initrd, err = os.ReadFile(k.Initrd); err != nil {
			return nil, nil, nil, fmt.Errorf("kexec: %w", err)
		}
	}
	if ram, err = SystemRAM(); err != nil {
		return nil, nil, nil, fmt.Errorf("kexec: system RAM: %w", err)
	}
	return kernel, initrd, ram, nil
}

// kexecSegment is the kernel's struct kexec_segment: pointers and sizes
// of the native word size.
type kexecSegment struct {
	buf   unsafe.Pointer
	bufsz uintptr
	mem   uintptr
	memsz uintptr
}

// LoadSegments hands img to kexec_load. Its segments must obey Check
// for the running kernel (MIPSImage and ARMImage check them).
func LoadSegments(img *Image) error {
	segs := make([]kexecSegment, len(img.Segments))
	for i, s := range img.Segments {
		if s.Mem != uint64(uintptr(s.Mem)) || s.Memsz != uint64(uintptr(s.Memsz)) {
			return fmt.Errorf("kexec segment %s: beyond this architecture's addresses", s)
		}
		segs[i] = kexecSegment{bufsz: uintptr(len(s.Buf)), mem: uintptr(s.Mem), memsz: uintptr(s.Memsz)}
		if len(s.Buf) > 0 {
			segs[i].buf = unsafe.Pointer(&s.Buf[0])
		}
	}
	_, _, errno := unix.Syscall6(unix.SYS_KEXEC_LOAD, uintptr(img.Entry), uintptr(len(segs)),
		uintptr(unsafe.Pointer(&segs[0])), 0 /* KEXEC_ARCH_DEFAULT */, 0, 0)
	runtime.KeepAlive(segs)
	runtime.KeepAlive(img)
	if errno != 0 {
		return fmt.Errorf("kexec_load (%d segments, entry %#x): %w%s", len(segs), img.Entry, errno, hint(errno))
	}
	return nil
}

// hint says what a kexec error usually means.
func hint(err error) string {
	switch {
	case errors.Is(err, unix.EPERM):
		return " (kexec needs CAP_SYS_BOOT, and kernel.kexec_load_disabled must be 0)"
	case errors.Is(err, unix.ENOSYS):
		return " (the kernel was built without this kexec system call)"
	case errors.Is(err, unix.EBUSY):
		return " (a kexec image is loaded already, or is being loaded)"
	case errors.Is(err, unix.EINVAL) && (runtime.GOARCH == "mips" || runtime.GOARCH == "mipsle"):
		return " (on an SMP MIPS kernel whose CPU setup has no kexec support for secondary CPUs, such as Malta without CPS, machine_kexec_prepare refuses every image)"
	case errors.Is(err, unix.EKEYREJECTED) || errors.Is(err, unix.EBADMSG):
		return " (the kernel insists on a signed image: lockdown or KEXEC_SIG_FORCE)"
	}
	return ""
}

// Unload drops the loaded image.
func Unload() error {
	_, _, errno := unix.Syscall6(unix.SYS_KEXEC_LOAD, 0, 0, 0, 0, 0, 0)
	if errno != 0 {
		return fmt.Errorf("kexec unload: %w", errno)
	}
	return nil
}

// Loaded reports whether an image is loaded (/sys/kernel/kexec_loaded).
func Loaded() bool {
	b, err := os.ReadFile("/sys/kernel/kexec_loaded")
	return err == nil && bytes.HasPrefix(b, []byte("1"))
}

// Exec starts the loaded kernel: sync, then reboot(LINUX_REBOOT_CMD_KEXEC).
// It returns only on failure. The caller stops services and unmounts
// first, as for a reboot: the kernel shuts devices down, not processes.
func Exec() error {
	unix.Sync()
	err := unix.Reboot(unix.LINUX_REBOOT_CMD_KEXEC)
	if errors.Is(err, syscall.EINVAL) {
		return fmt.Errorf("reboot(KEXEC): %w (no kexec image is loaded)", err)
	}
	return fmt.Errorf("reboot(KEXEC): %w", err)
}
