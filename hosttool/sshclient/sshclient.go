// Package sshclient dials a router over SSH the way OpenSSH does:
// ~/.ssh/config (Host, HostName, User, Port, IdentityFile, ProxyJump),
// known_hosts checked (an unknown or changed key is an error, never
// accepted silently), keys from ssh-agent and identity files.
package sshclient

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/kevinburke/ssh_config"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/crypto/ssh/knownhosts"
)

// Options say where OpenSSH's files are and how strict to be.
type Options struct {
	Home             string // for ~/.ssh; the user's home if empty
	AcceptNewHostKey bool   // add an unknown host's key to known_hosts (never a changed one)
	Getenv           func(string) string
	// Notice receives messages for the user, such as a key added to known_hosts.
	Notice func(string)
	// HostKey, if set, is told each host key that passed the known_hosts
	// check, with the host's alias: through a ProxyJump chain, the jump
	// hosts' first and the target's last.
	HostKey func(alias string, key ssh.PublicKey)
}

func (o Options) sshDir() string {
	home := o.Home
	if home == "" {
		home, _ = os.UserHomeDir()
	}
	return filepath.Join(home, ".ssh")
}

func (o Options) getenv(k string) string {
	if o.Getenv != nil {
		return o.Getenv(k)
	}
	return os.Getenv(k)
}

// Target is a host resolved through ~/.ssh/config.
type Target struct {
	Alias         string
	HostName      string
	Port          string
	User          string
	IdentityFiles []string
	ProxyJump     string
}

// Addr is host:port.
func (t Target) Addr() string { return net.JoinHostPort(t.HostName, t.Port) }

// Resolve reads [user@]host[:port] and ~/.ssh/config as ssh(1) does.
func Resolve(opts Options, host string) (Target, error) {
	t := Target{Alias: host}
	if u, h, ok := strings.Cut(host, "@"); ok {
		t.User, t.Alias = u, h
	}
	if h, p, err := net.SplitHostPort(t.Alias); err == nil {
		t.Alias, t.Port = h, p
	}
	cfg := &ssh_config.Config{}
	if f, err := os.Open(filepath.Join(opts.sshDir(), "config")); err == nil {
		cfg, err = ssh_config.Decode(f)
		f.Close()
		if err != nil {
			return t, fmt.Errorf("read ~/.ssh/config: %w", err)
		}
	}
	get := func(key string) string {
		v, _ := cfg.Get(t.Alias, key)
		return v
	}
	t.HostName = get("HostName")
	if t.HostName == "" {
		t.HostName = t.Alias
	}
	t.HostName = strings.ReplaceAll(t.HostName, "%h", t.Alias)
	if t.Port == "" {
		t.Port = get("Port")
	}
	if t.Port == "" {
		t.Port = "22"
	}
	if t.User == "" {
		t.User = get("User")
	}
	if t.User == "" {
		t.User = "root"
	}
	ids, _ := cfg.GetAll(t.Alias, "IdentityFile")
	for _, id := range ids {
		if strings.HasPrefix(id, "~/") {
			id = filepath.Join(filepath.Dir(opts.sshDir()), id[2:])
		}
		t.IdentityFiles = append(t.IdentityFiles, id)
	}
	if len(t.IdentityFiles) == 0 {
		for _, name := range []string{"id_ed25519", "id_ecdsa", "id_rsa"} {
			t.IdentityFiles = append(t.IdentityFiles, filepath.Join(opts.sshDir(), name))
		}
	}
	if pj := get("ProxyJump"); pj != "" && !strings.EqualFold(pj, "none") {
		t.ProxyJump = pj
	}
	return t, nil
}

// signers are the keys to offer: ssh-agent's, then the identity files'.
func signers(opts Options, t Target, tried *[]string) ([]ssh.Signer, io.Closer) {
	var out []ssh.Signer
	var closer io.Closer
	if sock := opts.getenv("SSH_AUTH_SOCK"); sock != "" {
		if c, err := net.Dial("unix", sock); err == nil {
			closer = c
			if ss, err := agent.NewClient(c).Signers(); err == nil {
				out = append(out, ss...)
				if len(ss) > 0 {
					*tried = append(*tried, fmt.Sprintf("%d from ssh-agent", len(ss)))
				}
			}
		}
	}
	for _, file := range t.IdentityFiles {
		b, err := os.ReadFile(file)
		if err != nil {
			continue
		}
		s, err := ssh.ParsePrivateKey(b)
		var pm *ssh.PassphraseMissingError
		if errors.As(err, &pm) {
			*tried = append(*tried, file+" (passphrase-protected: add it to ssh-agent)")
			continue
		}
		if err != nil {
			continue
		}
		out = append(out, s)
		*tried = append(*tried, file)
	}
	return out, closer
}

