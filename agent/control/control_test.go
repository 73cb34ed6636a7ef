package control

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
	"slices"
	"strings"
	"testing"
	"time"
)

// agent serves exec on a socket in a temporary folder until the test ends,
// and checks that Serve returns once its ctx is cancelled.
type agent struct {
	path   string
	cancel context.CancelFunc
	done   chan error

	stopped bool
}

func startAgent(t *testing.T, exec Exec) *agent {
	t.Helper()
	path := SocketPath(t.TempDir())
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a := &agent{path: path, cancel: cancel, done: make(chan error, 1)}
	go func() { a.done <- Serve(ctx, l, exec, slog.New(slog.DiscardHandler)) }()
	t.Cleanup(func() { a.stop(t) })
	return a
}

// stop cancels Serve's ctx and waits for it to return; once.
func (a *agent) stop(t *testing.T) {
	t.Helper()
	if a.stopped {
		return
	}
	a.stopped = true
	a.cancel()
	select {
	case err := <-a.done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return within 5 s of its ctx ending")
	}
}

// TestCall: a command's arguments and connection reach the agent, its
// output and status come back, and it reads an empty stdin.
func TestCall(t *testing.T) {
	type seen struct {
		args  []string
		conn  string
		stdin string
	}
	got := make(chan seen, 1)
	a := startAgent(t, func(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
		in, _ := io.ReadAll(stdin)
		got <- seen{args, Connection(ctx), string(in)}
		fmt.Fprint(stdout, "line one\n")
		fmt.Fprint(stderr, "a warning\n")
		fmt.Fprint(stdout, "line two\n")
		return 3
	})
	for _, tc := range []struct {
		name, conn string
	}{
		{"local", ""},
		{"over ssh", "ssh 10.0.0.2 50000 10.0.0.1 22"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code, err := Call(context.Background(), a.path, []string{"confirm", "tok en"}, tc.conn, &stdout, &stderr)
			if err != nil || code != 3 {
				t.Fatalf("Call = %d, %v; want 3", code, err)
			}
			if stdout.String() != "line one\nline two\n" || stderr.String() != "a warning\n" {
				t.Errorf("stdout %q, stderr %q", stdout.String(), stderr.String())
			}
			s := <-got
			if !slices.Equal(s.args, []string{"confirm", "tok en"}) || s.conn != tc.conn || s.stdin != "" {
				t.Errorf("the agent saw %+v", s)
			}
		})
	}
}

// TestRefused: a request that is not one line of JSON with arguments is
// closed without running anything; the caller hears that the agent
// stopped answering, and the agent goes on serving.
func TestRefused(t *testing.T) {
	ran := make(chan []string, 10)
	a := startAgent(t, func(ctx context.Context, args []string, _ io.Reader, stdout, _ io.Writer) int {
		ran <- args
		return 0
	})
	for _, tc := range []struct {
		name, line string
	}{
		{"not json", "hello\n"},
		{"no args", `{"args":[]}` + "\n"},
		{"args of the wrong type", `{"args":"reboot"}` + "\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("unix", a.path)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			io.WriteString(c, tc.line)
			reply, err := io.ReadAll(c)
			if err != nil || len(reply) != 0 {
				t.Fatalf("reply %q, %v; want the connection closed with nothing", reply, err)
			}
		})
	}
	if _, err := Call(context.Background(), a.path, nil, "", io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "the agent stopped answering") {
		t.Errorf("Call without arguments: %v", err)
	}
	if code, err := Call(context.Background(), a.path, []string{"status"}, "", io.Discard, io.Discard); err != nil || code != 0 {
		t.Fatalf("a good request after the bad ones: %d, %v", code, err)
	}
	if len(ran) != 1 {
		t.Fatalf("%d commands ran, want only the good one", len(ran))
	}
}

// TestCallerHangsUp: a caller that goes away mid-command makes the
// command's writes fail, so it can stop; one that connects and says
// nothing holds no shutdown up.
func TestCallerHangsUp(t *testing.T) {
	writeErr := make(chan error, 1)
	started := make(chan struct{})
	a := startAgent(t, func(ctx context.Context, args []string, _ io.Reader, stdout, _ io.Writer) int {
		close(started)
		for {
			if _, err := io.WriteString(stdout, strings.Repeat("x", 4096)); err != nil {
				writeErr <- err
				return 1
			}
		}
	})
	c, err := net.Dial("unix", a.path)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, `{"args":["log","-f"]}`+"\n")
	<-started
	c.Close()
	select {
	case <-writeErr:
	case <-time.After(5 * time.Second):
		t.Fatal("the command's writes go on after its caller hung up")
	}

	silent, err := net.Dial("unix", a.path)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	time.Sleep(50 * time.Millisecond) // accepted, waiting for a request
	a.stop(t)                         // within 5 s, not the request's 10 s
}

