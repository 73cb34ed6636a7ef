package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/roostrouter/roost/agent/sshd"
	"github.com/roostrouter/roost/hosttool/sshclient"
)

// rebooter is a router that reboots: roostd's real SSH endpoint, which
// stops (dropping its connections) when asked to reboot and listens
// again on the same address a moment later, with the host key of its
// next boot.
type rebooter struct {
	t       *testing.T
	addr    string
	userKey ssh.PublicKey
	keys    []ssh.Signer // host keys, one a boot; the last one stays
	refuse  string       // roostd reboot fails with this, if set
	down    time.Duration
	// other, if set, runs the commands the rebooter does not know, on
	// its boot'th boot.
	other func(r *rebooter, boot int, args []string, stdout, stderr io.Writer) int

	mu     sync.Mutex
	boots  int
	calls  []string // the command lines run, in order
	cancel context.CancelFunc
	done   chan struct{}
}

func (r *rebooter) boot() {
	r.mu.Lock()
	defer r.mu.Unlock()
	key := r.keys[min(r.boots, len(r.keys)-1)]
	r.boots++
	srv := &sshd.Server{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), HostKey: key, Exec: r.exec}
	srv.SetAuthorizedKeys([]ssh.PublicKey{r.userKey})
	l, err := net.Listen("tcp", r.addr)
	if err != nil {
		r.t.Errorf("listen again: %v", err)
		return
	}
	r.addr = l.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Serve(ctx, l); close(done) }()
	// Serve closes the listener only as its connections drop: closed
	// first, a router that went down accepts no one as it goes.
	r.cancel, r.done = func() { l.Close(); cancel() }, done
}

func (r *rebooter) stop() {
	r.mu.Lock()
	cancel, done := r.cancel, r.done
	r.mu.Unlock()
	cancel()
	<-done
}

// restart goes down (dropping every connection) once the answer in
// flight has gone out, as with roostd init, and boots again after r.down.
func (r *rebooter) restart() {
	go func() {
		time.Sleep(50 * time.Millisecond)
		r.stop()
		time.Sleep(r.down)
		r.boot()
	}()
}

func (r *rebooter) exec(_ context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	line := strings.Join(args, " ")
	r.mu.Lock()
	r.calls = append(r.calls, line)
	boot := r.boots
	r.mu.Unlock()
	switch {
	case line == "roostd reboot":
		if r.refuse != "" {
			fmt.Fprintln(stderr, "roostd:", r.refuse)
			return 1
		}
		r.restart()
		fmt.Fprintln(stdout, "reboot requested")
	case line == "roostd status --json":
		fmt.Fprintf(stdout, `{"version": "v2", "bootedSystem": "/nix/store/00000000000000000000000000000000-system", "generation": %d}`, boot)
	case r.other != nil:
		return r.other(r, boot, args, stdout, stderr)
	default:
		fmt.Fprintln(stderr, "roostd: unknown command")
		return 2
	}
	return 0
}

// startRebooter serves a rebooter and writes a home that knows its first
// host key and names it "rotuer".
func startRebooter(t *testing.T, r *rebooter) (home string) {
	home, signer := newHome(t)
	r.t, r.userKey, r.addr = t, signer.PublicKey(), "127.0.0.1:0"
	r.boot()
	t.Cleanup(r.stop)
	host, port, _ := net.SplitHostPort(r.addr)
	os.WriteFile(filepath.Join(home, ".ssh/config"), []byte(fmt.Sprintf("Host rotuer\n  HostName %s\n  Port %s\n  User root\n", host, port)), 0o600)
	known := fmt.Sprintf("[%s]:%s %s", host, port, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(r.keys[0].PublicKey()))))
	os.WriteFile(filepath.Join(home, ".ssh/known_hosts"), []byte(known+"\n"), 0o600)
	return home
}

func newHostKey(t *testing.T) ssh.Signer {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestReboot: roost reboot asks roostd to reboot, sees the connection
// drop, waits for SSH to answer again with the same host key and reports
// the times and what booted; a router that comes back with another key,
// or refuses to reboot, is an error that says so.
func TestReboot(t *testing.T) {
	key := newHostKey(t)
	for _, tc := range []struct {
		name    string
		r       *rebooter
		args    []string
		wantErr string
	}{
		{"back with the same key", &rebooter{keys: []ssh.Signer{key}, down: 1500 * time.Millisecond}, nil, ""},
		{"no wait", &rebooter{keys: []ssh.Signer{key}, down: time.Hour}, []string{"--no-wait"}, ""},
		{"back with another key", &rebooter{keys: []ssh.Signer{key, newHostKey(t)}, down: 200 * time.Millisecond}, nil, "not with the host key it had before the reboot"},
		{"refused", &rebooter{keys: []ssh.Signer{key}, refuse: "roostd init is not running here (no /run/roostd-init.pid)"}, nil, "reboot: roostd init is not running here"},
		{"never back", &rebooter{keys: []ssh.Signer{key}, down: time.Hour}, []string{"--timeout", "3s"}, "did not answer SSH again by"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("HOME", startRebooter(t, tc.r))
			e, out, errb := testEnv(func(string) string { return "" })
			start := time.Now()
			err := run(e, append([]string{"reboot", "--host", "rotuer", "--json"}, tc.args...))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || out.Len() != 0 {
					t.Fatalf("err %v, stdout %q; want an error saying %q and nothing printed", err, out.String(), tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("%v\n%s", err, errb.String())
			}
			var res rebootResult
			if err := json.Unmarshal(out.Bytes(), &res); err != nil {
				t.Fatalf("roost reboot --json printed %q: %v", out.String(), err)
			}
			if res.HostKey != ssh.FingerprintSHA256(key.PublicKey()) || res.DownSeconds <= 0 || res.DownSeconds > 2 {
				t.Fatalf("reboot: %+v", res)
			}
			if len(tc.args) > 0 { // --no-wait
				if res.Waited || time.Since(start) > 5*time.Second {
					t.Fatalf("--no-wait waited: %+v", res)
				}
				return
			}
			if !res.Waited || res.UpSeconds < 1.5 || res.Generation != 2 || res.Version != "v2" || !strings.HasSuffix(res.Booted.String(), "-system") {
				t.Fatalf("reboot: %+v; want it back after the 1.5s it was down, on its second boot", res)
			}
		})
	}
}

// TestTransient: what a router that restarts or reboots causes is tried
// again; what known_hosts or the router decided is not.
func TestTransient(t *testing.T) {
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("connect to rotuer (192.168.1.1:22): %w", refused), true},
		{fmt.Errorf("ssh to rotuer: %w", fmt.Errorf("ssh: handshake failed: %w", io.EOF)), true},
		{fmt.Errorf("ssh to rotuer: %w", fmt.Errorf("ssh: handshake failed: %w", syscall.ECONNRESET)), true},
		{fmt.Errorf("connect to rotuer: %w", os.NewSyscallError("connect", syscall.EHOSTUNREACH)), true},
		{&sshclient.HostKeyError{Host: "rotuer", Key: newHostKey(t).PublicKey(), Changed: true}, false},
		{errors.New("rotuer refused every key offered as root (~/.ssh/id_ed25519): add your public key to the router's ssh.authorizedKeys"), false},
		{errors.New(`rotuer (192.168.1.1:22) does not speak SSH: it answered "HTTP/1.1"`), false},
	} {
		if got := transient(tc.err); got != tc.want {
			t.Errorf("transient(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
