// Package agent is roostd's resident service: it loads the running system's
// config, runs its services under the supervisor, serves roostd's commands
// over SSH and the control socket, and owns activation with its
// confirm-or-rollback timer.
package agent

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"

	"github.com/roostrouter/roost/agent/config"
	"github.com/roostrouter/roost/agent/control"
	"github.com/roostrouter/roost/agent/sshd"
	"github.com/roostrouter/roost/agent/supervisor"
	"github.com/roostrouter/roost/firewall"
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
	// ProcSys is where the kernel's sysctls are (/proc/sys); tests may
	// point it elsewhere.
	ProcSys string
	// Crash, if set, is called at each named step of an activation (see
	// store.Options.Crash).
	Crash func(point string)
}

// Agent is a running roostd.
type Agent struct {
	opts      Options
	Activator *activate.Activator
	ssh       *sshd.Server
	sup       *supervisor.Supervisor
	nl        *netlink.Handle
	supDone   chan struct{} // set, under mu, once the supervisor runs
	ppp       *netconf.PPPHooks

	mu            sync.Mutex
	cfg           *config.Config
	configProblem string
	serveCtx      context.Context
}

// New prepares an agent; Run starts it.
func New(opts Options) (*Agent, error) {
	if err := os.MkdirAll(opts.State, 0o700); err != nil {
		// Not fatal: what needs the state folder fails alone (SSH's host
		// key, leases), and says so.
		opts.Log.Error("state folder", "err", err)
	}
	a := &Agent{opts: opts, ppp: netconf.NewPPPHooks()}
	a.ssh = &sshd.Server{
		Log:        opts.Log,
		StagingDir: filepath.Join(opts.State, "staging"),
		Exec: func(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
			return a.opts.Exec(ctx, a, args, stdin, stdout, stderr)
		},
	}
	a.Activator = &activate.Activator{
		Store:   opts.Store,
		Profile: generations.System(opts.Root, nil),
		State:   opts.State,
		Log:     opts.Log,
		Now:     time.Now,
		Reload:  a.Reload,
		Lock:    a.LockStore,
		Crash:   opts.Crash,
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

// supervising reports whether the supervisor runs (the control socket
// answers before it does).
func (a *Agent) supervising() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.supDone != nil
}

// Services returns the services' states and outputs.
func (a *Agent) Services() []supervisor.Status {
	if !a.supervising() {
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

// Run serves until ctx ends. It always comes up, whatever the config and
// the kernel: a pending activation is recovered before any config is
// loaded; a config that does not load falls back to the last good
// generation's, loudly; a part that fails (SSH, the firewall, a kernel
// feature) fails as a service, with the rest up.
func (a *Agent) Run(ctx context.Context) error {
	a.mu.Lock()
	a.serveCtx = ctx
	a.mu.Unlock()
	a.markBooted()
	// Only the routing family: NewHandle() with none opens XFRM and
	// netfilter too, which routers' kernels may lack (xfrm_user is a module
	// on Debian's MIPS kernels and absent on OpenWrt's without IPsec).
	var err error
	if a.nl, err = netlink.NewHandle(unix.NETLINK_ROUTE); err != nil {
		return fmt.Errorf("netlink (NETLINK_ROUTE): %w", err)
	}
	defer a.nl.Close()
	a.sup = supervisor.New(supervisor.Options{Log: a.opts.Log, OutputsDir: filepath.Join(a.opts.Root, "run/services/outputs")})
	var wg sync.WaitGroup
	defer wg.Wait()
	if cl, err := control.Listen(control.SocketPath(a.opts.Root)); err != nil {
		a.opts.Log.Error("no control socket: roostd's commands work only over SSH", "err", err)
	} else {
		defer os.Remove(control.SocketPath(a.opts.Root))
		wg.Add(1)
		go func() {
			defer wg.Done()
			control.Serve(ctx, cl, func(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
				return a.opts.Exec(ctx, a, args, stdin, stdout, stderr)
			}, a.opts.Log)
		}()
	}
	if err := a.Activator.Recover(ctx); err != nil {
		a.opts.Log.Error("recovering a pending activation", "err", err)
	}
	cfg := a.startConfig(ctx)
	a.lockdown(cfg)
	initial, err := a.specs(cfg)
	if err != nil {
		a.opts.Log.Error("services refused: running none", "err", err)
	}
	supDone := make(chan struct{})
	a.mu.Lock()
	a.supDone = supDone
	a.mu.Unlock()
	go func() {
		defer close(supDone)
		if err := a.sup.Run(ctx, initial); err != nil {
			a.opts.Log.Error("supervisor", "err", err)
		}
	}()
	a.opts.Log.Info("roostd running", "root", a.opts.Root, "state", a.opts.State)
	if a.opts.Ready != nil {
		a.opts.Ready()
	}
	<-ctx.Done()
	<-supDone // services stop, dependents first; the network stays as it is
	a.ssh.Wait()
	return nil
}

// startConfig is the config the agent starts with: the running system's;
// if it does not load, the system awaiting confirmation is rolled back now,
// or else the newest generation whose config loads is used (the router
// must come up, and its owner must reach it to fix the config).
func (a *Agent) startConfig(ctx context.Context) *config.Config {
	cfg, err := a.loadConfig()
	if err == nil {
		a.setConfig(cfg, "")
		return cfg
	}
	a.opts.Log.Error("the running system's config does not load", "err", err)
	if rolled, rerr := a.Activator.RollBackPending(ctx, err); rolled && rerr == nil {
		if cfg, err = a.loadConfig(); err == nil {
			a.setConfig(cfg, "")
			return cfg
		}
	}
	cur, _ := a.Activator.Current()
	gens, _, _ := a.Activator.Profile.List()
	for i := len(gens) - 1; i >= 0; i-- {
		g := gens[i]
		if g.Path == cur {
			continue
		}
		c, gerr := config.Load(filepath.Join(a.opts.Store.PhysicalPath(g.Path), "etc/roost/config.json"), Kinds(a.ppp))
		if gerr != nil {
			continue
		}
		why := fmt.Sprintf("the running system's config does not load (%v): running generation %d's config instead; fix the config and rebuild, or roll back", err, g.Number)
		a.opts.Log.Error("config fallback", "generation", g.Number, "why", why)
		a.setConfig(c, why)
		return c
	}
	why := fmt.Sprintf("the running system's config does not load (%v), nor does any generation's: running no services, only SSH; fix the config and rebuild", err)
	a.opts.Log.Error("config fallback", "why", why)
	cfg = &config.Config{}
	a.setConfig(cfg, why)
	return cfg
}

// loadConfig reads the running system's config, or the bootstrap one.
func (a *Agent) loadConfig() (*config.Config, error) {
	file, ok := a.configFile()
	if !ok {
		return &config.Config{}, nil
	}
	return config.Load(file, Kinds(a.ppp))
}

func (a *Agent) setConfig(cfg *config.Config, problem string) {
	keys, err := a.authorizedKeys(cfg)
	if err != nil {
		a.opts.Log.Error("ssh: authorized keys", "err", err)
	}
	a.ssh.SetAuthorizedKeys(keys)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.cfg, a.configProblem = cfg, problem
}

// ConfigProblem says why the agent runs another config than its system's
// ("" when it runs its own).
func (a *Agent) ConfigProblem() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.configProblem
}

// lockdown puts the firewall's default policy in force (input and forward
// dropped, nothing opened or forwarded) before any service starts, if the
// config has a firewall and the kernel has none of roost's yet (first
// boot): then nothing is open from the WAN while the services come up. A
// restarted agent finds the ruleset in force and leaves it.
func (a *Agent) lockdown(cfg *config.Config) {
	for name, s := range cfg.Services {
		d, ok := s.Decl.(*firewall.Decl)
		if !ok {
			continue
		}
		fw := firewall.Service{Zones: d.Zones}
		if err := fw.Lockdown(); err != nil {
			a.opts.Log.Error("firewall: default policy not in force at start-up", "service", name, "err", err)
		}
		return
	}
}

// Reload applies the running system's config: a bad config is refused and
// the one in force stays. Before Run has started the services, it only
// loads the config (a rollback while recovering calls it).
func (a *Agent) Reload(ctx context.Context) error {
	cfg, err := a.loadConfig()
	if err != nil {
		if a.Config() != nil {
			a.opts.Log.Error("config refused, keeping the one in force", "err", err)
		}
		return err
	}
	if _, err := a.authorizedKeys(cfg); err != nil {
		return err
	}
	if a.supervising() {
		sp, err := a.specs(cfg)
		if err != nil {
			return err
		}
		if err := a.sup.Reload(sp); err != nil {
			return err
		}
	}
	a.setConfig(cfg, "")
	return nil
}

// authorizedKeys are the config's keys plus $STATE/authorized_keys, which
// lets a router without a system yet be reached for its first rebuild.
func (a *Agent) authorizedKeys(cfg *config.Config) ([]ssh.PublicKey, error) {
	// The same parser for both: it refuses options roostd cannot honour
	// (from=, command=), rather than let such a key in from anywhere.
	keys, err := sshd.ParseAuthorizedKeys([]byte(strings.Join(cfg.SSH.AuthorizedKeys, "\n")))
	if err != nil {
		return nil, fmt.Errorf("ssh.authorizedKeys: %w", err)
	}
	file := filepath.Join(a.opts.State, "authorized_keys")
	b, err := os.ReadFile(file)
	if err != nil && !os.IsNotExist(err) {
		// The config's keys still let the owner in.
		a.opts.Log.Error("ssh: authorized keys in the state folder cannot be read", "file", file, "err", err)
		return keys, nil
	}
	more, err := sshd.ParseAuthorizedKeys(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return append(keys, more...), nil
}
