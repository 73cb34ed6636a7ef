package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/roostrouter/roost/agent/sshd"
)

func testEnv(getenv func(string) string) (*env, *bytes.Buffer, *bytes.Buffer) {
	var out, errb bytes.Buffer
	return &env{ctx: context.Background(), stdout: &out, stderr: &errb, getenv: getenv}, &out, &errb
}

func TestVersionJSON(t *testing.T) {
	e, out, _ := testEnv(func(string) string { return "" })
	if err := run(e, []string{"version", "--json"}); err != nil {
		t.Fatal(err)
	}
	var v struct{ Version string }
	if err := json.Unmarshal(out.Bytes(), &v); err != nil || v.Version != version {
		t.Fatalf("roost version --json printed %q (%v)", out.String(), err)
	}
}

// router is roostd's real SSH endpoint on 127.0.0.1 with a stand-in for
// roostd's commands: it records each command line's words and answers
// with what reply returns. It plays a router whose roostd is of another
// version than this roost, which no build of roostd here can be.
type router struct {
	mu    sync.Mutex
	calls [][]string
	reply func(args []string) string
}

func (r *router) exec(_ context.Context, args []string, _ io.Reader, stdout, _ io.Writer) int {
	r.mu.Lock()
	r.calls = append(r.calls, args)
	r.mu.Unlock()
	io.WriteString(stdout, r.reply(args))
	return 0
}

// newHome writes a home folder with a user key, ~/.ssh/id_ed25519, and
// returns it with the key.
func newHome(t *testing.T) (home string, userKey ssh.Signer) {
	home = t.TempDir()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	block, err := ssh.MarshalPrivateKey(priv, "laptop")
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(home, ".ssh"), 0o700)
	os.WriteFile(filepath.Join(home, ".ssh/id_ed25519"), pem.EncodeToMemory(block), 0o600)
	userKey, _ = ssh.NewSignerFromKey(priv)
	return home, userKey
}

// startRouter serves r and writes a home whose ~/.ssh/config names it
// "rotuer", as a user's would.
func startRouter(t *testing.T, r *router) (home string) {
	home, userKey := newHome(t)
	hostKey, err := sshd.LoadHostKey(filepath.Join(t.TempDir(), "host_key"))
	if err != nil {
		t.Fatal(err)
	}
	srv := &sshd.Server{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), HostKey: hostKey, Exec: r.exec}
	srv.SetAuthorizedKeys([]ssh.PublicKey{userKey.PublicKey()})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Serve(ctx, l); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	_, port, _ := net.SplitHostPort(l.Addr().String())
	os.WriteFile(filepath.Join(home, ".ssh/config"), []byte(fmt.Sprintf("Host rotuer\n  HostName 127.0.0.1\n  Port %s\n  User root\n", port)), 0o600)
	return home
}

// TestRemoteJSON: roost's router commands ask roostd for JSON and pass on
// exactly one JSON document; a roostd that answers in text (an older one)
// is an error that says so, never text on a script's stdout.
func TestRemoteJSON(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		roostd  string // the words roostd must get
		reply   string
		wantErr string
	}{
		{"status", []string{"status"}, "roostd status --json", `{"generation": 2}`, ""},
		{"generations", []string{"generations"}, "roostd generations --json", `[{"number": 1}, {"number": 2}]`, ""},
		{"rollback", []string{"rollback"}, "roostd rollback --json", `{"generation": 1, "running": true}`, ""},
		{"rollback at the next boot", []string{"rollback", "--boot"}, "roostd rollback --boot --json", `{"generation": 1, "running": false}`, ""},
		{"gc with its flags", []string{"gc", "--keep", "3", "--older-than", "30d", "--dry-run"},
			"roostd gc --keep 3 --older-than 30d --dry-run --json", `{"dryRun": true}`, ""},
		{"an older roostd's text", []string{"rollback"}, "roostd rollback --json", "rolled back to generation 1\n", "printed no JSON"},
		{"two documents", []string{"status"}, "roostd status --json", "{}\n{}\n", "printed no JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &router{reply: func([]string) string { return tc.reply }}
			t.Setenv("HOME", startRouter(t, r)) // sshclient finds ~/.ssh there
			e, out, errb := testEnv(func(string) string { return "" })
			err := run(e, append(tc.args, "--host", "rotuer", "--json", "--accept-new-host-key"))
			if len(r.calls) != 1 || strings.Join(r.calls[0], " ") != tc.roostd {
				t.Errorf("roostd ran %q, want %q", r.calls, tc.roostd)
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || out.Len() != 0 {
					t.Fatalf("err %v, stdout %q; want an error saying %q and nothing printed", err, out.String(), tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("%v\n%s", err, errb.String())
			}
			if !oneJSON(out.Bytes()) {
				t.Fatalf("printed %q, not one JSON document", out.String())
			}
		})
	}
}

func TestSystemPath(t *testing.T) {
	dir := t.TempDir()
	sys := "/nix/store/00000000000000000000000000000000-system"
	os.Symlink(sys, filepath.Join(dir, "result"))
	os.Symlink("result", filepath.Join(dir, "again"))
	os.WriteFile(filepath.Join(dir, "plain"), nil, 0o644)
	for _, tc := range []struct{ arg, want, err string }{
		{sys, sys, ""},
		{sys + "/etc", sys, ""},
		{filepath.Join(dir, "result"), sys, ""},
		{filepath.Join(dir, "again"), sys, ""},
		{filepath.Join(dir, "plain"), "", "neither a store path nor a link to one"},
		{filepath.Join(dir, "missing"), "", "neither a store path nor a link to one"},
	} {
		got, err := systemPath(tc.arg)
		if (got != "" && got.String() != tc.want) || (got == "" && tc.want != "") || (tc.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("systemPath(%q) = %q, %v; want %q, %q", tc.arg, got, err, tc.want, tc.err)
		}
	}
}
