package itest

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/roostrouter/roost/itest/vm"
	"github.com/roostrouter/roost/updater/kexec"
)

// The kexec and watchdog tests boot QEMU straight from a kernel and an
// initramfs whose /init is kexecinit (itest/vm/cmd/kexecinit): it drives
// updater/kexec and updater/watchdog on the real kernel and says what
// happened on the console. See docs/kexec.md.

// buildKexecInit builds kexecinit for goarch, stripped as a router's build is.
func buildKexecInit(t *testing.T, goarch string) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "init")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, "./itest/vm/cmd/kexecinit")
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+goarch, "GOMIPS=softfloat")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build kexecinit for %s: %v\n%s", goarch, err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func initramfs(t *testing.T, init []byte, files ...vm.File) []byte {
	t.Helper()
	b, err := vm.Initramfs(init, files)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func readFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func marker(t *testing.T) string {
	b := make([]byte, 6)
	rand.Read(b)
	return "m" + hex.EncodeToString(b)
}

func startDirect(t *testing.T, o vm.DirectOptions) (*vm.Direct, *timedConsole) {
	t.Helper()
	c := newTimedConsole()
	o.Console = c
	d, err := vm.StartDirect(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		d.Wait(time.Hour)
		c.mu.Lock()
		c.ended = true
		c.mu.Unlock()
	}()
	t.Cleanup(func() {
		d.Kill()
		if t.Failed() {
			t.Logf("the VM's console:\n%s\nQMP events: %v", c.String(), d.Events())
		}
	})
	return d, c
}

// needX86 skips (or fails, in CI) without QEMU and Debian's amd64 kernel.
func needX86(t *testing.T) (image, version string) {
	t.Helper()
	need(t, "qemu-system-x86_64", "go")
	image, version, err := vm.Kernel()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(err)
		}
		t.Skipf("SKIPPED: %v", err)
	}
	return image, version
}

// TestKexecInVM: Debian's amd64 kernel boots kexecinit, which loads the
// same kernel with kexec_file_load (updater/kexec), a second initramfs
// and a command line with a marker, and kexecs into it; the second boot
// says the marker.
func TestKexecInVM(t *testing.T) {
	image, _ := needX86(t)
	init := buildKexecInit(t, "amd64")
	m := marker(t)
	second := initramfs(t, init)
	first := initramfs(t, init,
		vm.File{Name: "kexec/kernel", Data: readFile(t, image), Perm: 0o644},
		vm.File{Name: "kexec/initrd", Data: second, Perm: 0o644},
		vm.File{Name: "kexec/cmdline", Data: []byte("console=ttyS0 panic=-1 quiet kexectest=marker roost.marker=" + m), Perm: 0o644})
	d, c := startDirect(t, vm.DirectOptions{Arch: "x86_64", Kernel: image, Initrd: first, NoReboot: true,
		Append: "console=ttyS0 panic=-1 quiet kexectest=kexec"})
	_, boot1 := c.waitFor(t, "init started: kexectest=kexec", 0, 3*time.Minute)
	loaded, loadedAt := c.waitFor(t, "LOADED in", 0, time.Minute)
	_, boot2 := c.waitFor(t, "init started: kexectest=marker", 0, 2*time.Minute)
	booted, bootedAt := c.waitFor(t, "BOOTED marker=", 0, time.Minute)
	if !strings.HasSuffix(booted, "marker="+m) {
		t.Fatalf("the second boot says %q, want marker %s", booted, m)
	}
	if err := d.Wait(time.Minute); err != nil {
		t.Fatalf("QEMU after the second boot's power off: %v", err)
	}
	t.Logf("from QEMU's start: first init %.1f s; loaded %.1f s (%s); second init %.1f s; marker %.1f s: kexec to second init %.1f s",
		boot1.Seconds(), loadedAt.Seconds(), strings.TrimSpace(loaded[strings.Index(loaded, "LOADED"):strings.Index(loaded, ";")]),
		boot2.Seconds(), bootedAt.Seconds(), (boot2 - loadedAt).Seconds())
}

