package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/roostrouter/roost/hosttool/sshclient"
	"github.com/roostrouter/roost/updater/activate"
)

// restart is a router going down and coming back (roost reboot, a trial
// boot of rebuild), followed from the connection that asked for it: the
// router must come back with the host key it had.
type restart struct {
	f       *flags
	hostKey string    // the SHA256 fingerprint of the key it had
	start   time.Time // when it was asked: the times count from here
	what    string    // what it goes through, for messages: "the reboot"
	// trial: the router may first come back as a system that refuses
	// the key (a trial with broken SSH), which the watchdog then resets
	// into the last good one: a refusal is tried again until the end.
	trial   bool
	refused bool // a refusal was said
}

// keepaliveEvery is how often the connection is probed while the router
// goes down: a router that stops without closing it (a reset, a kexec)
// shows as keepalives that go unanswered.
const keepaliveEvery = 2 * time.Second

// down waits until client's connection ends, or stops answering, for
// timeout at most, says so, and returns how long after r.start it did.
func (e *env) down(r *restart, client *ssh.Client, timeout time.Duration) (time.Duration, error) {
	if err := waitDown(e.ctx, client, timeout); err != nil {
		return 0, err
	}
	d := time.Since(r.start)
	fmt.Fprintf(e.stderr, "roost: %s went down (%.1fs)\n", *r.f.host, d.Seconds())
	return d, nil
}

// waitDown waits until the connection ends, or stops answering
// keepalives, for timeout at most.
func waitDown(ctx context.Context, client *ssh.Client, timeout time.Duration) error {
	closed := make(chan struct{})
	go func() { client.Wait(); close(closed) }()
	deadline := time.After(timeout)
	tick := time.NewTicker(keepaliveEvery)
	defer tick.Stop()
	for {
		select {
		case <-closed:
			return nil
		case <-ctx.Done():
			return ctx.Err()
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

// notBackError is a router that went down and did not answer SSH again
// in time.
type notBackError struct {
	host  string
	until time.Time
	err   error // the last try's
}

func (e *notBackError) Error() string {
	return fmt.Sprintf("%s went down but did not answer SSH again by %s: %v", e.host, e.until.Format(time.TimeOnly), e.err)
}

func (e *notBackError) Unwrap() error { return e.err }

// commandError is a command's failure on a router that came back, as
// opposed to not reaching it: the router's own word.
type commandError struct{ err error }

func (e *commandError) Error() string { return e.err.Error() }
func (e *commandError) Unwrap() error { return e.err }

// back reaches the router again by until, with the host key it had, and
// runs cmd there. A connection that goes down under cmd (the agent that
// went down still accepted it as it stopped) is tried again. It fails
// with a *notBackError if the router does not answer by until, and a
// *commandError if cmd fails.
func (e *env) back(r *restart, until time.Time, cmd string) ([]byte, error) {
	for {
		out, again, err := e.reachAgain(r, until, cmd)
		if !again {
			return out, err
		}
	}
}

// reachAgain is one try of back; again says to try once more, after
// retryEvery.
func (e *env) reachAgain(r *restart, until time.Time, cmd string) (out []byte, again bool, err error) {
	host := *r.f.host
	var after ssh.PublicKey
	// Never a new key now: the router must be the one that went down.
	client, err := e.reach(r.f, func(o *sshclient.Options) {
		o.AcceptNewHostKey = false
		o.HostKey = func(_ string, k ssh.PublicKey) { after = k }
	}, until)
	var hke *sshclient.HostKeyError
	switch {
	case errors.As(err, &hke):
		return nil, false, fmt.Errorf("%s answers again, but not with the host key it had before %s (%s): %w", host, r.what, r.hostKey, err)
	case err != nil && e.ctx.Err() != nil:
		return nil, false, err
	case err != nil && r.trial && errors.Is(err, sshclient.ErrKeysRefused) && time.Now().Add(retryEvery).Before(until):
		if !r.refused {
			fmt.Fprintf(e.stderr, "roost: %s (%.1fs): if the trial's SSH is broken, its watchdog resets it into the last good generation; trying again until %s\n", err, time.Since(r.start).Seconds(), until.Format(time.TimeOnly))
			r.refused = true
		}
		select {
		case <-time.After(retryEvery):
			return nil, true, nil
		case <-e.ctx.Done():
			return nil, false, e.ctx.Err()
		}
	case err != nil:
		return nil, false, &notBackError{host: host, until: until, err: err}
	}
	defer client.Close()
	if ssh.FingerprintSHA256(after) != r.hostKey {
		return nil, false, fmt.Errorf("%s answers again with host key %s, another than before %s (%s), though known_hosts holds both", host, ssh.FingerprintSHA256(after), r.what, r.hostKey)
	}
	// A router that goes away silently under cmd (an agent that accepted
	// it just before a kexec) would hold it until TCP gives up: until
	// ends it.
	cut := time.AfterFunc(time.Until(until), func() { client.Close() })
	defer cut.Stop()
	closed := make(chan struct{})
	go func() { client.Wait(); close(closed) }()
	out, err = sshclient.Output(client, cmd, nil)
	// An agent stopping for the trial's kexec may still answer: not yet.
	notYet := err != nil && strings.Contains(err.Error(), activate.NotBootedYet)
	if err != nil && (notYet || endedUnder(err, closed)) && time.Now().Add(retryEvery).Before(until) {
		select {
		case <-time.After(retryEvery):
			return nil, true, nil
		case <-e.ctx.Done():
			return nil, false, e.ctx.Err()
		}
	}
	fmt.Fprintf(e.stderr, "roost: %s answers SSH again (%.1fs), with the same host key\n", host, time.Since(r.start).Seconds())
	if err != nil {
		return out, false, &commandError{err}
	}
	return out, false, nil
}

// endedUnder says whether a command's failure, err, is its connection
// ending under it (closed is closed when it has). x/crypto says so in
// words only when the connection ends as a channel opens, and the end
// shows on closed a moment after the failure.
func endedUnder(err error, closed <-chan struct{}) bool {
	if wentDown(err) {
		return true
	}
	select {
	case <-closed:
		return true
	case <-time.After(200 * time.Millisecond):
		return false
	}
}
