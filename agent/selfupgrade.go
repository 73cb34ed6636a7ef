package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/roostrouter/roost/agent/control"
	"github.com/roostrouter/roost/agent/handover"
	"github.com/roostrouter/roost/updater/activate"
)

// The agent upgrading itself. When the running system changes (an
// activation, its rollback, a rollback by request) to one whose bin/roostd
// is another binary than this one, the agent hands over to it in place
// (package handover): once the caller has its answer, it stops accepting,
// stops its services as a restart does (nothing is removed), and exec's
// the new binary with the same arguments and the listening sockets. The
// new agent adopts the network state and the pending activation, whose
// deadline is on disk: confirm-or-rollback holds across the hand-over,
// and a rollback hands back the same way.

// listenerDeadline is what a frozen listener's Accept fails with at once,
// so that connections wait in the backlog for the next agent.
var listenerDeadline = time.Unix(1, 0)

type deadliner interface{ SetDeadline(time.Time) error }

// listening records a listening socket, to be handed over; the function it
// returns forgets it.
func (a *Agent) listening(s handover.Socket) (forget func()) {
	a.liveMu.Lock()
	defer a.liveMu.Unlock()
	if a.frozen {
		if d, ok := s.L.(deadliner); ok {
			d.SetDeadline(listenerDeadline)
		}
	}
	key := s.Network + ":" + s.Addr
	a.live[key] = s
	return func() {
		a.liveMu.Lock()
		defer a.liveMu.Unlock()
		if a.live[key].L == s.L {
			delete(a.live, key)
		}
	}
}

// freeze stops every listener accepting (callers wait in the backlogs)
// and returns them; thaw undoes it.
func (a *Agent) freeze() []handover.Socket {
	a.liveMu.Lock()
	defer a.liveMu.Unlock()
	a.frozen = true
	var out []handover.Socket
	for _, s := range a.live {
		if d, ok := s.L.(deadliner); ok {
			d.SetDeadline(listenerDeadline)
		}
		out = append(out, s)
	}
	return out
}

func (a *Agent) thaw() {
	a.liveMu.Lock()
	defer a.liveMu.Unlock()
	a.frozen = false
	for _, s := range a.live {
		if d, ok := s.L.(deadliner); ok {
			d.SetDeadline(time.Time{})
		}
	}
}

// systemChanged is the activator's Reload: the running system changed, so
// its config is applied, and whether its roostd is another is checked
// once nothing awaits an answer. A config that this roostd cannot load
// does not stop a system whose roostd is another: that one loads it (a
// rollback from a roostd that loads no config at all hands back to the
// previous one, which does).
func (a *Agent) systemChanged(ctx context.Context) error {
	if err := a.Reload(ctx); err != nil {
		if next, nerr := a.nextAgent(); nerr != nil || next == "" {
			return err
		}
		a.opts.Log.Warn("this roostd does not load the system's config: its own roostd will, once handed over", "err", err)
	}
	a.liveMu.Lock()
	defer a.liveMu.Unlock()
	if a.calls > 0 {
		a.deferred = true
		return nil
	}
	select {
	case a.recheck <- struct{}{}:
	default:
	}
	return nil
}

// holdRechecks keeps a hand-over from starting until the command running
// with ctx has been answered; call what it returns when the call is over.
func (a *Agent) holdRechecks(ctx context.Context) (done func()) {
	a.liveMu.Lock()
	a.calls++
	a.liveMu.Unlock()
	release := func() {
		a.liveMu.Lock()
		defer a.liveMu.Unlock()
		if a.calls--; a.calls == 0 && a.deferred {
			a.deferred = false
			select {
			case a.recheck <- struct{}{}:
			default:
			}
		}
	}
	if control.AfterReply(ctx, release) {
		return func() {}
	}
	return release
}

// nextAgent is the running system's roostd (its path on this file system)
// if it is another binary than this one; "" if it is the same, or if the
// system has none (a bare lab system keeps the running agent).
func (a *Agent) nextAgent() (string, error) {
	sys, ok := a.activator.Current()
	if !ok || a.opts.Self == "" {
		return "", nil
	}
	link := filepath.Join(sys.String(), "bin/roostd")
	if _, err := os.Lstat(filepath.Join(a.opts.Store.PhysicalPath(sys), "bin/roostd")); os.IsNotExist(err) {
		return "", nil
	}
	bin, err := handover.Resolve(a.opts.Root, link)
	if err != nil {
		return "", err
	}
	// Compared with what runs, not with the file at Self, which a build may
	// have replaced. An error reading either counts as another binary: the
	// probe and the new agent show whether that one runs.
	running := a.opts.Running
	if running == "" {
		running = a.opts.Self
	}
	if same, err := handover.Same(bin, running); err == nil && same {
		return "", nil
	}
	return bin, nil
}

