package itest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// otaSystemExpr is a router system: a config (passed in), an activate
// script that leaves a mark in the state folder, and an app whose version
// is an argument, plus a blob of random data so transfers take a while.
const otaSystemExpr = `
{ version ? "1.0", config, blobs ? "1" }:
let
` + nixMk + `  lib = mk "libfoo-1.2" [] ''
    ${bb} mkdir -p $out/lib
    echo library > $out/lib/libfoo.so
  '';
  blob = i: mk "blob-${toString i}-${version}" [] ''
    ${bb} mkdir $out
    ${bb} dd if=/dev/urandom of=$out/data bs=64k count=16 2>/dev/null
  '';
  blobList = builtins.genList blob (builtins.fromJSON blobs);
  app = mk "app-${version}" [ lib ] ''
    ${bb} mkdir -p $out/bin
    printf '#!/bin/sh\necho app ${version} ${lib}\n' > $out/bin/app
    ${bb} chmod 555 $out/bin/app
  '';
  configFile = builtins.toFile "config.json" config;
in mk "system" ([ lib app ] ++ blobList) ''
  ${bb} mkdir -p $out/etc/roost $out/bin
  ${bb} cp ${configFile} $out/etc/roost/config.json
  ${bb} ln -s ${app}/bin/app $out/bin/app
  echo "$deps" > $out/parts
  printf '#!/bin/sh\necho ${version} > "$ROOST_STATE/activated"\n' > $out/activate
  ${bb} chmod 555 $out/activate
''
`

func freePort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return port
}

