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
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"

	"github.com/roostrouter/roost/agent/config"
	"github.com/roostrouter/roost/agent/control"
	"github.com/roostrouter/roost/agent/handover"
	"github.com/roostrouter/roost/agent/health"
	"github.com/roostrouter/roost/agent/sshd"
	"github.com/roostrouter/roost/agent/supervisor"
	"github.com/roostrouter/roost/firewall"
	"github.com/roostrouter/roost/netconf"
	"github.com/roostrouter/roost/updater/activate"
	"github.com/roostrouter/roost/updater/atomicfile"
	"github.com/roostrouter/roost/updater/generations"
	"github.com/roostrouter/roost/updater/store"
)

// Commands runs roostd's command lines inside the agent: those of SSH
// clients and those of control socket callers come in through it alike.
// cmd/roostd implements it with its command table. The agent is handed to
// each call, as an http.Handler gets its request, rather than held: the
// commands need the agent and the agent needs the commands, and this way
// neither has to exist before the other. Commands act on the agent through
// its methods only.
type Commands interface {
	Exec(ctx context.Context, a *Agent, args []string, stdin io.Reader, stdout, stderr io.Writer) int
}

// Options are the agent's dependencies.
type Options struct {
	Root       string // the router's file system root
	State      string // what survives reboots: host key, leases, pending activation
	ConfigFile string // the config while no system runs (first boot, the lab); a running system's own wins
	Log        *slog.Logger
	Store      *store.Store
	Commands   Commands
	// Ready is called once the agent serves (for s6-style readiness).
	Ready func()
	// Self is roostd's own binary, which service hooks run (pppd's).
	Self string
	// Running is the binary this process runs, whatever has since replaced
	// the file at Self (/proc/self/exe): what a system's roostd is compared
	// with to decide on a hand-over. Empty: Self.
	Running string
	// ProcSys is where the kernel's sysctls are (/proc/sys); tests may
	// point it elsewhere.
	ProcSys string
	// Crash, if set, is called at each named step of an activation (see
	// store.Options.Crash).
	Crash func(point string)
	// Version is this roostd's version, for the log.
	Version string
	// Args are roostd's command line (os.Args): a hand-over to another
	// roostd runs it with the same.
	Args []string
	// Inherited are the listening sockets a previous agent handed over to
	// this one (nil if it was started afresh).
	Inherited *handover.Inherited
}

// Agent is roostd's resident service. New makes the whole of it; Run, once,
// serves until its context ends and returns only when everything it started
// has ended. Reload, and every command, may come at any time: before Run,
// while it starts, and after it returned.
type Agent struct {
	opts      Options
	activator *activate.Activator
	ssh       *sshd.Server
	sup       *supervisor.Supervisor
	nl        *netlink.Handle // opened by New, closed when Run returns
	ppp       *netconf.PPPHooks

	// sessions is the SSH connections' context: they outlive the listener
	// they came through (a reload that moves the endpoint must not cut the
	// activation that caused it) and end when Run does.
	sessions    context.Context
	endSessions context.CancelFunc

	// supMu makes the supervisor's life and reloads one sequence: the
	// supervisor answers only while its loop runs, so it is called only
	// while supervising, and never while Run starts or stops it.
	supMu       sync.RWMutex
	supervising bool
	reloads     int // reloads applied: Run's first config yields to a newer one

	mu            sync.Mutex
	cfg           *config.Config
	configProblem string
	unhealthy     error // why init should stop feeding the watchdog (a failed trial)
	// imageTrialTimer ends an image's trial boot at its deadline.
	imageTrialTimer *time.Timer

	// The hand-over to another roostd (selfupgrade.go). recheck says that
	// the running system changed: is its roostd another binary?
	recheck     chan struct{}
	maintain    chan string // a maintenance plan: hand over to its roostd (imageupgrade.go)
	handingOver atomic.Bool // the control socket's file stays for the next agent
	liveMu      sync.Mutex
	live        map[string]handover.Socket // the listening sockets, by network:address
	frozen      bool                       // they accept no more: a hand-over is coming
	calls       int                        // activations and rollbacks not yet answered
	deferred    bool                       // a recheck waits for them
	probed      string                     // the binary that last started fine
}

