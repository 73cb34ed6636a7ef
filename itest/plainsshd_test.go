package itest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/roostrouter/roost/itest/opensshd"
)

// startOpenSSH runs a real OpenSSH server that lets the laptop in, with
// binDir (if any) in its sessions' PATH.
func startOpenSSH(t *testing.T, l *laptop, binDir string, env ...string) *opensshd.Server {
	need(t, "/usr/sbin/sshd", "unshare")
	path := "/usr/bin:/bin"
	if binDir != "" {
		path = binDir + ":" + path
	}
	s, err := opensshd.Start(opensshd.Options{Dir: t.TempDir(), Listen: "127.0.0.1:" + freePort(t), AuthorizedKeys: l.key + "\n", Path: path, Env: env})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

func (l *laptop) ssh(addr string, stdin []byte, command string) result {
	host, port, _ := strings.Cut(addr, ":")
	return run(l.t, stdin, l.env(), "ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
		"-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
		"-i", filepath.Join(l.home, ".ssh/id_ed25519"), "-p", port, "root@"+host, command)
}

// TestUnderPlainSSHD: roostd's commands work under any sshd, and an SSH
// server without roostd is named as such.
func TestUnderPlainSSHD(t *testing.T) {
	l := newLaptop(t)
	sys := l.system("1.0", "22", 1)
	closure := l.nix.closure(sys)
	root := t.TempDir()

	withRoostd := startOpenSSH(t, l, filepath.Dir(roostd))
	// The fallback with any sshd: nix-store --export piped into roostd store import.
	imp := l.ssh(withRoostd.Addr, l.nix.export(closure), "roostd store import --root "+root)
	if imp.code != 0 {
		t.Fatalf("roostd store import over OpenSSH: exit %d: %s", imp.code, imp.stderr)
	}
	q := l.ssh(withRoostd.Addr, nil, "roostd store query-valid --root "+root+" "+strings.Join(closure, " "))
	if q.code != 0 || len(strings.Fields(q.stdout)) != len(closure) {
		t.Fatalf("query-valid over OpenSSH: exit %d, %d of %d valid", q.code, len(strings.Fields(q.stdout)), len(closure))
	}
	// roostd receive, roost's own protocol, under OpenSSH too.
	root2 := t.TempDir()
	// roost runs "roostd receive" with the default root; point it at root2
	// through a wrapper named roostd.
	wrapDir := t.TempDir()
	os.WriteFile(filepath.Join(wrapDir, "roostd"), []byte("#!/bin/sh\nexec "+roostd+" \"$@\" --root "+root2+"\n"), 0o755)
	wrapped := startOpenSSH(t, l, wrapDir)
	os.WriteFile(filepath.Join(l.home, ".ssh/config"), []byte("Host plain\n  HostName 127.0.0.1\n  Port "+strings.Split(wrapped.Addr, ":")[1]+"\n  User root\n"), 0o600)
	l.mustRoost("copy", "--host", "plain", "--accept-new-host-key", sys)
	mustRun(t, nil, roostd, append([]string{"store", "query-valid", "--root", root2}, closure...)...)

	// An SSH server without roostd.
	bare := startOpenSSH(t, l, "")
	os.WriteFile(filepath.Join(l.home, ".ssh/config"), []byte("Host bare\n  HostName 127.0.0.1\n  Port "+strings.Split(bare.Addr, ":")[1]+"\n  User root\n"), 0o600)
	res := l.roost("copy", "--host", "bare", "--accept-new-host-key", sys)
	if res.code == 0 || !strings.Contains(res.stderr, "has no roostd") {
		t.Fatalf("copy to an sshd without roostd: exit %d, %s", res.code, res.stderr)
	}
}

// TestSFTPConfined: roostd's sftp subsystem takes uploads into its staging
// folder, and no path leaves it.
func TestSFTPConfined(t *testing.T) {
	need(t, "sftp")
	l := newLaptop(t)
	r := startRouter(t, l)
	src := filepath.Join(t.TempDir(), "upload.bin")
	os.WriteFile(src, []byte("firmware"), 0o644)
	// A leading "-" lets sftp's batch go on after a refused command.
	batch := "-put " + src + " ../../../../escaped\n-put " + src + " fine\n-symlink fine link\n"
	res := run(t, []byte(batch), l.env(), "sftp", "-b", "-", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
		"-i", filepath.Join(l.home, ".ssh/id_ed25519"), "-P", r.port, "root@127.0.0.1")
	if !strings.Contains(res.stderr, "remote symlink") || !strings.Contains(res.stderr, "Failure") {
		t.Errorf("symlink in the staging folder was not refused:\n%s\n%s", res.stdout, res.stderr)
	}
	staging := filepath.Join(r.state, "staging")
	for _, name := range []string{"escaped", "fine"} {
		if b, err := os.ReadFile(filepath.Join(staging, name)); err != nil || string(b) != "firmware" {
			t.Errorf("upload %s did not land in the staging folder: %v", name, err)
		}
	}
	if _, err := os.Lstat(filepath.Join(staging, "link")); err == nil {
		t.Fatal("a symlink was made in the staging folder")
	}
	if _, err := os.Lstat(filepath.Join(filepath.Dir(r.state), "escaped")); err == nil {
		t.Fatal("an sftp upload escaped the staging folder")
	}
}
