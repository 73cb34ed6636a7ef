package sshclient

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/crypto/ssh/knownhosts"
)

// server is a real SSH server on loopback, in process: public keys only,
// "exec" requests run by a tiny interpreter, and direct-tcpip channels
// (what a jump host does for ProxyJump) to loopback only.
type server struct {
	t        *testing.T
	addr     string
	hostKeys []ssh.Signer
	ln       net.Listener

	mu       sync.Mutex
	logins   []string // user and key fingerprint of each login
	forwards []string // the addresses direct-tcpip was asked for
}

func hostKey(t *testing.T, kind string) ssh.Signer {
	t.Helper()
	var key any
	var err error
	switch kind {
	case "ed25519":
		_, key, err = ed25519.GenerateKey(rand.Reader)
	case "ecdsa":
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// startServer serves until the test ends; it lets in the given client
// keys.
func startServer(t *testing.T, hostKeys []ssh.Signer, authorized ...ssh.PublicKey) *server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &server{t: t, addr: ln.Addr().String(), hostKeys: hostKeys, ln: ln}
	cfg := &ssh.ServerConfig{
		PublicKeyCallback: func(c ssh.ConnMetadata, k ssh.PublicKey) (*ssh.Permissions, error) {
			for _, a := range authorized {
				if bytes.Equal(a.Marshal(), k.Marshal()) {
					s.mu.Lock()
					s.logins = append(s.logins, c.User()+" "+ssh.FingerprintSHA256(k))
					s.mu.Unlock()
					return &ssh.Permissions{}, nil
				}
			}
			return nil, errors.New("not authorized")
		},
	}
	for _, k := range hostKeys {
		cfg.AddHostKey(k)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.serveConn(c, cfg)
			}()
		}
	}()
	return s
}

func (s *server) serveConn(c net.Conn, cfg *ssh.ServerConfig) {
	defer c.Close()
	conn, chans, reqs, err := ssh.NewServerConn(c, cfg)
	if err != nil {
		return
	}
	defer conn.Close()
	go ssh.DiscardRequests(reqs)
	var wg sync.WaitGroup
	defer wg.Wait()
	for nc := range chans {
		switch nc.ChannelType() {
		case "session":
			ch, reqs, err := nc.Accept()
			if err != nil {
				continue
			}
			wg.Add(1)
			go func() { defer wg.Done(); s.session(ch, reqs) }()
		case "direct-tcpip":
			var to struct {
				Addr     string
				Port     uint32
				OrigAddr string
				OrigPort uint32
			}
			if err := ssh.Unmarshal(nc.ExtraData(), &to); err != nil || to.Addr != "127.0.0.1" {
				nc.Reject(ssh.Prohibited, "loopback only")
				continue
			}
			addr := net.JoinHostPort(to.Addr, strconv.Itoa(int(to.Port)))
			s.mu.Lock()
			s.forwards = append(s.forwards, addr)
			s.mu.Unlock()
			up, err := net.Dial("tcp", addr)
			if err != nil {
				nc.Reject(ssh.ConnectionFailed, err.Error())
				continue
			}
			ch, reqs, err := nc.Accept()
			if err != nil {
				up.Close()
				continue
			}
			go ssh.DiscardRequests(reqs)
			wg.Add(2)
			go func() { defer wg.Done(); io.Copy(ch, up); ch.CloseWrite() }()
			go func() { defer wg.Done(); io.Copy(up, ch); up.Close() }()
		default:
			nc.Reject(ssh.UnknownChannelType, "no")
		}
	}
}

