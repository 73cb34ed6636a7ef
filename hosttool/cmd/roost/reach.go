package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/roostrouter/roost/hosttool/sshclient"
)

// dialWith connects as dial does, with the options adjusted by adjust.
func (e *env) dialWith(f *flags, adjust func(*sshclient.Options)) (*ssh.Client, error) {
	opts := sshclient.Options{
		AcceptNewHostKey: *f.acceptNew,
		Getenv:           e.getenv,
		Notice:           func(s string) { fmt.Fprintln(e.stderr, "roost:", s) },
	}
	if adjust != nil {
		adjust(&opts)
	}
	return sshclient.Dial(e.ctx, opts, *f.host)
}

// retryEvery is how often reach tries again.
const retryEvery = time.Second

// reach dials the router until it answers or until passes: a router that
// is restarting its agent, or rebooting, refuses, resets or drops
// connections for a while. What retrying cannot fix (a host key that
// known_hosts does not hold, a key the router refuses, a host that is not
// an SSH server) ends it at once.
//
// It says once that the router does not answer yet, and why; on a
// terminal, a line below it then counts the seconds.
func (e *env) reach(f *flags, adjust func(*sshclient.Options), until time.Time) (*ssh.Client, error) {
	start := time.Now()
	told, counted := false, false
	defer func() {
		if counted {
			fmt.Fprintln(e.stderr)
		}
	}()
	for {
		client, err := e.dialWith(f, adjust)
		if err == nil || !transient(err) {
			return client, err
		}
		if time.Now().Add(retryEvery).After(until) {
			return nil, err
		}
		if !told {
			fmt.Fprintf(e.stderr, "roost: %s does not answer yet (%v); trying again until %s\n", *f.host, err, until.Format(time.TimeOnly))
			told = true
		} else if e.tty {
			// Short, so that it never wraps and \r redraws all of it.
			fmt.Fprintf(e.stderr, "\r\x1b[Kroost: waiting for %s: %.0fs", *f.host, time.Since(start).Seconds())
			counted = true
		}
		select {
		case <-time.After(retryEvery):
		case <-e.ctx.Done():
			return nil, e.ctx.Err()
		}
	}
}

// transient says whether a dial failed on the network (refused, reset,
// unreachable, timed out, cut during the handshake) rather than on
// something the router or known_hosts decided.
func transient(err error) bool {
	var ne net.Error
	switch {
	case errors.As(err, new(*sshclient.HostKeyError)):
		return false
	case errors.As(err, &ne), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.ECONNABORTED),
		errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.EPIPE):
		return true
	}
	return false
}

// wentDown says whether a remote command failed because the connection
// ended under it (no exit status came), as when the command stops the
// agent that runs it.
func wentDown(err error) bool {
	var missing *ssh.ExitMissingError
	var ended *sshclient.ExitError // sshclient's word for the same
	return errors.As(err, &missing) || errors.As(err, &ended) && ended.Status < 0 && ended.Signal == "" ||
		errors.Is(err, io.EOF) || transient(err)
}
