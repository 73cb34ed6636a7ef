// Command roostd is roost's resident router agent. This file dispatches its
// subcommands; each lives in a file of its own.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/roostrouter/roost/agent"
	"github.com/roostrouter/roost/agent/boot"
	"github.com/roostrouter/roost/agent/cmdflag"
	"github.com/roostrouter/roost/agent/config"
	"github.com/roostrouter/roost/agent/control"
	"github.com/roostrouter/roost/updater/activate"
	"github.com/roostrouter/roost/updater/nixsig"
	"github.com/roostrouter/roost/updater/store"
	"github.com/roostrouter/roost/updater/storepath"
)

const usage = `usage: roostd <command> [flags]

commands:
  run [--state DIR] [--config FILE] [--notify-fd N]   the resident agent (it logs; no --json)
  status [--json]             the running system, generations, pending activation
  version [--json]            this roostd's version
  receive                     the router's end of roost's transfer protocol, on stdio (a stream: no --json)
  activate switch|test|boot|dry-activate PATH [--confirm-timeout 90s] [--json]
  confirm TOKEN [--json]      keep the system activated with that token
  firewall show [--json]      the live firewall ruleset, as nft text (--json: its chains, sets and counters too)
  store import [--json]     import a nix-store --export stream from stdin
  store dump PATH           write the NAR of PATH to stdout, as nix-store --dump (a stream: no --json)
  store dump-db [PATH...] [--json]   print registrations (as nix-store --dump-db; --json: as Nix 2.3's nix path-info --json)
  store query-valid PATH... [--json]   print the valid ones of PATHs; exit 1 if any is not
  store verify [--json]     rehash every valid path; exit 1 on a mismatch
  gc [--keep N] [--older-than 30d] [--dry-run] [--json]
  generations [--json]        list system generations
  generations set PATH [--json]   make PATH the current system in a new generation
  rollback [--boot] [--json]  switch to the previous generation (--boot: make it the boot default only)
  hook ppp EVENT IFNAME TTY SPEED LOCAL REMOTE IPPARAM [--json]   pppd's hooks (ip-up, ip-down, ipv6-up, ipv6-down)
  init                        PID 1 of the router, its initrd's /init (docs/boot.md; it logs, no --json)
  reboot | poweroff [--json]  ask roostd init to stop every process, unmount, and reboot or power off
  config check FILE [--board B] [--json]   validate a config for its board; exit 1 listing every problem
  image plan [--json]         an image board's slots: which runs, which boots, what each holds
  image write --bytes N --sha256 HEX [--delta-base-bytes M --delta-base-sha256 HEX] [--system P] [--confirm-timeout 5m] [--json]
                              check that the router can take the image, then run from RAM (pivot-to-maintenance) to receive it
                              (roostd maintenance receive), write it to the spare slot and boot it as a trial; roost rebuild runs it
  maintain --plan FILE        the agent's copy in RAM that writes the image (started by image write; it logs, no --json)
  boards [--json | --targets] the board data (boards/boards.json); --targets: each Go target, for make cross

Every command takes --root DIR (default /): the router's file system root; every
command that prints takes --json: one JSON document on stdout, for scripts.
`

// version is roostd's version, set at build time with -ldflags "-X main.version=...".
var version = "dev"

// env is what every command gets: streams, the environment, a context
// cancelled by SIGINT or SIGTERM, and, inside the agent, the agent.
type env struct {
	ctx          context.Context
	stdin        io.Reader
	stdout       io.Writer
	stderr       io.Writer
	getenv       func(string) string
	log          *slog.Logger
	defaultRoot  string
	defaultState string
	agent        *agent.Agent // nil when run from a shell
	// conn is the SSH connection the command came over ("" if local): an
	// activation is confirmed only over another one.
	conn string
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	e := &env{ctx: ctx, stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv,
		log: slog.New(slog.NewTextHandler(os.Stderr, nil)), defaultRoot: "/", defaultState: "/persist/roost"}
	args := os.Args[1:]
	if filepath.Base(os.Args[0]) == "init" {
		// The initrd's /init, run by the kernel with the words of its
		// command line that it does not know as arguments.
		args = append([]string{"init"}, args...)
	}
	if filepath.Base(os.Args[0]) == "nix-store" {
		// A link named nix-store: nix copy's ssh:// store runs
		// "nix-store --serve --write" under any sshd.
		args = append([]string{"nix-store"}, args...)
	}
	if c := os.Getenv("SSH_CONNECTION"); c != "" {
		e.conn = "ssh " + c // run by a plain sshd: its client's address and port
	}
	if root := os.Getenv("ROOSTD_ROOT"); root != "" {
		e.defaultRoot = root // where a nix-store link finds the router's store
	}
	os.Exit(exitStatus(run(e, args), os.Stderr))
}

// exitStatus turns a command's error into its exit status, printing it.
func exitStatus(err error, stderr io.Writer) int {
	var ec exitCode
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ec):
		return int(ec)
	case errors.Is(err, flag.ErrHelp):
		return 2
	}
	fmt.Fprintln(stderr, "roostd:", err)
	return 1
}

// commands is roostd's command table as the agent runs it, for SSH clients
// and the control socket (agent.Commands).
type commands struct{}