// New makes an agent; Run runs it.
func New(opts Options) (*Agent, error) {
	if opts.Commands == nil {
		return nil, errors.New("agent: no Commands to run for SSH clients and the control socket")
	}
	if err := os.MkdirAll(opts.State, 0o700); err != nil {
		// Not fatal: what needs the state folder fails alone (SSH's host
		// key, leases), and says so.
		opts.Log.Error("state folder", "err", err)
	}
	// Only the routing family: NewHandle() with none opens XFRM and
	// netfilter too, which routers' kernels may lack (xfrm_user is a module
	// on Debian's MIPS kernels and absent on OpenWrt's without IPsec).
	nl, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink (NETLINK_ROUTE): %w; roostd needs a Linux kernel with rtnetlink", err)
	}
	a := &Agent{opts: opts, nl: nl, ppp: netconf.NewPPPHooks(),
		sup:     supervisor.New(supervisor.Options{Log: opts.Log, OutputsDir: OutputsDir(opts.Root)}),
		recheck: make(chan struct{}, 1), maintain: make(chan string, 1), live: map[string]handover.Socket{}}
	a.sessions, a.endSessions = context.WithCancel(context.Background())
	a.ssh = &sshd.Server{Log: opts.Log, StagingDir: filepath.Join(opts.State, "staging"), Exec: a.exec}
	a.activator = &activate.Activator{
		Store:   opts.Store,
		Profile: generations.System(opts.Root, nil),
		State:   opts.State,
		Log:     opts.Log,
		Now:     time.Now,
		Reload:  a.systemChanged,
		Lock:    a.LockStore,
		Crash:   opts.Crash,

		PrepareBoot: a.prepareBoot,
		TrialFailed: a.trialFailed,
	}
	return a, nil
}

// exec runs a command line for an SSH client or a control socket caller:
// the one way in for both.
func (a *Agent) exec(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return a.opts.Commands.Exec(ctx, a, args, stdin, stdout, stderr)
}

// OutputsDir is where the services' outputs are, below root (Liminix's
// layout, so its scripts read them).
func OutputsDir(root string) string { return filepath.Join(root, "run/services/outputs") }

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

// Activate activates as r says (see activate.Activator.Do). A system
// whose roostd is another binary is handed over to once the caller has
// the answer; if that roostd does not start, the activation is rolled
// back before Activate returns. A system that must boot (a trial) is
// booted once the caller has the answer.
func (a *Agent) Activate(ctx context.Context, r activate.Request) (activate.Result, error) {
	defer a.holdRechecks(ctx)()
	res, err := a.activator.Do(ctx, r)
	switch {
	case err != nil || res.Token == "": // boot and dry-activate run nothing new
		return res, err
	case res.Trial != nil:
		a.bootTrial(ctx, *res.Trial)
		return res, nil
	}
	return res, a.afterActivation(ctx)
}

// Confirm keeps the activation awaiting confirmation with token; by is the
// connection the confirmation came over.
func (a *Agent) Confirm(token, by string) error {
	if err := a.confirmImage(token); !errors.Is(err, errNoImageTrial) {
		return err
	}
	return a.activator.Confirm(token, by)
}

// Rollback runs the previous generation (and its roostd, once the caller
// has the answer).
func (a *Agent) Rollback(ctx context.Context) (generations.Generation, error) {
	defer a.holdRechecks(ctx)()
	return a.activator.Rollback(ctx)
}

// RollbackBoot makes the previous generation the boot default; the running
// system and its agent stay until the next boot.
func (a *Agent) RollbackBoot(ctx context.Context) (generations.Generation, error) {
	return a.activator.RollbackBoot(ctx)
}

