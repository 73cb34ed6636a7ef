// Package boards describes the hardware roost runs on: architecture, the
// devices behind the logical interface names a config uses (wan, lan0, …),
// upgrade method, kexec, the hardware watchdog and its module parameters,
// RAM, kernel parameters, the persistent storage roostd init mounts, and
// the parts of a system the board needs.
//
// The data is boards.json, the one source of truth: Go embeds it, and the
// Nix library (nix/boards.nix) reads the same file with builtins.fromJSON,
// so that a board's GOARCH, interfaces and needs cannot differ between the
// system Nix builds and the agent that runs it. It is parsed on first use
// and validated strictly (unknown fields are errors); a unit test keeps the
// embedded file valid.
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
	// Upgrade is how a system that replaces the running one is installed:
	// "kexec" (a trial boot) or "pivot" (a read-only image rewritten from RAM).
	Upgrade string `json:"upgrade"`
	Kexec   bool   `json:"kexec"`
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
	// Needs is the parts a system for this board must have (see Parts):
	// activation refuses a system that lacks one.
	Needs []string `json:"needs"`
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
	SurvivesKexec bool `json:"survivesKexec"`
	// ModuleParams are parameters for the modules of the given names
	// ("i6300esb": "nowayout=1"), which roostd init passes when it loads
	// them: the kernel command line's reach built-in code only.
	ModuleParams map[string]string `json:"moduleParams,omitempty"`
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
)

// Parts lists every part a system can have.
func Parts() []string {
	return []string{PartConfig, PartAgent, PartBoard, PartKernel, PartInitrd, PartCmdline, PartModules, PartActivate}
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

func (b Board) validate() error {
	var errs []string
	bad := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	if b.Name == "" || strings.ContainsAny(b.Name, " /\t\n") {
		bad("name %q: want a word", b.Name)
	}
	switch b.GOARCH {
	case "amd64", "arm64", "arm", "mips", "mipsle":
	default:
		bad("goarch %q: not an architecture roostd builds for", b.GOARCH)
	}
	mips := b.GOARCH == "mips" || b.GOARCH == "mipsle"
	if (b.GOMIPS != "") != mips || (mips && b.GOMIPS != "softfloat" && b.GOMIPS != "hardfloat") {
		bad("gomips %q: softfloat or hardfloat on mips and mipsle, absent elsewhere", b.GOMIPS)
	}
	if (b.GOARM != "") != (b.GOARCH == "arm") || (b.GOARM != "" && !slices.Contains([]string{"5", "6", "7"}, b.GOARM)) {
		bad("goarm %q: 5, 6 or 7 on arm, absent elsewhere", b.GOARM)
	}
	if len(b.Interfaces) == 0 {
		bad("interfaces: none")
	}
	if b.RAMMB <= 0 {
		bad("ramMB %d: want the board's RAM in MiB", b.RAMMB)
	}
	if b.Upgrade != "kexec" && b.Upgrade != "pivot" {
		bad("upgrade %q: want kexec or pivot", b.Upgrade)
	}
	if !slices.Contains(b.Needs, PartConfig) {
		bad("needs: every system needs %s", PartConfig)
	}
	for _, n := range b.Needs {
		if !slices.Contains(Parts(), n) {
			bad("needs %q: not a part of a system (%s)", n, strings.Join(Parts(), ", "))
		}
	}
	if len(b.Cmdline) > 0 && !slices.Contains(b.Needs, PartKernel) {
		bad("cmdline: kernel parameters for a board whose systems have no kernel")
	}
	if st := b.Storage; st != nil {
		if !strings.HasPrefix(st.Device, "/dev/") || path.Clean(st.Device) != st.Device {
			bad("storage.device %q: want a device below /dev, like /dev/vda", st.Device)
		}
		if st.FSType == "" || strings.ContainsAny(st.FSType, " /,") {
			bad("storage.fstype %q: want a file system type, like ext4", st.FSType)
		}
		if !slices.Contains(b.Needs, PartKernel) {
			bad("storage: persistent storage for a board whose systems have no kernel (roostd init does not boot it)")
		}
	}
	if w := b.Watchdog; w != nil {
		w.validate(bad)
		if !slices.Contains(b.Needs, PartKernel) {
			bad("watchdog: a watchdog on a board whose systems have no kernel (roostd init, which feeds it, does not boot it)")
		}
	}
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "; "))
	}
	return nil
}

func (w Watchdog) validate(bad func(format string, args ...any)) {
	if !strings.HasPrefix(w.Device, "/dev/") || path.Clean(w.Device) != w.Device {
		bad("watchdog.device %q: want a device below /dev, like /dev/watchdog", w.Device)
	}
	if w.TimeoutSeconds < 1 || w.TimeoutSeconds > 3600 {
		bad("watchdog.timeoutSeconds %d: want 1 to 3600", w.TimeoutSeconds)
	}
	if w.GraceSeconds < w.TimeoutSeconds {
		bad("watchdog.graceSeconds %d: want at least the timeout (%d), time for the agent to start", w.GraceSeconds, w.TimeoutSeconds)
	}
	for _, mod := range slices.Sorted(maps.Keys(w.ModuleParams)) {
		params := w.ModuleParams[mod]
		if mod == "" || strings.ContainsFunc(mod, func(r rune) bool { return !isModuleNameRune(r) }) {
			bad("watchdog.moduleParams %q: want a module's name, like i6300esb", mod)
		}
		if strings.TrimSpace(params) == "" || strings.ContainsFunc(params, unicode.IsControl) {
			bad("watchdog.moduleParams[%q] %q: want parameters on one line, like nowayout=1", mod, params)
		}
	}
}

func isModuleNameRune(r rune) bool {
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

// InterfaceNames lists the board's logical interfaces.
func (b Board) InterfaceNames() []string {
	var out []string
	for n := range b.Interfaces {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
