package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roostrouter/roost/agent/control"
	"github.com/roostrouter/roost/agent/supervisor"
	"github.com/roostrouter/roost/updater/store"
)

// commandsFunc is Commands from a function.
type commandsFunc func(ctx context.Context, a *Agent, args []string, stdin io.Reader, stdout, stderr io.Writer) int

func (f commandsFunc) Exec(ctx context.Context, a *Agent, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return f(ctx, a, args, stdin, stdout, stderr)
}

// newAgent makes an agent on a router in temporary folders, with config as
// its bootstrap config.
func newAgent(t *testing.T, config string, cmds Commands) *Agent {
	t.Helper()
	root, state := t.TempDir(), t.TempDir()
	file := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(file, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	a, err := New(Options{Root: root, State: state, ConfigFile: file, ProcSys: t.TempDir(),
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Store: store.New(root, store.Options{}), Commands: cmds})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// freePort returns a local address nothing listens on, for the SSH endpoint.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

var noCommands = commandsFunc(func(context.Context, *Agent, []string, io.Reader, io.Writer, io.Writer) int { return 0 })

// TestReloadBeforeRun: a reload (SIGHUP) may come before Run has started
// anything; it loads the config, and Run starts the services with it.
func TestReloadBeforeRun(t *testing.T) {
	addr := freePort(t)
	a := newAgent(t, fmt.Sprintf(`{"hostname": "first", "ssh": {"listen": [%q]}}`, addr), noCommands)
	if err := a.Reload(context.Background()); err != nil {
		t.Fatalf("reload before Run: %v", err)
	}
	if c := a.Config(); c == nil || c.Hostname != "first" {
		t.Fatalf("config after a reload before Run: %+v", c)
	}
	if s := a.Services(); s != nil {
		t.Fatalf("services before Run: %v", s)
	}
	// A bad config is refused before Run too, and the loaded one stays.
	if err := os.WriteFile(a.opts.ConfigFile, []byte(`{"hostname": 1}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := a.Reload(context.Background()); err == nil {
		t.Fatal("a bad config was taken before Run")
	}
	if c := a.Config(); c == nil || c.Hostname != "first" {
		t.Fatalf("config after a refused reload: %+v", c)
	}
	if err := os.WriteFile(a.opts.ConfigFile, []byte(fmt.Sprintf(`{"hostname": "second", "ssh": {"listen": [%q]}}`, addr)), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	waitUp(t, a, "ssh")
	if c := a.Config(); c.Hostname != "second" {
		t.Fatalf("Run started with hostname %q, want the file's, second", c.Hostname)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// And after Run: nothing answers, nothing blocks.
	if err := a.Reload(context.Background()); err != nil {
		t.Fatalf("reload after Run: %v", err)
	}
	if s := a.Services(); s != nil {
		t.Fatalf("services after Run: %v", s)
	}
}

// waitUp waits until the service name is up.
func waitUp(t *testing.T, a *Agent, name string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, s := range a.Services() {
			if s.Name == name && s.State == supervisor.Up {
				return
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("service %s not up: %+v", name, a.Services())
}

// TestRunWaits: Run returns only once the control socket and the SSH
// endpoint are closed and the commands they were running have ended.
func TestRunWaits(t *testing.T) {
	addr := freePort(t)
	started := make(chan struct{})
	var ended atomic.Bool
	cmds := commandsFunc(func(ctx context.Context, a *Agent, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
		if args[0] == "block" {
			close(started)
			<-ctx.Done()
			time.Sleep(50 * time.Millisecond) // a command that takes a moment to wind up
			ended.Store(true)
			return 1
		}
		fmt.Fprint(stdout, "pong")
		return 0
	})
	a := newAgent(t, fmt.Sprintf(`{"ssh": {"listen": [%q]}}`, addr), cmds)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	waitUp(t, a, "ssh")
	sock := control.SocketPath(a.opts.Root)
	var out bytes.Buffer
	if code, err := control.Call(context.Background(), sock, []string{"ping"}, "", &out, io.Discard); err != nil || code != 0 || out.String() != "pong" {
		t.Fatalf("control socket: %d %q %v", code, out.String(), err)
	}
	if c, err := net.Dial("tcp", addr); err != nil {
		t.Fatalf("ssh endpoint: %v", err)
	} else {
		c.Close()
	}
	go control.Call(context.Background(), sock, []string{"block"}, "", io.Discard, io.Discard)
	<-started
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	if !ended.Load() {
		t.Error("Run returned before a command it was running ended")
	}
	if _, err := control.Call(context.Background(), sock, []string{"ping"}, "", io.Discard, io.Discard); !errors.Is(err, control.ErrNotRunning) {
		t.Errorf("control socket after Run: %v, want %v", err, control.ErrNotRunning)
	}
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("control socket left behind: %v", err)
	}
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Error("the SSH endpoint still listens after Run returned")
	}
}