// watchdogModules are the x86 kernel's watchdog modules as kexecinit's
// /modules list loads them, with params for each.
func watchdogModules(t *testing.T, version string, core, esb string) []vm.File {
	t.Helper()
	dir := filepath.Join("/lib/modules", version, "kernel/drivers/watchdog")
	return []vm.File{
		{Name: "lib/modules/watchdog.ko", Data: readFile(t, filepath.Join(dir, "watchdog.ko")), Perm: 0o644},
		{Name: "lib/modules/i6300esb.ko", Data: readFile(t, filepath.Join(dir, "i6300esb.ko")), Perm: 0o644},
		{Name: "modules", Data: []byte("lib/modules/watchdog.ko " + core + "\nlib/modules/i6300esb.ko " + esb + "\n"), Perm: 0o644},
	}
}

// watchdogReset is when QEMU reported the watchdog firing (QMP's
// WATCHDOG event) and with which action.
func watchdogReset(t *testing.T, d *vm.Direct, within time.Duration) (time.Duration, string) {
	t.Helper()
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		for _, e := range d.Events() {
			if e.Name == "WATCHDOG" {
				return e.At, string(e.Data)
			}
		}
	}
	t.Fatalf("QEMU reported no WATCHDOG event within %s; events %v", within, d.Events())
	return 0, ""
}

