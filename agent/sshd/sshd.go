// Package sshd is roostd's SSH endpoint: public-key logins only, a host key
// generated once and kept, no shell, only roostd's own commands, and an sftp
// subsystem confined to a staging folder.
package sshd

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"

	"github.com/roostrouter/roost/agent/control"
	"github.com/roostrouter/roost/updater/atomicfile"

	"github.com/roostrouter/roost/agent/handover"
)

// Exec runs a roostd command line for a client and returns its exit status.
type Exec func(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int

// Server is the SSH endpoint.
type Server struct {
	Log        *slog.Logger
	HostKey    ssh.Signer
	Exec       Exec
	StagingDir string // the sftp subsystem's root

	mu    sync.RWMutex
	keys  map[string]bool // authorized keys, by their wire encoding
	conns sync.WaitGroup
}

// LoadHostKey reads the ed25519 host key in file, creating it the first
// time. It is never regenerated, so clients' known_hosts stay right across
// reboots and upgrades.
func LoadHostKey(file string) (ssh.Signer, error) {
	b, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		block, err := ssh.MarshalPrivateKey(priv, "roostd host key")
		if err != nil {
			return nil, err
		}
		b = pem.EncodeToMemory(block)
		if err := atomicfile.WriteFile(file, b, 0o600); err != nil {
			return nil, fmt.Errorf("save host key: %w", err)
		}
	} else if err != nil {
		return nil, fmt.Errorf("read host key: %w", err)
	}
	signer, err := ssh.ParsePrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("host key %s: %w", file, err)
	}
	return signer, nil
}

// ParseAuthorizedKeys reads OpenSSH authorized_keys lines; comments and
// blank lines are skipped, wherever they are. A key with an option that
// roostd does not enforce (from=, command=, expiry-time=, cert-authority…)
// is refused: let in without it, the key would have more than its line
// says. The options roostd's endpoint fulfils by itself are accepted.
func ParseAuthorizedKeys(data []byte) ([]ssh.PublicKey, error) {
	var keys []ssh.PublicKey
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		k, _, opts, _, err := ssh.ParseAuthorizedKey([]byte(line))
		if err != nil {
			return keys, fmt.Errorf("line %d: %w (want an OpenSSH public key line, as in ~/.ssh/id_ed25519.pub)", i+1, err)
		}
		for _, o := range opts {
			name, _, _ := strings.Cut(o, "=")
			if !fulfilled(name) {
				return keys, fmt.Errorf("line %d: roostd does not enforce the option %s: remove it from the key, or the key would be let in without it", i+1, name)
			}
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// fulfilled says whether an authorized_keys option holds for every key
// here: roostd forwards nothing and opens no terminal or shell.
func fulfilled(option string) bool {
	switch strings.ToLower(option) {
	case "restrict", "no-agent-forwarding", "no-port-forwarding", "no-pty", "no-user-rc", "no-x11-forwarding":
		return true
	}
	return false
}

// SetAuthorizedKeys replaces the keys allowed to log in.
func (s *Server) SetAuthorizedKeys(keys []ssh.PublicKey) {
	m := make(map[string]bool, len(keys))
	for _, k := range keys {
		m[string(k.Marshal())] = true
	}
	s.mu.Lock()
	s.keys = m
	s.mu.Unlock()
}

func (s *Server) config() *ssh.ServerConfig {
	cfg := &ssh.ServerConfig{
		ServerVersion: "SSH-2.0-roostd",
		MaxAuthTries:  6,
		PublicKeyCallback: func(meta ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			s.mu.RLock()
			ok := s.keys[string(key.Marshal())]
			s.mu.RUnlock()
			if !ok {
				return nil, fmt.Errorf("key %s is not authorized", ssh.FingerprintSHA256(key))
			}
			return &ssh.Permissions{Extensions: map[string]string{"fingerprint": ssh.FingerprintSHA256(key)}}, nil
		},
	}
	s.mu.RLock()
	cfg.AddHostKey(s.HostKey)
	s.mu.RUnlock()
	return cfg
}

// Serve accepts connections on l until ctx ends, and waits for them.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	err := s.Accept(ctx, ctx, l)
	s.Wait()
	return err
}

// Accept accepts connections on l until ctx ends. The connections live on
// until connCtx ends, not ctx, so that a listener closed by a reload cuts
// no session (an activation's own, above all); Wait waits for them.
func (s *Server) Accept(ctx, connCtx context.Context, l net.Listener) error {
	cfg := s.config()
	go func() {
		<-ctx.Done()
		l.Close()
	}()
	for {
		nc, err := handover.Accept(ctx, l)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		s.conns.Add(1)
		go func() {
			defer s.conns.Done()
			s.handleConn(connCtx, nc, cfg)
		}()
	}
}

// SetHostKey sets the host key for the listeners accepted from now on.
func (s *Server) SetHostKey(k ssh.Signer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.HostKey = k
}

// Wait waits for every connection to end.
func (s *Server) Wait() { s.conns.Wait() }

func (s *Server) handleConn(ctx context.Context, nc net.Conn, cfg *ssh.ServerConfig) {
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(30 * time.Second)) // for the handshake only
	conn, chans, reqs, err := ssh.NewServerConn(nc, cfg)
	if err != nil {
		s.Log.Info("ssh login refused", "remote", nc.RemoteAddr(), "err", err)
		return
	}
	nc.SetDeadline(time.Time{})
	defer conn.Close()
	log := s.Log.With("remote", nc.RemoteAddr(), "user", conn.User(), "key", conn.Permissions.Extensions["fingerprint"])
	log.Info("ssh login")
	go func() {
		// tcpip-forward (ssh -R), streamlocal-forward@openssh.com and
		// every other global request: refused.
		for req := range reqs {
			if req.Type != "keepalive@openssh.com" {
				log.Info("ssh request refused", "request", req.Type)
			}
			req.Reply(false, nil)
		}
	}()
	ctx, cancel := context.WithCancel(control.WithConnection(ctx, "ssh "+hex.EncodeToString(conn.SessionID())))
	defer cancel()
	go func() {
		<-ctx.Done()
		conn.Close()
	}()
	for nch := range chans {
		if nch.ChannelType() != "session" {
			// direct-tcpip (ssh -L, -D), direct-streamlocal@openssh.com,
			// x11, auth-agent@openssh.com: no forwarding of any kind.
			log.Info("ssh channel refused", "type", nch.ChannelType())
			nch.Reject(ssh.Prohibited, "roostd forwards nothing: it offers only sessions running its own commands")
			continue
		}
		ch, creqs, err := nch.Accept()
		if err != nil {
			continue
		}
		go s.session(ctx, log, ch, creqs)
	}
}

