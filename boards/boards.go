// Package boards describes the hardware roost runs on: architecture, the
// devices behind the logical interface names a config uses (wan, lan0, …),
// upgrade method, kexec, the hardware watchdog and its module parameters,
// RAM and the part of it an image upgrade may use, kernel parameters, the
// persistent storage roostd init mounts, the flash and its partitions, and
// the parts of a system the board needs.
//
// The data is boards.json, the one source of truth: Go embeds it, and the
// Nix library (nix/boards.nix) reads the same file with builtins.fromJSON,
// so that a board's GOARCH, interfaces and needs cannot differ between the
// system Nix builds and the agent that runs it. It is parsed on first use
// and validated strictly (unknown fields are errors); a unit test keeps the
// embedded file valid. A valid board holds these invariants:
//
//   - its interfaces name distinct devices the kernel would take;
//   - kexecMethod is the loader updater/kexec uses on its GOARCH, and set
//     exactly when kexec is;
//   - its watchdog's timeout is within what the hardware keeps, when that
//     is known, and a built-in driver is given no module parameters;
//   - its MTD partitions have fixed offsets and sizes that fit the flash
//     without overlapping, UBI volumes sit in the flash's one UBI
//     partition, and every bootloader, bootloader-env, calibration,
//     recovery and backup partition is marked never written;
//   - an image board has a partition its imageWrite method writes the
//     image to, and a maintenance budget, under its RAM, that holds it;
//   - what its U-Boot boots (boot) is the format its imageWrite writes: a
//     uImage into an MTD partition, a FIT image into a UBI volume;
//   - the storage roostd init mounts is one of its disks or partitions;
//   - a board with real flash names the sources of its facts.
package boards

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"path"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode"
)

//go:embed boards.json
var data []byte

// Board is one kind of router.
type Board struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	GOARCH      string `json:"goarch"`
	GOMIPS      string `json:"gomips,omitempty"` // "softfloat" for MIPS boards without an FPU
	GOARM       string `json:"goarm,omitempty"`  // 5, 6 or 7 for 32-bit ARM
	// Interfaces maps logical names to the kernel's device names.
	Interfaces map[string]string `json:"interfaces"`
	RAMMB      int               `json:"ramMB"`
	// MaintenanceMB is the RAM an image upgrade may fill while the router
	// runs from RAM (pivot-to-maintenance): roostd's closure copied into a
	// tmpfs and the new image. 0 on a board that never pivots.
	MaintenanceMB int `json:"maintenanceMB"`
	// Upgrade is how a system that replaces the running one is installed:
	// "store" (into the writable store, in place; a trial boot when its
	// kernel changes) or "image" (the read-only image the board boots is
	// rewritten from RAM, by pivot-to-maintenance).
	Upgrade string `json:"upgrade"`
	// ImageWrite is how a whole image is written to the board's flash:
	// "mtd" (erase and write an MTD partition), "ubi" (write a UBI volume),
	// "block" (write a block device), or "" if none ever is.
	ImageWrite string `json:"imageWrite"`
	Kexec      bool   `json:"kexec"`
	// KexecMethod is the system call that loads a kernel for kexec, the
	// one updater/kexec uses on the board's GOARCH: "kexec_file_load" or
	// "kexec_load"; "" on a board that cannot kexec.
	KexecMethod string `json:"kexecMethod"`
	// Watchdog is the board's hardware watchdog, which roostd init feeds
	// while the router is healthy; nil if it has none.
	Watchdog *Watchdog `json:"watchdog"`
	// Cmdline is the kernel parameters the board needs (the console); the
	// Nix library writes them to the system's cmdline.
	Cmdline []string `json:"cmdline"`
	// Storage is the disk that holds the store and the state folder, which
	// roostd init mounts at boot; nil on a board that init does not boot
	// (the lab) or whose storage is not settled (roost.disk= names one).
	Storage *Storage `json:"storage"`
	// Flash is the board's storage devices and what is on them: which
	// parts an image goes to and which are never written.
	Flash []Flash `json:"flash"`
	// Boot is what the board's bootloader starts from its image
	// partition (a uImage or a FIT image, in front of the root), which
	// roost image builds; nil where the image is the root alone.
	Boot *Boot `json:"boot,omitempty"`
	// Needs is the parts a system for this board must have (see Parts):
	// activation refuses a system that lacks one.
	Needs []string `json:"needs"`
	// Sources are where the facts come from: the device trees, board files
	// and drivers read (https URLs, pinned to a commit where one was known).
	Sources []string `json:"sources"`
	// Notes are what the data cannot say by itself: facts not verified on
	// the hardware, gaps roost has on the board.
	Notes []string `json:"notes"`
}

