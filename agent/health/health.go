// Package health is how the agent tells init whether the router deserves
// to have its watchdog fed: a small file below /run that the agent
// rewrites every Every while its event loop runs, and that init reads.
//
// Invariants: the file is replaced whole (write a temporary name, rename),
// so a reader sees the old or the new word, never half of one. A file
// that is missing, unreadable or older than Stale means unhealthy: an
// agent that hangs or is gone stops refreshing it, and that alone stops
// the watchdog being fed. The file lives on tmpfs and is never synced: it
// says nothing about the next boot.
package health

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

const (
	// Every is how often the agent rewrites the file.
	Every = 5 * time.Second
	// Stale is the age past which the file no longer says the agent runs:
	// long enough for a hand-over or a slow reload, short enough that a
	// watchdog fires within a minute or two of the agent hanging.
	Stale = 60 * time.Second
)

// File is the health file below root.
func File(root string) string { return filepath.Join(root, "run/roost/health") }

// Write says the router is healthy (problem nil) or why it is not.
func Write(root string, problem error) error {
	word := "ok\n"
	if problem != nil {
		word = "unhealthy: " + strings.ReplaceAll(problem.Error(), "\n", " ") + "\n"
	}
	file := File(root)
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return fmt.Errorf("write health: %w", err)
	}
	tmp := file + ".tmp"
	if err := os.WriteFile(tmp, []byte(word), 0o644); err != nil {
		return fmt.Errorf("write health: %w", err)
	}
	if err := os.Rename(tmp, file); err != nil {
		return fmt.Errorf("write health: %w", err)
	}
	return nil
}

// Check reads the file at now: nil if the agent said "ok" within Stale,
// else why the router is not healthy.
func Check(root string, now time.Time) error {
	file := File(root)
	fi, err := os.Stat(file)
	if errors.Is(err, os.ErrNotExist) {
		return errors.New("the agent never said it runs (no " + file + ")")
	}
	if err != nil {
		return fmt.Errorf("read health: %w", err)
	}
	if age := now.Sub(fi.ModTime()); age > Stale {
		return fmt.Errorf("the agent has not said it runs for %s", age.Round(time.Second))
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("read health: %w", err)
	}
	word := strings.TrimSpace(string(b))
	if word == "ok" {
		return nil
	}
	if r, ok := strings.CutPrefix(word, "unhealthy: "); ok {
		return errors.New(r)
	}
	return fmt.Errorf("%s says %q", file, word)
}