// noShell is what a client that asks for a shell is told.
const noShell = "roostd: there is no shell here; run a roostd command, e.g. ssh rotuer roostd status"

// session serves one session channel: at most one command or sftp
// subsystem, as OpenSSH does. Requests keep being answered while the
// command runs: the connection's other channels stall while a request
// waits to be read, and a client (ssh -tt sends window-change on every
// resize) may send many. The command's context ends when the client closes
// the channel, as OpenSSH hangs up a session's process.
func (s *Server) session(ctx context.Context, log *slog.Logger, ch ssh.Channel, reqs <-chan *ssh.Request) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	replied := func() {} // what the command asked to run once answered (control.AfterReply)
	defer func() {
		ch.Close()
		// Until the client acknowledges the close, its requests must
		// still be read, or they would stall the connection.
		go ssh.DiscardRequests(reqs)
		replied()
	}()
	var done chan int // the running command's exit status; nil until one runs
	for {
		select {
		case req, ok := <-reqs:
			if !ok {
				cancel()
				if done != nil {
					<-done
				}
				return
			}
			if done != nil {
				req.Reply(false, nil) // one command per session
				continue
			}
			switch req.Type {
			case "exec":
				cmd, ok := parseString(req.Payload)
				if !ok {
					req.Reply(false, nil)
					continue
				}
				req.Reply(true, nil)
				done = make(chan int, 1)
				var cmdCtx context.Context
				cmdCtx, replied = control.WithAfterReply(ctx)
				go func() {
					args, err := SplitCommand(cmd)
					if err != nil {
						log.Info("ssh exec refused", "command", cmd, "err", err)
						fmt.Fprintf(ch.Stderr(), "roostd: %v\n", err)
						done <- 2
						return
					}
					log.Info("ssh exec", "command", cmd)
					done <- s.Exec(cmdCtx, args, ch, ch, ch.Stderr())
				}()
			case "subsystem":
				name, _ := parseString(req.Payload)
				if name != "sftp" || s.StagingDir == "" {
					log.Info("ssh subsystem refused", "subsystem", name)
					req.Reply(false, nil)
					continue
				}
				if err := os.MkdirAll(s.StagingDir, 0o700); err != nil {
					log.Error("sftp staging folder", "dir", s.StagingDir, "err", err)
					req.Reply(false, nil)
					continue
				}
				req.Reply(true, nil)
				done = make(chan int, 1)
				go func() {
					srv := sftp.NewRequestServer(ch, confinedHandlers(s.StagingDir))
					if err := srv.Serve(); err != nil && !errors.Is(err, io.EOF) {
						log.Info("sftp session ended", "err", err)
					}
					srv.Close()
					done <- 0
				}()
			case "shell":
				// Refused as GitHub refuses one: the request succeeds, and
				// the session says why it ends at once with status 1. A
				// failed request shows only "shell request failed" in
				// OpenSSH, which drops what came on stderr before it.
				log.Info("ssh shell refused")
				req.Reply(true, nil)
				fmt.Fprintln(ch.Stderr(), noShell)
				ch.CloseWrite()
				sendExitStatus(ch, 1)
				return
			default:
				// pty-req, x11-req, auth-agent-req@openssh.com, env,
				// window-change, signal…: refused, as OpenSSH refuses env
				// with AcceptEnv unset. Nothing here reads them.
				switch req.Type {
				case "env", "window-change":
					// OpenSSH sends LANG and resizes unasked: not news.
				default:
					log.Info("ssh request refused", "request", req.Type)
				}
				req.Reply(false, nil)
			}
		case status := <-done:
			ch.CloseWrite()
			sendExitStatus(ch, status)
			return
		}
	}
}

