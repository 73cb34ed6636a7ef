package itest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// nixOverSSH runs a nix command on the laptop whose ssh:// store is
// 127.0.0.1:port, as the laptop's user would with NIX_SSHOPTS.
func (l *laptop) nixOverSSH(port string, name string, args ...string) result {
	env := append(l.env(), "NIX_SSHOPTS=-p "+port+" -i "+filepath.Join(l.home, ".ssh/id_ed25519")+
		" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR")
	return run(l.t, nil, env, name, args...)
}

func mustOK(t *testing.T, r result, what string) {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("%s: exit %d\n%s%s", what, r.code, r.stdout, r.stderr)
	}
}

// TestNixCopy: unmodified nix copy and nix-copy-closure (Nix 2.8) against
// a router without Nix, through roostd's own SSH and through OpenSSH.
func TestNixCopy(t *testing.T) {
	l := newLaptop(t)
	r := startRouter(t, l)
	sys := l.nix.build(systemExpr)
	closure := l.nix.closure(sys)

	mustOK(t, l.nixOverSSH(r.port, "nix", "--extra-experimental-features", "nix-command", "copy", "--to", "ssh://root@127.0.0.1", sys), "nix copy --to")
	if r.validCount(closure) != len(closure) {
		t.Fatalf("after nix copy %d of %d paths are valid", r.validCount(closure), len(closure))
	}
	mustRun(t, nil, roostd, "store", "verify", "--root", r.root)
	// The router's log arrives through a pipe: give it a moment.
	added := 0
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline) && added < len(closure); time.Sleep(20 * time.Millisecond) {
		added = strings.Count(r.log.String(), "serve: added")
	}
	if added != len(closure) {
		t.Fatalf("roostd added %d paths, want %d\n%s", added, len(closure), r.log.String())
	}
	mustOK(t, l.nixOverSSH(r.port, "nix", "--extra-experimental-features", "nix-command", "copy", "--to", "ssh://root@127.0.0.1", sys), "nix copy again")
	time.Sleep(300 * time.Millisecond)
	if again := strings.Count(r.log.String(), "serve: added"); again != added {
		t.Fatalf("copying again sent %d paths", again-added)
	}

	// Read it back out into an empty store.
	fresh := t.TempDir()
	back := l.nixOverSSH(r.port, "nix", "--extra-experimental-features", "nix-command", "copy", "--from", "ssh://root@127.0.0.1", "--to", fresh, "--no-check-sigs", sys)
	mustOK(t, back, "nix copy --from")
	for _, p := range closure {
		want := mustRun(t, nil, "nix-store", append(l.nix.opts(), "-q", "--hash", p)...)
		got := mustRun(t, nil, "nix-store", "--store", fresh, "-q", "--hash", p)
		if got != want {
			t.Fatalf("%s came back with hash %s, want %s", p, got, want)
		}
	}

	// nix-copy-closure, of a second system.
	sys2 := l.system("2.0", r.port, 1)
	mustOK(t, l.nixOverSSH(r.port, "nix-copy-closure", "--to", "root@127.0.0.1", sys2), "nix-copy-closure --to")
	c2 := l.nix.closure(sys2)
	if r.validCount(c2) != len(c2) {
		t.Fatal("nix-copy-closure did not copy the closure")
	}

	// Under OpenSSH, with a link named nix-store to roostd.
	bin := t.TempDir()
	os.Symlink(roostd, filepath.Join(bin, "nix-store"))
	root3 := t.TempDir()
	sshd := startOpenSSH(t, l, bin, "ROOSTD_ROOT="+root3)
	_, port, _ := strings.Cut(sshd.Addr, ":")
	mustOK(t, l.nixOverSSH(port, "nix", "--extra-experimental-features", "nix-command", "copy", "--to", "ssh://root@127.0.0.1", sys), "nix copy under OpenSSH")
	mustRun(t, nil, roostd, append([]string{"store", "query-valid", "--root", root3}, closure...)...)
	mustRun(t, nil, roostd, "store", "verify", "--root", root3)
}
