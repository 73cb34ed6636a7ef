package itest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSignedClosures: with trusted keys set, an unsigned or wrongly signed
// path is refused before registration; one signed by nix store sign, or by
// roost --sign-key, is accepted.
func TestSignedClosures(t *testing.T) {
	l := newLaptop(t)
	dir := t.TempDir()
	for _, name := range []string{"laptop-1", "stranger-1"} {
		mustRun(t, nil, "nix-store", "--generate-binary-cache-key", name, filepath.Join(dir, name+".sk"), filepath.Join(dir, name+".pk"))
	}
	pk, _ := os.ReadFile(filepath.Join(dir, "laptop-1.pk"))
	r := &router{t: t, root: t.TempDir(), state: t.TempDir(), port: freePort(t), log: &syncBuffer{}}
	os.WriteFile(filepath.Join(r.state, "authorized_keys"), []byte(l.key+"\n"), 0o600)
	boot := filepath.Join(t.TempDir(), "boot.json")
	os.WriteFile(boot, []byte(fmt.Sprintf(`{"ssh": {"listen": ["127.0.0.1:%s"]}, "trustedPublicKeys": [%q]}`, r.port, strings.TrimSpace(string(pk)))), 0o644)
	r.start("--config", boot)
	t.Cleanup(r.stop)
	l.sshConfig(r.port)
	sys := l.system("1.0", r.port, 1)
	closure := l.nix.closure(sys)

	res := l.roost("copy", "--host", "rotuer", "--accept-new-host-key", sys)
	if res.code == 0 || !strings.Contains(res.stderr, "is not signed by a trusted key (laptop-1)") {
		t.Fatalf("unsigned copy: exit %d, %s", res.code, res.stderr)
	}
	res = l.roost("copy", "--host", "rotuer", "--sign-key", filepath.Join(dir, "stranger-1.sk"), sys)
	if res.code == 0 || !strings.Contains(res.stderr, "is not signed by a trusted key") {
		t.Fatalf("copy signed by a stranger: exit %d, %s", res.code, res.stderr)
	}
	if n := r.validCount(closure); n != 0 {
		t.Fatalf("refused copies registered %d paths", n)
	}
	// nix-copy of unsigned paths through the serve protocol: refused too.
	if nc := l.nixOverSSH(r.port, "nix-copy-closure", "--to", "root@127.0.0.1", sys); nc.code == 0 {
		t.Fatal("nix-copy-closure of unsigned paths was accepted")
	}
	// Signed by Nix itself: accepted.
	mustRun(t, nil, "nix", append(l.nix.opts(), "store", "sign", "--key-file", filepath.Join(dir, "laptop-1.sk"), "--recursive", sys)...)
	l.mustRoost("copy", "--host", "rotuer", sys)
	if n := r.validCount(closure); n != len(closure) {
		t.Fatalf("the signed closure: %d of %d paths valid", n, len(closure))
	}
	// Signed by roost for the rebuild.
	sys2 := l.system("2.0", r.port, 1)
	l.mustRoost("rebuild", "--host", "rotuer", "--system", sys2, "--sign-key", filepath.Join(dir, "laptop-1.sk"))
	mustRun(t, nil, roostd, "store", "verify", "--root", r.root)
}
