// Package slots keeps, in the state folder, which image slot a board with
// two image slots boots, and what each slot holds: the default, a one-shot
// trial of a newly written image, and how the last trial ended.
//
// Invariants:
//
//   - The state is one file, <state>/slots.json, replaced atomically
//     (updater/atomicfile): after a crash it is the old state or the new.
//   - A slot is booted once as a trial (Once) only after its image was
//     written and read back: Once and the Trial are saved in one write,
//     the commit point of an image upgrade. A cut before it leaves the
//     default untouched; the half-written slot is never named.
//   - Init clears Once before it boots the slot (ForBoot): whatever ends
//     that boot, a reset, a panic, a watchdog, the next boot is the
//     default's. Only a confirmation makes the trial's slot the default.
//   - The running slot is never the one written: Spare names the other.
package slots

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/roostrouter/roost/updater/atomicfile"
)

// File is the state's name in the state folder.
const File = "slots.json"

// Image is what a slot holds, as the write that put it there read it back.
type Image struct {
	SHA256  string    `json:"sha256"`
	Bytes   int64     `json:"bytes"`
	System  string    `json:"system,omitempty"`
	Written time.Time `json:"written"`
}

// Trial is a written slot's first boot, awaiting its confirmation.
type Trial struct {
	Slot     string    `json:"slot"`
	Previous string    `json:"previous"` // the default it replaces
	Token    string    `json:"token"`    // what roostd confirm is given
	Deadline time.Time `json:"deadline"`
	FromBoot string    `json:"fromBoot"`           // the boot that wrote it
	Booted   string    `json:"booted,omitempty"`   // the trial boot, once its agent ran
	Watchdog bool      `json:"watchdog,omitempty"` // the board's watchdog resets a trial that hangs
}

// State is the slots' state.
type State struct {
	Default string           `json:"default"`        // the slot that boots; "" for the board's first
	Once    string           `json:"once,omitempty"` // the slot the next boot, only that one, boots
	Images  map[string]Image `json:"images,omitempty"`
	Trial   *Trial           `json:"trial,omitempty"`
	Last    string           `json:"last,omitempty"` // how the last trial ended
	// LastToken is the last trial's token, so that a confirmation that
	// comes too late hears what became of it.
	LastToken string `json:"lastToken,omitempty"`
}

// Load reads the state from the state folder; a missing file is the zero
// State (a board as first installed: its first slot boots).
func Load(state string) (State, error) {
	var s State
	b, err := os.ReadFile(filepath.Join(state, File))
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return s, fmt.Errorf("slots: %w", err)
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("slots: %s: %w: move it away to boot the board's first slot", filepath.Join(state, File), err)
	}
	return s, nil
}

// Save replaces the state in the state folder.
func Save(state string, s State) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(state, 0o700); err != nil {
		return fmt.Errorf("slots: %w", err)
	}
	if err := atomicfile.WriteFile(filepath.Join(state, File), append(b, '\n'), 0o644); err != nil {
		return err
	}
	// jffs2's fsync does not reach a block2mtd disk (the MIPS VM's
	// flash): its writes sit in the disk's page cache until written back.
	// This state is the boot's: a sync makes it the disk's now.
	syscall.Sync()
	return nil
}

// Booting is the slot that boots by default, among the board's slots.
func (s State) Booting(slots []string) (string, error) {
	if len(slots) == 0 {
		return "", errors.New("slots: the board has no image slot")
	}
	switch {
	case s.Default == "":
		return slots[0], nil
	case slices.Contains(slots, s.Default):
		return s.Default, nil
	}
	return "", fmt.Errorf("slots: the default slot %q is not one of the board's %v", s.Default, slots)
}

// Spare is the slot an image is written to: the board's other slot than
// running. A board with one slot has no spare.
func Spare(slots []string, running string) (string, error) {
	if len(slots) != 2 || !slices.Contains(slots, running) {
		return "", fmt.Errorf("slots: no spare slot beside %q among %v: the board needs two image slots", running, slots)
	}
	if slots[0] == running {
		return slots[1], nil
	}
	return slots[0], nil
}

// ForBoot is init's choice among the board's slots: the Once slot as a
// trial, cleared and saved before it returns, else the default.
func ForBoot(state string, slots []string) (slot string, trial bool, err error) {
	s, err := Load(state)
	if err != nil {
		return "", false, err
	}
	if s.Once == "" {
		slot, err := s.Booting(slots)
		return slot, false, err
	}
	once := s.Once
	if !slices.Contains(slots, once) {
		return "", false, fmt.Errorf("slots: the trial slot %q is not one of the board's %v", once, slots)
	}
	s.Once = ""
	if err := Save(state, s); err != nil {
		// Booting the trial without clearing it could loop on a bad image.
		def, derr := s.Booting(slots)
		return def, false, errors.Join(fmt.Errorf("clear the trial of %s: %w: booting the default", once, err), derr)
	}
	return once, true, nil
}
