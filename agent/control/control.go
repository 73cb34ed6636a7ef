// Package control is roostd's control socket: local callers (roostd's own
// CLI under any sshd, scripts) run commands inside the resident agent
// through it, for what only the agent can do, such as confirming an
// activation whose timer it holds.
//
// A request is one JSON line {"args": [...]}; the reply is JSON lines
// {"out": "..."} and {"err": "..."} as output comes, then {"exit": N}.
package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/roostrouter/roost/agent/handover"
)

// SocketPath is the control socket below root.
func SocketPath(root string) string { return filepath.Join(root, "run/roostd/control.sock") }

// Exec runs a command in the agent.
type Exec func(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int

type request struct {
	Args []string `json:"args"`
	// Connection is the SSH connection the caller came over, if any
	// (OpenSSH's SSH_CONNECTION for a roostd run under a plain sshd).
	Connection string `json:"connection,omitempty"`
}

type connectionKey struct{}

// WithConnection marks ctx with the connection a command came over: an
// activation must be confirmed over another one.
func WithConnection(ctx context.Context, conn string) context.Context {
	return context.WithValue(ctx, connectionKey{}, conn)
}

// Connection is the connection a command came over ("" for a local caller).
func Connection(ctx context.Context) string {
	c, _ := ctx.Value(connectionKey{}).(string)
	return c
}

type afterReplyKey struct{}

// afterReply collects what is to run once a command's reply is sent.
type afterReply struct {
	mu sync.Mutex
	fs []func()
}

// WithAfterReply is for the transports (this socket, the SSH endpoint): it
// returns the context to run a command with, and the function to call once
// the command's reply (its exit status) has been sent, which runs what the
// command asked for with AfterReply.
func WithAfterReply(ctx context.Context) (context.Context, func()) {
	ar := &afterReply{}
	return context.WithValue(ctx, afterReplyKey{}, ar), func() {
		ar.mu.Lock()
		fs := ar.fs
		ar.fs = nil
		ar.mu.Unlock()
		for _, f := range fs {
			f()
		}
	}
}

// AfterReply has f run once the reply to the command running with ctx has
// been sent, or the caller has gone: the agent hands over to a new roostd
// only once the activation that asked for it has been answered. It reports
// false, and does not keep f, if nothing sends a reply (a caller in the
// same process).
func AfterReply(ctx context.Context, f func()) bool {
	ar, ok := ctx.Value(afterReplyKey{}).(*afterReply)
	if !ok {
		return false
	}
	ar.mu.Lock()
	defer ar.mu.Unlock()
	ar.fs = append(ar.fs, f)
	return true
}

type reply struct {
	Out  *string `json:"out,omitempty"`
	Err  *string `json:"err,omitempty"`
	Exit *int    `json:"exit,omitempty"`
}

// Listen opens the socket, replacing a stale one; only root may connect.
func Listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	os.Chmod(path, 0o600)
	return l, nil
}

// Serve answers requests on l until ctx ends, then closes l and returns
// once every request has ended (their commands get ctx, so they end with
// it): a caller that waits for Serve leaves nothing running.
func Serve(ctx context.Context, l net.Listener, exec Exec, log *slog.Logger) error {
	defer context.AfterFunc(ctx, func() { l.Close() })()
	defer l.Close()
	var conns sync.WaitGroup
	defer conns.Wait()
	for {
		c, err := handover.Accept(ctx, l)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		conns.Add(1)
		go func() {
			defer conns.Done()
			serveConn(ctx, c, exec, log)
		}()
	}
}

func serveConn(ctx context.Context, c net.Conn, exec Exec, log *slog.Logger) {
	defer c.Close()
	// A caller that neither sends nor reads holds no shutdown up.
	defer context.AfterFunc(ctx, func() { c.Close() })()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReaderSize(c, 64<<10).ReadBytes('\n')
	if err != nil {
		return
	}
	c.SetReadDeadline(time.Time{})
	var req request
	if err := json.Unmarshal(line, &req); err != nil || len(req.Args) == 0 {
		log.Info("control socket: bad request", "err", err)
		return
	}
	if req.Connection != "" {
		ctx = WithConnection(ctx, req.Connection)
	}
	ctx, replied := WithAfterReply(ctx)
	w := &replyWriter{enc: json.NewEncoder(c)}
	code := exec(ctx, req.Args, eofReader{}, w.stream(false), w.stream(true))
	w.send(reply{Exit: &code})
	c.Close() // the caller has it all
	replied()
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }

type replyWriter struct {
	mu  sync.Mutex
	enc *json.Encoder
}

func (w *replyWriter) send(r reply) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.enc.Encode(r)
}

type streamWriter struct {
	w     *replyWriter
	isErr bool
}

func (w *replyWriter) stream(isErr bool) io.Writer { return streamWriter{w, isErr} }

func (s streamWriter) Write(b []byte) (int, error) {
	text := string(b)
	r := reply{Out: &text}
	if s.isErr {
		r = reply{Err: &text}
	}
	if err := s.w.send(r); err != nil {
		return 0, err
	}
	return len(b), nil
}

// ErrNotRunning means no agent answers on the socket.
var ErrNotRunning = errors.New("roostd is not running (no control socket)")

// Call runs args in the agent, copying its output, and returns its status;
// conn is the SSH connection the caller came over, if any.
func Call(ctx context.Context, path string, args []string, conn string, stdout, stderr io.Writer) (int, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return 0, fmt.Errorf("%w: %v", ErrNotRunning, err)
	}
	defer c.Close()
	go func() {
		<-ctx.Done()
		c.Close()
	}()
	if err := json.NewEncoder(c).Encode(request{Args: args, Connection: conn}); err != nil {
		return 0, err
	}
	dec := json.NewDecoder(bufio.NewReader(c))
	for {
		var r reply
		if err := dec.Decode(&r); err != nil {
			return 0, fmt.Errorf("control socket: the agent stopped answering: %w", err)
		}
		switch {
		case r.Out != nil:
			io.WriteString(stdout, *r.Out)
		case r.Err != nil:
			io.WriteString(stderr, *r.Err)
		case r.Exit != nil:
			return *r.Exit, nil
		}
	}
}