// probe checks that bin starts at all, once per binary.
func (a *Agent) probe(ctx context.Context, bin string) error {
	a.liveMu.Lock()
	probed := a.probed == bin
	a.liveMu.Unlock()
	if probed {
		return nil
	}
	v, err := handover.Probe(ctx, bin)
	if err != nil {
		return err
	}
	a.opts.Log.Info("the running system's roostd starts", "roostd", bin, "version", v.Version)
	a.liveMu.Lock()
	a.probed = bin
	a.liveMu.Unlock()
	return nil
}

// afterActivation checks, after an activation that runs a new system,
// whether its roostd is another, and that it starts: if it does not, the
// activation is rolled back now and the error says why; if it does, the
// listeners stop accepting at once (the caller's next connection, its
// confirmation, waits for the new agent), and the hand-over follows the
// answer.
func (a *Agent) afterActivation(ctx context.Context) error {
	next, err := a.nextAgent()
	if err == nil && next == "" {
		return nil
	}
	if err == nil {
		err = a.probe(ctx, next)
	}
	if err != nil {
		sys, _ := a.activator.Current()
		cause := fmt.Errorf("the new roostd %s/bin/roostd does not run: %w", sys, err)
		if _, rerr := a.activator.RollBackPending(ctx, cause); rerr != nil {
			return fmt.Errorf("%w; rolling back also failed (retrying): %v", cause, rerr)
		}
		return fmt.Errorf("%w; rolled back to %s", cause, a.running())
	}
	a.freeze()
	a.opts.Log.Info("the new system's roostd is another: handing over once the activation is answered", "roostd", next)
	return nil
}

// running says what runs now, for messages: its generation, or its system.
func (a *Agent) running() string {
	if g, ok, err := a.activator.Profile.Current(); err == nil && ok {
		return fmt.Sprintf("generation %d", g.Number)
	}
	if sys, ok := a.activator.Current(); ok {
		return sys.String()
	}
	return "no system"
}

// handOverNow decides, once the running system changed and nothing awaits
// an answer, whether to hand over; if so, the listeners stop accepting and
// their sockets are held for the next agent. A roostd that does not start
// is not handed over to: this agent stays, loudly.
func (a *Agent) handOverNow(ctx context.Context) (*handover.Held, string) {
	since := time.Now()
	next, err := a.nextAgent()
	if err == nil && next != "" {
		err = a.probe(ctx, next)
	}
	if err != nil || next == "" {
		if err != nil {
			a.opts.Log.Error("the running system's roostd does not run: this agent stays", "err", err)
		}
		a.thaw()
		return nil, ""
	}
	a.settle()
	socks := a.freeze()
	held, err := handover.Hold(socks, since)
	if err != nil {
		a.opts.Log.Error("cannot hand the listening sockets over: this agent stays", "err", err)
		a.thaw()
		return nil, ""
	}
	a.handingOver.Store(true)
	a.opts.Log.Info("handing over to the running system's roostd", "roostd", next, "sockets", len(socks))
	return held, next
}

// settle waits, for a few seconds at most, for a rollback under way (its
// activation is past its deadline and still on disk) to finish: the
// system it runs may be the cause of this hand-over, and the next agent
// must not find the rollback due and run it again.
func (a *Agent) settle() {
	for range 100 {
		p, err := activate.ReadPending(a.opts.State)
		if err != nil || p.RollbackError != "" || a.activator.Now().Before(p.Deadline) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// execNext replaces this process with next, once the agent has stopped.
// If the system changed back meanwhile (its rollback), this binary runs
// again instead. It returns only if neither exec worked.
func (a *Agent) execNext(next string, held *handover.Held) error {
	if again, err := a.nextAgent(); err == nil && again == "" {
		next = a.opts.Self
	}
	a.opts.Log.Info("stopped: exec", "roostd", next)
	err := held.Exec(next, a.opts.Args, os.Environ())
	a.opts.Log.Error("hand-over failed: starting this roostd again in its place", "err", err)
	err2 := held.Exec(a.opts.Self, a.opts.Args, os.Environ())
	held.Close()
	return fmt.Errorf("hand-over: %w; starting this roostd again: %v", err, err2)
}