// Services returns the services' states and outputs (none while the
// supervisor does not run: the control socket answers before it does).
func (a *Agent) Services() []supervisor.Status {
	a.supMu.RLock()
	defer a.supMu.RUnlock()
	if !a.supervising {
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
	if sys, ok := a.activator.Current(); ok {
		return activate.ConfigFile(a.opts.Store, sys), true
	}
	return a.opts.ConfigFile, a.opts.ConfigFile != ""
}

// markBooted records the system running when the agent first starts after
// a boot (/run is empty then), as NixOS does: gc keeps it.
func (a *Agent) markBooted() {
	booted := activate.BootedLink(a.opts.Root)
	if _, err := os.Lstat(booted); err == nil {
		return
	}
	if sys, ok := a.activator.Current(); ok {
		if err := atomicfile.Symlink(sys.String(), booted); err != nil {
			a.opts.Log.Warn("record the booted system", "err", err)
		}
	}
}

// Run serves until ctx ends, then stops the services (dependents first; the
// network stays as it is) and returns once the control socket, the SSH
// endpoint and every connection to them have closed. It always comes up,
// whatever the config and the kernel: a pending activation is recovered
// before any config is loaded; a config that does not load falls back to
// the last good generation's, loudly; a part that fails (SSH, the
// firewall, a kernel feature) fails as a service, with the rest up.
//
// When the running system's roostd becomes another binary, Run hands over
// to it (see selfupgrade.go): it stops as it would at the end, keeping the
// listening sockets, and exec's that binary, so it returns only if the
// exec failed.
func (a *Agent) Run(ctx context.Context) error {
	defer a.nl.Close()
	a.markBooted()
	var wg sync.WaitGroup
	controlCtx, stopControl := context.WithCancel(ctx)
	a.serveControl(controlCtx, &wg)
	if err := a.activator.Recover(ctx); err != nil {
		a.opts.Log.Error("recovering a pending activation", "err", err)
	}
	a.recoverImageTrial()
	stopSupervisor := a.start(ctx, &wg)
	a.opts.Log.Info("roostd running", "version", a.opts.Version, "pid", os.Getpid(), "root", a.opts.Root, "state", a.opts.State)
	if since, ok := a.opts.Inherited.Since(); ok {
		a.opts.Log.Info("took over in place from the previous roostd", "handover", time.Since(since).Round(time.Millisecond))
	}
	if a.opts.Ready != nil {
		a.opts.Ready()
	}
	stop := func() {
		a.endSessions()
		stopControl()
		stopSupervisor()
		wg.Wait()
		a.ssh.Wait() // the endpoint's listeners closed with its service: no new connection comes
	}
	// The health file is written from this loop: an agent whose loop
	// hangs stops saying it runs, and init stops feeding the watchdog.
	a.writeHealth()
	alive := time.NewTicker(health.Every)
	defer alive.Stop()
	for {
		select {
		case <-ctx.Done():
			stop()
			return nil
		case <-alive.C:
			a.writeHealth()
		case <-a.recheck:
			if held, next := a.handOverNow(ctx); held != nil {
				stop()
				if ctx.Err() != nil {
					// Told to stop (SIGTERM, init rebooting) while handing
					// over: stop, as told, rather than start the next agent.
					held.Close()
					os.Remove(control.SocketPath(a.opts.Root))
					a.opts.Log.Info("stopped while handing over: the next roostd is not started")
					return nil
				}
				return a.execNext(next, held)
			}
		case plan := <-a.maintain:
			held, err := handover.Hold(a.freeze(), time.Now())
			if err != nil {
				a.thaw()
				a.opts.Log.Error("MAINTENANCE NOT STARTED: the SSH sockets cannot be handed over", "err", err)
				continue
			}
			a.handingOver.Store(true)
			stop()
			return a.execMaintenance(plan, held)
		}
	}
}

// serveControl serves the control socket until ctx ends.
func (a *Agent) serveControl(ctx context.Context, wg *sync.WaitGroup) {
	path := control.SocketPath(a.opts.Root)
	l, ok := a.opts.Inherited.Take("unix", path)
	if !ok {
		var err error
		if l, err = control.Listen(path); err != nil {
			a.opts.Log.Error("no control socket: roostd's commands work only over SSH", "err", err)
			return
		}
	}
	forget := a.listening(handover.Socket{Network: "unix", Addr: path, L: l})
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer func() {
			if !a.handingOver.Load() {
				os.Remove(path)
			}
		}()
		defer forget()
		if err := control.Serve(ctx, l, a.exec, a.opts.Log); err != nil {
			a.opts.Log.Error("control socket: roostd's commands work only over SSH now", "err", err)
		}
	}()
}