// ErrKeysRefused is in the error of a dial that the server refused every
// key of.
var ErrKeysRefused = errors.New("refused every key")

// HostKeyError is an unknown or changed host key.
type HostKeyError struct {
	Host    string
	Changed bool
	Key     ssh.PublicKey
	Line    string // the known_hosts line that would accept Key
	File    string
	Known   []knownhosts.KnownKey
}

func (e *HostKeyError) Error() string {
	fp := ssh.FingerprintSHA256(e.Key)
	if e.Changed {
		var known []string
		for _, k := range e.Known {
			known = append(known, fmt.Sprintf("%s:%d has %s", k.Filename, k.Line, ssh.FingerprintSHA256(k.Key)))
		}
		return fmt.Sprintf("HOST KEY CHANGED for %s: it presented %s %s, but %s.\n"+
			"Someone may be intercepting the connection, or the router was reinstalled. Refusing to connect.\n"+
			"If you know why it changed, remove the old line and connect again.", e.Host, e.Key.Type(), fp, strings.Join(known, ", "))
	}
	return fmt.Sprintf("the host key of %s is unknown: %s %s.\n"+
		"If that is your router's key, add this line to %s:\n  %s\n"+
		"or run again with --accept-new-host-key.", e.Host, e.Key.Type(), fp, e.File, e.Line)
}

func (o Options) knownHostsFile() string { return filepath.Join(o.sshDir(), "known_hosts") }

// probeKey is a host key that matches no line of known_hosts: checking it
// makes knownhosts list the keys it has for a host.
type probeKey struct{}

func (probeKey) Type() string    { return "roost-probe" }
func (probeKey) Marshal() []byte { return []byte("roost-probe") }
func (probeKey) Verify([]byte, *ssh.Signature) error {
	return errors.New("roost-probe verifies nothing")
}

// hostKeyAlgorithms puts the algorithms of the keys known_hosts has for
// addr first, as OpenSSH does. Without it Go's own order (ECDSA before
// Ed25519) makes a server with both present its ECDSA key, and a
// known_hosts with only the Ed25519 line (what ssh wrote, what NixOS's
// programs.ssh.knownHosts writes) would call that a changed key. nil (Go's
// defaults) for a host with no known key.
func hostKeyAlgorithms(file, addr string) []string {
	check, err := knownhosts.New(file)
	if err != nil {
		return nil
	}
	var ke *knownhosts.KeyError
	if err := check(addr, &net.TCPAddr{IP: net.IPv4zero}, probeKey{}); !errors.As(err, &ke) || len(ke.Want) == 0 {
		return nil
	}
	var first []string
	for _, k := range ke.Want {
		if t := k.Key.Type(); t == ssh.KeyAlgoRSA {
			// An RSA key signs with SHA-2 if the server can; a known
			// RSA key of a server that cannot is still that key.
			first = append(first, ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA)
		} else {
			first = append(first, t)
		}
	}
	out := slices.Compact(first)
	for _, a := range ssh.SupportedAlgorithms().HostKeys {
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

func hostKeyCallback(opts Options, t Target) ssh.HostKeyCallback {
	file := opts.knownHostsFile()
	return func(hostname string, remote net.Addr, key ssh.PublicKey) error {
		check, err := knownhosts.New(file)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("read %s: %w", file, err)
		}
		if err == nil {
			err = check(hostname, remote, key)
		} else {
			err = &knownhosts.KeyError{}
		}
		var ke *knownhosts.KeyError
		if err == nil && opts.HostKey != nil {
			opts.HostKey(t.Alias, key)
		}
		if err == nil || !errors.As(err, &ke) {
			return err
		}
		line := knownhosts.Line([]string{knownhosts.Normalize(hostname)}, key)
		hke := &HostKeyError{Host: t.Alias, Key: key, Line: line, File: file, Changed: len(ke.Want) > 0, Known: ke.Want}
		if hke.Changed || !opts.AcceptNewHostKey {
			return hke
		}
		if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
			return err
		}
		f, err := os.OpenFile(file, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return err
		}
		defer f.Close()
		if _, err := f.WriteString(line + "\n"); err != nil {
			return err
		}
		if opts.Notice != nil {
			opts.Notice(fmt.Sprintf("added %s's host key %s to %s", t.Alias, ssh.FingerprintSHA256(key), file))
		}
		if opts.HostKey != nil {
			opts.HostKey(t.Alias, key)
		}
		return nil
	}
}

