// Package agent is roostd's resident service: it loads the running system's
// config, runs its services under the supervisor, serves roostd's commands
// over SSH and the control socket, and owns activation with its
// confirm-or-rollback timer.
package agent

import (
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
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"

	"github.com/roostrouter/roost/agent/config"
	"github.com/roostrouter/roost/agent/control"
	"github.com/roostrouter/roost/agent/sshd"
	"github.com/roostrouter/roost/agent/supervisor"
	"github.com/roostrouter/roost/netconf"
	"github.com/roostrouter/roost/updater/activate"
	"github.com/roostrouter/roost/updater/atomicfile"
	"github.com/roostrouter/roost/updater/generations"
	"github.com/roostrouter/roost/updater/store"
)

// Exec runs a roostd command line inside the agent.
type Exec func(ctx context.Context, a *Agent, args []string, stdin io.Reader, stdout, stderr io.Writer) int

// Options are the agent's dependencies.
type Options struct {
	Root       string // the router's file system root
	State      string // what survives reboots: host key, leases, pending activation
	ConfigFile string // the config while no system runs (first boot, the lab); a running system's own wins
	Log        *slog.Logger
	Store      *store.Store
	Exec       Exec
	// Ready is called once the agent serves (for s6-style readiness).
	Ready func()
	// Self is roostd's own binary, which service hooks run (pppd's).
	Self string
}

// Agent is a running roostd.
type Agent struct {
	opts      Options
	Activator *activate.Activator
	ssh       *sshd.Server
	sup       *supervisor.Supervisor
	nl        *netlink.Handle
	supDone   chan struct{}
	ppp       *netconf.PPPHooks

	mu        sync.Mutex
	cfg       *config.Config
	listeners map[string]net.Listener
	serveCtx  context.Context
}

// New prepares an agent; Run starts it.
func New(opts Options) (*Agent, error) {
	if err := os.MkdirAll(opts.State, 0o700); err != nil {
		return nil, fmt.Errorf("state folder: %w", err)
	}
	a := &Agent{opts: opts, listeners: map[string]net.Listener{}, ppp: netconf.NewPPPHooks()}
	a.Activator = &activate.Activator{
		Store:   opts.Store,
		Profile: generations.System(opts.Root, nil),
		State:   opts.State,
		Log:     opts.Log,
		Now:     time.Now,
		Reload:  a.Reload,
		Lock:    a.LockStore,
	}
	return a, nil
}

// LockStore takes the store's writer lock, logging if it must wait.
func (a *Agent) LockStore(ctx context.Context) (*store.Txn, error) {
	return a.opts.Store.Lock(ctx, "roostd agent", func(holder string) {
		a.opts.Log.Info("waiting for the store lock", "holder", holder)
	})
}

// PPPHooks receives pppd's hooks (roostd hook ppp) for the PPPoE services.
func (a *Agent) PPPHooks() *netconf.PPPHooks { return a.ppp }

// Log is the agent's log.
func (a *Agent) Log() *slog.Logger { return a.opts.Log }

// Root is the router's file system root.
func (a *Agent) Root() string { return a.opts.Root }

// State is the agent's state folder.
func (a *Agent) State() string { return a.opts.State }

// Store is the router's store.
func (a *Agent) Store() *store.Store { return a.opts.Store }

// Services returns the services' states and outputs.
func (a *Agent) Services() []supervisor.Status {
	if a.supDone == nil {
		return nil
	}
	return a.sup.Status()
}

// Config returns the config in force (nil before the first system).
func (a *Agent) Config() *config.Config {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cfg
}

// configFile is the running system's config, or else the bootstrap one.
func (a *Agent) configFile() (string, bool) {
	if sys, ok := a.Activator.Current(); ok {
		return filepath.Join(a.opts.Store.PhysicalPath(sys), "etc/roost/config.json"), true
	}
	return a.opts.ConfigFile, a.opts.ConfigFile != ""
}

// markBooted records the system running when the agent first starts after
// a boot (/run is empty then), as NixOS does: gc keeps it.
func (a *Agent) markBooted() {
	booted := filepath.Join(a.opts.Root, "run/booted-system")
	if _, err := os.Lstat(booted); err == nil {
		return
	}
	if sys, ok := a.Activator.Current(); ok {
		if err := atomicfile.Symlink(sys.String(), booted); err != nil {
			a.opts.Log.Warn("record the booted system", "err", err)
		}
	}
}

