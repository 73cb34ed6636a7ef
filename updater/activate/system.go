package activate

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/roostrouter/roost/boards"
	"github.com/roostrouter/roost/updater/storepath"
)

// SystemBoard returns the board of the system whose files are in dir: the
// one its board file names, else its config's "board" (default lab, as the
// config loader has it).
func SystemBoard(dir string, system storepath.Path) (boards.Board, error) {
	name, _ := configBoard(dir)
	if b, err := os.ReadFile(filepath.Join(dir, boards.PartBoard)); err == nil {
		name = strings.TrimSpace(string(b))
	}
	b, err := boards.Lookup(name)
	if err != nil {
		return b, fmt.Errorf("system %s: %w", system, err)
	}
	return b, nil
}

// configBoard returns the "board" of the config in dir ("lab" if it names
// none), and whether it names one. Only the board is read here: the rest
// of the config is the agent's to judge when it loads it.
func configBoard(dir string) (string, bool) {
	var c struct {
		Board *string `json:"board"`
	}
	b, err := os.ReadFile(filepath.Join(dir, configPath))
	if err != nil || json.Unmarshal(b, &c) != nil || c.Board == nil {
		return "lab", false
	}
	return *c.Board, true
}

// checkParts refuses a system (its files in dir) that lacks a part its
// board needs, or whose board file and config name different boards.
// Systems that Nix builds with roost.lib.mkSystem have every part; a bare
// lab system needs only its config.
func checkParts(dir string, system storepath.Path) error {
	b, err := SystemBoard(dir, system)
	if err != nil {
		return err
	}
	for _, part := range b.Needs {
		// Lstat: bin/roostd is a link to an absolute store path, which
		// is below the router's root, not necessarily below /.
		if _, err := os.Lstat(filepath.Join(dir, part)); err == nil {
			continue
		}
		if part == configPath {
			return fmt.Errorf("%s is not a roost system: it has no %s", system, configPath)
		}
		return fmt.Errorf("system %s: no %s, which board %s needs: build it with roost.lib.mkSystem", system, part, b.Name)
	}
	// The agent runs the config's board: the two must agree.
	if name, named := configBoard(dir); name != b.Name {
		if !named {
			name += ", as it names none"
		}
		return fmt.Errorf("system %s: its board file names %s but its config's board is %s: build it with roost.lib.mkSystem, which writes both", system, b.Name, name)
	}
	return nil
}