// Storage is a board's persistent storage: a block device and the file
// system on it, whose nix/ and persist/ folders are the router's /nix and
// /persist.
type Storage struct {
	Device string `json:"device"` // e.g. /dev/vda
	FSType string `json:"fstype"` // e.g. ext4
}

// Watchdog is a board's hardware watchdog: the device roostd init opens,
// how it is driven, and the facts about its driver that trial boots rest
// on.
type Watchdog struct {
	Device         string `json:"device"`         // e.g. /dev/watchdog
	TimeoutSeconds int    `json:"timeoutSeconds"` // the countdown: it resets this long after the last feed
	// GraceSeconds after the kernel starts, the watchdog is fed whatever
	// the health: the agent's time to come up and say it runs.
	GraceSeconds int `json:"graceSeconds"`
	// SurvivesKexec: the watchdog stays armed from one kernel into the
	// next (with ModuleParams), so that it resets a kexec trial that hangs.
	// False unless that is known: a driver that stops it on shutdown does
	// not survive.
	SurvivesKexec bool `json:"survivesKexec"`
	// ModuleParams are parameters for the modules of the given names
	// ("i6300esb": "nowayout=1"), which roostd init passes when it loads
	// them: the kernel command line's reach built-in code only.
	ModuleParams map[string]string `json:"moduleParams,omitempty"`
	// Driver is the kernel driver behind the device, by its module name
	// (i6300esb, mtk_wdt).
	Driver string `json:"driver"`
	// BuiltIn: the board's kernels have the driver built in, so that no
	// module parameters reach it (only the command line's driver.param=).
	BuiltIn bool `json:"builtIn"`
	// MaxTimeoutSeconds is the longest countdown the hardware keeps by
	// itself; nil if not known (it hangs on a clock the bootloader sets).
	MaxTimeoutSeconds *int `json:"maxTimeoutSeconds"`
}

// Timeout is the watchdog's countdown.
func (w Watchdog) Timeout() time.Duration { return time.Duration(w.TimeoutSeconds) * time.Second }

// Grace is how long after the kernel starts the watchdog is fed whatever
// the health.
func (w Watchdog) Grace() time.Duration { return time.Duration(w.GraceSeconds) * time.Second }

// TrialMethod is how a trial boot goes on this board by default, "kexec"
// or "reboot", and why, as a sentence for roost rebuild to print: kexec
// only where a watchdog stays armed across it to reset a trial that hangs.
func (b Board) TrialMethod() (method, why string) {
	switch {
	case !b.Kexec:
		return "reboot", "the board cannot kexec"
	case b.Watchdog == nil:
		return "reboot", "the board has no watchdog to reset a kexec trial that hangs"
	case !b.Watchdog.SurvivesKexec:
		return "reboot", "the board's watchdog would not survive kexec"
	}
	return "kexec", "the board can kexec and its watchdog stays armed across it"
}

// The parts of a system: paths below its store path (../shared/DESIGN.md).
const (
	PartConfig   = "etc/roost/config.json" // the agent's config
	PartAgent    = "bin/roostd"            // a link into roostd's own store path
	PartBoard    = "board"                 // the board's name
	PartKernel   = "kernel"                // the kernel image
	PartInitrd   = "initrd"                // whose /init is roostd init
	PartCmdline  = "cmdline"               // kernel parameters, one line
	PartModules  = "modules"               // kernel modules to load at boot
	PartActivate = "activate"              // run on activation
	PartDTBs     = "dtbs"                  // device tree blobs, a folder (boards with a boot's deviceTree)
)

