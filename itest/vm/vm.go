// Package vm runs a command, usually a Go test function, inside a QEMU
// virtual machine with Debian's kernel, for what the host's kernel lacks
// (PPP, 802.1Q, kexec, a watchdog). The host's root is shared read-only
// over 9p under a tmpfs overlay, so Debian's tools and the test binary are
// there at their usual paths; the command's output and exit status come
// back through a second, writable 9p share.
package vm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// InsideEnv is set in the command's environment inside the VM.
const InsideEnv = "ROOST_IN_VM"

// Inside reports whether this process runs inside the VM.
func Inside() bool { return os.Getenv(InsideEnv) != "" }

// Options say what to run and how.
type Options struct {
	Command []string // program and arguments, as paths on the host
	Env     []string // KEY=value, added to a minimal environment
	Dir     string   // working folder (default: the host's current one)
	Modules []string // kernel modules to load before the command (modprobe)
	Memory  int      // MiB; default 1024
	CPUs    int      // default 2
	Timeout time.Duration
	Console io.Writer // the VM's console (kernel and command output), as it comes
}

// Kernel finds Debian's newest installed kernel: its image and version.
func Kernel() (image, version string, err error) {
	images, _ := filepath.Glob("/boot/vmlinuz-*")
	if len(images) == 0 {
		return "", "", errors.New("no kernel in /boot: install linux-image-amd64 (make vmdeps does)")
	}
	sort.Strings(images)
	image = images[len(images)-1]
	version = strings.TrimPrefix(filepath.Base(image), "vmlinuz-")
	if _, err := os.Stat(filepath.Join("/lib/modules", version, "modules.dep")); err != nil {
		return "", "", fmt.Errorf("kernel %s has no modules in /lib/modules: %w", version, err)
	}
	return image, version, nil
}

// Run boots the VM, runs the command and returns its exit status.
func Run(ctx context.Context, o Options) (int, error) {
	image, version, err := Kernel()
	if err != nil {
		return -1, err
	}
	if o.Memory == 0 {
		o.Memory = 1024
	}
	if o.CPUs == 0 {
		o.CPUs = 2
	}
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Minute
	}
	if o.Dir == "" {
		o.Dir, _ = os.Getwd()
	}
	out, err := os.MkdirTemp("", "roost-vm-")
	if err != nil {
		return -1, err
	}
	defer os.RemoveAll(out)
	initrd := filepath.Join(out, "initrd.cpio")
	if err := writeInitramfs(initrd, version, out); err != nil {
		return -1, fmt.Errorf("initramfs: %w", err)
	}
	if err := os.WriteFile(filepath.Join(out, "run.sh"), []byte(runScript(o, out)), 0o755); err != nil {
		return -1, err
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	qemu := exec.CommandContext(ctx, "qemu-system-x86_64",
		"-accel", "tcg", "-m", strconv.Itoa(o.Memory), "-smp", strconv.Itoa(o.CPUs),
		"-nodefaults", "-no-reboot", "-display", "none", "-serial", "stdio", "-nic", "none",
		"-kernel", image, "-initrd", initrd,
		"-append", "console=ttyS0 panic=-1 quiet loglevel=4",
		"-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
		"-virtfs", "local,path="+out+",mount_tag=out,security_model=none")
	var console bytes.Buffer
	w := io.Writer(&console)
	if o.Console != nil {
		w = io.MultiWriter(&console, o.Console)
	}
	qemu.Stdout, qemu.Stderr = w, w
	if err := qemu.Run(); err != nil && ctx.Err() == nil {
		return -1, fmt.Errorf("qemu: %v\n%s", err, tail(console.String(), 40))
	}
	b, err := os.ReadFile(filepath.Join(out, "exit"))
	if err != nil {
		if ctx.Err() != nil {
			return -1, fmt.Errorf("the VM did not finish within %s:\n%s", o.Timeout, tail(console.String(), 40))
		}
		return -1, fmt.Errorf("the VM stopped without the command's exit status:\n%s", tail(console.String(), 40))
	}
	code, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return -1, fmt.Errorf("exit status %q from the VM", b)
	}
	return code, nil
}

func tail(s string, lines int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(l[max(0, len(l)-lines):], "\n")
}

