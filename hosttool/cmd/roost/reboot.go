package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/roostrouter/roost/hosttool/sshclient"
	"github.com/roostrouter/roost/updater/storepath"
)

// rebootResult is what `roost reboot --json` prints.
type rebootResult struct {
	Host        string  `json:"host"`
	DownSeconds float64 `json:"downSeconds"` // from the request until the connection dropped
	Waited      bool    `json:"waited"`      // false with --no-wait: nothing below is known
	UpSeconds   float64 `json:"upSeconds,omitempty"`
	HostKey     string  `json:"hostKey"` // SHA256 fingerprint, the same before and after
	// What runs after the reboot, as roostd status says.
	Version    string         `json:"version,omitempty"`
	Booted     storepath.Path `json:"bootedSystem,omitempty"`
	Generation int            `json:"generation,omitempty"`
}

// runReboot reboots the router through roostd init (roostd reboot), waits
// for the connection to drop, then (unless --no-wait) for SSH to answer
// again with the same host key, and says how long each took.
func runReboot(e *env, args []string) error {
	f := newFlags(e, "reboot")
	noWait := f.Bool("no-wait", false, "return once the router has gone down")
	timeout := f.Duration("timeout", 5*time.Minute, "how long to wait for the router to go down, and then to answer again")
	pos, err := f.parse(args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return errors.New("usage: roost reboot --host HOST [--no-wait] [--timeout 5m] [--json]")
	}
	var before ssh.PublicKey
	client, err := e.dialWith(f, func(o *sshclient.Options) { o.HostKey = func(_ string, k ssh.PublicKey) { before = k } })
	if err != nil {
		return err
	}
	defer client.Close()
	res := rebootResult{Host: *f.host, HostKey: ssh.FingerprintSHA256(before)}
	r := &restart{f: f, hostKey: res.HostKey, start: time.Now(), what: "the reboot"}
	if err := ask(client, "roostd reboot"); err != nil {
		return fmt.Errorf("reboot: %w", err)
	}
	down, err := e.down(r, client, *timeout)
	if err != nil {
		return fmt.Errorf("%s accepted the reboot, but %w", *f.host, err)
	}
	res.DownSeconds = down.Seconds()
	if !*noWait {
		if err := e.waitUp(r, r.start.Add(*timeout), &res); err != nil {
			return err
		}
		res.Waited = true
		res.UpSeconds = time.Since(r.start).Seconds()
	}
	if *f.json {
		return json.NewEncoder(e.stdout).Encode(res)
	}
	fmt.Fprintf(e.stdout, "%s went down %.1fs after the request", res.Host, res.DownSeconds)
	if res.Waited {
		fmt.Fprintf(e.stdout, " and answered SSH again after %.1fs, with the same host key %s: roostd %s runs generation %d (%s)",
			res.UpSeconds, res.HostKey, res.Version, res.Generation, res.Booted)
	}
	fmt.Fprintln(e.stdout)
	return nil
}

// ask runs cmd, a command that stops the agent running it: the connection
// ending before the command's exit status comes is success.
func ask(client *ssh.Client, cmd string) error {
	sess, err := client.NewSession()
	if err != nil {
		return err
	}
	defer sess.Close()
	var stderr bytes.Buffer
	sess.Stderr = &stderr
	if err := sess.Run(cmd); err != nil && !wentDown(err) {
		return sshclient.RemoteError(cmd, err, stderr.String())
	}
	return nil
}

// waitUp waits until the router answers SSH again, with the host key it
// had before, and reads what it booted.
func (e *env) waitUp(r *restart, until time.Time, res *rebootResult) error {
	out, err := e.back(r, until, "roostd status --json")
	var ce *commandError
	if errors.As(err, &ce) {
		return fmt.Errorf("%s answers SSH again, but roostd status: %w", res.Host, ce.err)
	}
	if err != nil {
		return err
	}
	var st struct {
		Version    string         `json:"version"`
		Booted     storepath.Path `json:"bootedSystem"`
		Generation int            `json:"generation"`
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return fmt.Errorf("%s answers SSH again, but its roostd status is not what roost expects (%v): %.200s", res.Host, err, out)
	}
	res.Version, res.Booted, res.Generation = st.Version, st.Booted, st.Generation
	return nil
}
