package agent

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"

	"github.com/roostrouter/roost/agent/config"
	"github.com/roostrouter/roost/agent/handover"
	"github.com/roostrouter/roost/agent/sshd"
	"github.com/roostrouter/roost/agent/supervisor"
)

// sshService is the SSH endpoint as a service: a host key that cannot be
// read or written, or an address it cannot listen on, fails it alone and
// the supervisor retries it with backoff, while the network comes up.
type sshService struct {
	a     *Agent
	addrs []string
}

// sshSpec is the endpoint's service, named "ssh" unless the config uses
// that name.

// HostKey is the SSH service's output: its host key's SHA256 fingerprint.
var HostKey = supervisor.StringOutput("host-key")

func (a *Agent) sshSpec(cfg *config.Config) (supervisor.Spec, bool) {
	if cfg.SSH.Disabled {
		return supervisor.Spec{}, false
	}
	name := "ssh"
	if _, taken := cfg.Services[name]; taken {
		name = "roostd-ssh"
	}
	addrs := cfg.SSH.ListenAddrs()
	return supervisor.Spec{Name: name, Kind: "ssh", Fingerprint: strings.Join(addrs, " "),
		New: func() supervisor.Service { return &sshService{a: a, addrs: addrs} }}, true
}

func (s *sshService) Run(ctx context.Context, env *supervisor.Env) error {
	file := filepath.Join(s.a.opts.State, "ssh_host_ed25519_key")
	key, err := sshd.LoadHostKey(file)
	if err != nil {
		return fmt.Errorf("%w: the state folder %s must be writable (roostd run --state)", err, s.a.opts.State)
	}
	s.a.ssh.SetHostKey(key)
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	took := 0
	for _, addr := range s.addrs {
		// A previous agent's socket, handed over: its backlog holds the
		// connections that came during the hand-over.
		l, ok := s.a.opts.Inherited.Take("tcp", addr)
		if ok {
			took++
		} else if l, err = listenFreebind(addr); err != nil {
			return fmt.Errorf("listen on %s: %w", addr, err)
		}
		ls = append(ls, l)
		defer s.a.listening(handover.Socket{Network: "tcp", Addr: addr, L: l})()
	}
	s.a.closeUnclaimedSSH()
	env.Log.Info("ssh listening", "addrs", s.addrs, "hostKey", ssh.FingerprintSHA256(key.PublicKey()))
	if since, ok := s.a.opts.Inherited.Since(); ok && took > 0 {
		env.Log.Info("ssh: took the listening sockets over from the previous roostd", "sockets", took, "handover", time.Since(since).Round(time.Millisecond))
	}
	HostKey.Set(env, ssh.FingerprintSHA256(key.PublicKey()))
	// The accept loops end with ctx, or with this run when one fails: it
	// returns only once they all have, so that the listeners are closed
	// when the supervisor has stopped the endpoint.
	ctx, cancel := context.WithCancel(ctx)
	var accepting sync.WaitGroup
	defer accepting.Wait()
	defer cancel()
	errs := make(chan error, len(ls))
	for _, l := range ls {
		accepting.Add(1)
		go func() {
			defer accepting.Done()
			errs <- s.a.ssh.Accept(ctx, s.a.sessions, l)
		}()
	}
	env.Ready()
	select {
	case <-ctx.Done():
		return nil
	case err := <-errs:
		return fmt.Errorf("ssh: %w", err)
	}
}

// closeUnclaimedSSH closes the SSH sockets a previous agent handed over
// that no address of the config takes (it listens elsewhere now, or not at
// all): nobody would accept their connections.
func (a *Agent) closeUnclaimedSSH() {
	if closed := a.opts.Inherited.CloseRest("tcp"); len(closed) > 0 {
		a.opts.Log.Info("closed the previous roostd's SSH sockets: the config does not listen there", "sockets", closed)
	}
}

// Remove has nothing to undo: the listeners close when Run ends.
func (s *sshService) Remove(context.Context) error { return nil }

// listenFreebind listens even on an address that no interface has yet: the
// router's own services add it later (IP_FREEBIND), so SSH need not wait.
func listenFreebind(addr string) (net.Listener, error) {
	lc := net.ListenConfig{Control: func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			if strings.HasSuffix(network, "6") {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_FREEBIND, 1)
			} else {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_FREEBIND, 1)
			}
		})
		if err != nil {
			return err
		}
		return serr
	}}
	return lc.Listen(context.Background(), "tcp", addr)
}