func sendExitStatus(ch ssh.Channel, status int) {
	ch.SendRequest("exit-status", false, binary.BigEndian.AppendUint32(nil, uint32(status)))
}

func parseString(b []byte) (string, bool) {
	if len(b) < 4 {
		return "", false
	}
	n := binary.BigEndian.Uint32(b)
	if uint64(n) > uint64(len(b)-4) {
		return "", false
	}
	return string(b[4 : 4+n]), true
}

// SplitCommand splits an SSH command line into words as a POSIX shell
// would for quoting: '…', "…" (where a backslash escapes only $ ` " \ and
// a newline), a backslash outside quotes, a line continuation, and a
// comment from a word-initial #. No shell runs here, so what only a shell
// could do is refused rather than passed on as text: ; & | < > ( ) { },
// $ and ` (also inside "…"), and a newline before a second command.
// Globs and ~ are left as they are: words that need them are not roostd's.
func SplitCommand(s string) ([]string, error) {
	needsShell := func() error {
		return fmt.Errorf("the command %q needs a shell, and roostd runs no shell: run one roostd command", s)
	}
	var args []string
	var cur strings.Builder
	inWord := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ' || c == '\t':
			if inWord {
				args = append(args, cur.String())
				cur.Reset()
				inWord = false
			}
		case c == '\n':
			if strings.TrimLeft(s[i:], " \t\n") != "" {
				return nil, needsShell() // a second command
			}
			i = len(s)
		case c == '#' && !inWord:
			// A comment, to the end of the line.
			j := strings.IndexByte(s[i:], '\n')
			if j < 0 {
				i = len(s)
			} else {
				i += j - 1
			}
		case c == '\'':
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				return nil, errors.New("unterminated ' in the command")
			}
			cur.WriteString(s[i+1 : i+1+j])
			i += j + 1
			inWord = true
		case c == '"':
			closed := false
			for i++; i < len(s); i++ {
				d := s[i]
				if d == '"' {
					closed = true
					break
				}
				if d == '$' || d == '`' {
					return nil, needsShell()
				}
				if d == '\\' && i+1 < len(s) && strings.IndexByte("$`\"\\\n", s[i+1]) >= 0 {
					i++
					if s[i] == '\n' {
						continue // a line continuation
					}
					d = s[i]
				}
				cur.WriteByte(d)
			}
			if !closed {
				return nil, errors.New("unterminated \" in the command")
			}
			inWord = true
		case c == '\\' && i+1 < len(s):
			i++
			if s[i] == '\n' {
				continue // a line continuation
			}
			cur.WriteByte(s[i])
			inWord = true
		case strings.IndexByte(";&|<>`$(){}", c) >= 0:
			return nil, needsShell()
		default: // a trailing lone backslash too: sh keeps it
			cur.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		args = append(args, cur.String())
	}
	if len(args) == 0 {
		return nil, errors.New("empty command: run a roostd command, e.g. ssh rotuer roostd status")
	}
	return args, nil
}