// Dial connects to host and logs in.
func Dial(ctx context.Context, opts Options, host string) (*ssh.Client, error) {
	t, err := Resolve(opts, host)
	if err != nil {
		return nil, err
	}
	return dial(ctx, opts, t, 0)
}

func dial(ctx context.Context, opts Options, t Target, depth int) (*ssh.Client, error) {
	if depth > 8 {
		return nil, errors.New("ProxyJump chain longer than 8 hops")
	}
	var tried []string
	ss, closer := signers(opts, t, &tried)
	if closer != nil {
		defer closer.Close()
	}
	if len(ss) == 0 {
		if len(tried) > 0 {
			return nil, fmt.Errorf("no SSH key roost can use to log in to %s with: %s", t.Alias, strings.Join(tried, ", "))
		}
		return nil, fmt.Errorf("no SSH key to log in to %s with: start ssh-agent with your key, or create ~/.ssh/id_ed25519 (ssh-keygen -t ed25519)", t.Alias)
	}
	cfg := &ssh.ClientConfig{
		User:              t.User,
		Auth:              []ssh.AuthMethod{ssh.PublicKeys(ss...)},
		HostKeyCallback:   hostKeyCallback(opts, t),
		HostKeyAlgorithms: hostKeyAlgorithms(opts.knownHostsFile(), t.Addr()),
		Timeout:           15 * time.Second,
		ClientVersion:     "SSH-2.0-roost",
	}
	var conn net.Conn
	if t.ProxyJump != "" {
		// ProxyJump a,b visits a, then b through a, and reaches the target
		// through b (ssh_config(5)): the last hop is the one to dial
		// through, and it is reached through the ones before it.
		hops := strings.Split(t.ProxyJump, ",")
		last := len(hops) - 1
		jt, err := Resolve(opts, strings.TrimSpace(hops[last]))
		if err != nil {
			return nil, err
		}
		if last > 0 {
			jt.ProxyJump = strings.Join(hops[:last], ",")
		}
		jump, err := dial(ctx, opts, jt, depth+1)
		if err != nil {
			return nil, fmt.Errorf("jump host %s: %w", jt.Alias, err)
		}
		through, err := jump.Dial("tcp", t.Addr())
		if err != nil {
			jump.Close()
			return nil, fmt.Errorf("connect to %s through %s: %w", t.Addr(), jt.Alias, err)
		}
		conn = &jumpConn{Conn: through, jump: jump}
	} else {
		d := net.Dialer{Timeout: cfg.Timeout}
		var err error
		if conn, err = d.DialContext(ctx, "tcp", t.Addr()); err != nil {
			return nil, fmt.Errorf("connect to %s (%s): %w", t.Alias, t.Addr(), err)
		}
	}
	return handshake(conn, t, cfg, tried)
}

// jumpConn is a connection through a jump host; closing it closes the
// connection to the jump host too, which nothing else holds.
type jumpConn struct {
	net.Conn
	jump *ssh.Client
}

func (c *jumpConn) Close() error {
	err := c.Conn.Close()
	c.jump.Close()
	return err
}

// firstBytes remembers what the peer sent first, to tell a peer that is not
// an SSH server from a broken connection.
type firstBytes struct {
	net.Conn
	first []byte
}

func (f *firstBytes) Read(b []byte) (int, error) {
	n, err := f.Conn.Read(b)
	if room := 64 - len(f.first); room > 0 {
		f.first = append(f.first, b[:min(n, room)]...)
	}
	return n, err
}

func handshake(conn net.Conn, t Target, cfg *ssh.ClientConfig, tried []string) (*ssh.Client, error) {
	conn.SetDeadline(time.Now().Add(cfg.Timeout))
	fb := &firstBytes{Conn: conn}
	c, chans, reqs, err := ssh.NewClientConn(fb, t.Addr(), cfg)
	if err != nil {
		conn.Close()
		var hke *HostKeyError
		switch {
		case errors.As(err, &hke):
			return nil, hke
		case strings.Contains(err.Error(), "unable to authenticate"):
			return nil, fmt.Errorf("%s %w offered as %s (%s): add your public key to the router's ssh.authorizedKeys", t.Alias, ErrKeysRefused, t.User, strings.Join(tried, ", "))
		case len(fb.first) > 0 && !bytes.HasPrefix(fb.first, []byte("SSH-")):
			return nil, fmt.Errorf("%s (%s) does not speak SSH: it answered %q", t.Alias, t.Addr(), fb.first)
		}
		return nil, fmt.Errorf("ssh to %s: %w", t.Alias, err)
	}
	conn.SetDeadline(time.Time{})
	return ssh.NewClient(c, chans, reqs), nil
}

