// Package sshd is roostd's SSH endpoint: public-key logins only, a host key
// generated once and kept, no shell, only roostd's own commands, and an sftp
// subsystem confined to a staging folder.
package sshd

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
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

	"github.com/roostrouter/roost/updater/atomicfile"
)

// Exec runs a roostd command line for a client and returns its exit status.
type Exec func(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int

// Server is the SSH endpoint.
type Server struct {
	Log        *slog.Logger
	HostKey    ssh.Signer
	Exec       Exec
	StagingDir string // the sftp subsystem's root

	mu   sync.RWMutex
	keys map[string]bool // authorized keys, by their wire encoding
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
// blank lines are skipped.
func ParseAuthorizedKeys(data []byte) ([]ssh.PublicKey, error) {
	var keys []ssh.PublicKey
	for len(data) > 0 {
		k, _, _, rest, err := ssh.ParseAuthorizedKey(data)
		if err != nil {
			if strings.TrimSpace(string(data)) == "" {
				break
			}
			return keys, err
		}
		keys = append(keys, k)
		data = rest
	}
	return keys, nil
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
	cfg.AddHostKey(s.HostKey)
	return cfg
}

// Serve accepts connections on l until ctx ends.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	cfg := s.config()
	go func() {
		<-ctx.Done()
		l.Close()
	}()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		nc, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.handleConn(ctx, nc, cfg)
		}()
	}
}

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
	go ssh.DiscardRequests(reqs)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		<-ctx.Done()
		conn.Close()
	}()
	for nch := range chans {
		if nch.ChannelType() != "session" {
			nch.Reject(ssh.Prohibited, "roostd offers only sessions running its own commands")
			continue
		}
		ch, creqs, err := nch.Accept()
		if err != nil {
			continue
		}
		go s.session(ctx, log, ch, creqs)
	}
}

func (s *Server) session(ctx context.Context, log *slog.Logger, ch ssh.Channel, reqs <-chan *ssh.Request) {
	defer ch.Close()
	for req := range reqs {
		switch req.Type {
		case "exec":
			cmd, ok := parseString(req.Payload)
			if !ok {
				req.Reply(false, nil)
				continue
			}
			req.Reply(true, nil)
			args, err := SplitCommand(cmd)
			status := 2
			if err != nil {
				fmt.Fprintf(ch.Stderr(), "roostd: %v\n", err)
			} else {
				log.Info("ssh exec", "command", cmd)
				status = s.Exec(ctx, args, ch, ch, ch.Stderr())
			}
			ch.CloseWrite()
			ch.SendRequest("exit-status", false, binary.BigEndian.AppendUint32(nil, uint32(status)))
			return
		case "subsystem":
			name, _ := parseString(req.Payload)
			if name != "sftp" || s.StagingDir == "" {
				req.Reply(false, nil)
				continue
			}
			req.Reply(true, nil)
			if err := os.MkdirAll(s.StagingDir, 0o700); err != nil {
				log.Error("sftp staging folder", "err", err)
				return
			}
			srv := sftp.NewRequestServer(ch, confinedHandlers(s.StagingDir))
			if err := srv.Serve(); err != nil && !errors.Is(err, io.EOF) {
				log.Info("sftp session ended", "err", err)
			}
			srv.Close()
			return
		case "shell", "pty-req":
			fmt.Fprintln(ch.Stderr(), "roostd: there is no shell here; run a roostd command, e.g. ssh rotuer roostd status")
			req.Reply(false, nil)
			if req.Type == "shell" {
				ch.SendRequest("exit-status", false, binary.BigEndian.AppendUint32(nil, 1))
				return
			}
		default:
			req.Reply(false, nil) // env and the like: ignored, as OpenSSH does with AcceptEnv unset
		}
	}
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

// SplitCommand splits an SSH command line into words as a POSIX shell would
// for simple quoting ('…', "…", backslash). It refuses shell syntax that
// only a shell could run, since none runs here.
func SplitCommand(s string) ([]string, error) {
	var args []string
	var cur strings.Builder
	inWord := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n':
			if inWord {
				args = append(args, cur.String())
				cur.Reset()
				inWord = false
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
			i++
			for ; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' && i+1 < len(s) {
					i++
				}
				cur.WriteByte(s[i])
			}
			if i >= len(s) {
				return nil, errors.New("unterminated \" in the command")
			}
			inWord = true
		case c == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
			inWord = true
		case strings.IndexByte(";&|<>`$(){}", c) >= 0:
			return nil, fmt.Errorf("the command %q needs a shell, and roostd runs no shell: run one roostd command", s)
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		args = append(args, cur.String())
	}
	if len(args) == 0 {
		return nil, errors.New("empty command")
	}
	return args, nil
}