// router is roostd run with its own root and state, listening on loopback.
type router struct {
	t           *testing.T
	root, state string
	port        string
	cmd         *exec.Cmd
	log         *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// laptop is the user's side: a home with ~/.ssh, and a Nix store.
type laptop struct {
	t    *testing.T
	home string
	nix  *nixStore
	key  string // public key line
}

func newLaptop(t *testing.T) *laptop {
	need(t, "ssh-keygen")
	l := &laptop{t: t, home: t.TempDir(), nix: newNixStore(t)}
	sshDir := filepath.Join(l.home, ".ssh")
	os.MkdirAll(sshDir, 0o700)
	mustRun(t, nil, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "laptop", "-f", filepath.Join(sshDir, "id_ed25519"))
	pub, _ := os.ReadFile(filepath.Join(sshDir, "id_ed25519.pub"))
	l.key = strings.TrimSpace(string(pub))
	return l
}

// sshConfig names the router "rotuer" in ~/.ssh/config, as a user would.
func (l *laptop) sshConfig(port string) {
	cfg := fmt.Sprintf("Host rotuer\n  HostName 127.0.0.1\n  Port %s\n  User root\n  IdentityFile ~/.ssh/id_ed25519\n", port)
	os.WriteFile(filepath.Join(l.home, ".ssh/config"), []byte(cfg), 0o600)
}

func (l *laptop) env() []string {
	return []string{"HOME=" + l.home, "SSH_AUTH_SOCK=", "NIX_REMOTE=" + l.nix.dir,
		// For roost's own nix-build: the same sandbox as nixStore.build.
		"NIX_CONFIG=sandbox-paths = /bin/busybox\nbuild-users-group =\nsubstituters =\n"}
}

// roost runs the roost command on the laptop.
func (l *laptop) roost(args ...string) result {
	l.t.Helper()
	return run(l.t, nil, l.env(), roost, args...)
}

func (l *laptop) mustRoost(args ...string) string {
	l.t.Helper()
	r := l.roost(args...)
	if r.code != 0 {
		l.t.Fatalf("roost %s: exit %d\n%s\n%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// system builds a router system whose config lets this laptop in on port.
func (l *laptop) system(version, port string, blobs int) string {
	cfg := fmt.Sprintf(`{"hostname": "rotuer", "ssh": {"listen": ["127.0.0.1:%s"], "authorizedKeys": [%q]}}`, port, l.key)
	return l.nix.build(otaSystemExpr, "version", version, "config", cfg, "blobs", fmt.Sprint(blobs))
}

// startRouter runs an empty router that lets the laptop's key in.
func startRouter(t *testing.T, l *laptop) *router {
	r := &router{t: t, root: t.TempDir(), state: t.TempDir(), port: freePort(t), log: &syncBuffer{}}
	os.WriteFile(filepath.Join(r.state, "authorized_keys"), []byte(l.key+"\n"), 0o600)
	boot := filepath.Join(t.TempDir(), "bootstrap.json")
	os.WriteFile(boot, []byte(fmt.Sprintf(`{"ssh": {"listen": ["127.0.0.1:%s"]}}`, r.port)), 0o644)
	r.start("--config", boot)
	t.Cleanup(r.stop)
	return r
}

func (r *router) start(extra ...string) {
	r.cmd = exec.Command(roostd, append([]string{"run", "--root", r.root, "--state", r.state}, extra...)...)
	r.cmd.Stdout, r.cmd.Stderr = r.log, r.log
	if err := r.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	r.waitListening(r.port, 10*time.Second)
}

func (r *router) waitListening(port string, d time.Duration) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", "127.0.0.1:"+port); err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	r.t.Fatalf("roostd does not listen on %s:\n%s", port, r.log.String())
}

func (r *router) stop() {
	if r.cmd != nil && r.cmd.Process != nil {
		r.cmd.Process.Signal(syscall.SIGTERM)
		r.cmd.Wait()
		r.cmd = nil
	}
}

type routerStatus struct {
	Current    string `json:"currentSystem"`
	Generation int    `json:"generation"`
	Pending    *struct {
		System string `json:"system"`
	} `json:"pendingActivation"`
	Gens []generation `json:"generations"`
}

func (r *router) status() routerStatus {
	r.t.Helper()
	var st routerStatus
	out := mustRun(r.t, nil, roostd, "status", "--json", "--root", r.root, "--state", r.state)
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		r.t.Fatalf("status --json: %v: %s", err, out)
	}
	return st
}

type rebuildJSON struct {
	ClosurePaths int    `json:"closurePaths"`
	SentPaths    int    `json:"sentPaths"`
	SentNARBytes int64  `json:"sentNarBytes"`
	WireBytes    int64  `json:"wireBytes"`
	Generation   int    `json:"generation"`
	System       string `json:"system"`
	Confirmed    bool   `json:"confirmed"`
	Changes      []struct {
		Name string   `json:"name"`
		Old  []string `json:"old"`
		New  []string `json:"new"`
	} `json:"changes"`
}

func (l *laptop) rebuild(args ...string) rebuildJSON {
	l.t.Helper()
	var res rebuildJSON
	out := l.mustRoost(append([]string{"rebuild", "--host", "rotuer", "--json"}, args...)...)
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		l.t.Fatalf("roost rebuild --json printed %q: %v", out, err)
	}
	return res
}

func TestRebuild(t *testing.T) {
	l := newLaptop(t)
	r := startRouter(t, l)
	l.sshConfig(r.port)
	sys1 := l.system("1.0", r.port, 2)
	sys2 := l.system("2.0", r.port, 2)
	c1, c2 := l.nix.closure(sys1), l.nix.closure(sys2)

	first := l.rebuild("--system", sys1, "--accept-new-host-key")
	if first.SentPaths != len(c1) || first.ClosurePaths != len(c1) || first.Generation != 1 || !first.Confirmed {
		t.Fatalf("first rebuild: %+v, want all %d paths sent, generation 1, confirmed", first, len(c1))
	}
	// The blobs are random, so incompressible: only framing may be added.
	if first.WireBytes > first.SentNARBytes+first.SentNARBytes/100 {
		t.Errorf("sent %d bytes on the wire for %d of NAR", first.WireBytes, first.SentNARBytes)
	}
	if st := r.status(); st.Current != sys1 || st.Generation != 1 || st.Pending != nil {
		t.Fatalf("after the first rebuild the router runs %s (generation %d, pending %v)", st.Current, st.Generation, st.Pending)
	}
	if mark, _ := os.ReadFile(filepath.Join(r.state, "activated")); strings.TrimSpace(string(mark)) != "1.0" {
		t.Fatalf("the system's activate script did not run: %q", mark)
	}

	second := l.rebuild("--system", sys2)
	changed := without(c2, c1)
	if second.SentPaths != len(changed) || second.Generation != 2 {
		t.Fatalf("second rebuild sent %d paths, want the %d that changed (%v)", second.SentPaths, len(changed), changed)
	}
	found := false
	for _, c := range second.Changes {
		if c.Name == "app" && strings.Join(c.Old, ",") == "1.0" && strings.Join(c.New, ",") == "2.0" {
			found = true
		}
	}
	if !found {
		t.Errorf("the summary does not show app 1.0 → 2.0: %+v", second.Changes)
	}

	noop := l.rebuild("--system", sys2)
	if noop.SentPaths != 0 || noop.SentNARBytes != 0 || noop.Generation != 2 {
		t.Fatalf("no-op rebuild: %+v, want nothing sent and generation 2", noop)
	}
	if st := r.status(); len(st.Gens) != 2 {
		t.Fatalf("after a no-op rebuild there are %d generations, want 2", len(st.Gens))
	}
	mustRun(t, nil, roostd, "store", "verify", "--root", r.root)
}

// TestRebuildFromFileRollbackAndJump: roost builds the system itself with
// -f/-A, reaches the router through an OpenSSH jump host (ProxyJump), and
// roost rollback runs the previous generation again.
func TestRebuildFromFileRollbackAndJump(t *testing.T) {
	l := newLaptop(t)
	r := startRouter(t, l)
	jump := startOpenSSH(t, l, "")
	_, jumpPort, _ := net.SplitHostPort(jump.Addr)
	os.WriteFile(filepath.Join(l.home, ".ssh/config"), []byte(fmt.Sprintf(
		"Host rotuer\n  HostName 127.0.0.1\n  Port %s\n  ProxyJump jump\n\nHost jump\n  HostName 127.0.0.1\n  Port %s\n  User root\n", r.port, jumpPort)), 0o600)

	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "system.nix"), []byte(otaSystemExpr), 0o644)
	cfg := fmt.Sprintf(`{"ssh": {"listen": ["127.0.0.1:%s"], "authorizedKeys": [%q]}}`, r.port, l.key)
	for _, v := range []string{"1.0", "2.0"} {
		os.WriteFile(filepath.Join(dir, "router-"+v+".nix"), []byte(fmt.Sprintf(
			"{ rotuer = import ./system.nix { version = %q; config = %q; }; }", v, cfg)), 0o644)
	}
	one := l.rebuild("-f", filepath.Join(dir, "router-1.0.nix"), "-A", "rotuer", "--accept-new-host-key")
	two := l.rebuild("-f", filepath.Join(dir, "router-2.0.nix"), "-A", "rotuer")
	if one.Generation != 1 || two.Generation != 2 || one.System == two.System {
		t.Fatalf("rebuilds from a file: %+v then %+v", one, two)
	}
	if st := r.status(); st.Current != two.System {
		t.Fatalf("the router runs %s, want %s", st.Current, two.System)
	}
	out := l.mustRoost("rollback", "--host", "rotuer")
	if !strings.Contains(out, "rolled back to generation 1") {
		t.Fatalf("roost rollback printed %q", out)
	}
	r.waitCurrent(one.System, 1, 5*time.Second)
	if mark, _ := os.ReadFile(filepath.Join(r.state, "activated")); strings.TrimSpace(string(mark)) != "1.0" {
		t.Fatalf("rollback did not run generation 1's activate script: %q", mark)
	}
}
