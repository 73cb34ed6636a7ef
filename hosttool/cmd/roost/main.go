// Command roost is the laptop side of roost: it builds a system, sends the
// router only what it lacks, activates it and confirms it, and runs gc and
// the other router commands over one SSH connection.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"golang.org/x/crypto/ssh"
	"golang.org/x/term"

	"github.com/roostrouter/roost/agent/cmdflag"
	"github.com/roostrouter/roost/hosttool/sshclient"
)

var version = "dev"

const usage = `usage: roost <command> --host HOST [flags]

commands:
  rebuild [switch|boot|test|dry-activate] [--system PATH | -f FILE [-A ATTR]] [--confirm-timeout 90s] [--kexec|--reboot]
          build (or take) a system, send the router what it lacks, activate it, confirm it;
          a new kernel boots as a trial, by kexec or by a reboot as the router's board can
          (--kexec, --reboot: choose), and becomes the boot default once confirmed; a trial
          that is not confirmed in time is rolled back (by the watchdog, if it hangs)
  copy PATH...                 send store paths and their closures
  gc [--keep N] [--older-than 30d] [--dry-run]
  status | generations
  rollback [--boot]            back to the previous generation now (--boot: at the next boot)
  reboot [--no-wait] [--timeout 5m]
          reboot the router cleanly and wait until it answers SSH again, with the same host key
  image --board B --system PATH -o FILE [--size-mb N] [--dtb FILE]
          build what board B boots from, with the system as its first generation
          (no router is contacted): U-Boot's uImage and the squashfs (NOR), a FIT
          image for the fit volume (NAND), ext4 (disk); docs/install.md says how to flash it
  version

Every command takes --json: one JSON document on stdout, for scripts. Every
command but image and version takes --host (an ssh host, resolved through
~/.ssh/config) and --accept-new-host-key (first contact only).
`

type env struct {
	ctx    context.Context
	stdout io.Writer
	stderr io.Writer
	getenv func(string) string
	tty    bool
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	e := &env{ctx: ctx, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv, tty: term.IsTerminal(int(os.Stderr.Fd()))}
	if err := run(e, os.Args[1:]); err != nil {
		var ec exitCode
		if errors.As(err, &ec) {
			os.Exit(int(ec))
		}
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "roost:", err)
		}
		os.Exit(1)
	}
}

type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

func run(e *env, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(e.stderr, usage)
		return exitCode(2)
	}
	switch args[0] {
	case "rebuild":
		return runRebuild(e, args[1:])
	case "copy":
		return runCopy(e, args[1:])
	case "gc", "status", "generations", "rollback":
		return runRemote(e, args[0], args[1:])
	case "reboot":
		return runReboot(e, args[1:])
	case "image":
		return runImage(e, args[1:])
	case "help", "-h", "--help":
		fmt.Fprint(e.stdout, usage)
		return nil
	case "version", "--version":
		fs := flag.NewFlagSet("version", flag.ContinueOnError)
		fs.SetOutput(e.stderr)
		asJSON := fs.Bool("json", false, "print JSON for scripts")
		if _, err := cmdflag.Parse(fs, args[1:]); err != nil {
			return err
		}
		if *asJSON {
			return json.NewEncoder(e.stdout).Encode(map[string]string{"version": version})
		}
		fmt.Fprintln(e.stdout, "roost", version)
		return nil
	}
	fmt.Fprintf(e.stderr, "roost: unknown command %q\n%s", args[0], usage)
	return exitCode(2)
}

// flags is the flag set every command shares.
type flags struct {
	*flag.FlagSet
	host      *string
	json      *bool
	acceptNew *bool
}

func newFlags(e *env, name string) *flags {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	return &flags{
		FlagSet:   fs,
		host:      fs.String("host", "", "the router, as ssh names it (`HOST`, user@host or host:port)"),
		json:      fs.Bool("json", false, "print JSON for scripts"),
		acceptNew: fs.Bool("accept-new-host-key", false, "trust an unknown host key and add it to known_hosts (never a changed one)"),
	}
}

// parse returns the positional arguments, wherever the flags stood.
func (f *flags) parse(args []string) ([]string, error) {
	pos, err := cmdflag.Parse(f.FlagSet, args)
	if err != nil {
		return nil, err
	}
	if *f.host == "" {
		return nil, errors.New("--host is required (the router, as ssh names it)")
	}
	return pos, nil
}

func (e *env) dial(f *flags) (*ssh.Client, error) { return e.dialWith(f, nil) }

// runRemote runs a roostd command on the router and shows its output.
func runRemote(e *env, cmd string, args []string) error {
	f := newFlags(e, cmd)
	var extra []string
	if cmd == "rollback" {
		boot := f.Bool("boot", false, "make the previous generation the boot default only: the running system stays until the next boot")
		if _, err := f.parse(args); err != nil {
			return err
		}
		if *boot {
			extra = append(extra, "--boot")
		}
	} else if cmd == "gc" {
		keep := f.Int("keep", 0, "keep the newest `N` generations")
		older := f.String("older-than", "", "delete generations older than this (30d, 12h)")
		dry := f.Bool("dry-run", false, "print what would be deleted")
		if _, err := f.parse(args); err != nil {
			return err
		}
		if *keep > 0 {
			extra = append(extra, fmt.Sprintf("--keep %d", *keep))
		}
		if *older != "" {
			extra = append(extra, "--older-than "+shellQuote(*older))
		}
		if *dry {
			extra = append(extra, "--dry-run")
		}
	} else if _, err := f.parse(args); err != nil {
		return err
	}
	if *f.json {
		extra = append(extra, "--json")
	}
	client, err := e.dial(f)
	if err != nil {
		return err
	}
	defer client.Close()
	line := strings.Join(append([]string{"roostd", cmd}, extra...), " ")
	out, err := sshclient.Output(client, line, nil)
	if err == nil && *f.json && !oneJSON(out) {
		// A script must get one JSON document or a failure, never text.
		return fmt.Errorf("the router's roostd printed no JSON for %q: it may be older than this roost; update it with roost rebuild (it said: %.200s)", line, out)
	}
	e.stdout.Write(out)
	return err
}

// oneJSON says whether b is exactly one JSON document.
func oneJSON(b []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(b))
	var v json.RawMessage
	if dec.Decode(&v) != nil {
		return false
	}
	_, err := dec.Token()
	return err == io.EOF
}

// shellQuote quotes s for the router's command line.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
