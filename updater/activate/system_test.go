package activate

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/roostrouter/roost/updater/storetest"
)

// TestCheckParts: a system that lacks a part its board needs is refused,
// naming the part, the board and what to do; a bare lab system (the
// itests' systems) needs only its config.
func TestCheckParts(t *testing.T) {
	sys := storetest.NewPath("system")
	qemu := map[string]string{
		"etc/roost/config.json": `{"board": "qemu-x86_64"}`,
		"board":                 "qemu-x86_64\n",
		"bin/roostd":            "->/nix/store/00000000000000000000000000000000-roostd/bin/roostd", // dangling below /
		"kernel":                "bzImage", "initrd": "cpio", "cmdline": "console=ttyS0\n",
	}
	without := func(part string) map[string]string {
		m := map[string]string{}
		for k, v := range qemu {
			if k != part {
				m[k] = v
			}
		}
		return m
	}
	with := func(part, content string) map[string]string {
		m := without(part)
		m[part] = content
		return m
	}
	for _, tc := range []struct {
		name  string
		files map[string]string
		want  string // "" if it is a system
	}{
		{"lab, config only", map[string]string{"etc/roost/config.json": `{"hostname": "r"}`}, ""},
		{"lab named", map[string]string{"etc/roost/config.json": `{"board": "lab"}`}, ""},
		{"lab, config the agent refuses", map[string]string{"etc/roost/config.json": `{"board": `}, ""},
		{"no config", map[string]string{"bin/tool": "x"}, "is not a roost system: it has no etc/roost/config.json"},
		{"qemu complete", qemu, ""},
		{"qemu without a kernel", without("kernel"), "system " + sys.String() + ": no kernel, which board qemu-x86_64 needs: build it with roost.lib.mkSystem"},
		{"qemu without an initrd", without("initrd"), "no initrd, which board qemu-x86_64 needs"},
		{"qemu without cmdline", without("cmdline"), "no cmdline, which board qemu-x86_64 needs"},
		{"qemu without roostd", without("bin/roostd"), "no bin/roostd, which board qemu-x86_64 needs"},
		{"qemu without a config", without("etc/roost/config.json"), "is not a roost system: it has no etc/roost/config.json"},
		{"qemu named by the config only", without("board"), "no board, which board qemu-x86_64 needs"},
		{"unknown board", with("board", "wrt54g"), `system ` + sys.String() + `: unknown board "wrt54g" (known: belkin-rt3200, gl-ar750, gl-mt300n-v2, lab, `},
		{"boards differ", with("etc/roost/config.json", `{"board": "qemu-mipsel"}`), `its board file names qemu-x86_64 but its config's board is qemu-mipsel`},
		{"config names none", with("etc/roost/config.json", `{}`), `its config's board is lab, as it names none`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeTree(t, dir, tc.files)
			err := checkParts(dir, sys)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("checkParts: %v, want %q", err, tc.want)
			}
		})
	}
}

// TestActivateRefusesIncompleteSystem: Activate refuses, before anything
// changes, a system in the store whose board needs a kernel it lacks.
func TestActivateRefusesIncompleteSystem(t *testing.T) {
	r := newRouter(t)
	pkgs := storetest.Closure("qemu", 2, 1, 32)
	pkgs[len(pkgs)-1].Config = `{"board": "qemu-x86_64"}`
	importPackages(t, r.s, pkgs)
	sys := pkgs[len(pkgs)-1].Path
	for _, mode := range []Mode{Switch, Test, Boot, DryActivate} {
		_, err := r.a.Activate(context.Background(), mode, sys, time.Minute, "ssh x")
		if err == nil || !strings.Contains(err.Error(), "no bin/roostd, which board qemu-x86_64 needs: build it with roost.lib.mkSystem") {
			t.Errorf("Activate %s: %v, want a refusal naming bin/roostd", mode, err)
		}
		r.running(r.old, 1, false)
	}
}

// writeTree writes files below dir: each a file with its content, or a
// symlink if the content is "->target".
func writeTree(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		if target, ok := strings.CutPrefix(content, "->"); ok {
			err = os.Symlink(target, p)
		} else {
			err = os.WriteFile(p, []byte(content), 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}
