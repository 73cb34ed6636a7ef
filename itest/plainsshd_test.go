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