// Run serves until ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	hostKey, err := sshd.LoadHostKey(filepath.Join(a.opts.State, "ssh_host_ed25519_key"))
	if err != nil {
		return err
	}
	a.opts.Log.Info("ssh host key", "fingerprint", ssh.FingerprintSHA256(hostKey.PublicKey()))
	a.ssh = &sshd.Server{
		Log:        a.opts.Log,
		HostKey:    hostKey,
		StagingDir: filepath.Join(a.opts.State, "staging"),
		Exec: func(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
			return a.opts.Exec(ctx, a, args, stdin, stdout, stderr)
		},
	}
	a.mu.Lock()
	a.serveCtx = ctx
	a.mu.Unlock()
	a.markBooted()
	if a.nl, err = netlink.NewHandle(); err != nil {
		return fmt.Errorf("netlink: %w", err)
	}
	defer a.nl.Close()
	a.sup = supervisor.New(supervisor.Options{Log: a.opts.Log, OutputsDir: filepath.Join(a.opts.Root, "run/services/outputs")})
	if err := a.Reload(ctx); err != nil {
		return err
	}
	initial, err := a.specs(a.Config())
	if err != nil {
		return err
	}
	a.supDone = make(chan struct{})
	go func() {
		defer close(a.supDone)
		if err := a.sup.Run(ctx, initial); err != nil {
			a.opts.Log.Error("supervisor", "err", err)
		}
	}()
	cl, err := control.Listen(control.SocketPath(a.opts.Root))
	if err != nil {
		return err
	}
	go control.Serve(ctx, cl, func(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
		return a.opts.Exec(ctx, a, args, stdin, stdout, stderr)
	}, a.opts.Log)
	if err := a.Activator.Recover(ctx); err != nil {
		a.opts.Log.Error("recovering a pending activation", "err", err)
	}
	a.opts.Log.Info("roostd running", "root", a.opts.Root, "state", a.opts.State)
	if a.opts.Ready != nil {
		a.opts.Ready()
	}
	<-ctx.Done()
	<-a.supDone // services stop, dependents first; the network stays as it is
	a.mu.Lock()
	for addr, l := range a.listeners {
		l.Close()
		delete(a.listeners, addr)
	}
	a.mu.Unlock()
	os.Remove(control.SocketPath(a.opts.Root))
	return nil
}

// Reload applies the running system's config: a bad config is refused and
// the one in force stays.
func (a *Agent) Reload(ctx context.Context) error {
	cfg := &config.Config{}
	if file, ok := a.configFile(); ok {
		c, err := config.Load(file)
		if err != nil {
			if a.Config() != nil {
				a.opts.Log.Error("config refused, keeping the one in force", "err", err)
			}
			return err
		}
		cfg = c
	}
	keys, err := a.authorizedKeys(cfg)
	if err != nil {
		return err
	}
	a.ssh.SetAuthorizedKeys(keys)
	if a.supDone != nil {
		sp, err := a.specs(cfg)
		if err != nil {
			return err
		}
		if err := a.sup.Reload(sp); err != nil {
			return err
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.cfg = cfg
	want := cfg.SSH.ListenAddrs()
	if cfg.SSH.Disabled {
		want = nil
	}
	for addr, l := range a.listeners {
		if !slices.Contains(want, addr) {
			l.Close()
			delete(a.listeners, addr)
			a.opts.Log.Info("ssh stopped listening", "addr", addr)
		}
	}
	var errs []error
	for _, addr := range want {
		if a.listeners[addr] != nil {
			continue
		}
		l, err := listenFreebind(addr)
		if err != nil {
			errs = append(errs, fmt.Errorf("ssh listen on %s: %w", addr, err))
			continue
		}
		a.listeners[addr] = l
		a.opts.Log.Info("ssh listening", "addr", l.Addr().String(), "keys", len(keys))
		go a.ssh.Serve(a.serveCtx, l)
	}
	return errors.Join(errs...)
}

// authorizedKeys are the config's keys plus $STATE/authorized_keys, which
// lets a router without a system yet be reached for its first rebuild.
func (a *Agent) authorizedKeys(cfg *config.Config) ([]ssh.PublicKey, error) {
	var keys []ssh.PublicKey
	for _, line := range cfg.SSH.AuthorizedKeys {
		k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	file := filepath.Join(a.opts.State, "authorized_keys")
	b, err := os.ReadFile(file)
	if err != nil && !os.IsNotExist(err) {
		return nil, err
	}
	more, err := sshd.ParseAuthorizedKeys(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return append(keys, more...), nil
}

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
