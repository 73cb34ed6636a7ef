// Package nixlocal asks the laptop's Nix for systems and their closures, and
// reads NARs straight from its store.
package nixlocal

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/roostrouter/roost/updater/nar"
	"github.com/roostrouter/roost/updater/registry"
	"github.com/roostrouter/roost/updater/storepath"
)

// Nix runs the laptop's nix commands.
type Nix struct {
	// Stderr receives nix-build's build log.
	Stderr io.Writer
	Getenv func(string) string
}

func (n *Nix) getenv(k string) string {
	if n.Getenv != nil {
		return n.Getenv(k)
	}
	return os.Getenv(k)
}

func (n *Nix) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stderr = n.Stderr
	return cmd
}

// Build runs nix-build on file (and attribute attr) and returns the output.
func (n *Nix) Build(ctx context.Context, file, attr string) (storepath.Path, error) {
	args := []string{"--no-out-link", file}
	if attr != "" {
		args = append(args, "-A", attr)
	}
	out, err := n.command(ctx, "nix-build", args...).Output()
	if err != nil {
		return "", fmt.Errorf("nix-build %s: %w", strings.Join(args, " "), err)
	}
	lines := strings.Fields(string(out))
	if len(lines) != 1 {
		return "", fmt.Errorf("nix-build %s built %d outputs, want one system", file, len(lines))
	}
	return storepath.Parse(lines[0])
}

// Closure returns the path infos of p's closure, references first as far as
// the router needs (it orders them itself).
func (n *Nix) Closure(ctx context.Context, paths ...storepath.Path) ([]registry.Info, error) {
	args := []string{"--extra-experimental-features", "nix-command", "path-info", "--json", "--recursive"}
	for _, p := range paths {
		args = append(args, p.String())
	}
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "nix", args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("nix path-info %v: %w: %s", paths, err, strings.TrimSpace(stderr.String()))
	}
	var infos []registry.Info
	if err := json.Unmarshal(out, &infos); err != nil {
		return nil, fmt.Errorf("read nix path-info output: %w", err)
	}
	return infos, nil
}

// StoreRoot is the folder the laptop's store lives below: "/" except for a
// chroot store named by NIX_REMOTE (a path or local?root=PATH).
func (n *Nix) StoreRoot() string {
	remote := n.getenv("NIX_REMOTE")
	if strings.HasPrefix(remote, "/") {
		return remote
	}
	if rest, ok := strings.CutPrefix(remote, "local?"); ok {
		for _, kv := range strings.Split(rest, "&") {
			if v, ok := strings.CutPrefix(kv, "root="); ok {
				return v
			}
		}
	}
	return "/"
}

// DumpNAR writes the NAR of p from the laptop's store.
func (n *Nix) DumpNAR(p storepath.Path, w io.Writer) error {
	return nar.Dump(w, filepath.Join(n.StoreRoot(), p.String()))
}
