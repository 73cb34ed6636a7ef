package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/roostrouter/roost/agent"
	"github.com/roostrouter/roost/agent/boot"
	"github.com/roostrouter/roost/agent/control"
	"github.com/roostrouter/roost/agent/handover"
	"github.com/roostrouter/roost/agent/supervisor"
	"github.com/roostrouter/roost/updater/activate"
	"github.com/roostrouter/roost/updater/closurediff"
	"github.com/roostrouter/roost/updater/generations"
	"github.com/roostrouter/roost/updater/registry"
	"github.com/roostrouter/roost/updater/store"
	"github.com/roostrouter/roost/updater/storepath"
	"github.com/roostrouter/roost/updater/transfer"
)

func runAgent(e *env, args []string) error {
	f := newFlags(e, "run")
	state := f.String("state", e.defaultState, "the `folder` that survives reboots")
	cfg := f.String("config", "", "the config `file` to use while no system runs (first boot); a running system's own wins")
	notifyFD := f.Int("notify-fd", -1, "write a newline to this `fd` when ready (s6 readiness)")
	if _, err := f.parse(args); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find roostd's own binary: %w", err)
	}
	// The sockets of the roostd that handed over to this one, if one did.
	inherited, err := handover.FromEnv(e.getenv)
	if err != nil {
		e.log.Error("hand-over: sockets not taken over (they are listened on anew)", "err", err)
	}
	os.Unsetenv(handover.EnvFDs) // no child (activate scripts, pppd) is handed them
	os.Unsetenv(handover.EnvSince)
	a, err := agent.New(agent.Options{
		Root: *f.root, State: *state, ConfigFile: *cfg, Log: e.log, Self: self, Running: "/proc/self/exe", ProcSys: "/proc/sys",
		Store: e.openStore(*f.root), Commands: commands{}, Crash: e.crashHook(),
		Version: version, Args: os.Args, Inherited: inherited,
		Ready: func() {
			// Readiness is told once: after a hand-over the fd is closed,
			// and its number may be a socket's now.
			if *notifyFD >= 0 && inherited == nil {
				nf := os.NewFile(uintptr(*notifyFD), "notify")
				nf.Write([]byte("\n"))
				nf.Close()
			}
		},
	})
	if err != nil {
		return err
	}
	// SIGHUP reloads, from now on: a reload before Run only loads the
	// config, which Run then starts the services with.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	reloading := make(chan struct{})
	go func() {
		defer close(reloading)
		for {
			select {
			case <-hup:
				if err := a.Reload(e.ctx); err != nil {
					e.log.Error("reload", "err", err)
				}
			case <-e.ctx.Done():
				return
			}
		}
	}()
	err = a.Run(e.ctx)
	<-reloading
	return err
}

// viaAgent runs a command that needs the resident agent: in it if this is
// the agent, else through its control socket.
func viaAgent(e *env, root string, args []string, inAgent func(a *agent.Agent) error) error {
	if e.agent != nil {
		return inAgent(e.agent)
	}
	code, err := control.Call(e.ctx, control.SocketPath(root), args, e.conn, e.stdout, e.stderr)
	if err != nil {
		return err
	}
	if code != 0 {
		return exitCode(code)
	}
	return nil
}

func runReceive(e *env, args []string) error {
	f := newFlags(e, "receive")
	if _, err := f.parse(args); err != nil {
		return err
	}
	s := e.openStore(*f.root)
	srv := &transfer.Server{Store: s, Log: e.log, Agent: "roostd " + version,
		Lock:    func(ctx context.Context) (*store.Txn, error) { return e.lock(s, "roostd receive") },
		Running: func() *transfer.Running { return running(e, *f.root) }}
	if e.agent != nil {
		if c := e.agent.Config(); c != nil {
			// A delta's base is held in memory: an eighth of the board's RAM.
			srv.MaxDeltaBase = uint64(c.BoardInfo().RAMMB) << 20 / 8
		}
	}
	_, err := srv.Serve(e.ctx, e.stdin, e.stdout)
	return err
}

