package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/roostrouter/roost/hosttool/nixlocal"
	"github.com/roostrouter/roost/hosttool/progress"
	"github.com/roostrouter/roost/hosttool/sshclient"
	"github.com/roostrouter/roost/updater/activate"
	"github.com/roostrouter/roost/updater/closurediff"
	"github.com/roostrouter/roost/updater/nixsig"
	"github.com/roostrouter/roost/updater/registry"
	"github.com/roostrouter/roost/updater/storepath"
	"github.com/roostrouter/roost/updater/transfer"
)

// copyResult is the transfer part of a rebuild's summary.
type copyResult struct {
	ClosurePaths    int     `json:"closurePaths"`
	ClosureNARBytes uint64  `json:"closureNarBytes"`
	SentPaths       int     `json:"sentPaths"`
	SentNARBytes    uint64  `json:"sentNarBytes"`
	WireBytes       int64   `json:"wireBytes"`
	Deltas          int     `json:"deltas"`       // paths sent as deltas against one the router had
	DeltasCached    int     `json:"deltasCached"` // of them, deltas computed by an earlier run (no compression)
	Uncompressed    int     `json:"uncompressed"` // paths sent as they are: the link outran compression
	Seconds         float64 `json:"seconds"`
	Router          string  `json:"router"`
	running         *transfer.Running
}

// send offers the closure of paths (asked for while the connection was
// made) to the router and sends what it lacks, signing each path with
// signKey if one is given.
func (e *env) send(client *ssh.Client, nix *nixlocal.Nix, closure *closureQuery, signKey string, start time.Time) (copyResult, error) {
	var res copyResult
	var key *nixsig.SecretKey
	if signKey != "" {
		k, err := nixsig.LoadSecretKey(signKey)
		if err != nil {
			return res, err
		}
		key = &k
	}
	byPath := map[storepath.Path]registry.Info{}
	// The hello (and the closure, if Nix has it by then) follow the start
	// without waiting for it.
	var stderr limitedBuffer
	sess, err := sshclient.Start(client, "roostd receive", &stderr)
	if err != nil {
		return res, err
	}
	defer sess.Close()
	bar := &progress.Bar{W: e.stderr, TTY: e.tty, Label: "copying"}
	var missingBytes int64
	sender := &transfer.Sender{Agent: "roost " + version, Progress: func(p transfer.Progress) {
		if missingBytes == 0 {
			for _, m := range p.Missing {
				missingBytes += int64(byPath[m].NarSize)
			}
		}
		bar.Update(p.Acked, len(p.Missing), int64(p.NARBytes), missingBytes)
	}, Cache: e.deltaCache()}
	tr, err := sender.SendOffer(e.ctx, sess, sess, closure.offer(key, &res, byPath), nix.DumpNAR)
	bar.Done()
	sess.CloseWrite()
	if err != nil {
		werr := sess.Wait()
		if werr != nil && stderr.String() != "" && !isPeer(err) {
			return res, fmt.Errorf("%w (router said: %s)", err, sshclient.RemoteError("roostd receive", werr, stderr.String()))
		}
		return res, err
	}
	sess.Wait()
	res.SentPaths = tr.Summary.Received
	res.SentNARBytes = tr.NARBytes
	res.WireBytes = tr.WireBytes
	res.Deltas, res.DeltasCached, res.Uncompressed = tr.Deltas, tr.DeltasCached, tr.Uncompressed
	res.Router, res.running = tr.Agent, tr.Running
	if c := tr.Closure; c != nil { // the router answered before Nix did
		res.ClosurePaths, res.ClosureNARBytes = c.Paths, c.NARBytes
	}
	res.Seconds = time.Since(start).Seconds()
	return res, nil
}

func isPeer(err error) bool {
	var pe *transfer.PeerError
	return errors.As(err, &pe)
}