// session runs one exec request: "echo WORDS", "cat" (stdin back),
// "fail" (stderr as roostd writes it, exit 1), anything else as a shell
// would answer a command it cannot find (exit 127).
func (s *server) session(ch ssh.Channel, reqs <-chan *ssh.Request) {
	defer ch.Close()
	for req := range reqs {
		if req.Type != "exec" {
			req.Reply(false, nil)
			continue
		}
		var cmd struct{ Command string }
		ssh.Unmarshal(req.Payload, &cmd)
		req.Reply(true, nil)
		status := 0
		switch name, args, _ := strings.Cut(cmd.Command, " "); name {
		case "echo":
			fmt.Fprintln(ch, args)
		case "cat":
			io.Copy(ch, ch)
		case "fail":
			fmt.Fprintln(ch.Stderr(), "roostd: the router's disk is full")
			status = 1
		default:
			fmt.Fprintf(ch.Stderr(), "sh: %s: not found\n", name)
			status = 127
		}
		ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{uint32(status)}))
		return
	}
}

func (s *server) port() string { _, p, _ := net.SplitHostPort(s.addr); return p }

func (s *server) seen() (logins, forwards []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.logins...), append([]string(nil), s.forwards...)
}

// home is a user's home with ~/.ssh.
type home struct {
	t   *testing.T
	dir string
}

func newHome(t *testing.T) *home {
	h := &home{t: t, dir: t.TempDir()}
	if err := os.MkdirAll(h.ssh(), 0o700); err != nil {
		t.Fatal(err)
	}
	return h
}

func (h *home) ssh() string { return filepath.Join(h.dir, ".ssh") }

func (h *home) write(name, content string) {
	h.t.Helper()
	if err := os.WriteFile(filepath.Join(h.ssh(), name), []byte(content), 0o600); err != nil {
		h.t.Fatal(err)
	}
}

func (h *home) read(name string) string {
	b, err := os.ReadFile(filepath.Join(h.ssh(), name))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		h.t.Fatal(err)
	}
	return string(b)
}

// key makes a client key in ~/.ssh/name, with a passphrase if one is
// given, and returns its public half.
func (h *home) key(name, passphrase string) ssh.PublicKey {
	h.t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		h.t.Fatal(err)
	}
	var block *pem.Block
	if passphrase != "" {
		block, err = ssh.MarshalPrivateKeyWithPassphrase(priv, "", []byte(passphrase))
	} else {
		block, err = ssh.MarshalPrivateKey(priv, "")
	}
	if err != nil {
		h.t.Fatal(err)
	}
	h.write(name, string(pem.EncodeToMemory(block)))
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		h.t.Fatal(err)
	}
	return sp
}