// TestWatchdogInVM: QEMU's i6300esb with the action "reset", driven by
// updater/watchdog on Debian's kernel.
func TestWatchdogInVM(t *testing.T) {
	image, version := needX86(t)
	init := buildKexecInit(t, "amd64")

	// A Ratchet whose health check never passes feeds through the grace
	// (6 s of uptime) and stops: the watchdog (4 s) resets the machine,
	// and the next boot reads WDIOF_CARDRESET from the driver.
	t.Run("reset after the last feed", func(t *testing.T) {
		d, c := startDirect(t, vm.DirectOptions{Arch: "x86_64", Kernel: image, Watchdog: true,
			Initrd: initramfs(t, init, watchdogModules(t, version, "", "")...),
			Append: "console=ttyS0 panic=-1 quiet kexectest=watchdog kexectest.timeout=4 kexectest.grace=6"})
		c.waitFor(t, "watchdog timeout set to 4s, reads back 4s", 0, 3*time.Minute)
		last, stopAt := c.waitFor(t, "LAST FEED at", 0, time.Minute)
		lastAt := c.lastBefore(t, "fed: <nil>", stopAt)
		resetAt, action := watchdogReset(t, d, time.Minute)
		_, seenAt := c.waitFor(t, "WATCHDOG RESET SEEN", 0, 2*time.Minute)
		if err := d.Wait(time.Minute); err != nil {
			t.Fatalf("QEMU after the power off: %v", err)
		}
		if !strings.Contains(action, `"reset"`) || resetAt < lastAt {
			t.Fatalf("WATCHDOG event %s at %s, the last feed at %s", action, resetAt, lastAt)
		}
		t.Logf("%s; QEMU's WATCHDOG event %s %.2f s after the last feed (%.1f s from start); the next boot saw the reset at %.1f s",
			strings.TrimSpace(last[strings.Index(last, "LAST"):]), action, (resetAt - lastAt).Seconds(), resetAt.Seconds(), seenAt.Seconds())
	})

	// The board's parameters keep the watchdog armed across kexec
	// (i6300esb.nowayout=1 watchdog.stop_on_reboot=0, given to the
	// modules as init loads them); the new kernel loads the driver again
	// but nothing opens /dev/watchdog (an init that never starts roostd):
	// the watchdog resets the machine into the first kernel.
	t.Run("armed across kexec", func(t *testing.T) {
		m := marker(t)
		mods := watchdogModules(t, version, "stop_on_reboot=0", "nowayout=1 heartbeat=10")
		second := initramfs(t, init, mods...)
		first := initramfs(t, init, append(mods,
			vm.File{Name: "kexec/kernel", Data: readFile(t, image), Perm: 0o644},
			vm.File{Name: "kexec/initrd", Data: second, Perm: 0o644},
			vm.File{Name: "kexec/cmdline", Data: []byte("console=ttyS0 panic=-1 quiet kexectest=marker kexectest.idle=1 kexectest.nowatchdog=1 roost.marker=" + m), Perm: 0o644})...)
		d, c := startDirect(t, vm.DirectOptions{Arch: "x86_64", Kernel: image, Watchdog: true, Initrd: first,
			Append: "console=ttyS0 panic=-1 quiet kexectest=watchdog-kexec kexectest.timeout=10"})
		_, fedAt := c.waitFor(t, "watchdog timeout set to 10s", 0, 3*time.Minute)
		_, loadedAt := c.waitFor(t, "LOADED in", 0, time.Minute)
		_, bootedAt := c.waitFor(t, "BOOTED marker="+m, 0, 2*time.Minute)
		_, probeAt := c.waitFor(t, "module lib/modules/i6300esb.ko", 1, time.Minute)
		resetAt, action := watchdogReset(t, d, time.Minute)
		_, seenAt := c.waitFor(t, "WATCHDOG RESET SEEN", 0, 2*time.Minute)
		if err := d.Wait(time.Minute); err != nil {
			t.Fatalf("QEMU after the power off: %v", err)
		}
		if resetAt < bootedAt {
			t.Fatalf("the watchdog fired at %s, before the kexec'd kernel booted (%s)", resetAt, bootedAt)
		}
		t.Logf("armed and fed at %.1f s, kexec loaded %.1f s, second kernel's init said its marker at %.1f s and loaded i6300esb at %.1f s; QEMU's WATCHDOG event %s at %.1f s (%.1f s after the driver's probe reloaded it, %.1f s after the last feed by the first kernel); the next boot saw the reset at %.1f s",
			fedAt.Seconds(), loadedAt.Seconds(), bootedAt.Seconds(), probeAt.Seconds(), action, resetAt.Seconds(), (resetAt - probeAt).Seconds(), (resetAt - fedAt).Seconds(), seenAt.Seconds())
	})
}

// TestWatchdogParamsInVM is the counter-test of "armed across kexec":
// the same boot with i6300esb.nowayout=1 and watchdog.stop_on_reboot=0 on
// both kernels' command lines only, as a board's cmdline would carry them,
// and the modules loaded with finit_module and no parameters, as roostd
// init loads them. The kernel applies "module.param=" from its command
// line to built-in code only (modprobe is what reads /proc/cmdline for
// loadable modules), so the kexec'd kernel's driver disarms the watchdog
// as it probes, exactly as with no parameters at all: a trial whose init
// never starts the agent would hang for good.
func TestWatchdogParamsInVM(t *testing.T) {
	image, version := needX86(t)
	init := buildKexecInit(t, "amd64")
	m := marker(t)
	const params = " i6300esb.nowayout=1 i6300esb.heartbeat=10 watchdog.stop_on_reboot=0"
	mods := watchdogModules(t, version, "", "")
	second := initramfs(t, init, mods...)
	first := initramfs(t, init, append(mods,
		vm.File{Name: "kexec/kernel", Data: readFile(t, image), Perm: 0o644},
		vm.File{Name: "kexec/initrd", Data: second, Perm: 0o644},
		vm.File{Name: "kexec/cmdline", Data: []byte("console=ttyS0 panic=-1 quiet kexectest=marker kexectest.idle=1 kexectest.nowatchdog=1 roost.marker=" + m + params), Perm: 0o644})...)
	d, c := startDirect(t, vm.DirectOptions{Arch: "x86_64", Kernel: image, Watchdog: true, Initrd: first,
		Append: "console=ttyS0 panic=-1 quiet kexectest=watchdog-kexec kexectest.timeout=10" + params})
	_, fedAt := c.waitFor(t, "watchdog timeout set to 10s", 0, 3*time.Minute)
	c.waitFor(t, "BOOTED marker="+m, 0, 2*time.Minute)
	_, probeAt := c.waitFor(t, "module lib/modules/i6300esb.ko", 1, time.Minute)
	time.Sleep(40 * time.Second)
	for _, e := range d.Events() {
		if e.Name == "WATCHDOG" || e.Name == "RESET" {
			t.Fatalf("the watchdog fired: the command line's parameters reached the modules after all: %v", e)
		}
	}
	t.Logf("parameters on the command line only: fed at %.1f s, the kexec'd kernel probed the driver at %.1f s, and 40 s later (more than the driver's default 30 s) nothing had reset it: disarmed", fedAt.Seconds(), probeAt.Seconds())
}

