package itest

import (
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func (r *router) validCount(paths []string) int {
	q := run(r.t, nil, nil, roostd, append([]string{"store", "query-valid", "--root", r.root}, paths...)...)
	return len(strings.Fields(q.stdout))
}

// TestCutTransferResumes kills roost in the middle of a transfer; the next
// run sends only what the router still lacks.
func TestCutTransferResumes(t *testing.T) {
	l := newLaptop(t)
	r := startRouter(t, l)
	l.sshConfig(r.port)
	sys := l.system("1.0", r.port, 120)
	closure := l.nix.closure(sys)

	cmd := exec.Command(roost, "copy", "--host", "rotuer", "--accept-new-host-key", sys)
	cmd.Env = append(os.Environ(), l.env()...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for r.validCount(closure) == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cmd.Process.Kill()
	cmd.Wait()
	kept := r.validCount(closure)
	if kept == 0 || kept == len(closure) {
		t.Fatalf("after the cut %d of %d paths are valid: the cut did not land mid-transfer", kept, len(closure))
	}
	mustRun(t, nil, roostd, "store", "verify", "--root", r.root)

	var res rebuildJSON
	out := l.mustRoost("copy", "--host", "rotuer", "--json", sys)
	json.Unmarshal([]byte(out), &res)
	if res.SentPaths != len(closure)-kept {
		t.Fatalf("the re-run sent %d paths, want the %d still missing", res.SentPaths, len(closure)-kept)
	}
	if r.validCount(closure) != len(closure) {
		t.Fatal("after the re-run the closure is not complete")
	}
	mustRun(t, nil, roostd, "store", "verify", "--root", r.root)
}

// waitCurrent waits until the router runs want.
func (r *router) waitCurrent(want string, gen int, d time.Duration) routerStatus {
	r.t.Helper()
	deadline := time.Now().Add(d)
	var st routerStatus
	for time.Now().Before(deadline) {
		if st = r.status(); st.Current == want && st.Generation == gen && st.Pending == nil {
			return st
		}
		time.Sleep(100 * time.Millisecond)
	}
	r.t.Fatalf("the router runs %s (generation %d, pending %v), want %s (generation %d)\n%s", st.Current, st.Generation, st.Pending, want, gen, r.log.String())
	return st
}

// TestRollbackWithoutConfirmation: a system that moves SSH away is rolled
// back by the router alone, and the previous system is reachable again.
func TestRollbackWithoutConfirmation(t *testing.T) {
	l := newLaptop(t)
	r := startRouter(t, l)
	l.sshConfig(r.port)
	good := l.system("1.0", r.port, 1)
	l.rebuild("--system", good, "--accept-new-host-key")

	bad := l.system("2.0", freePort(t), 1) // its SSH listens elsewhere
	start := time.Now()
	res := l.roost("rebuild", "--host", "rotuer", "--system", bad, "--confirm-timeout", "3s")
	if res.code == 0 || !strings.Contains(res.stderr, "rolls back by itself") {
		t.Fatalf("rebuild to a system that breaks SSH: exit %d, %s", res.code, res.stderr)
	}
	// roost has exited: the laptop is gone. The router must act alone.
	r.waitCurrent(good, 1, 15*time.Second)
	if time.Since(start) > 15*time.Second {
		t.Fatal("the rollback took too long")
	}
	if mark, _ := os.ReadFile(filepath.Join(r.state, "activated")); strings.TrimSpace(string(mark)) != "1.0" {
		t.Errorf("the previous system's activate script did not run again: %q", mark)
	}
	l.mustRoost("status", "--host", "rotuer") // reachable again, on the old port
}

// TestRollbackAcrossAgentRestart: the confirmation timer survives roostd
// being killed; when it comes back after the deadline, it rolls back.
func TestRollbackAcrossAgentRestart(t *testing.T) {
	l := newLaptop(t)
	r := startRouter(t, l)
	l.sshConfig(r.port)
	sys1 := l.system("1.0", r.port, 1)
	sys2 := l.system("2.0", r.port, 1)
	l.rebuild("--system", sys1, "--accept-new-host-key")
	l.mustRoost("copy", "--host", "rotuer", sys2)
	// Activate without ever confirming, as a laptop that died would.
	mustRun(t, nil, roostd, "activate", "switch", sys2, "--confirm-timeout", "2s", "--root", r.root)
	if st := r.status(); st.Current != sys2 || st.Pending == nil {
		t.Fatalf("after activate: %+v", st)
	}
	r.cmd.Process.Signal(syscall.SIGKILL)
	r.cmd.Wait()
	r.cmd = nil
	time.Sleep(2500 * time.Millisecond)
	r.start()
	r.waitCurrent(sys1, 1, 10*time.Second)
}

func TestConnectionErrors(t *testing.T) {
	l := newLaptop(t)
	r := startRouter(t, l)
	l.sshConfig(r.port)
	sys := l.system("1.0", r.port, 1)
	knownHosts := filepath.Join(l.home, ".ssh/known_hosts")

	// Unknown host: refused, with the fingerprint and the line to add.
	res := l.roost("rebuild", "--host", "rotuer", "--system", sys)
	if res.code == 0 || !strings.Contains(res.stderr, "is unknown") || !strings.Contains(res.stderr, "[127.0.0.1]:"+r.port+" ssh-ed25519 ") {
		t.Fatalf("unknown host: exit %d, %s", res.code, res.stderr)
	}
	if _, err := os.Stat(knownHosts); err == nil {
		t.Fatal("an unknown host key was written to known_hosts without --accept-new-host-key")
	}
	// Changed host key: refused even with --accept-new-host-key.
	other := filepath.Join(t.TempDir(), "other")
	mustRun(t, nil, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", other)
	otherPub, _ := os.ReadFile(other + ".pub")
	fields := strings.Fields(string(otherPub))
	os.WriteFile(knownHosts, []byte("[127.0.0.1]:"+r.port+" "+fields[0]+" "+fields[1]+"\n"), 0o600)
	res = l.roost("rebuild", "--host", "rotuer", "--system", sys, "--accept-new-host-key")
	if res.code == 0 || !strings.Contains(res.stderr, "HOST KEY CHANGED") {
		t.Fatalf("changed host key: exit %d, %s", res.code, res.stderr)
	}
	os.Remove(knownHosts)
	// A user key the router does not know.
	stranger := newLaptop(t)
	stranger.sshConfig(r.port)
	res = stranger.roost("rebuild", "--host", "rotuer", "--system", sys, "--accept-new-host-key")
	if res.code == 0 || !strings.Contains(res.stderr, "refused every key") {
		t.Fatalf("wrong user key: exit %d, %s", res.code, res.stderr)
	}
	// A peer that is not roostd at all.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			// As an HTTP server does with a request it cannot parse.
			c.Read(make([]byte, 512))
			c.Write([]byte("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"))
			c.Close()
		}
	}()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	res = l.roost("status", "--host", "root@127.0.0.1:"+port)
	if res.code == 0 || !strings.Contains(res.stderr, "does not speak SSH") {
		t.Fatalf("not an SSH peer: exit %d, %s", res.code, res.stderr)
	}
	// Nothing of any of this reached the router.
	if st := r.status(); st.Current != "" || len(st.Gens) != 0 {
		t.Fatalf("refused connections changed the router: %+v", st)
	}
	if n := len(storeEntries(t, r.root)); n != 0 {
		t.Fatalf("refused connections left %d store paths", n)
	}
}

// TestRemoteGC: roost gc --host frees exactly the unreachable paths.
func TestRemoteGC(t *testing.T) {
	l := newLaptop(t)
	r := startRouter(t, l)
	l.sshConfig(r.port)
	sys1 := l.system("1.0", r.port, 2)
	sys2 := l.system("2.0", r.port, 2)
	l.rebuild("--system", sys1, "--accept-new-host-key")
	l.rebuild("--system", sys2)
	// A day later: the transfers' temp roots have expired.
	os.RemoveAll(filepath.Join(r.root, "nix/var/roost/temproots"))

	var res gcResult
	out := l.mustRoost("gc", "--host", "rotuer", "--keep", "1", "--json")
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("roost gc --json printed %q: %v", out, err)
	}
	want := without(l.nix.closure(sys1), l.nix.closure(sys2))
	if strings.Join(sortedCopy(res.Paths), " ") != strings.Join(sortedCopy(want), " ") {
		t.Fatalf("gc deleted %v, want exactly sys1's own paths %v", res.Paths, want)
	}
	if n := r.validCount(l.nix.closure(sys2)); n != len(l.nix.closure(sys2)) {
		t.Fatal("gc deleted part of the current system")
	}
	mustRun(t, nil, roostd, "store", "verify", "--root", r.root)
}
