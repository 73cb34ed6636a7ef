// Package nixlocal asks the laptop's Nix for systems and their closures, and
// reads NARs straight from its store.
package nixlocal

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"

	"github.com/roostrouter/roost/updater/nar"
	"github.com/roostrouter/roost/updater/registry"
	"github.com/roostrouter/roost/updater/storepath"
)

// Nix runs the laptop's nix commands.
type Nix struct {
	// Stderr receives nix-build's build log.
	Stderr io.Writer
	Getenv func(string) string
	// Env is added to the environment of the nix commands roost runs, and
	// StoreRoot looks there first (tests point NIX_REMOTE at a chroot store).
	Env []string

	mu sync.Mutex
	// rejected are the optional flags this Nix said it does not know, so
	// that one roost run asks at most once.
	rejected map[string]bool
}

func (n *Nix) getenv(k string) string {
	for i := len(n.Env) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(n.Env[i], k+"="); ok {
			return v
		}
	}
	if n.Getenv != nil {
		return n.Getenv(k)
	}
	return os.Getenv(k)
}

func (n *Nix) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stderr = n.Stderr
	if len(n.Env) > 0 {
		cmd.Env = append(os.Environ(), n.Env...)
	}
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

// optionalFlag is a flag of nix path-info that only some versions of Nix
// know. roost passes it, and runs the command again without it when Nix
// answers that the flag is unrecognised: that works for forks and
// pre-releases whose version numbers say nothing (Lix 2.9x has no
// --json-format; Nix 2.3 has no --extra-experimental-features).
type optionalFlag struct {
	name, value string
	global      bool // a setting of nix itself, before the subcommand
}

var pathInfoFlags = []optionalFlag{
	// Nix 2.4 and later gate the nix command behind this; 2.3 rejects it.
	{"--extra-experimental-features", "nix-command", true},
	// Nix 2.33 and later warn without it (and say it will become an
	// error); 2 is the newer of the two formats 2.33 knows. Older Nix and
	// Lix reject it.
	{"--json-format", "2", false},
}

var unrecognisedFlag = regexp.MustCompile(`unrecognised flag '(--[A-Za-z0-9-]+)'`)

func (n *Nix) pathInfoArgs(paths []storepath.Path) []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	flags := func(global bool) (out []string) {
		for _, f := range pathInfoFlags {
			if f.global == global && !n.rejected[f.name] {
				out = append(out, f.name, f.value)
			}
		}
		return out
	}
	args := flags(true)
	args = append(args, "path-info", "--json")
	args = append(args, flags(false)...)
	args = append(args, "--recursive")
	for _, p := range paths {
		args = append(args, p.String())
	}
	return args
}

// reject records that Nix does not know flag; false if roost did not
// pass it or already knew, so the caller does not loop.
func (n *Nix) reject(flag string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.rejected[flag] || !slices.ContainsFunc(pathInfoFlags, func(f optionalFlag) bool { return f.name == flag }) {
		return false
	}
	if n.rejected == nil {
		n.rejected = map[string]bool{}
	}
	n.rejected[flag] = true
	return true
}

// Closure returns the path infos of the closure of paths, sorted by path
// (the router orders them itself). They come from nix path-info --json,
// the one command that prints signatures as well as hashes, sizes,
// references and derivers (nix-store --dump-db has no signatures, and a
// router with trustedPublicKeys needs them).
func (n *Nix) Closure(ctx context.Context, paths ...storepath.Path) ([]registry.Info, error) {
	if len(paths) == 0 {
		return nil, nil
	}
	for {
		args := n.pathInfoArgs(paths)
		var stdout, stderr bytes.Buffer
		cmd := n.command(ctx, "nix", args...)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			if m := unrecognisedFlag.FindStringSubmatch(stderr.String()); m != nil && n.reject(m[1]) {
				continue
			}
			if errors.Is(err, exec.ErrNotFound) {
				return nil, fmt.Errorf("roost reads closures with the laptop's Nix, and finds no nix command in PATH: install Nix (%w)", err)
			}
			return nil, fmt.Errorf("nix %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
		}
		infos, err := ParsePathInfo(stdout.Bytes())
		if err != nil {
			return nil, fmt.Errorf("read the output of nix %s: %w", strings.Join(args, " "), err)
		}
		if err := checkClosure(infos, paths); err != nil {
			return nil, fmt.Errorf("nix %s: %w", strings.Join(args, " "), err)
		}
		return infos, nil
	}
}

// checkClosure makes sure the infos are the whole closure of paths: a
// field read wrongly must not send the router a path without what it
// references.
func checkClosure(infos []registry.Info, paths []storepath.Path) error {
	have := make(map[storepath.Path]bool, len(infos))
	for _, i := range infos {
		have[i.Path] = true
	}
	for _, p := range paths {
		if !have[p] {
			return fmt.Errorf("%s is missing from its own closure", p)
		}
	}
	for _, i := range infos {
		for _, r := range i.References {
			if !have[r] {
				return fmt.Errorf("the closure is not closed: %s references %s, which is not in it", i.Path, r)
			}
		}
	}
	return nil
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
