// Package handover lets the running roostd hand over to another roostd
// binary in place: the same process (the same PID, so its init and the
// services' children see no change) exec's the new binary, which takes the
// listening sockets over instead of listening anew, so that no connection
// attempt is refused while the agents change. The network state needs no
// passing: the new agent adopts it as a restarted one does.
//
// Invariants: a socket is passed only while it listens and no agent
// accepts on it (connections wait in its backlog); EnvFDs names every
// passed fd with its network and the address it was asked to listen on,
// and the receiving process marks them close-on-exec before anything else
// runs, so no child inherits them; a passed listener that nothing takes is
// closed, not left listening unserved.
package handover

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The environment a hand-over passes: EnvFDs lists the sockets, as
// fd=network:address separated by newlines (an address may hold any other
// character); EnvSince is when the old agent began to hand over (Unix
// nanoseconds), so that the new one can say how long it took.
const (
	EnvFDs   = "ROOSTD_LISTEN_FDS"
	EnvSince = "ROOSTD_HANDOVER_SINCE"
)

// Protocol is the hand-over this roostd speaks, as `roostd version --json`
// says ("handover"): a binary that says a lower one (or nothing) cannot take
// the sockets over, and is not handed over to.
const Protocol = 1

// Socket is a listening socket of the agent.
type Socket struct {
	Network string // "tcp" or "unix"
	Addr    string // as it was asked to listen: the config's address, or the socket's path
	L       net.Listener
}

func (s Socket) key() string { return s.Network + ":" + s.Addr }

// Held are sockets whose fds have been duplicated to survive exec: their
// listeners may close (the agent stops), the sockets stay open and listen.
type Held struct {
	fds   []int
	socks []Socket
	since time.Time
}

// Hold duplicates the sockets' fds, without close-on-exec, and keeps a
// Unix socket's file when its listener closes. since is when the hand-over
// began.
func Hold(socks []Socket, since time.Time) (*Held, error) {
	h := &Held{since: since}
	for _, s := range socks {
		if ul, ok := s.L.(*net.UnixListener); ok {
			ul.SetUnlinkOnClose(false) // the new agent serves the same path
		}
		sc, ok := s.L.(syscall.Conn)
		if !ok {
			h.Close()
			return nil, fmt.Errorf("hold %s: %T has no file descriptor", s.key(), s.L)
		}
		rc, err := sc.SyscallConn()
		if err != nil {
			h.Close()
			return nil, fmt.Errorf("hold %s: %w", s.key(), err)
		}
		var fd int
		var derr error
		// dup, not F_DUPFD_CLOEXEC: the copy must survive exec.
		if err := rc.Control(func(f uintptr) { fd, derr = unix.Dup(int(f)) }); err != nil || derr != nil {
			h.Close()
			return nil, fmt.Errorf("hold %s: dup: %w", s.key(), errors.Join(err, derr))
		}
		h.fds, h.socks = append(h.fds, fd), append(h.socks, s)
	}
	return h, nil
}

// Close closes the held copies (a hand-over that does not happen).
func (h *Held) Close() {
	for _, fd := range h.fds {
		unix.Close(fd)
	}
	h.fds, h.socks = nil, nil
}

// Env is environ without a previous hand-over's variables, plus this one's.
func (h *Held) Env(environ []string) []string {
	var fds []string
	for i, fd := range h.fds {
		fds = append(fds, strconv.Itoa(fd)+"="+h.socks[i].key())
	}
	return append(clean(environ), EnvFDs+"="+strings.Join(fds, "\n"), EnvSince+"="+strconv.FormatInt(h.since.UnixNano(), 10))
}

// clean is environ without a hand-over's variables: they name fds of the
// process that received them, and mean nothing to any other.
func clean(environ []string) []string {
	var out []string
	for _, kv := range environ {
		if !strings.HasPrefix(kv, EnvFDs+"=") && !strings.HasPrefix(kv, EnvSince+"=") {
			out = append(out, kv)
		}
	}
	return out
}

