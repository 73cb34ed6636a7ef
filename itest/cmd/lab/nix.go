package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// The lab laptop's Nix: Debian's nix-build with a store of its own in
// .lab/nix (a chroot store: NIX_REMOTE), settings in its home's nix.conf,
// and no substituters, so that nothing leaves the machine. roost on the
// LAN host uses the same store, so `roost rebuild -f` there finds what the
// lab built.

// nixConf lets a root user build without the nixbld group, in Nix's
// sandbox holding only the static busybox the library builds with.
const nixConf = `sandbox-paths = /bin/busybox
build-users-group =
substituters =
`

// nixEnv is the environment of the lab laptop's nix commands and of roost.
func (l *lab) nixEnv() []string {
	return []string{"NIX_REMOTE=" + l.path("nix"), "HOME=" + l.path("home")}
}

// systemArgs are the arguments docs/rotuer.nix takes besides roostd and
// the key: the VM's board and boot inputs.
type systemArgs struct {
	board        string
	kernel       string
	initrd       string
	modules      []string
	kernelParams []string
}

// writeSystemNix writes .lab/rotuer.nix, rotuer's system: docs/rotuer.nix
// with the lab's arguments (config is a JSON file instead for the PPPoE
// lab, whose config is made in Go), and the laptop's nix.conf.
func (l *lab) writeSystemNix(pub string, a systemArgs, config string) error {
	repo, err := os.Getwd()
	if err != nil {
		return err
	}
	conf := l.path("home/.config/nix/nix.conf")
	if err := os.MkdirAll(filepath.Dir(conf), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(conf, []byte(nixConf), 0o644); err != nil {
		return err
	}
	var b strings.Builder
	b.WriteString("# Written by make lab: rotuer's system, built by roost.lib.mkSystem with\n# the roostd that make build left in itest/bin. Rebuild the router with it\n# from the LAN host: roost rebuild --host rotuer -f .lab/rotuer.nix\n")
	roostd := nixString(filepath.Join(l.bin, "roostd"))
	if config != "" {
		fmt.Fprintf(&b, "(import (/. + %s) { }).mkSystem {\n  board = \"lab\";\n  config = builtins.fromJSON (builtins.readFile (/. + %s));\n  roostd = %s;\n}\n",
			nixString(filepath.Join(repo, "nix")), nixString(config), roostd)
		return os.WriteFile(l.path("rotuer.nix"), []byte(b.String()), 0o644)
	}
	fmt.Fprintf(&b, "import (/. + %s) {\n", nixString(filepath.Join(repo, "docs/rotuer.nix")))
	fmt.Fprintf(&b, "  roostd = %s;\n  wan = %s;\n  authorizedKeys = [ %s ];\n", roostd, nixString(l.wan), nixString(pub))
	if a.board != "" {
		fmt.Fprintf(&b, "  board = %s;\n  kernel = %s;\n  initrd = %s;\n", nixString(a.board), nixString(a.kernel), nixString(a.initrd))
		b.WriteString("  modules = [\n")
		for _, m := range a.modules {
			fmt.Fprintf(&b, "    %s\n", nixString(m))
		}
		b.WriteString("  ];\n  kernelParams = [")
		for _, p := range a.kernelParams {
			fmt.Fprintf(&b, " %s", nixString(p))
		}
		b.WriteString(" ];\n")
	}
	b.WriteString("}\n")
	return os.WriteFile(l.path("rotuer.nix"), []byte(b.String()), 0o644)
}

// nixString quotes s as a Nix string.
func nixString(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, "${", `\${`, "\n", `\n`, "\r", `\r`, "\t", `\t`).Replace(s) + `"`
}

// buildSystem builds .lab/rotuer.nix and returns the system's store path.
func (l *lab) buildSystem() (string, error) {
	cmd := exec.Command("nix-build", "--no-out-link", l.path("rotuer.nix"))
	cmd.Env = append(os.Environ(), l.nixEnv()...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("nix-build %s: %v\n%s", l.path("rotuer.nix"), err, stderr.String())
	}
	return strings.TrimSpace(string(out)), nil
}

// physical is where store path p of the lab's store is on this machine.
func (l *lab) physical(p string) string { return filepath.Join(l.path("nix"), p) }

// exportClosure is nix-store --export of p's closure, references first
// (as Nix writes it).
func (l *lab) exportClosure(p string) ([]byte, error) {
	q := exec.Command("nix-store", "-qR", p)
	q.Env = append(os.Environ(), l.nixEnv()...)
	out, err := q.Output()
	if err != nil {
		return nil, fmt.Errorf("nix-store -qR %s: %w", p, err)
	}
	cmd := exec.Command("nix-store", append([]string{"--export"}, strings.Fields(string(out))...)...)
	cmd.Env = q.Env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	export, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("nix-store --export of %s's closure: %v: %s", p, err, stderr.String())
	}
	return export, nil
}