func runActivate(e *env, args []string) error {
	f := newFlags(e, "activate")
	timeout := f.Duration("confirm-timeout", 90*time.Second, "roll back unless confirmed within this")
	method := f.String("boot-method", "", "how a switch that changes the kernel boots: kexec or reboot (default: the board's choice)")
	pos, err := f.parse(args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return errors.New("usage: roostd activate switch|test|boot|dry-activate /nix/store/...-system")
	}
	mode, err := activate.ParseMode(pos[0])
	if err != nil {
		return err
	}
	system, err := storepath.Parse(pos[1])
	if err != nil {
		return err
	}
	return viaAgent(e, *f.root, append([]string{"activate"}, args...), func(a *agent.Agent) error {
		res, err := a.Activate(e.ctx, activate.Request{Mode: mode, System: system, Timeout: *timeout, By: e.conn, BootMethod: *method})
		if err != nil {
			return err
		}
		out := activate.Report{Result: res, Changes: changes(a.Store(), res.Previous, system)}
		if *f.json {
			printJSON(e.stdout, out)
			return nil
		}
		for _, c := range out.Changes {
			fmt.Fprintln(e.stdout, c)
		}
		switch {
		case mode == activate.DryActivate:
			fmt.Fprintf(e.stdout, "would activate %s (now %s)\n", system, orNone(res.Previous))
		case res.Trial != nil:
			fmt.Fprintf(e.stdout, "generation %d boots as a trial (%s); once it is back, confirm within %s with: roostd confirm %s\n", res.Trial.Generation, res.Trial.Why, *timeout, res.Token)
		case res.Token != "":
			fmt.Fprintf(e.stdout, "activated %s; confirm within %s with: roostd confirm %s\n", system, *timeout, res.Token)
		default:
			fmt.Fprintf(e.stdout, "generation %d (%s) is the default for the next boot\n", res.Generation, system)
		}
		return nil
	})
}

func orNone(p storepath.Path) string {
	if p == "" {
		return "no system"
	}
	return p.String()
}

// changes lists the packages that differ between two systems' closures.
func changes(s *store.Store, from, to storepath.Path) []closurediff.Change {
	reg, err := s.Registry()
	if err != nil {
		return nil
	}
	closure := func(p storepath.Path) []storepath.Path {
		if p == "" {
			return nil
		}
		var out []storepath.Path
		for q := range store.Closure(reg, []storepath.Path{p}) {
			out = append(out, q)
		}
		return out
	}
	return closurediff.Diff(closure(from), closure(to))
}

func runConfirm(e *env, args []string) error {
	f := newFlags(e, "confirm")
	pos, err := f.parse(args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return errors.New("usage: roostd confirm TOKEN")
	}
	return viaAgent(e, *f.root, append([]string{"confirm"}, args...), func(a *agent.Agent) error {
		if err := a.Confirm(pos[0], e.conn); err != nil {
			return err
		}
		if *f.json {
			printJSON(e.stdout, map[string]bool{"confirmed": true})
			return nil
		}
		fmt.Fprintln(e.stdout, "confirmed")
		return nil
	})
}

// status is what `roostd status --json` prints.
type status struct {
	Hostname   string         `json:"hostname,omitempty"`
	Agent      string         `json:"agent"`
	Version    string         `json:"version,omitempty"` // the running agent's, if it answered
	Current    storepath.Path `json:"currentSystem,omitempty"`
	Booted     storepath.Path `json:"bootedSystem,omitempty"`
	Generation int            `json:"generation,omitempty"`
	// Slot is the image slot roostd init booted, on an image board.
	Slot    *boot.BootedSlot  `json:"slot,omitempty"`
	Pending *activate.Pending `json:"pendingActivation,omitempty"`
	// Image is an image board's slots: what each holds, which boots, a
	// trial awaiting confirmation and how the last one ended.
	Image *agent.ImageInfo `json:"image,omitempty"`
	// LastRollback is the last activation rolled back, and why.
	LastRollback *activate.RolledBack `json:"lastRollback,omitempty"`
	// ConfigProblem says why the agent runs another config than its
	// system's (it does not load).
	ConfigProblem string                   `json:"configProblem,omitempty"`
	Store         storeStatus              `json:"store"`
	Gens          []generations.Generation `json:"generations"`
	Services      []supervisor.Status      `json:"services"`
}

type storeStatus struct {
	Paths    int    `json:"paths"`
	NARBytes uint64 `json:"narBytes"`
}