// Exec replaces this process with binary, run with args (args[0] included)
// and environ, passing the held sockets. It returns only if the exec
// failed; the sockets are still held then.
func (h *Held) Exec(binary string, args, environ []string) error {
	if err := syscall.Exec(binary, args, h.Env(environ)); err != nil {
		return fmt.Errorf("exec %s: %w", binary, err)
	}
	return nil
}

// Inherited are the sockets a previous agent passed to this process. Its
// methods may be called on nil: there are none then.
type Inherited struct {
	mu    sync.Mutex
	files map[string]*os.File // by network:address
	since time.Time
}

// FromEnv reads the sockets that EnvFDs names and marks them close-on-exec;
// nil if this process was not handed over to. An entry that is not a
// listening socket of its network is an error, and is not taken.
func FromEnv(getenv func(string) string) (*Inherited, error) {
	list, since := getenv(EnvFDs), getenv(EnvSince)
	if list == "" && since == "" {
		return nil, nil
	}
	in := &Inherited{files: map[string]*os.File{}, since: time.Now()}
	if ns, err := strconv.ParseInt(since, 10, 64); err == nil {
		in.since = time.Unix(0, ns)
	}
	var errs []error
	for _, entry := range strings.Split(list, "\n") {
		if entry == "" {
			continue
		}
		num, key, _ := strings.Cut(entry, "=")
		fd, err := strconv.Atoi(num)
		network, _, _ := strings.Cut(key, ":")
		if err != nil || fd < 3 || (network != "tcp" && network != "unix") {
			errs = append(errs, fmt.Errorf("%s: %q is not fd=tcp:address or fd=unix:path", EnvFDs, entry))
			continue
		}
		unix.CloseOnExec(fd)
		if err := checkListening(fd, network); err != nil {
			errs = append(errs, fmt.Errorf("%s: fd %d (%s): %w", EnvFDs, fd, key, err))
			continue
		}
		in.files[key] = os.NewFile(uintptr(fd), key)
	}
	return in, errors.Join(errs...)
}

// checkListening refuses an fd that is not a listening stream socket of
// network: the environment may be stale or made up.
func checkListening(fd int, network string) error {
	listening, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	if err != nil {
		return fmt.Errorf("not a socket: %w", err)
	}
	if listening != 1 {
		return errors.New("not listening")
	}
	domain, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return err
	}
	if want := domain == unix.AF_UNIX; want != (network == "unix") {
		return fmt.Errorf("socket domain %d is not %s", domain, network)
	}
	return nil
}

// Take returns the inherited listener for network and addr, once.
func (in *Inherited) Take(network, addr string) (net.Listener, bool) {
	if in == nil {
		return nil, false
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	key := network + ":" + addr
	f, ok := in.files[key]
	if !ok {
		return nil, false
	}
	delete(in.files, key)
	defer f.Close() // FileListener has its own copy
	l, err := net.FileListener(f)
	if err != nil {
		return nil, false
	}
	return l, true
}

// CloseRest closes the inherited listeners of network that nothing took
// (the new config listens elsewhere): a socket nobody serves must not
// leave clients waiting in its backlog.
func (in *Inherited) CloseRest(network string) []string {
	if in == nil {
		return nil
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	var closed []string
	for key, f := range in.files {
		if strings.HasPrefix(key, network+":") {
			f.Close()
			delete(in.files, key)
			closed = append(closed, key)
		}
	}
	return closed
}

// Since is when the previous agent began to hand over; false if this
// process was not handed over to.
func (in *Inherited) Since() (time.Time, bool) {
	if in == nil {
		return time.Time{}, false
	}
	return in.since, true
}

// Accept waits for l's next connection. A deadline that has passed is the
// listener frozen for a hand-over (callers wait in the backlog for the next
// agent, which accepts them): Accept goes on waiting until ctx ends or the
// listener thaws.
func Accept(ctx context.Context, l net.Listener) (net.Conn, error) {
	for {
		c, err := l.Accept()
		var ne net.Error
		if err == nil || !errors.As(err, &ne) || !ne.Timeout() || ctx.Err() != nil {
			return c, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
