package agent

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"

	"github.com/roostrouter/roost/agent/config"
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
	for _, addr := range s.addrs {
		l, err := listenFreebind(addr)
		if err != nil {
			return fmt.Errorf("listen on %s: %w", addr, err)
		}
		ls = append(ls, l)
	}
	env.Log.Info("ssh listening", "addrs", s.addrs, "hostKey", ssh.FingerprintSHA256(key.PublicKey()))
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