func runStatus(e *env, args []string) error {
	f := newFlags(e, "status")
	state := f.String("state", e.defaultState, "the agent's state `folder`")
	if _, err := f.parse(args); err != nil {
		return err
	}
	if e.agent == nil {
		err := viaAgent(e, *f.root, append([]string{"status"}, args...), nil)
		if !errors.Is(err, control.ErrNotRunning) {
			return err
		}
	}
	st := status{Agent: "not running", Gens: []generations.Generation{}, Services: []supervisor.Status{}}
	if e.agent != nil {
		if svcs := e.agent.Services(); svcs != nil {
			st.Services = svcs
		}
		st.Agent = "roostd " + version + ", pid " + strconv.Itoa(os.Getpid())
		st.Version = version
		if c := e.agent.Config(); c != nil {
			st.Hostname = c.Hostname
		}
		st.ConfigProblem = e.agent.ConfigProblem()
		if info, err := e.agent.ImageInfo(); err == nil {
			st.Image = &info
		}
		*state = e.agent.State()
	}
	link := func(file string) storepath.Path {
		t, err := os.Readlink(file)
		if err != nil {
			return ""
		}
		p, _ := storepath.FromLink(t)
		return p
	}
	st.Current, st.Booted = link(activate.CurrentLink(*f.root)), link(activate.BootedLink(*f.root))
	gens, cur, err := generations.System(*f.root, nil).List()
	if err != nil {
		return err
	}
	if gens != nil {
		st.Gens = gens
	}
	st.Generation = cur
	if s, err := boot.ReadBootedSlot(*f.root); err == nil {
		st.Slot = &s
	}
	if p, err := activate.ReadPending(*state); err == nil {
		st.Pending = &p
	}
	if r, err := activate.ReadRolledBack(*state); err == nil {
		st.LastRollback = &r
	}
	if reg, err := e.openStore(*f.root).Registry(); err == nil {
		st.Store.Paths = reg.Len()
		st.Store.NARBytes = narTotal(reg)
	}
	if *f.json {
		printJSON(e.stdout, st)
		return nil
	}
	host := st.Hostname
	if host == "" {
		host = "(no hostname)"
	}
	fmt.Fprintf(e.stdout, "%s: %s\n", host, st.Agent)
	fmt.Fprintf(e.stdout, "  current system: %s (generation %d)\n", orNone(st.Current), st.Generation)
	fmt.Fprintf(e.stdout, "  booted system:  %s\n", orNone(st.Booted))
	if s := st.Slot; s != nil {
		fmt.Fprintf(e.stdout, "  booted slot:    %s (%s)%s\n", s.Slot, s.Device, map[bool]string{true: ", a trial"}[s.Trial])
		if s.Chosen != "" {
			fmt.Fprintf(e.stdout, "  SLOT %s DID NOT MOUNT: %s\n", s.Chosen, s.Fallback)
		}
	}
	if im := st.Image; im != nil {
		fmt.Fprintf(e.stdout, "  image slots:    %v: running %s, default %s\n", im.Slots, im.Running, im.Default)
		if t := im.Trial; t != nil {
			fmt.Fprintf(e.stdout, "  image trial:    %s awaiting confirmation until %s, else %s comes back\n", t.Slot, t.Deadline.Format(time.TimeOnly), t.Previous)
		}
		if im.Last != "" {
			fmt.Fprintf(e.stdout, "  last image:     %s\n", im.Last)
		}
	}
	if st.ConfigProblem != "" {
		fmt.Fprintf(e.stdout, "  CONFIG: %s\n", st.ConfigProblem)
	}
	if p := st.Pending; p != nil {
		switch {
		case p.RollbackError != "":
			fmt.Fprintf(e.stdout, "  ROLLBACK OVERDUE since %s (retrying): %s\n", p.Deadline.Format(time.TimeOnly), p.RollbackError)
		case p.Trial != nil:
			fmt.Fprintf(e.stdout, "  trial of generation %d (by %s): awaiting confirmation until %s, else the boot default, generation %d, comes back\n",
				p.Trial.Generation, p.Trial.Method, p.Deadline.Format(time.TimeOnly), p.PrevGeneration)
		default:
			fmt.Fprintf(e.stdout, "  awaiting confirmation of %s until %s, else rolls back\n", p.System, p.Deadline.Format(time.TimeOnly))
		}
	}
	if r := st.LastRollback; r != nil {
		fmt.Fprintf(e.stdout, "  last rollback: %s at %s, back to %s: %s\n", r.System, r.At.Format(time.DateTime), orNone(r.To), r.Why)
	}
	fmt.Fprintf(e.stdout, "  store: %d paths, %s\n", st.Store.Paths, humanBytes(int64(st.Store.NARBytes)))
	printServices(e.stdout, st.Services)
	return nil
}

// printServices prints the services as a tree: each under what it depends
// on, indented by its depth, with its state and outputs.
func printServices(w io.Writer, svcs []supervisor.Status) {
	if len(svcs) == 0 {
		return
	}
	depth := map[string]int{}
	for _, s := range svcs { // dependency order: deps come first
		for _, d := range s.Deps {
			depth[s.Name] = max(depth[s.Name], depth[d]+1)
		}
	}
	fmt.Fprintln(w, "  services:")
	for _, s := range svcs {
		var outs []string
		for _, k := range slices.Sorted(maps.Keys(s.Outputs)) {
			outs = append(outs, k+"="+s.Outputs[k])
		}
		line := fmt.Sprintf("    %-9s%s%s (%s)", s.State, strings.Repeat("  ", depth[s.Name]), s.Name, s.Kind)
		if len(outs) > 0 {
			line += "  " + strings.Join(outs, " ")
		}
		if s.LastError != "" {
			line += fmt.Sprintf("  [failed %d times: %s; retry in %s]", s.Failures, s.LastError, s.RetryIn)
		}
		fmt.Fprintln(w, line)
	}
}

func narTotal(reg *registry.Registry) uint64 {
	var n uint64
	for _, p := range reg.Paths() {
		i, _ := reg.Get(p)
		n += i.NarSize
	}
	return n
}
