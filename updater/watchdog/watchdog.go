// Package watchdog drives a hardware watchdog through Linux's watchdog
// device (/dev/watchdog): set its timeout, feed it, read why the last boot
// happened, and feed it only while the router is healthy (Ratchet).
//
// Invariants: opening the device arms it, and nothing here disarms it
// unless Disarm is called: Close writes no magic close character ('V'),
// so a process that exits or crashes leaves the watchdog counting down
// (the kernel says "watchdog did not stop!") and the machine resets unless
// someone feeds it. The ioctl numbers are computed for the architecture
// the program runs on (MIPS and PowerPC lay out _IOC differently from the
// others), not copied from one architecture's headers.
package watchdog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// iocLayout is how an architecture packs _IOC(dir, type, nr, size):
// nr in bits 0-7, type in 8-15, size from bit 16 (14 bits wide, 13 on
// MIPS), and the direction in the bits above, with its own values for
// none, write and read (include/uapi/asm-generic/ioctl.h and arch/*/include/uapi/asm/ioctl.h).
type iocLayout struct {
	write, rd        uint32
	dirShift, sizeSh uint
}

var (
	genericIOC = iocLayout{write: 1, rd: 2, dirShift: 30, sizeSh: 16}
	// MIPS, PowerPC, SPARC and Alpha: 13 size bits, 3 direction bits
	// ("none" is 1), read is 2, write is 4.
	mipsIOC = iocLayout{write: 4, rd: 2, dirShift: 29, sizeSh: 16}
)

func layoutFor(goarch string) iocLayout {
	switch goarch {
	case "mips", "mipsle", "mips64", "mips64le", "ppc64", "ppc64le", "ppc", "sparc64":
		return mipsIOC
	}
	return genericIOC
}

func (l iocLayout) ioc(dir, typ, nr, size uint32) uint32 {
	return dir<<l.dirShift | size<<l.sizeSh | typ<<8 | nr
}

// commands are the WDIOC_* requests (include/uapi/linux/watchdog.h).
type commands struct {
	getSupport, getStatus, getBootStatus, setOptions, keepAlive, setTimeout, getTimeout, getTimeLeft uint32
}

const (
	watchdogInfoSize = 40 // struct watchdog_info: u32 options, u32 firmware_version, u8 identity[32]
	intSize          = 4
)

func commandsFor(goarch string) commands {
	l := layoutFor(goarch)
	r := func(nr, size uint32) uint32 { return l.ioc(l.rd, 'W', nr, size) }
	wr := func(nr uint32) uint32 { return l.ioc(l.rd|l.write, 'W', nr, intSize) }
	return commands{
		getSupport:    r(0, watchdogInfoSize),
		getStatus:     r(1, intSize),
		getBootStatus: r(2, intSize),
		setOptions:    r(4, intSize), // _IOR, as the header has it, though it writes
		keepAlive:     r(5, intSize),
		setTimeout:    wr(6),
		getTimeout:    r(7, intSize),
		getTimeLeft:   r(10, intSize),
	}
}

// Flags of WDIOC_GETSUPPORT's options and WDIOC_GETBOOTSTATUS.
const (
	CardReset   = 0x0020 // WDIOF_CARDRESET: the last reboot was the watchdog's
	SetTimeout  = 0x0080 // WDIOF_SETTIMEOUT
	MagicClose  = 0x0100 // WDIOF_MAGICCLOSE
	KeepAlive   = 0x8000 // WDIOF_KEEPALIVEPING
	disableCard = 0x0001 // WDIOS_DISABLECARD
)

// Device is an open watchdog device: armed.
type Device struct {
	f    *os.File
	cmds commands
}

// Open opens the watchdog device (the board's, e.g. /dev/watchdog),
// which arms it.
func Open(path string) (*Device, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.EBUSY) {
			return nil, fmt.Errorf("watchdog %s: %w (another process holds it open)", path, err)
		}
		return nil, fmt.Errorf("watchdog: %w", err)
	}
	return &Device{f: f, cmds: commandsFor(runtime.GOARCH)}, nil
}

func (d *Device) ioctlInt(req uint32, v int32) (int32, error) {
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, d.f.Fd(), uintptr(req), uintptr(unsafe.Pointer(&v)))
	runtime.KeepAlive(d.f)
	if errno != 0 {
		return 0, errno
	}
	return v, nil
}

// Feed resets the countdown (WDIOC_KEEPALIVE).
func (d *Device) Feed() error {
	if _, err := d.ioctlInt(d.cmds.keepAlive, 0); err != nil {
		return fmt.Errorf("watchdog %s: keepalive: %w", d.f.Name(), err)
	}
	return nil
}

// SetTimeout asks for a timeout, in whole seconds, and returns the one
// the driver took (it may round it).
func (d *Device) SetTimeout(t time.Duration) (time.Duration, error) {
	secs := int32((t + time.Second - 1) / time.Second)
	got, err := d.ioctlInt(d.cmds.setTimeout, secs)
	if err != nil {
		return 0, fmt.Errorf("watchdog %s: set timeout %ds: %w", d.f.Name(), secs, err)
	}
	return time.Duration(got) * time.Second, nil
}

// Timeout is the driver's timeout.
func (d *Device) Timeout() (time.Duration, error) {
	got, err := d.ioctlInt(d.cmds.getTimeout, 0)
	if err != nil {
		return 0, fmt.Errorf("watchdog %s: get timeout: %w", d.f.Name(), err)
	}
	return time.Duration(got) * time.Second, nil
}

// BootStatus is WDIOC_GETBOOTSTATUS: CardReset set means the watchdog
// reset the machine before this boot.
func (d *Device) BootStatus() (int, error) {
	got, err := d.ioctlInt(d.cmds.getBootStatus, 0)
	if err != nil {
		return 0, fmt.Errorf("watchdog %s: boot status: %w", d.f.Name(), err)
	}
	return int(got), nil
}

// Info is WDIOC_GETSUPPORT: the driver's name and what it can do.
type Info struct {
	Options  uint32
	Firmware uint32
	Identity string
}

func (d *Device) Info() (Info, error) {
	var raw [watchdogInfoSize]byte
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, d.f.Fd(), uintptr(d.cmds.getSupport), uintptr(unsafe.Pointer(&raw[0])))
	runtime.KeepAlive(d.f)
	if errno != 0 {
		return Info{}, fmt.Errorf("watchdog %s: get support: %w", d.f.Name(), errno)
	}
	id := raw[8:]
	for i, c := range id {
		if c == 0 {
			id = id[:i]
			break
		}
	}
	n := binary.NativeEndian
	return Info{Options: n.Uint32(raw[0:]), Firmware: n.Uint32(raw[4:]), Identity: string(id)}, nil
}

// Close closes the device without disarming it: the countdown goes on.
func (d *Device) Close() error { return d.f.Close() }

// Disarm stops the watchdog, where the driver lets it (not with
// nowayout): the magic close character, WDIOS_DISABLECARD, then close.
// Only a clean shutdown that is not a reboot asks for it.
func (d *Device) Disarm() error {
	_, werr := d.f.Write([]byte("V"))
	_, ierr := d.ioctlInt(d.cmds.setOptions, disableCard)
	cerr := d.f.Close()
	if err := errors.Join(werr, ierr, cerr); err != nil {
		return fmt.Errorf("watchdog %s: disarm: %w", d.f.Name(), err)
	}
	return nil
}
