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

// keepaliveEvery is how often the connection is probed while the router
// goes down: a router that stops without closing it (a reset) shows as
// keepalives that go unanswered.
const keepaliveEvery = 2 * time.Second

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
	start := time.Now()
	if err := ask(client, "roostd reboot"); err != nil {
		return fmt.Errorf("reboot: %w", err)
	}
	if err := waitDown(client, *timeout); err != nil {
		return fmt.Errorf("%s accepted the reboot, but %w", *f.host, err)
	}
	res.DownSeconds = time.Since(start).Seconds()
	if !*noWait {
		if err := e.waitUp(f, before, start.Add(*timeout), &res); err != nil {
			return err
		}
		res.Waited = true
		res.UpSeconds = time.Since(start).Seconds()
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

// waitDown waits until the connection ends, or stops answering
// keepalives, for timeout at most.
func waitDown(client *ssh.Client, timeout time.Duration) error {
	closed := make(chan struct{})
	go func() { client.Wait(); close(closed) }()
	deadline := time.After(timeout)
	tick := time.NewTicker(keepaliveEvery)
	defer tick.Stop()
	for {
		select {
		case <-closed:
			return nil
		case <-deadline:
			return fmt.Errorf("its SSH connection is still up after %s: is roostd init its PID 1?", timeout)
		case <-tick.C:
			answered := make(chan error, 1)
			go func() {
				_, _, err := client.SendRequest("keepalive@openssh.com", true, nil)
				answered <- err
			}()
			select {
			case err := <-answered:
				if err != nil {
					return nil
				}
			case <-closed:
				return nil
			case <-time.After(3 * keepaliveEvery):
				client.Close() // silent: gone without closing
				return nil
			}
		}
	}
}

// waitUp waits until the router answers SSH again, with the host key it
// had before, and reads what it booted.
func (e *env) waitUp(f *flags, before ssh.PublicKey, until time.Time, res *rebootResult) error {
	for {
		out, again, err := e.reachAgain(f, res.HostKey, until)
		if err != nil {
			return err
		}
		if again {
			continue // the agent that went down still answered, then went
		}
		var st struct {
			Version    string         `json:"version"`
			Booted     storepath.Path `json:"bootedSystem"`
			Generation int            `json:"generation"`
		}
		if err := json.Unmarshal(out, &st); err != nil {
			return fmt.Errorf("%s answers SSH again, but its roostd status is not what roost expects (%v): %.200s", *f.host, err, out)
		}
		res.Version, res.Booted, res.Generation = st.Version, st.Booted, st.Generation
		return nil
	}
}

// reachAgain connects to the router with the host key it had (hostKey, a
// fingerprint) and asks its status. A connection that goes down under the
// status (the old agent still accepted it as it stopped) says again, after
// retryEvery.
func (e *env) reachAgain(f *flags, hostKey string, until time.Time) (status []byte, again bool, err error) {
	var after ssh.PublicKey
	// Never a new key now: the router must be the one that went down.
	client, err := e.reach(f, func(o *sshclient.Options) {
		o.AcceptNewHostKey = false
		o.HostKey = func(_ string, k ssh.PublicKey) { after = k }
	}, until)
	var hke *sshclient.HostKeyError
	switch {
	case errors.As(err, &hke):
		return nil, false, fmt.Errorf("%s answers again, but not with the host key it had before the reboot (%s): %w", *f.host, hostKey, err)
	case err != nil:
		return nil, false, fmt.Errorf("%s went down but did not answer SSH again by %s: %w", *f.host, until.Format(time.TimeOnly), err)
	}
	defer client.Close()
	if ssh.FingerprintSHA256(after) != hostKey {
		return nil, false, fmt.Errorf("%s answers again with host key %s, another than before the reboot (%s), though known_hosts holds both", *f.host, ssh.FingerprintSHA256(after), hostKey)
	}
	out, err := sshclient.Output(client, "roostd status --json", nil)
	if err != nil && wentDown(err) && time.Now().Add(retryEvery).Before(until) {
		select {
		case <-time.After(retryEvery):
			return nil, true, nil
		case <-e.ctx.Done():
			return nil, false, e.ctx.Err()
		}
	}
	if err != nil {
		return nil, false, fmt.Errorf("%s answers SSH again, but roostd status: %w", *f.host, err)
	}
	return out, false, nil
}