// runScript runs in the VM once the overlay root is in place: the file
// systems a Linux system has, the modules, then the command; its status
// goes to the out share and the VM powers off.
func runScript(o Options, out string) string {
	q := func(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
	var b strings.Builder
	b.WriteString("#!/bin/sh\n")
	// Not /tmp: the out share is mounted below it. The overlay makes it writable.
	b.WriteString("mount -t sysfs sysfs /sys; mount -t tmpfs tmpfs /run\n")
	b.WriteString("mkdir -p /dev/pts /dev/shm /run/netns; mount -t devpts devpts /dev/pts; mount -t tmpfs tmpfs /dev/shm\n")
	b.WriteString("ip link set lo up\n")
	if len(o.Modules) > 0 {
		fmt.Fprintf(&b, "modprobe -a %s\n", strings.Join(o.Modules, " "))
	}
	fmt.Fprintf(&b, "cd %s\n", q(o.Dir))
	fmt.Fprintf(&b, "env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TMPDIR=/tmp %s=1", InsideEnv)
	for _, e := range o.Env {
		b.WriteString(" " + q(e))
	}
	for _, a := range o.Command {
		b.WriteString(" " + q(a))
	}
	b.WriteString(" 2>&1\n")
	// poweroff -f is the reboot system call itself: nothing runs after it
	// that could find the host's root gone and end init (a kernel panic).
	fmt.Fprintf(&b, "echo $? > %s/exit\nsync\nexec /bin/busybox poweroff -f\n", q(out))
	return b.String()
}

// initScript is the initramfs's /init: load the 9p and overlay modules,
// mount the host's root read-only under a tmpfs overlay, mount the out
// share at its host path, and switch to the overlay to run run.sh.
const initScript = `#!/bin/busybox sh
B=/bin/busybox
$B mkdir -p /proc /dev /lower /rw /newroot
$B mount -t proc proc /proc
$B mount -t devtmpfs dev /dev
for m in $($B cat /modules/order); do $B insmod /modules/$m || echo "roost-vm: insmod $m failed"; done
$B mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,ro hostroot /lower || { echo "roost-vm: cannot mount the host's root"; $B poweroff -f; }
$B mount -t tmpfs tmpfs /rw
$B mkdir -p /rw/upper /rw/work
$B mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work /newroot || { echo "roost-vm: overlay failed"; $B poweroff -f; }
$B mkdir -p /newroot@OUT@
$B mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 out /newroot@OUT@ || { echo "roost-vm: cannot mount the out share"; $B poweroff -f; }
$B mount --move /proc /newroot/proc
$B mount --move /dev /newroot/dev
exec $B switch_root /newroot /bin/sh @OUT@/run.sh
`

// writeInitramfs writes a newc cpio archive with busybox, /init and the
// modules that mounting the root needs, in dependency order.
func writeInitramfs(file, version, out string) error {
	busybox, err := os.ReadFile("/bin/busybox")
	if err != nil {
		return fmt.Errorf("busybox-static: %w", err)
	}
	mods, err := moduleClosure(filepath.Join("/lib/modules", version), []string{"virtio_pci", "9pnet_virtio", "9p", "overlay"})
	if err != nil {
		return err
	}
	a := &cpioWriter{}
	for _, d := range []string{"bin", "modules"} {
		a.dir(d)
	}
	a.file("bin/busybox", busybox, 0o755)
	a.file("init", []byte(strings.ReplaceAll(initScript, "@OUT@", out)), 0o755)
	var order []string
	for _, m := range mods {
		data, err := readModule(m)
		if err != nil {
			return err
		}
		name := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(filepath.Base(m), ".xz"), ".zst"), ".gz")
		a.file("modules/"+name, data, 0o644)
		order = append(order, name)
	}
	a.file("modules/order", []byte(strings.Join(order, "\n")+"\n"), 0o644)
	return os.WriteFile(file, a.close(), 0o644)
}

// moduleClosure lists the module files for names and everything they
// depend on, dependencies first, from modules.dep. A name the kernel has
// built in (modules.builtin) needs no file.
func moduleClosure(base string, names []string) ([]string, error) {
	dep, err := os.ReadFile(filepath.Join(base, "modules.dep"))
	if err != nil {
		return nil, err
	}
	builtin, _ := os.ReadFile(filepath.Join(base, "modules.builtin"))
	deps := map[string][]string{} // module name → its file, then its dependencies' files
	byName := map[string]string{}
	for _, line := range strings.Split(string(dep), "\n") {
		file, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		deps[file] = strings.Fields(rest)
		byName[modName(file)] = file
	}
	var out []string
	seen := map[string]bool{}
	var visit func(file string)
	visit = func(file string) {
		if seen[file] {
			return
		}
		seen[file] = true
		for _, d := range deps[file] {
			visit(d)
		}
		out = append(out, filepath.Join(base, file))
	}
	for _, n := range names {
		file, ok := byName[strings.ReplaceAll(n, "-", "_")]
		if !ok {
			if bytes.Contains(builtin, []byte("/"+n+".ko")) {
				continue
			}
			return nil, fmt.Errorf("%s has no module %s", base, n)
		}
		visit(file)
	}
	return out, nil
}

func modName(file string) string {
	n := filepath.Base(file)
	n = n[:strings.Index(n, ".ko")]
	return strings.ReplaceAll(n, "-", "_")
}

// readModule reads a module file, decompressing it if it is compressed,
// since busybox's insmod takes plain ones.
func readModule(file string) ([]byte, error) {
	var tool string
	switch filepath.Ext(file) {
	case ".xz":
		tool = "xz"
	case ".zst":
		tool = "zstd"
	case ".gz":
		tool = "gzip"
	default:
		return os.ReadFile(file)
	}
	out, err := exec.Command(tool, "-dc", file).Output()
	if err != nil {
		return nil, fmt.Errorf("decompress %s: %w", file, err)
	}
	return out, nil
}

// ModuleFiles are the modules of kernel version that names need, their
// dependencies first, as an initramfs's files lib/modules/NAME.ko
// (decompressed) and its list "modules" in roostd init's format, each
// line with params[NAME] (names with '_', as the kernel has them).
func ModuleFiles(version string, names []string, params map[string]string) ([]File, error) {
	mods, err := moduleClosure(filepath.Join("/lib/modules", version), names)
	if err != nil {
		return nil, err
	}
	var files []File
	var list strings.Builder
	for _, m := range mods {
		data, err := readModule(m)
		if err != nil {
			return nil, err
		}
		name := modName(m)
		files = append(files, File{Name: "lib/modules/" + name + ".ko", Data: data, Perm: 0o644})
		fmt.Fprintf(&list, "lib/modules/%s.ko %s\n", name, params[name])
	}
	return append(files, File{Name: "modules", Data: []byte(list.String()), Perm: 0o644}), nil
}