// Output runs a command and returns its stdout; on failure the error holds
// its stderr. Its stdin follows the start without waiting for an answer
// (Start), so a command costs the round trip that opens its channel and
// the one that runs it.
func Output(client *ssh.Client, cmd string, stdin io.Reader) ([]byte, error) {
	var out, errb bytes.Buffer
	c, err := Start(client, cmd, &errb)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	copied := make(chan error, 1)
	go func() {
		var err error
		if stdin != nil {
			_, err = io.Copy(c, stdin)
		}
		c.CloseWrite()
		copied <- err
	}()
	_, rerr := io.Copy(&out, c)
	werr := c.Wait()
	if werr == nil && rerr != nil {
		werr = rerr
	}
	if werr != nil {
		return out.Bytes(), RemoteError(cmd, werr, errb.String())
	}
	if err := <-copied; err != nil {
		return out.Bytes(), fmt.Errorf("%s: stdin: %w", cmd, err)
	}
	return out.Bytes(), nil
}

// RemoteError explains a failed remote command, with its stderr.
func RemoteError(cmd string, err error, stderr string) error {
	stderr = strings.TrimSpace(stderr)
	var ee *ssh.ExitError
	var xe *ExitError
	if errors.As(err, &ee) && ee.ExitStatus() == 127 || errors.As(err, &xe) && xe.Status == 127 {
		return fmt.Errorf("the router has no roostd to run %q: is roostd installed there? (%s)", cmd, stderr)
	}
	if stderr != "" {
		return fmt.Errorf("%s", strings.TrimPrefix(stderr, "roostd: "))
	}
	return fmt.Errorf("%s: %w", cmd, err)
}

// Command is a command started on the router without waiting for the
// answer to its start, so that its input follows in the same round trip
// (ssh(1) and x/crypto's Session wait one round trip for it).
type Command struct {
	ch         ssh.Channel
	exit       chan struct{} // closed when the channel is
	stderrDone chan struct{}
	status     int // -1 if the router sent none
	signal     string
}

// Start runs cmd on the router, with stderr getting its stderr. A command
// the router refuses to run shows as its output ending at once, and
// Wait's error.
func Start(client *ssh.Client, cmd string, stderr io.Writer) (*Command, error) {
	ch, reqs, err := client.OpenChannel("session", nil)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cmd, err)
	}
	if _, err := ch.SendRequest("exec", false, ssh.Marshal(struct{ Command string }{cmd})); err != nil {
		ch.Close()
		return nil, fmt.Errorf("%s: %w", cmd, err)
	}
	c := &Command{ch: ch, exit: make(chan struct{}), stderrDone: make(chan struct{}), status: -1}
	go func() {
		io.Copy(stderr, ch.Stderr())
		close(c.stderrDone)
	}()
	go func() {
		defer close(c.exit)
		for req := range reqs {
			switch req.Type {
			case "exit-status":
				var st struct{ Status uint32 }
				if ssh.Unmarshal(req.Payload, &st) == nil {
					c.status = int(st.Status)
				}
			case "exit-signal":
				var sig struct {
					Signal string
					Core   bool
					Msg    string
					Lang   string
				}
				if ssh.Unmarshal(req.Payload, &sig) == nil {
					c.signal = sig.Signal
				}
			}
			if req.WantReply {
				req.Reply(false, nil)
			}
		}
	}()
	return c, nil
}

// Read reads the command's stdout.
func (c *Command) Read(b []byte) (int, error) { return c.ch.Read(b) }

// Write writes to the command's stdin.
func (c *Command) Write(b []byte) (int, error) { return c.ch.Write(b) }

// CloseWrite ends the command's stdin.
func (c *Command) CloseWrite() error { return c.ch.CloseWrite() }

// Close ends the command's channel.
func (c *Command) Close() error { return c.ch.Close() }

// Wait waits until the command has ended and its stderr is read, and
// returns an *ExitError unless it exited with status 0.
func (c *Command) Wait() error {
	<-c.exit
	<-c.stderrDone
	if c.status == 0 {
		return nil
	}
	return &ExitError{Status: c.status, Signal: c.signal}
}

// ExitError is a command that failed: its exit status (-1 if the router
// sent none) or the signal that ended it.
type ExitError struct {
	Status int
	Signal string
}

func (e *ExitError) Error() string {
	switch {
	case e.Signal != "":
		return "killed by signal " + e.Signal
	case e.Status < 0:
		return "ended without an exit status"
	}
	return fmt.Sprintf("exit status %d", e.Status)
}