// mipsModules are the malta kernel's watchdog modules: softdog stands in
// for a hardware watchdog (the malta board has none).
func mipsModules(t *testing.T) []vm.File {
	t.Helper()
	dirs, _ := filepath.Glob(filepath.Join(vm.MIPSKernelDir, "lib/modules/*/kernel/drivers/watchdog"))
	if len(dirs) == 0 {
		t.Fatalf("no watchdog modules under %s", vm.MIPSKernelDir)
	}
	dir := dirs[len(dirs)-1]
	return []vm.File{
		{Name: "lib/modules/watchdog.ko", Data: readFile(t, filepath.Join(dir, "watchdog.ko")), Perm: 0o644},
		{Name: "lib/modules/softdog.ko", Data: readFile(t, filepath.Join(dir, "softdog.ko")), Perm: 0o644},
		{Name: "modules", Data: []byte("lib/modules/watchdog.ko\nlib/modules/softdog.ko\n"), Perm: 0o644},
	}
}

func needMIPS(t *testing.T) string {
	t.Helper()
	need(t, "qemu-system-mipsel", "go")
	image, err := vm.MIPSKernel()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(err)
		}
		t.Skipf("SKIPPED: %v", err)
	}
	return image
}

// TestKexecMIPSInVM: Debian's 4kc-malta kernel boots kexecinit on QEMU's
// malta (64 MiB), which builds kexec_load segments for the same kernel
// (updater/kexec: its ELF, an initramfs, a command line with a marker)
// from the kernel's own /proc/iomem and loads them. This SMP kernel
// refuses every kexec_load on a malta without CPS (see docs/kexec.md):
// the test then wants exactly that refusal, EINVAL, and goes on to the
// watchdog part, softdog driven by updater/watchdog with MIPS's ioctl
// numbers, which resets the board once the ratchet stops feeding it.
// Should the kernel take the segments, the test wants the second boot's
// marker instead.
func TestKexecMIPSInVM(t *testing.T) {
	image := needMIPS(t)
	init := buildKexecInit(t, "mipsle")
	m := marker(t)
	second := initramfs(t, init)
	first := initramfs(t, init, append(mipsModules(t),
		vm.File{Name: "kexec/kernel", Data: readFile(t, image), Perm: 0o644},
		vm.File{Name: "kexec/initrd", Data: second, Perm: 0o644},
		vm.File{Name: "kexec/cmdline", Data: []byte("console=ttyS0 panic=-1 kexectest=marker roost.marker=" + m), Perm: 0o644})...)
	d, c := startDirect(t, vm.DirectOptions{Arch: "mipsel", Kernel: image, Initrd: first, NoReboot: true,
		Append: "console=ttyS0 panic=-1 quiet kexectest=kexec-or-watchdog kexectest.timeout=4 kexectest.grace=6"})
	_, boot1 := c.waitFor(t, "init started: kexectest=kexec-or-watchdog", 0, 3*time.Minute)
	ram, _ := c.waitFor(t, "system RAM", 0, time.Minute)
	t.Logf("the malta kernel's %s", ram[strings.Index(ram, "system RAM"):])
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if _, _, ok := c.find("LOADED in", 0); ok {
			break
		}
		if _, _, ok := c.find("KEXEC REFUSED", 0); ok {
			break
		}
	}
	if l, loadedAt, ok := c.find("LOADED in", 0); ok {
		booted, bootedAt := c.waitFor(t, "BOOTED marker=", 0, 3*time.Minute)
		if !strings.HasSuffix(booted, m) {
			t.Fatalf("the second boot says %q, want marker %s", booted, m)
		}
		t.Logf("kexec_load took the segments: %s; first init %.1f s, loaded %.1f s, marker %.1f s", l, boot1.Seconds(), loadedAt.Seconds(), bootedAt.Seconds())
		return
	}
	refused, _ := c.waitFor(t, "KEXEC REFUSED", 0, time.Second)
	if !strings.Contains(refused, "kexec_load (3 segments, entry ") || !strings.Contains(refused, "invalid argument") {
		t.Fatalf("kexec_load refused with %q, want EINVAL from machine_kexec_prepare (SMP without kexec support for secondary CPUs)", refused)
	}
	t.Logf("as expected on this kernel: %s", refused[strings.Index(refused, "KEXEC REFUSED"):])
	c.waitFor(t, "watchdog timeout set to 4s, reads back 4s", 0, time.Minute)
	_, stopAt := c.waitFor(t, "LAST FEED at", 0, time.Minute)
	lastFed := c.lastBefore(t, "fed: <nil>", stopAt)
	if err := d.Wait(time.Minute); err != nil {
		t.Fatalf("QEMU after softdog's reset: %v", err)
	}
	reset := resetEvent(t, d)
	if reset.At < lastFed {
		t.Fatalf("reset %v before the last feed %s", reset, lastFed)
	}
	t.Logf("softdog (MIPS ioctls): last feed at %.1f s, the board reset %.2f s later (%v)", lastFed.Seconds(), (reset.At - lastFed).Seconds(), reset)
}