// know adds known_hosts lines for addr's keys.
func (h *home) know(addr string, keys ...ssh.PublicKey) {
	h.t.Helper()
	f, err := os.OpenFile(filepath.Join(h.ssh(), "known_hosts"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		h.t.Fatal(err)
	}
	defer f.Close()
	for _, k := range keys {
		fmt.Fprintln(f, knownhosts.Line([]string{knownhosts.Normalize(addr)}, k))
	}
}

func (h *home) opts() Options {
	return Options{Home: h.dir, Getenv: func(string) string { return "" }}
}

func TestResolve(t *testing.T) {
	const config = `
Host rotuer
    HostName 192.0.2.1
    User admin
    Port 2222
    IdentityFile ~/.ssh/router_key
    IdentityFile /etc/roost/second_key

Host lab-*
    HostName %h.example.net
    ProxyJump jump@bastion:2200,inner

Host direct
    ProxyJump none

Host *
    User fallback
`
	h := newHome(t)
	h.write("config", config)
	sshDir := h.ssh()
	defaults := []string{filepath.Join(sshDir, "id_ed25519"), filepath.Join(sshDir, "id_ecdsa"), filepath.Join(sshDir, "id_rsa")}
	for _, tc := range []struct {
		host string
		want Target
	}{
		{"rotuer", Target{Alias: "rotuer", HostName: "192.0.2.1", Port: "2222", User: "admin",
			IdentityFiles: []string{filepath.Join(sshDir, "router_key"), "/etc/roost/second_key"}}},
		// What the command line says wins over the file.
		{"root@rotuer:22", Target{Alias: "rotuer", HostName: "192.0.2.1", Port: "22", User: "root",
			IdentityFiles: []string{filepath.Join(sshDir, "router_key"), "/etc/roost/second_key"}}},
		{"lab-1", Target{Alias: "lab-1", HostName: "lab-1.example.net", Port: "22", User: "fallback",
			IdentityFiles: defaults, ProxyJump: "jump@bastion:2200,inner"}},
		{"direct", Target{Alias: "direct", HostName: "direct", Port: "22", User: "fallback", IdentityFiles: defaults}},
		{"[2001:db8::1]:2022", Target{Alias: "2001:db8::1", HostName: "2001:db8::1", Port: "2022", User: "fallback", IdentityFiles: defaults}},
	} {
		t.Run(tc.host, func(t *testing.T) {
			got, err := Resolve(h.opts(), tc.host)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}

	// No config at all: the name as given, port 22, root (a router's
	// user), the default keys.
	bare := newHome(t)
	got, err := Resolve(bare.opts(), "rotuer")
	if err != nil {
		t.Fatal(err)
	}
	want := Target{Alias: "rotuer", HostName: "rotuer", Port: "22", User: "root", IdentityFiles: []string{
		filepath.Join(bare.ssh(), "id_ed25519"), filepath.Join(bare.ssh(), "id_ecdsa"), filepath.Join(bare.ssh(), "id_rsa")}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("without a config: got %+v, want %+v", got, want)
	}
}

func TestDial(t *testing.T) {
	ed, ec := hostKey(t, "ed25519"), hostKey(t, "ecdsa")
	for _, tc := range []struct {
		name      string
		hostKeys  []ssh.Signer
		known     []ssh.PublicKey
		acceptNew bool
		wantErr   string // "" to log in
		changed   bool
	}{
		{"known", []ssh.Signer{ed}, []ssh.PublicKey{ed.PublicKey()}, false, "", false},
		// A server with ECDSA and Ed25519 keys (any Debian sshd), known by
		// its Ed25519 key only: that key is the one asked for.
		{"known by one of its keys", []ssh.Signer{ec, ed}, []ssh.PublicKey{ed.PublicKey()}, false, "", false},
		{"known by its other key", []ssh.Signer{ec, ed}, []ssh.PublicKey{ec.PublicKey()}, false, "", false},
		{"unknown", []ssh.Signer{ed}, nil, false, "the host key of", false},
		{"changed", []ssh.Signer{ed}, []ssh.PublicKey{hostKey(t, "ed25519").PublicKey()}, false, "HOST KEY CHANGED", true},
		// --accept-new-host-key never accepts a changed key.
		{"changed, accepting new", []ssh.Signer{ed}, []ssh.PublicKey{hostKey(t, "ed25519").PublicKey()}, true, "HOST KEY CHANGED", true},
		{"changed to another type", []ssh.Signer{ec}, []ssh.PublicKey{hostKey(t, "ed25519").PublicKey()}, true, "HOST KEY CHANGED", true},
		{"unknown, accepting new", []ssh.Signer{ed}, nil, true, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHome(t)
			user := h.key("router_key", "")
			srv := startServer(t, tc.hostKeys, user)
			h.write("config", "Host rotuer\n  HostName 127.0.0.1\n  Port "+srv.port()+"\n  User admin\n  IdentityFile ~/.ssh/router_key\n")
			h.know(srv.addr, tc.known...)
			before := h.read("known_hosts")
			opts := h.opts()
			opts.AcceptNewHostKey = tc.acceptNew
			var notices, seen []string
			opts.Notice = func(s string) { notices = append(notices, s) }
			opts.HostKey = func(alias string, key ssh.PublicKey) { seen = append(seen, alias+" "+ssh.FingerprintSHA256(key)) }

			c, err := Dial(context.Background(), opts, "rotuer")
			if tc.wantErr != "" {
				if err == nil {
					c.Close()
					t.Fatalf("logged in, want an error with %q", tc.wantErr)
				}
				var hke *HostKeyError
				if !errors.As(err, &hke) || hke.Changed != tc.changed || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, want a HostKeyError (changed %v) with %q", err, tc.changed, tc.wantErr)
				}
				if !strings.Contains(err.Error(), ssh.FingerprintSHA256(hke.Key)) {
					t.Errorf("the error does not show the key's fingerprint: %v", err)
				}
				if len(seen) != 0 {
					t.Errorf("a refused host key was reported as passing: %v", seen)
				}
				if after := h.read("known_hosts"); after != before {
					t.Errorf("known_hosts changed on a refusal:\n%s", after)
				}
				if logins, _ := srv.seen(); len(logins) != 0 {
					t.Errorf("logged in to a host whose key was refused: %v", logins)
				}
				if !tc.changed {
					// The line roost says to add is the one that lets it in.
					h.write("known_hosts", hke.Line+"\n")
					c, err := Dial(context.Background(), h.opts(), "rotuer")
					if err != nil {
						t.Fatalf("with the line roost printed in known_hosts: %v", err)
					}
					c.Close()
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			// The key that passed: a known one, or the one accepted.
			want := tc.known
			if len(want) == 0 {
				want = []ssh.PublicKey{tc.hostKeys[0].PublicKey()}
			}
			if len(seen) != 1 || seen[0] != "rotuer "+ssh.FingerprintSHA256(want[0]) {
				t.Errorf("HostKey saw %v, want rotuer %s", seen, ssh.FingerprintSHA256(want[0]))
			}
			out, err := Output(c, "echo hello router", nil)
			c.Close()
			if err != nil || string(out) != "hello router\n" {
				t.Fatalf("echo: %q, %v", out, err)
			}
			if logins, _ := srv.seen(); !reflect.DeepEqual(logins, []string{"admin " + ssh.FingerprintSHA256(user)}) {
				t.Fatalf("logins %v, want admin with router_key", logins)
			}
			if tc.acceptNew {
				if !strings.Contains(h.read("known_hosts"), "["+"127.0.0.1]:"+srv.port()) || len(notices) != 1 {
					t.Fatalf("known_hosts after accepting:\n%s\nnotices %v", h.read("known_hosts"), notices)
				}
				// Known now, without the flag.
				c, err := Dial(context.Background(), h.opts(), "rotuer")
				if err != nil {
					t.Fatalf("after accepting the key: %v", err)
				}
				c.Close()
			} else if h.read("known_hosts") != before {
				t.Fatal("known_hosts changed without --accept-new-host-key")
			}
		})
	}
}

func TestDialKeys(t *testing.T) {
	ed := hostKey(t, "ed25519")
	for _, tc := range []struct {
		name    string
		setup   func(h *home, opts *Options) ssh.PublicKey // the key the server lets in
		wantErr string
	}{
		{"default identity file", func(h *home, _ *Options) ssh.PublicKey { return h.key("id_ed25519", "") }, ""},
		{"second default", func(h *home, _ *Options) ssh.PublicKey { return h.key("id_ecdsa", "") }, ""},
		{"ssh-agent", func(h *home, opts *Options) ssh.PublicKey {
			_, priv, _ := ed25519.GenerateKey(rand.Reader)
			sock := serveAgent(t, priv)
			opts.Getenv = func(k string) string {
				if k == "SSH_AUTH_SOCK" {
					return sock
				}
				return ""
			}
			s, _ := ssh.NewSignerFromKey(priv)
			return s.PublicKey()
		}, ""},
		{"no key", func(h *home, _ *Options) ssh.PublicKey { return hostKey(t, "ed25519").PublicKey() }, "no SSH key to log in to rotuer with"},
		{"wrong key", func(h *home, _ *Options) ssh.PublicKey {
			h.key("id_ed25519", "")
			return hostKey(t, "ed25519").PublicKey()
		}, "rotuer refused every key offered as root (" + "HOME/.ssh/id_ed25519)"},
		{"passphrase", func(h *home, _ *Options) ssh.PublicKey {
			h.key("id_rsa", "secret")
			return hostKey(t, "ed25519").PublicKey()
		}, "id_rsa (passphrase-protected: add it to ssh-agent)"},
		{"passphrase and a wrong key", func(h *home, _ *Options) ssh.PublicKey {
			h.key("id_ed25519", "")
			h.key("id_rsa", "secret")
			return hostKey(t, "ed25519").PublicKey()
		}, "id_rsa (passphrase-protected: add it to ssh-agent)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHome(t)
			opts := h.opts()
			allowed := tc.setup(h, &opts)
			srv := startServer(t, []ssh.Signer{ed}, allowed)
			h.write("config", "Host rotuer\n  HostName 127.0.0.1\n  Port "+srv.port()+"\n")
			h.know(srv.addr, ed.PublicKey())
			c, err := Dial(context.Background(), opts, "rotuer")
			if tc.wantErr != "" {
				want := strings.ReplaceAll(tc.wantErr, "HOME", h.dir)
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Fatalf("got %v, want an error with %q", err, want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			c.Close()
			if logins, _ := srv.seen(); !reflect.DeepEqual(logins, []string{"root " + ssh.FingerprintSHA256(allowed)}) {
				t.Fatalf("logins %v", logins)
			}
		})
	}
}

// serveAgent runs an ssh-agent holding key on a socket in a temp folder.
func serveAgent(t *testing.T, key ed25519.PrivateKey) string {
	t.Helper()
	keyring := agent.NewKeyring()
	if err := keyring.Add(agent.AddedKey{PrivateKey: key}); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() { defer wg.Done(); agent.ServeAgent(keyring, c); c.Close() }()
		}
	}()
	return sock
}

// TestProxyJump: ProxyJump j1,j2 reaches j1 directly, j2 through j1, and
// the router through j2, each host key checked against known_hosts.
func TestProxyJump(t *testing.T) {
	h := newHome(t)
	user := h.key("id_ed25519", "")
	k1, k2, kr := hostKey(t, "ed25519"), hostKey(t, "ed25519"), hostKey(t, "ed25519")
	j1 := startServer(t, []ssh.Signer{k1}, user)
	j2 := startServer(t, []ssh.Signer{k2}, user)
	router := startServer(t, []ssh.Signer{kr}, user)
	h.write("config", fmt.Sprintf(`Host j1
  HostName 127.0.0.1
  Port %s
  User hop1
Host j2
  HostName 127.0.0.1
  Port %s
  User hop2
Host rotuer
  HostName 127.0.0.1
  Port %s
  ProxyJump j1,j2
`, j1.port(), j2.port(), router.port()))
	h.know(j1.addr, k1.PublicKey())
	h.know(j2.addr, k2.PublicKey())

	// The router's key is unknown: refused, and named as the router's.
	_, err := Dial(context.Background(), h.opts(), "rotuer")
	var hke *HostKeyError
	if !errors.As(err, &hke) || hke.Host != "rotuer" || hke.Changed {
		t.Fatalf("unknown router key behind jumps: %v", err)
	}
	h.know(router.addr, kr.PublicKey())

	c, err := Dial(context.Background(), h.opts(), "rotuer")
	if err != nil {
		t.Fatal(err)
	}
	out, err := Output(c, "cat", strings.NewReader("through two jumps"))
	c.Close()
	if err != nil || string(out) != "through two jumps" {
		t.Fatalf("cat: %q, %v", out, err)
	}
	// Both dials (the refused one too) went j1, then j2 through j1, then
	// the router through j2.
	fp := ssh.FingerprintSHA256(user)
	for _, tc := range []struct {
		name             string
		s                *server
		logins, forwards []string
	}{
		{"j1", j1, []string{"hop1 " + fp, "hop1 " + fp}, []string{j2.addr, j2.addr}},
		{"j2", j2, []string{"hop2 " + fp, "hop2 " + fp}, []string{router.addr, router.addr}},
		{"router", router, []string{"root " + fp}, nil},
	} {
		logins, forwards := tc.s.seen()
		if !reflect.DeepEqual(logins, tc.logins) || !reflect.DeepEqual(forwards, tc.forwards) {
			t.Errorf("%s: logins %v, forwards %v; want %v, %v", tc.name, logins, forwards, tc.logins, tc.forwards)
		}
	}

	// A jump host whose key changed stops it all, and says which host.
	h.write("known_hosts", "")
	h.know(j1.addr, hostKey(t, "ed25519").PublicKey())
	h.know(j2.addr, k2.PublicKey())
	h.know(router.addr, kr.PublicKey())
	_, err = Dial(context.Background(), h.opts(), "rotuer")
	if !errors.As(err, &hke) || !hke.Changed || hke.Host != "j1" || !strings.Contains(err.Error(), "jump host") {
		t.Fatalf("changed key of the first jump host: %v", err)
	}
}

func TestNotSSH(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("HTTP/1.0 400 Bad Request\r\n\r\n"))
			c.Close()
		}
	}()
	h := newHome(t)
	h.key("id_ed25519", "")
	_, err = Dial(context.Background(), h.opts(), ln.Addr().String())
	if err == nil || !strings.Contains(err.Error(), `does not speak SSH: it answered "HTTP/1.0 400`) {
		t.Fatalf("got %v", err)
	}

	// Nothing listening: the error names the host and the address.
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = Dial(ctx, h.opts(), addr)
	if err == nil || !strings.Contains(err.Error(), "connect to 127.0.0.1 ("+addr+")") {
		t.Fatalf("got %v", err)
	}
}