// Parts lists every part a system can have.
func Parts() []string {
	return []string{PartConfig, PartAgent, PartBoard, PartKernel, PartInitrd, PartCmdline, PartModules, PartActivate, PartDTBs}
}

// load parses the embedded data once, on first use.
var load = sync.OnceValues(func() (map[string]Board, error) { return parse(data) })

// parse decodes and validates board data.
func parse(b []byte) (map[string]Board, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var list []Board
	if err := dec.Decode(&list); err != nil {
		return nil, fmt.Errorf("boards.json: %w", err)
	}
	known := map[string]Board{}
	var errs []error
	for i, bd := range list {
		if _, dup := known[bd.Name]; dup {
			errs = append(errs, fmt.Errorf("boards.json[%d]: board %q is defined twice", i, bd.Name))
		}
		if err := bd.validate(); err != nil {
			errs = append(errs, fmt.Errorf("boards.json[%d] (%s): %w", i, bd.Name, err))
		}
		known[bd.Name] = bd
	}
	return known, errors.Join(errs...)
}

// validate reports every way b is wrong, each naming its field.
func (b Board) validate() error {
	var errs []string
	bad := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	if b.Name == "" || strings.ContainsAny(b.Name, " /\t\n") {
		bad("name %q: want a word", b.Name)
	}
	b.validateArch(bad)
	b.validateInterfaces(bad)
	if b.RAMMB <= 0 {
		bad("ramMB %d: want the board's RAM in MiB", b.RAMMB)
	}
	if !slices.Contains(b.Needs, PartConfig) {
		bad("needs: every system needs %s", PartConfig)
	}
	for _, n := range b.Needs {
		if !slices.Contains(Parts(), n) {
			bad("needs %q: not a part of a system (%s)", n, strings.Join(Parts(), ", "))
		}
	}
	kernel := slices.Contains(b.Needs, PartKernel)
	if len(b.Cmdline) > 0 && !kernel {
		bad("cmdline: kernel parameters for a board whose systems have no kernel")
	}
	if st := b.Storage; st != nil {
		st.validate(bad)
		if !kernel {
			bad("storage: persistent storage for a board whose systems have no kernel (roostd init does not boot it)")
		}
	}
	if w := b.Watchdog; w != nil {
		w.validate(bad)
		if !kernel {
			bad("watchdog: a watchdog on a board whose systems have no kernel (roostd init, which feeds it, does not boot it)")
		}
	}
	b.validateFlash(bad)
	b.validateBoot(bad)
	b.validateUpgrade(bad)
	b.validateSources(bad)
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "; "))
	}
	return nil
}

// validateArch checks the Go target and the kexec method, which follows
// from it: updater/kexec loads by kexec_file_load where the kernel parses
// the image itself (amd64, arm64), else by kexec_load.
func (b Board) validateArch(bad func(format string, args ...any)) {
	loader, ok := map[string]string{"amd64": "kexec_file_load", "arm64": "kexec_file_load",
		"arm": "kexec_load", "mips": "kexec_load", "mipsle": "kexec_load"}[b.GOARCH]
	if !ok {
		bad("goarch %q: not an architecture roostd builds for", b.GOARCH)
	}
	mips := b.GOARCH == "mips" || b.GOARCH == "mipsle"
	if (b.GOMIPS != "") != mips || (mips && b.GOMIPS != "softfloat" && b.GOMIPS != "hardfloat") {
		bad("gomips %q: softfloat or hardfloat on mips and mipsle, absent elsewhere", b.GOMIPS)
	}
	if (b.GOARM != "") != (b.GOARCH == "arm") || (b.GOARM != "" && !slices.Contains([]string{"5", "6", "7"}, b.GOARM)) {
		bad("goarm %q: 5, 6 or 7 on arm, absent elsewhere", b.GOARM)
	}
	switch {
	case b.Kexec && b.KexecMethod == "":
		bad("kexecMethod: none, but kexec is true: want %s", loader)
	case !b.Kexec && b.KexecMethod != "":
		bad("kexecMethod %q: kexec is false, so none", b.KexecMethod)
	case b.Kexec && ok && b.KexecMethod != loader:
		bad("kexecMethod %q: roostd loads a kernel on %s by %s", b.KexecMethod, b.GOARCH, loader)
	}
}