func (commands) Exec(ctx context.Context, a *agent.Agent, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) > 0 && filepath.Base(args[0]) == "roostd" {
		args = args[1:]
	}
	if len(args) > 0 && args[0] == "run" {
		fmt.Fprintln(stderr, "roostd: the agent is already running")
		return 2
	}
	e := &env{ctx: ctx, stdin: stdin, stdout: stdout, stderr: stderr,
		getenv:      func(string) string { return "" }, // no crash hooks from clients
		log:         a.Log(),                           // what happens on the router goes to its log
		defaultRoot: a.Root(), defaultState: a.State(), agent: a, conn: control.Connection(ctx)}
	return exitStatus(run(e, args), stderr)
}

// exitCode ends the program with a status and no further message.
type exitCode int

func (e exitCode) Error() string { return "exit status " + strconv.Itoa(int(e)) }

func run(e *env, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(e.stderr, usage)
		return exitCode(2)
	}
	switch args[0] {
	case "run":
		return runAgent(e, args[1:])
	case "status":
		return runStatus(e, args[1:])
	case "version", "--version":
		return runVersion(e, args[1:])
	case "receive":
		return runReceive(e, args[1:])
	case "activate":
		return runActivate(e, args[1:])
	case "confirm":
		return runConfirm(e, args[1:])
	case "firewall":
		return runFirewall(e, args[1:])
	case "nix-store":
		return runNixStore(e, args[1:])
	case "store":
		if len(args) < 2 {
			fmt.Fprint(e.stderr, usage)
			return exitCode(2)
		}
		return runStore(e, args[1], args[2:])
	case "gc":
		return runGC(e, args[1:])
	case "generations":
		return runGenerations(e, args[1:])
	case "rollback":
		return runRollback(e, args[1:])
	case "hook":
		return runHook(e, args[1:])
	case "init":
		return runInit(e, args[1:])
	case "reboot":
		return runPower(e, boot.Reboot, args[1:])
	case "poweroff":
		return runPower(e, boot.PowerOff, args[1:])
	case "config":
		return runConfig(e, args[1:])
	case "boards":
		return runBoards(e, args[1:])
	case "image":
		return runImage(e, args[1:])
	case "maintain":
		return runMaintain(e, args[1:])
	case "help", "-h", "--help":
		fmt.Fprint(e.stdout, usage)
		return nil
	}
	fmt.Fprintf(e.stderr, "roostd: unknown command %q\n%s", args[0], usage)
	return exitCode(2)
}

// flags is a flag set that accepts flags after positional arguments too.
type flags struct {
	*flag.FlagSet
	root *string
	json *bool
}

func newFlags(e *env, name string) *flags {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	return &flags{
		FlagSet: fs,
		root:    fs.String("root", e.defaultRoot, "the router's file system `root`"),
		json:    fs.Bool("json", false, "print JSON for scripts"),
	}
}

// parse returns the positional arguments, wherever the flags stood.
func (f *flags) parse(args []string) ([]string, error) { return cmdflag.Parse(f.FlagSet, args) }

// openStore returns the store below --root, wired to the crash hook that
// tests set with ROOST_CRASH_AT.
func (e *env) openStore(root string) *store.Store {
	var s *store.Store
	s = store.New(root, store.Options{Log: e.log, Crash: e.crashHook(),
		TrustedKeys: func() ([]nixsig.PublicKey, error) { return e.trustedKeys(s) }})
	return s
}

// trustedKeys are the running system's trustedPublicKeys: from the agent
// when this runs in it, else from the current system's config in s. A
// config that cannot be read refuses every new path rather than trust them
// all.
func (e *env) trustedKeys(s *store.Store) ([]nixsig.PublicKey, error) {
	if e.agent != nil {
		if c := e.agent.Config(); c != nil {
			return c.TrustedKeys(), nil
		}
		return nil, nil
	}
	target, err := os.Readlink(activate.CurrentLink(s.Root))
	if err != nil {
		return nil, nil // no system yet: nothing to trust or distrust
	}
	sys, err := storepath.FromLink(target)
	if err != nil {
		return nil, err
	}
	c, err := config.Load(activate.ConfigFile(s, sys), agent.Kinds(nil))
	if err != nil {
		return nil, fmt.Errorf("the running system's trusted keys cannot be read: %w", err)
	}
	return c.TrustedKeys(), nil
}

// crashHook returns a hook that kills this process with SIGKILL at the named
// step: ROOST_CRASH_AT=step or step:N (the Nth time). Tests use it to prove
// that a kill at any step loses nothing.
func (e *env) crashHook() func(string) {
	spec := e.getenv("ROOST_CRASH_AT")
	if spec == "" {
		return nil
	}
	point, nth, _ := strings.Cut(spec, ":")
	want, _ := strconv.Atoi(nth)
	if want < 1 {
		want = 1
	}
	seen := 0
	return func(p string) {
		if p != point {
			return
		}
		if seen++; seen == want {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			time.Sleep(time.Hour) // the signal is on its way
		}
	}
}

// lock takes the store's writer lock, telling the user if it must wait.
func (e *env) lock(s *store.Store, who string) (*store.Txn, error) {
	return s.Lock(e.ctx, who, func(holder string) {
		fmt.Fprintf(e.stderr, "roostd: waiting for the store lock, held by %s (Ctrl-C to give up)\n", holder)
	})
}

// humanBytes prints n in binary units, as du -h does.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