func TestOutput(t *testing.T) {
	h := newHome(t)
	user := h.key("id_ed25519", "")
	ed := hostKey(t, "ed25519")
	srv := startServer(t, []ssh.Signer{ed}, user)
	h.know(srv.addr, ed.PublicKey())
	c, err := Dial(context.Background(), h.opts(), srv.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, tc := range []struct {
		cmd, stdin, want, wantErr string
	}{
		{"echo one session per command", "", "one session per command\n", ""},
		{"cat", "stdin goes through", "stdin goes through", ""},
		// roostd's error, without its prefix.
		{"fail", "", "", "the router's disk is full"},
		{"roostd status", "", "", `the router has no roostd to run "roostd status": is roostd installed there? (sh: roostd: not found)`},
	} {
		out, err := Output(c, tc.cmd, strings.NewReader(tc.stdin))
		if tc.wantErr != "" {
			if err == nil || err.Error() != tc.wantErr {
				t.Errorf("%s: got %v, want %q", tc.cmd, err, tc.wantErr)
			}
			continue
		}
		if err != nil || string(out) != tc.want {
			t.Errorf("%s: got %q, %v; want %q", tc.cmd, out, err, tc.want)
		}
	}
}

// TestStart: a command started without waiting for the answer to its
// start gets its input (sent before the router ran it), gives its output,
// and fails as Output's would, stderr and exit status included.
func TestStart(t *testing.T) {
	h := newHome(t)
	user := h.key("id_ed25519", "")
	ed := hostKey(t, "ed25519")
	srv := startServer(t, []ssh.Signer{ed}, user)
	h.know(srv.addr, ed.PublicKey())
	c, err := Dial(context.Background(), h.opts(), srv.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, tc := range []struct {
		cmd, stdin, want, wantErr string
	}{
		{"cat", "sent before the router ran cat", "sent before the router ran cat", ""},
		{"echo started", "", "started\n", ""},
		{"fail", "", "", "the router's disk is full"},
		{"roostd receive", "", "", `the router has no roostd to run "roostd receive": is roostd installed there? (sh: roostd: not found)`},
	} {
		var stderr strings.Builder
		cmd, err := Start(c, tc.cmd, &stderr)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(cmd, tc.stdin)
		cmd.CloseWrite()
		out, _ := io.ReadAll(cmd)
		err = cmd.Wait()
		cmd.Close()
		if tc.wantErr != "" {
			if err == nil || RemoteError(tc.cmd, err, stderr.String()).Error() != tc.wantErr {
				t.Errorf("%s: got %v (stderr %q), want %q", tc.cmd, err, stderr.String(), tc.wantErr)
			}
			continue
		}
		if err != nil || string(out) != tc.want {
			t.Errorf("%s: got %q, %v; want %q", tc.cmd, out, err, tc.want)
		}
	}
}