// validateInterfaces checks the logical names and that each names a
// device the kernel would take, once.
func (b Board) validateInterfaces(bad func(format string, args ...any)) {
	if len(b.Interfaces) == 0 {
		bad("interfaces: none")
	}
	byDevice := map[string]string{}
	for _, n := range b.InterfaceNames() {
		dev := b.Interfaces[n]
		if n == "" || strings.ContainsFunc(n, func(r rune) bool { return !isNameRune(r) }) {
			bad("interfaces %q: want a name of letters, digits, - and _, like lan0", n)
		}
		if dev == "" || len(dev) > 15 || strings.ContainsAny(dev, "/ \t\n:") {
			bad("interfaces[%q] %q: not a device name (1 to 15 characters, no / or spaces)", n, dev)
		}
		if other, dup := byDevice[dev]; dup {
			bad("interfaces[%q] %q: also %s's device", n, dev, other)
		}
		byDevice[dev] = n
	}
}

// validateUpgrade checks that the upgrade method has what it writes to
// and the RAM it runs in.
func (b Board) validateUpgrade(bad func(format string, args ...any)) {
	if !slices.Contains([]string{"", ImageMTD, ImageUBI, ImageBlock}, b.ImageWrite) {
		bad("imageWrite %q: want %s, %s, %s or nothing", b.ImageWrite, ImageMTD, ImageUBI, ImageBlock)
	}
	if b.MaintenanceMB < 0 || b.MaintenanceMB > 0 && b.MaintenanceMB >= b.RAMMB {
		bad("maintenanceMB %d: want less than the board's RAM (%d MiB)", b.MaintenanceMB, b.RAMMB)
	}
	switch b.Upgrade {
	case UpgradeStore:
		if b.ImageWrite != "" && !b.hasFlashFor(b.ImageWrite) {
			bad("imageWrite %q: the board has no flash it fits (%s)", b.ImageWrite, flashKindsFor(b.ImageWrite))
		}
	case UpgradeImage:
		b.validateImage(bad)
	default:
		bad("upgrade %q: want %s or %s", b.Upgrade, UpgradeStore, UpgradeImage)
	}
}

// validateImage checks an image board: where the image goes, how, and
// that RAM holds it while it is written.
func (b Board) validateImage(bad func(format string, args ...any)) {
	if b.ImageWrite == "" {
		bad("imageWrite: none, but the upgrade writes an image: want %s, %s or %s", ImageMTD, ImageUBI, ImageBlock)
		return
	}
	targets := b.imageTargets(b.ImageWrite)
	if len(targets) == 0 {
		bad("flash: no partition for the image (use %q) that %s writes (%s)", UseImage, b.ImageWrite, flashKindsFor(b.ImageWrite))
	}
	if b.MaintenanceMB <= 0 {
		bad("maintenanceMB %d: an image board needs RAM to run from while it writes the image", b.MaintenanceMB)
	}
	for _, p := range targets {
		if p.Size != nil && *p.Size > uint64(b.MaintenanceMB)<<20 {
			bad("maintenanceMB %d: less than image partition %s (%d MiB), which is written from RAM", b.MaintenanceMB, p.Name, (*p.Size+1<<20-1)>>20)
		}
	}
}

// validateSources checks that the sources are links, and that a board
// with real flash says where its facts come from.
func (b Board) validateSources(bad func(format string, args ...any)) {
	for _, s := range b.Sources {
		if !strings.HasPrefix(s, "https://") || strings.ContainsFunc(s, unicode.IsSpace) {
			bad("sources %q: want an https URL", s)
		}
	}
	hasReal := slices.ContainsFunc(b.Flash, func(f Flash) bool { return f.Kind != FlashVirtio && f.Kind != FlashBlock2MTD })
	if hasReal && len(b.Sources) == 0 {
		bad("sources: none, for a board with real flash: name the device trees and board files the facts come from")
	}
	for i, n := range b.Notes {
		if strings.TrimSpace(n) == "" || strings.ContainsFunc(n, unicode.IsControl) {
			bad("notes[%d]: want a sentence on one line", i)
		}
	}
}