// lastBefore is when the last line holding s came before t0.
func (c *timedConsole) lastBefore(t *testing.T, s string, t0 time.Duration) time.Duration {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	var at time.Duration = -1
	for i, l := range c.lines {
		if c.at[i] <= t0 && strings.Contains(l, s) {
			at = c.at[i]
		}
	}
	if at < 0 {
		t.Fatalf("no %q on the console before %s", s, t0)
	}
	return at
}

// resetEvent is QEMU's report of the guest's reset (with -no-reboot, a
// SHUTDOWN whose reason is guest-reset).
func resetEvent(t *testing.T, d *vm.Direct) vm.Event {
	t.Helper()
	for _, e := range d.Events() {
		if e.Name == "RESET" || e.Name == "SHUTDOWN" && strings.Contains(string(e.Data), "guest-reset") {
			return e
		}
	}
	t.Fatalf("QEMU reported no reset: events %v", d.Events())
	return vm.Event{}
}

// TestKexecMIPSSegmentsInVM boots what MIPSImage builds where kexec_load
// is refused: QEMU plays the part of the kernel's relocate_new_kernel. The
// segments (Debian's malta kernel, the initramfs, the setup stub with argv
// and envp) become the PT_LOADs of an ELF that QEMU's malta loads at their
// physical addresses, entered at the image's entry, as kexec would after
// copying them; the kernel must come up with the image's command line and
// find its initramfs through rd_start/rd_size.
func TestKexecMIPSSegmentsInVM(t *testing.T) {
	image := needMIPS(t)
	init := buildKexecInit(t, "mipsle")
	m := marker(t)
	// The malta kernel's /proc/iomem with 64 MiB (TestKexecMIPSInVM logs it).
	ram := []kexec.Range{{Start: 0, End: 64 << 20}}
	img, err := kexec.MIPSImage(kexec.MIPSOptions{Kernel: readFile(t, image), Initrd: initramfs(t, init),
		Cmdline: "console=ttyS0 panic=-1 quiet kexectest=marker roost.marker=" + m, RAM: ram})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range img.Segments {
		t.Logf("segment %s", s)
	}
	elf := filepath.Join(t.TempDir(), "segments.elf")
	if err := os.WriteFile(elf, segmentsELF(img), 0o644); err != nil {
		t.Fatal(err)
	}
	d, c := startDirect(t, vm.DirectOptions{Arch: "mipsel", Kernel: elf, NoReboot: true, Append: "console=ttyS0 wrong=1"})
	started, _ := c.waitFor(t, "init started", 0, 3*time.Minute)
	ramLine, _ := c.waitFor(t, "system RAM", 0, time.Minute)
	booted, bootedAt := c.waitFor(t, "BOOTED marker=", 0, time.Minute)
	if !strings.HasSuffix(booted, m) {
		t.Fatalf("the kernel says %q, want marker %s", booted, m)
	}
	// QEMU's own arguments (wrong=1) are overridden by the stub's; the
	// initramfs came through rd_start/rd_size; memsize through envp
	// (without it the kernel assumes 32 MiB).
	rd := img.Segments[1]
	if strings.Contains(started, "wrong=1") || !strings.Contains(started, fmt.Sprintf("rd_start=%#x rd_size=%d", 0x80000000|rd.Mem, len(rd.Buf))) {
		t.Errorf("the kernel's command line: %s", started)
	}
	if !strings.HasSuffix(ramLine, "system RAM [0x0-0x4000000]") {
		t.Errorf("the kernel's memory: %s, want 64 MiB from the envp's memsize", ramLine)
	}
	if err := d.Wait(time.Minute); err != nil {
		t.Fatalf("QEMU after the power off: %v", err)
	}
	t.Logf("the kernel in the segments booted with their command line, memory size and initramfs: %s at %.1f s; %s", booted[strings.Index(booted, "BOOTED"):], bootedAt.Seconds(), started[strings.Index(started, "/proc/cmdline"):])
}