// start loads the config the agent starts with (the first load: not a
// Reload, which applies a change to services that run) and starts the
// supervisor with its services. A reload that was applied while the first
// config loaded (an activation over the control socket) read the config
// later, and wins. It returns what stops the supervisor.
func (a *Agent) start(ctx context.Context, wg *sync.WaitGroup) (stop func()) {
	a.supMu.RLock()
	seen := a.reloads
	a.supMu.RUnlock()
	cfg, problem := a.startConfig(ctx)
	a.supMu.Lock()
	defer a.supMu.Unlock()
	if a.reloads == seen {
		a.setConfig(cfg, problem)
	} else {
		cfg = a.Config()
	}
	a.lockdown(cfg)
	initial, err := a.specs(cfg)
	if err != nil {
		a.opts.Log.Error("services refused: running none", "err", err)
	}
	if _, ok := a.sshSpec(cfg); !ok || err != nil {
		a.closeUnclaimedSSH()
	}
	// Not ctx: the supervisor must answer whoever holds supMu until stop
	// has taken it from them.
	supCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := a.sup.Run(supCtx, initial); err != nil {
			a.opts.Log.Error("supervisor", "err", err)
		}
	}()
	a.supervising = true
	return func() {
		a.supMu.Lock()
		a.supervising = false
		a.supMu.Unlock()
		cancel()
	}
}

// startConfig is the config the agent starts with, and why it is not the
// running system's if it is not: the running system's; if that does not
// load, the system awaiting confirmation is rolled back now, or else the
// newest generation whose config loads is used (the router must come up,
// and its owner must reach it to fix the config).
func (a *Agent) startConfig(ctx context.Context) (*config.Config, string) {
	cfg, err := a.loadConfig()
	if err == nil {
		return cfg, ""
	}
	a.opts.Log.Error("the running system's config does not load", "err", err)
	if rolled, rerr := a.activator.RollBackPending(ctx, err); rolled && rerr == nil {
		if cfg, err = a.loadConfig(); err == nil {
			return cfg, ""
		}
	}
	cur, _ := a.activator.Current()
	gens, _, _ := a.activator.Profile.List()
	for i := len(gens) - 1; i >= 0; i-- {
		g := gens[i]
		if g.Path == cur {
			continue
		}
		c, gerr := config.Load(activate.ConfigFile(a.opts.Store, g.Path), Kinds(a.ppp))
		if gerr != nil {
			continue
		}
		why := fmt.Sprintf("the running system's config does not load (%v): running generation %d's config instead; fix the config and rebuild, or roll back", err, g.Number)
		a.opts.Log.Error("config fallback", "generation", g.Number, "why", why)
		return c, why
	}
	why := fmt.Sprintf("the running system's config does not load (%v), nor does any generation's: running no services, only SSH; fix the config and rebuild", err)
	a.opts.Log.Error("config fallback", "why", why)
	return &config.Config{}, why
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
		fw := firewall.Service{Zones: d.Zones, ProcSys: a.opts.ProcSys}
		if err := fw.Lockdown(); err != nil {
			a.opts.Log.Error("firewall: default policy not in force at start-up", "service", name, "err", err)
		}
		return
	}
}

// Reload applies the running system's config (after an activation, or on
// SIGHUP): a bad config is refused and the one in force stays. While the
// supervisor does not run (before Run has started it, or after it
// stopped), it only loads the config and puts it in force for SSH; Run
// starts the services with it.
func (a *Agent) Reload(ctx context.Context) error {
	a.supMu.Lock()
	defer a.supMu.Unlock()
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
	if a.supervising {
		sp, err := a.specs(cfg)
		if err != nil {
			return err
		}
		if err := a.sup.Reload(sp); err != nil {
			return err
		}
	}
	a.setConfig(cfg, "")
	a.reloads++
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