// limitedBuffer keeps the first 64 KiB of a remote command's stderr.
type limitedBuffer struct{ b []byte }

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := 64<<10 - len(l.b); room > 0 {
		l.b = append(l.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (l *limitedBuffer) String() string { return string(l.b) }

func runCopy(e *env, args []string) error {
	f := newFlags(e, "copy")
	signKey := f.String("sign-key", "", "sign every path with this Nix secret key `file` (nix-store --generate-binary-cache-key)")
	pos, err := f.parse(args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return errors.New("usage: roost copy --host HOST PATH (store paths to send)")
	}
	var paths []storepath.Path
	for _, a := range pos {
		p, err := storepath.Parse(a)
		if err != nil {
			return err
		}
		paths = append(paths, p)
	}
	start := time.Now()
	nix := &nixlocal.Nix{Stderr: e.stderr, Getenv: e.getenv}
	closure := startClosure(e.ctx, nix, paths)
	client, err := e.dial(f)
	if err != nil {
		return err
	}
	defer client.Close()
	res, err := e.send(client, nix, closure, *signKey, start)
	if err != nil {
		return err
	}
	if *f.json {
		return json.NewEncoder(e.stdout).Encode(res)
	}
	e.printCopy(res)
	return nil
}

func (e *env) printCopy(r copyResult) {
	fmt.Fprintf(e.stdout, "sent %d of %d paths (%d as deltas): %s of NAR (%s on the wire) of the closure's %s, in %.1fs\n",
		r.SentPaths, r.ClosurePaths, r.Deltas, progress.MiB(int64(r.SentNARBytes)), progress.MiB(r.WireBytes), progress.MiB(int64(r.ClosureNARBytes)), r.Seconds)
}

// rebuildResult is what `roost rebuild --json` prints.
type rebuildResult struct {
	copyResult
	Mode       activate.Mode        `json:"mode"`
	System     storepath.Path       `json:"system"`
	Generation int                  `json:"generation,omitempty"`
	Previous   storepath.Path       `json:"previousSystem,omitempty"`
	Changes    []closurediff.Change `json:"changes"`
	Confirmed  bool                 `json:"confirmed"`
	// Trial is set when the new system changed the kernel and started by
	// a trial boot.
	Trial *trialResult `json:"trial,omitempty"`
	// Image is set when the board boots from an image, which the router
	// wrote from RAM and booted as a trial.
	Image *imageUpgrade `json:"image,omitempty"`
}

func runRebuild(e *env, args []string) error {
	f := newFlags(e, "rebuild")
	systemFlag := f.String("system", "", "activate this built system `path` instead of building one")
	file := f.String("f", "", "build the system from this Nix `file`")
	attr := f.String("A", "", "the `attribute` of -f to build")
	timeout := f.Duration("confirm-timeout", 90*time.Second, "the router rolls back unless it can be reached again within this")
	kexec := f.Bool("kexec", false, "if the new system changes the kernel, start it by kexec (the router's board decides if neither is given)")
	reboot := f.Bool("reboot", false, "if the new system changes the kernel, start it by a full reboot")
	signKey := f.String("sign-key", "", "sign every path with this Nix secret key `file` (nix-store --generate-binary-cache-key)")
	fullImage := f.Bool("full-image", false, "on a board that boots from an image, send the whole image, not a delta against the running one")
	pos, err := f.parse(args)
	if err != nil {
		return err
	}
	mode := activate.Switch
	if len(pos) > 1 {
		return fmt.Errorf("one mode at most, got %v", pos)
	}
	if len(pos) == 1 {
		if mode, err = activate.ParseMode(pos[0]); err != nil {
			return err
		}
	}
	method, err := bootMethod(mode, *kexec, *reboot)
	if err != nil {
		return err
	}
	nix := &nixlocal.Nix{Stderr: e.stderr, Getenv: e.getenv}
	var system storepath.Path
	switch {
	case *systemFlag != "" && *file != "":
		return errors.New("give --system or -f, not both")
	case *systemFlag != "":
		if system, err = systemPath(*systemFlag); err != nil {
			return err
		}
	case *file != "":
		if system, err = nix.Build(e.ctx, *file, *attr); err != nil {
			return err
		}
	default:
		return errors.New("say what to activate: --system /nix/store/...-system, or -f FILE [-A ATTR] to build it")
	}
	if b, ok := imageBoard(nix.StoreRoot(), system); ok {
		if mode != activate.Switch || method != "" {
			return fmt.Errorf("board %s boots from an image: roost rebuild writes it and boots it as a trial (switch); test, boot, --kexec and --reboot do not apply", b.Name)
		}
		res := rebuildResult{Mode: mode, System: system, Changes: []closurediff.Change{}}
		return e.rebuildImage(f, nix, system, b, *timeout, *fullImage, &res)
	}
	start := time.Now()
	closure := startClosure(e.ctx, nix, []storepath.Path{system})
	var hostKey ssh.PublicKey // a trial boot must come back with it
	client, err := e.dialWith(f, func(o *sshclient.Options) { o.HostKey = func(_ string, k ssh.PublicKey) { hostKey = k } })
	if err != nil {
		return err
	}
	defer client.Close()
	res := rebuildResult{Mode: mode, System: system}
	if res.copyResult, err = e.send(client, nix, closure, *signKey, start); err != nil {
		return err
	}
	if r := res.running; nothingToActivate(mode, system, r) {
		// The router runs it, confirmed: a no-op in one round trip.
		res.Generation, res.Previous, res.Changes = r.Generation, system, []closurediff.Change{}
		res.Confirmed = mode == activate.Switch || mode == activate.Test
		if *f.json {
			return json.NewEncoder(e.stdout).Encode(res)
		}
		e.printCopy(res.copyResult)
		what := "runs"
		if mode == activate.Boot {
			what = "is the boot default,"
		}
		fmt.Fprintf(e.stdout, "the router already %s %s: nothing to activate\n", what, system)
		return nil
	}
	w := trialWait{timeout: *timeout, margin: trialMargin}
	if err := e.activate(f, client, ssh.FingerprintSHA256(hostKey), activateCommand(mode, system, *timeout, method), w, &res); err != nil {
		return err
	}
	return e.printResult(f, res)
}

// printResult prints a rebuild's result, as JSON with --json.
func (e *env) printResult(f *flags, res rebuildResult) error {
	switch {
	case *f.json:
		return json.NewEncoder(e.stdout).Encode(res)
	case res.Trial != nil: // what was sent and changed came before the wait
		e.printOutcome(res)
	default:
		e.printRebuild(res)
	}
	return nil
}

// activateCommand is the roostd command line that activates system;
// method ("kexec", "reboot" or "": the board's choice) is how a changed
// kernel boots.
func activateCommand(mode activate.Mode, system storepath.Path, timeout time.Duration, method string) string {
	cmd := fmt.Sprintf("roostd activate %s %s --confirm-timeout %s --json", mode, system, timeout)
	if method != "" {
		cmd += " --boot-method " + method
	}
	return cmd
}

// activate runs the activation (cmd) on client and confirms it, on a new
// connection: after a trial boot, once the router is back with the host
// key it had (hostKey, a fingerprint).
func (e *env) activate(f *flags, client *ssh.Client, hostKey, cmd string, w trialWait, res *rebuildResult) error {
	out, err := sshclient.Output(client, cmd, nil)
	if err != nil {
		if strings.Contains(err.Error(), "not defined: -boot-method") {
			return fmt.Errorf("activate: the router's roostd does not know --boot-method: it is older than this roost; rebuild without --kexec and --reboot (%w)", err)
		}
		return fmt.Errorf("activate: %w", err)
	}
	var act activate.Report
	if err := json.Unmarshal(out, &act); err != nil {
		return fmt.Errorf("the router's answer to activate is not what roost expects (%v): %s", err, out)
	}
	res.Generation, res.Previous, res.Changes = act.Generation, act.Previous, act.Changes
	switch {
	case act.Token == "":
		return nil
	case act.Trial != nil:
		if act.Trial.Generation == 0 || act.Trial.Method == "" {
			return fmt.Errorf("the router's answer to activate has a trial boot without its generation or method: %s", out)
		}
		if err := e.confirmTrial(f, client, hostKey, act, w, res); err != nil {
			return err
		}
	default:
		if err := e.confirm(f, act, w.timeout); err != nil {
			return err
		}
	}
	res.Confirmed = true
	return nil
}

// confirm reaches the router again, on a new connection, trying for as
// long as the router waits (a new agent may take a while to answer, or be
// replaced by the previous one): if the new system broke SSH, this fails
// and the router rolls back by itself; if it rolled back already, the
// router says so and why.
func (e *env) confirm(f *flags, act activate.Report, timeout time.Duration) error {
	until := time.Now().Add(timeout)
	for cut := false; ; {
		client, err := e.reach(f, nil, until)
		if err != nil {
			return fmt.Errorf("could not reach the router again to confirm the new system (%v): it rolls back by itself at %s", err, act.Deadline.Format(time.TimeOnly))
		}
		_, err = sshclient.Output(client, "roostd confirm "+act.Token, nil)
		client.Close()
		switch {
		case err == nil:
			return nil
		case cut && strings.Contains(err.Error(), "nothing awaits confirmation"):
			// The cut confirmation reached the agent before it stopped:
			// confirmed (a rollback would say so, by this token).
			return nil
		case wentDown(err) && time.Now().Add(retryEvery).Before(until):
			// Accepted by an agent handing over to the new roostd as it
			// stopped: the new one answers the next connection.
			cut = true
			time.Sleep(retryEvery)
		default:
			return confirmError(err)
		}
	}
}

// confirmError explains roostd confirm's failure: above all, a router
// that rolled the new system back already, and why.
func confirmError(err error) error {
	if strings.Contains(err.Error(), "was rolled back") {
		return fmt.Errorf("the router rolled the new system back: %w", err)
	}
	return fmt.Errorf("confirm: %w", err)
}

func (e *env) printRebuild(r rebuildResult) {
	e.printActivated(r)
	e.printOutcome(r)
}

// printActivated prints what was sent and what changed.
func (e *env) printActivated(r rebuildResult) {
	e.printCopy(r.copyResult)
	for _, c := range r.Changes {
		fmt.Fprintln(e.stdout, "  "+c.String())
	}
}

// printOutcome prints what runs now.
func (e *env) printOutcome(r rebuildResult) {
	switch {
	case r.Trial != nil && r.Mode == activate.Test:
		fmt.Fprintf(e.stdout, "generation %d booted by %s in %.1fs and confirmed (test: not the boot default)\n", r.Trial.Generation, r.Trial.Method, r.Trial.UpSeconds)
	case r.Trial != nil:
		fmt.Fprintf(e.stdout, "generation %d booted by %s in %.1fs and confirmed: it is the boot default\n", r.Trial.Generation, r.Trial.Method, r.Trial.UpSeconds)
	case r.Mode == activate.DryActivate:
		fmt.Fprintf(e.stdout, "would activate %s\n", r.System)
	case r.Mode == activate.Boot:
		fmt.Fprintf(e.stdout, "generation %d is the default for the next boot: %s\n", r.Generation, r.System)
	case r.Mode == activate.Test:
		fmt.Fprintf(e.stdout, "running %s (test: not the boot default), confirmed\n", r.System)
	case r.Generation > 0:
		fmt.Fprintf(e.stdout, "generation %d is running and confirmed: %s\n", r.Generation, r.System)
	}
}

// systemPath takes a store path, or a link to one such as nix-build's
// ./result. Links are read, not resolved on this file system: the store may
// be elsewhere on it (a chroot store).
func systemPath(arg string) (storepath.Path, error) {
	p := arg
	for range 40 { // as many links as the kernel follows
		if strings.HasPrefix(p, storepath.Dir+"/") {
			return storepath.FromLink(p)
		}
		target, err := os.Readlink(p)
		if err != nil {
			return "", fmt.Errorf("--system %s: neither a store path nor a link to one (%v)", arg, err)
		}
		if !filepath.IsAbs(target) {
			target = filepath.Join(filepath.Dir(p), target)
		}
		p = target
	}
	return "", fmt.Errorf("--system %s: too many levels of links", arg)
}