// segmentsELF is a little-endian ELF32 MIPS executable with a PT_LOAD for
// each segment and the image's entry, in KSEG0.
func segmentsELF(img *kexec.Image) []byte {
	const ehsize, phsize = 52, 32
	le := binary.LittleEndian
	off := uint32(ehsize + phsize*len(img.Segments))
	b := make([]byte, off)
	copy(b, "\x7fELF\x01\x01\x01")
	le.PutUint16(b[16:], 2)
	le.PutUint16(b[18:], 8) // EM_MIPS
	le.PutUint32(b[20:], 1)
	le.PutUint32(b[24:], uint32(0x80000000|img.Entry))
	le.PutUint32(b[28:], ehsize)
	le.PutUint16(b[40:], ehsize)
	le.PutUint16(b[42:], phsize)
	le.PutUint16(b[44:], uint16(len(img.Segments)))
	for i, s := range img.Segments {
		ph := b[ehsize+phsize*i:]
		le.PutUint32(ph, 1) // PT_LOAD
		le.PutUint32(ph[4:], uint32(len(b)))
		le.PutUint32(ph[8:], uint32(0x80000000|s.Mem))
		le.PutUint32(ph[12:], uint32(s.Mem))
		le.PutUint32(ph[16:], uint32(len(s.Buf)))
		le.PutUint32(ph[20:], uint32(s.Memsz))
		le.PutUint32(ph[24:], 7)
		le.PutUint32(ph[28:], 4096)
		b = append(b, s.Buf...)
	}
	return b
}