func (st Storage) validate(bad func(format string, args ...any)) {
	if !strings.HasPrefix(st.Device, "/dev/") || path.Clean(st.Device) != st.Device {
		bad("storage.device %q: want a device below /dev, like /dev/vda", st.Device)
	}
	if st.FSType == "" || strings.ContainsAny(st.FSType, " /,") {
		bad("storage.fstype %q: want a file system type, like ext4", st.FSType)
	}
}

func (w Watchdog) validate(bad func(format string, args ...any)) {
	if !strings.HasPrefix(w.Device, "/dev/") || path.Clean(w.Device) != w.Device {
		bad("watchdog.device %q: want a device below /dev, like /dev/watchdog", w.Device)
	}
	if w.TimeoutSeconds < 1 || w.TimeoutSeconds > 3600 {
		bad("watchdog.timeoutSeconds %d: want 1 to 3600", w.TimeoutSeconds)
	}
	if m := w.MaxTimeoutSeconds; m != nil && (*m < 1 || *m > 65535) {
		bad("watchdog.maxTimeoutSeconds %d: want 1 to 65535, or null if not known", *m)
	} else if m != nil && w.TimeoutSeconds > *m {
		bad("watchdog.timeoutSeconds %d: more than the hardware keeps (maxTimeoutSeconds %d)", w.TimeoutSeconds, *m)
	}
	if w.GraceSeconds < w.TimeoutSeconds {
		bad("watchdog.graceSeconds %d: want at least the timeout (%d), time for the agent to start", w.GraceSeconds, w.TimeoutSeconds)
	}
	if w.Driver == "" || strings.ContainsFunc(w.Driver, func(r rune) bool { return !isNameRune(r) }) {
		bad("watchdog.driver %q: want the driver's module name, like i6300esb", w.Driver)
	}
	if _, ok := w.ModuleParams[w.Driver]; ok && w.BuiltIn {
		bad("watchdog.moduleParams[%q]: the driver is built in, so no module parameters reach it (put %s.param= on the command line)", w.Driver, w.Driver)
	}
	for _, mod := range slices.Sorted(maps.Keys(w.ModuleParams)) {
		params := w.ModuleParams[mod]
		if mod == "" || strings.ContainsFunc(mod, func(r rune) bool { return !isNameRune(r) }) {
			bad("watchdog.moduleParams %q: want a module's name, like i6300esb", mod)
		}
		if strings.TrimSpace(params) == "" || strings.ContainsFunc(params, unicode.IsControl) {
			bad("watchdog.moduleParams[%q] %q: want parameters on one line, like nowayout=1", mod, params)
		}
	}
}

func isNameRune(r rune) bool {
	return r == '_' || r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z'
}

// All returns every known board, sorted by name.
func All() ([]Board, error) {
	known, err := load()
	if err != nil {
		return nil, err
	}
	out := make([]Board, 0, len(known))
	for _, n := range Names() {
		out = append(out, known[n])
	}
	return out, nil
}

// Lookup returns the board called name.
func Lookup(name string) (Board, error) {
	known, err := load()
	if err != nil {
		return Board{}, err
	}
	b, ok := known[name]
	if !ok {
		return Board{}, fmt.Errorf("unknown board %q (known: %s)", name, strings.Join(Names(), ", "))
	}
	return b, nil
}

// Names lists the known boards.
func Names() []string {
	known, _ := load()
	var out []string
	for n := range known {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Device returns the kernel's name for a logical interface.
func (b Board) Device(logical string) (string, bool) {
	d, ok := b.Interfaces[logical]
	return d, ok
}

// GoEnv is the environment go build needs to build roostd for the board:
// GOARCH, and GOMIPS or GOARM where the board has them.
func (b Board) GoEnv() []string {
	env := []string{"GOARCH=" + b.GOARCH}
	if b.GOMIPS != "" {
		env = append(env, "GOMIPS="+b.GOMIPS)
	}
	if b.GOARM != "" {
		env = append(env, "GOARM="+b.GOARM)
	}
	return env
}

// InterfaceNames lists the board's logical interfaces.
func (b Board) InterfaceNames() []string {
	var out []string
	for n := range b.Interfaces {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