// TestServeWaitsForCommands: Serve returns only after the commands it
// started have ended, and they end with its ctx; then nothing answers.
func TestServeWaitsForCommands(t *testing.T) {
	ended := make(chan struct{})
	started := make(chan struct{})
	a := startAgent(t, func(ctx context.Context, args []string, _ io.Reader, _, _ io.Writer) int {
		close(started)
		<-ctx.Done()
		time.Sleep(100 * time.Millisecond) // cleaning up
		close(ended)
		return 0
	})
	callErr := make(chan error, 1)
	go func() {
		_, err := Call(context.Background(), a.path, []string{"wait"}, "", io.Discard, io.Discard)
		callErr <- err
	}()
	<-started
	a.stop(t)
	select {
	case <-ended:
	default:
		t.Fatal("Serve returned before the command ended")
	}
	// The connection closed with the agent: its caller hears so.
	if err := <-callErr; err == nil || !strings.Contains(err.Error(), "the agent stopped answering") {
		t.Errorf("the caller of a command that ended with the agent: %v", err)
	}
	if _, err := Call(context.Background(), a.path, []string{"status"}, "", io.Discard, io.Discard); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Call after Serve returned: %v, want %v", err, ErrNotRunning)
	}
}

// TestCallCancelled: a caller's ctx ends a call the agent does not answer.
func TestCallCancelled(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	a := startAgent(t, func(ctx context.Context, args []string, _ io.Reader, _, _ io.Writer) int {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return 0
	})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := Call(ctx, a.path, []string{"hang"}, "", io.Discard, io.Discard)
	if err == nil || time.Since(start) > 5*time.Second {
		t.Fatalf("Call with a cancelled ctx: %v after %v", err, time.Since(start))
	}
}

// TestNotRunning: without an agent, Call says so in a way callers test.
func TestNotRunning(t *testing.T) {
	_, err := Call(context.Background(), filepath.Join(t.TempDir(), "control.sock"), []string{"status"}, "", io.Discard, io.Discard)
	if !errors.Is(err, ErrNotRunning) {
		t.Fatalf("Call without an agent: %v, want %v", err, ErrNotRunning)
	}
}

// TestListen: a stale socket from a crashed agent is replaced, and only
// the owner may connect.
func TestListen(t *testing.T) {
	path := SocketPath(t.TempDir())
	os.MkdirAll(filepath.Dir(path), 0o700)
	if err := os.WriteFile(path, []byte("stale"), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := Listen(path)
	if err != nil {
		t.Fatalf("Listen over a stale file: %v", err)
	}
	defer l.Close()
	fi, err := os.Stat(path)
	if err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the socket: %v, %v; want a socket of mode 0600", fi.Mode(), err)
	}
	if dir, _ := os.Stat(filepath.Dir(path)); dir.Mode().Perm() != 0o700 {
		t.Errorf("the socket's folder has mode %v, want 0700", dir.Mode().Perm())
	}
}

// TestAfterReply: what a command asks to run once answered runs after the
// caller has its exit status, not before; a deadline on the listener (a
// hand-over coming) holds callers in the backlog without ending Serve, and
// they are answered once it is lifted.
func TestAfterReply(t *testing.T) {
	if AfterReply(context.Background(), func() {}) {
		t.Fatal("AfterReply took a function with no transport to run it")
	}
	ran := make(chan struct{}, 2)
	path := SocketPath(t.TempDir())
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() {
		served <- Serve(ctx, l, func(ctx context.Context, args []string, _ io.Reader, stdout, _ io.Writer) int {
			if !AfterReply(ctx, func() { ran <- struct{}{} }) {
				t.Error("AfterReply: no transport in the command's context")
			}
			fmt.Fprintln(stdout, "answer")
			return 3
		}, slog.New(slog.DiscardHandler))
	}()
	var out bytes.Buffer
	code, err := Call(context.Background(), path, []string{"activate"}, "", &out, io.Discard)
	if err != nil || code != 3 || out.String() != "answer\n" {
		t.Fatalf("Call: %d, %q, %v", code, out.String(), err)
	}
	select {
	case <-ran:
	case <-time.After(5 * time.Second):
		t.Fatal("the function asked for after the reply did not run")
	}

	l.(*net.UnixListener).SetDeadline(time.Unix(1, 0))
	answered := make(chan int, 1)
	go func() {
		code, _ := Call(context.Background(), path, []string{"status"}, "", io.Discard, io.Discard)
		answered <- code
	}()
	select {
	case <-answered:
		t.Fatal("a caller was answered while the listener was held")
	case err := <-served:
		t.Fatalf("Serve ended on its listener's deadline: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	l.(*net.UnixListener).SetDeadline(time.Time{})
	select {
	case code := <-answered:
		if code != 3 {
			t.Fatalf("held caller: exit %d", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the held caller was never answered")
	}
}
