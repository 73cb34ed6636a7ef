package sshd

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// testServer is the real Server on 127.0.0.1, with a command runner that
// stands in for roostd's commands: "echo ARGS" prints its arguments one a
// line, "cat" copies stdin to stdout, "exit N" ends with status N, and
// "block" waits until its context ends and says so on ended.
type testServer struct {
	addr    string
	hostKey ssh.PublicKey
	client  ssh.Signer // an authorized key
	staging string

	mu    sync.Mutex
	calls [][]string
	ended chan struct{}
}

func startServer(t *testing.T) *testServer {
	t.Helper()
	dir := t.TempDir()
	hostKey, err := LoadHostKey(filepath.Join(dir, "host_key"))
	if err != nil {
		t.Fatal(err)
	}
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	clientKey, _ := ssh.NewSignerFromKey(priv)
	ts := &testServer{hostKey: hostKey.PublicKey(), client: clientKey, staging: filepath.Join(dir, "staging"), ended: make(chan struct{}, 1)}
	srv := &Server{
		Log:        slog.New(slog.NewTextHandler(io.Discard, nil)),
		HostKey:    hostKey,
		StagingDir: ts.staging,
		Exec:       ts.exec,
	}
	srv.SetAuthorizedKeys([]ssh.PublicKey{clientKey.PublicKey()})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts.addr = l.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return within 10s of its context's end")
		}
	})
	return ts
}

func (ts *testServer) exec(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	ts.mu.Lock()
	ts.calls = append(ts.calls, args)
	ts.mu.Unlock()
	switch args[0] {
	case "echo":
		for _, a := range args[1:] {
			fmt.Fprintln(stdout, a)
		}
	case "cat":
		io.Copy(stdout, stdin)
	case "exit":
		n, _ := strconv.Atoi(args[1])
		fmt.Fprintln(stderr, "exiting with", n)
		return n
	case "block":
		<-ctx.Done()
		ts.ended <- struct{}{}
		return 1
	default:
		fmt.Fprintln(stderr, "unknown command", args[0])
		return 127
	}
	return 0
}

func (ts *testServer) callCount() int {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return len(ts.calls)
}

// dial logs in. The connection lives 20 seconds at most: a server that
// stalls fails the test with errors instead of hanging it.
func (ts *testServer) dial(t *testing.T, auth ...ssh.AuthMethod) (*ssh.Client, error) {
	t.Helper()
	if auth == nil {
		auth = []ssh.AuthMethod{ssh.PublicKeys(ts.client)}
	}
	nc, err := net.DialTimeout("tcp", ts.addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	nc.SetDeadline(time.Now().Add(20 * time.Second))
	conn, chans, reqs, err := ssh.NewClientConn(nc, ts.addr, &ssh.ClientConfig{
		User:            "root",
		Auth:            auth,
		HostKeyCallback: ssh.FixedHostKey(ts.hostKey),
	})
	if err != nil {
		nc.Close()
		return nil, err
	}
	return ssh.NewClient(conn, chans, reqs), nil
}

func (ts *testServer) mustDial(t *testing.T) *ssh.Client {
	t.Helper()
	c, err := ts.dial(t)
	if err != nil {
		t.Fatalf("dial %s: %v", ts.addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// run runs cmd in a new session of c.
func run(t *testing.T, c *ssh.Client, cmd, stdin string) (stdout, stderr string, status int) {
	t.Helper()
	sess, err := c.NewSession()
	if err != nil {
		t.Fatalf("new session: %v", err)
	}
	defer sess.Close()
	var out, errb bytes.Buffer
	sess.Stdin, sess.Stdout, sess.Stderr = strings.NewReader(stdin), &out, &errb
	err = sess.Run(cmd)
	var ee *ssh.ExitError
	switch {
	case errors.As(err, &ee):
		status = ee.ExitStatus()
	case err != nil:
		t.Fatalf("run %q: %v", cmd, err)
	}
	return out.String(), errb.String(), status
}

// stillServes checks that the connection runs a command after a refusal.
func stillServes(t *testing.T, c *ssh.Client) {
	t.Helper()
	out, errOut, status := run(t, c, "echo 'still here'", "")
	if out != "still here\n" || status != 0 {
		t.Fatalf("after the refusal the connection ran echo: %q %q, status %d", out, errOut, status)
	}
}

func TestExec(t *testing.T) {
	ts := startServer(t)
	c := ts.mustDial(t)
	for _, tc := range []struct {
		cmd, stdin       string
		stdout, inStderr string
		status           int
	}{
		{cmd: `echo a 'b c' "d e"`, stdout: "a\nb c\nd e\n"},
		{cmd: "cat", stdin: "piped through\n", stdout: "piped through\n"},
		{cmd: "exit 3", inStderr: "exiting with 3", status: 3},
		{cmd: "roostd status; reboot", inStderr: "needs a shell", status: 2},
		{cmd: "echo $(reboot)", inStderr: "needs a shell", status: 2},
		{cmd: "echo 'unterminated", inStderr: "unterminated '", status: 2},
		{cmd: "", inStderr: "empty command", status: 2},
	} {
		before := ts.callCount()
		out, errOut, status := run(t, c, tc.cmd, tc.stdin)
		if out != tc.stdout || status != tc.status || !strings.Contains(errOut, tc.inStderr) {
			t.Errorf("%q: stdout %q, stderr %q, status %d; want stdout %q, stderr with %q, status %d",
				tc.cmd, out, errOut, status, tc.stdout, tc.inStderr, tc.status)
		}
		if tc.status == 2 && ts.callCount() != before {
			t.Errorf("%q was refused, yet a command ran", tc.cmd)
		}
	}
}

// TestRefused: everything but a command or sftp is refused, and the
// connection serves a command afterwards.
func TestRefused(t *testing.T) {
	ts := startServer(t)
	forwardTarget, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer forwardTarget.Close()
	reached := make(chan struct{}, 1)
	go func() {
		for {
			conn, err := forwardTarget.Accept()
			if err != nil {
				return
			}
			reached <- struct{}{}
			conn.Close()
		}
	}()
	sock := filepath.Join(t.TempDir(), "forwarded.sock")

	newSession := func(t *testing.T, c *ssh.Client) *ssh.Session {
		s, err := c.NewSession()
		if err != nil {
			t.Fatalf("new session: %v", err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	for _, tc := range []struct {
		name   string
		refuse func(t *testing.T, c *ssh.Client) error
	}{
		{"shell", func(t *testing.T, c *ssh.Client) error {
			s := newSession(t, c)
			var stdout, stderr bytes.Buffer
			s.Stdin = strings.NewReader("echo SHELL-$((6*7))\n")
			s.Stdout, s.Stderr = &stdout, &stderr
			if err := s.Shell(); err != nil {
				return err
			}
			err := s.Wait()
			var ee *ssh.ExitError
			if !errors.As(err, &ee) || ee.ExitStatus() != 1 {
				t.Errorf("the shell session ended with %v, want exit status 1", err)
			}
			if stdout.Len() > 0 || !strings.Contains(stderr.String(), "there is no shell here") {
				t.Errorf("the shell session printed %q and %q on stderr; want only a word that there is no shell", stdout.String(), stderr.String())
			}
			return err
		}},
		{"pty", func(t *testing.T, c *ssh.Client) error {
			return newSession(t, c).RequestPty("xterm", 24, 80, ssh.TerminalModes{})
		}},
		{"pty then a command in the same session", func(t *testing.T, c *ssh.Client) error {
			s := newSession(t, c)
			err := s.RequestPty("xterm", 24, 80, ssh.TerminalModes{})
			if out, rerr := s.Output("echo runs"); rerr != nil || string(out) != "runs\n" {
				t.Errorf("after a refused pty the session's command gave %q, %v", out, rerr)
			}
			return err
		}},
		{"x11", func(t *testing.T, c *ssh.Client) error {
			payload := ssh.Marshal(struct {
				Single   bool
				Protocol string
				Cookie   string
				Screen   uint32
			}{false, "MIT-MAGIC-COOKIE-1", "0123456789abcdef0123456789abcdef", 0})
			return refusedRequest(newSession(t, c).SendRequest("x11-req", true, payload))
		}},
		{"agent forwarding", func(t *testing.T, c *ssh.Client) error {
			return agent.RequestAgentForwarding(newSession(t, c))
		}},
		{"env LD_PRELOAD", func(t *testing.T, c *ssh.Client) error {
			return newSession(t, c).Setenv("LD_PRELOAD", "/tmp/evil.so")
		}},
		{"env PATH", func(t *testing.T, c *ssh.Client) error {
			return newSession(t, c).Setenv("PATH", "/tmp")
		}},
		{"subsystem netconf", func(t *testing.T, c *ssh.Client) error {
			return newSession(t, c).RequestSubsystem("netconf")
		}},
		{"a second command in a session", func(t *testing.T, c *ssh.Client) error {
			s := newSession(t, c)
			pr, pw := io.Pipe() // never written: cat keeps running
			defer pw.Close()
			s.Stdin = pr
			if err := s.Start("cat"); err != nil {
				t.Fatal(err)
			}
			return refusedRequest(s.SendRequest("exec", true, ssh.Marshal(struct{ Cmd string }{"echo again"})))
		}},
		{"exec without a command string", func(t *testing.T, c *ssh.Client) error {
			return refusedRequest(newSession(t, c).SendRequest("exec", true, []byte{0, 0}))
		}},
		{"direct-tcpip (ssh -L)", func(t *testing.T, c *ssh.Client) error {
			conn, err := c.Dial("tcp", forwardTarget.Addr().String())
			if err == nil {
				conn.Close()
			}
			return err
		}},
		{"direct-streamlocal (ssh -L to a socket)", func(t *testing.T, c *ssh.Client) error {
			conn, err := c.Dial("unix", "/run/control.sock")
			if err == nil {
				conn.Close()
			}
			return err
		}},
		{"tcpip-forward (ssh -R)", func(t *testing.T, c *ssh.Client) error {
			l, err := c.Listen("tcp", "127.0.0.1:0")
			if err == nil {
				l.Close()
			}
			return err
		}},
		{"streamlocal-forward (ssh -R to a socket)", func(t *testing.T, c *ssh.Client) error {
			l, err := c.ListenUnix(sock)
			if err == nil {
				l.Close()
			}
			if _, serr := os.Lstat(sock); serr == nil {
				t.Errorf("a socket was made at %s", sock)
			}
			return err
		}},
		{"x11 channel", func(t *testing.T, c *ssh.Client) error { return openChannel(c, "x11") }},
		{"auth-agent channel", func(t *testing.T, c *ssh.Client) error { return openChannel(c, "auth-agent@openssh.com") }},
		{"forwarded-tcpip channel", func(t *testing.T, c *ssh.Client) error { return openChannel(c, "forwarded-tcpip") }},
		{"unknown global request", func(t *testing.T, c *ssh.Client) error {
			ok, _, err := c.SendRequest("no-more-sessions@openssh.com", true, nil)
			return refusedRequest(ok, err)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ts.mustDial(t)
			// Channels the server might open toward the client: none may come.
			var opened []<-chan ssh.NewChannel
			for _, typ := range []string{"auth-agent@openssh.com", "x11"} {
				opened = append(opened, c.HandleChannelOpen(typ))
			}
			before := ts.callCount()
			if err := tc.refuse(t, c); err == nil {
				t.Fatal("not refused")
			}
			if tc.name != "pty then a command in the same session" && tc.name != "a second command in a session" && ts.callCount() != before {
				t.Errorf("a command ran: %d calls, had %d", ts.callCount(), before)
			}
			stillServes(t, c)
			for _, ch := range opened {
				select {
				case nc := <-ch:
					t.Errorf("the server opened a %s channel to the client", nc.ChannelType())
				default:
				}
			}
		})
	}
	select {
	case <-reached:
		t.Fatal("a forwarded connection reached the target")
	default:
	}
}

// refusedRequest turns a request's reply into an error if it was refused.
func refusedRequest(ok bool, err error) error {
	if err != nil {
		return err
	}
	if !ok {
		return errors.New("refused")
	}
	return nil
}

func openChannel(c *ssh.Client, typ string) error {
	ch, reqs, err := c.OpenChannel(typ, nil)
	if err != nil {
		var oce *ssh.OpenChannelError
		if !errors.As(err, &oce) || oce.Reason != ssh.Prohibited {
			return fmt.Errorf("want administratively prohibited, got %w", err)
		}
		return err
	}
	go ssh.DiscardRequests(reqs)
	ch.Close()
	return nil
}

func TestOnlyAuthorizedPublicKeys(t *testing.T) {
	ts := startServer(t)
	_, stranger, _ := ed25519.GenerateKey(rand.Reader)
	strangerKey, _ := ssh.NewSignerFromKey(stranger)
	for _, tc := range []struct {
		name string
		auth []ssh.AuthMethod
	}{
		{"password", []ssh.AuthMethod{ssh.Password("root")}},
		{"keyboard-interactive", []ssh.AuthMethod{ssh.KeyboardInteractive(func(string, string, []string, []bool) ([]string, error) {
			return []string{"root"}, nil
		})}},
		{"an unknown key", []ssh.AuthMethod{ssh.PublicKeys(strangerKey)}},
	} {
		c, err := ts.dial(t, tc.auth...)
		if err == nil {
			c.Close()
			t.Errorf("%s: logged in", tc.name)
		} else if !strings.Contains(err.Error(), "unable to authenticate") {
			t.Errorf("%s: %v, want unable to authenticate", tc.name, err)
		}
	}
	if ts.callCount() != 0 {
		t.Fatal("a command ran")
	}
}

// TestRequestsWhileRunning: a client may send many requests while its
// command runs (OpenSSH sends window-change on every resize after ssh -tt);
// they are refused and stall nothing.
func TestRequestsWhileRunning(t *testing.T) {
	ts := startServer(t)
	c := ts.mustDial(t)
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	stdin, _ := sess.StdinPipe()
	var out bytes.Buffer
	sess.Stdout = &out
	if err := sess.Start("cat"); err != nil {
		t.Fatal(err)
	}
	resize := ssh.Marshal(struct{ W, H, PW, PH uint32 }{100, 40, 0, 0})
	for range 100 {
		if _, err := sess.SendRequest("window-change", false, resize); err != nil {
			t.Fatal(err)
		}
	}
	for range 20 {
		if ok, err := sess.SendRequest("signal", true, ssh.Marshal(struct{ Sig string }{"INT"})); ok || err != nil {
			t.Fatalf("signal request: %v, %v; want a refusal", ok, err)
		}
	}
	done := make(chan error, 1)
	go func() {
		io.WriteString(stdin, "after the requests\n")
		stdin.Close()
		done <- sess.Wait()
	}()
	select {
	case err := <-done:
		if err != nil || out.String() != "after the requests\n" {
			t.Fatalf("cat after 120 requests: %v, %q", err, out.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the connection stalled after 120 requests during a command")
	}
	stillServes(t, c)
}

// TestClosedSessionEndsCommand: a client that goes away ends its command's
// context, as OpenSSH hangs up a session's process.
func TestClosedSessionEndsCommand(t *testing.T) {
	ts := startServer(t)
	c := ts.mustDial(t)
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if err := sess.Start("block"); err != nil {
		t.Fatal(err)
	}
	sess.Close()
	select {
	case <-ts.ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the command runs on after its client closed the session")
	}
	stillServes(t, c)
}

func TestSFTPConfined(t *testing.T) {
	ts := startServer(t)
	c := ts.mustDial(t)
	client, err := sftp.NewClient(c)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	for _, name := range []string{"image.bin", "../../escaped.bin", "/passwd-roost-test"} {
		f, err := client.Create(name)
		if err != nil {
			t.Fatalf("create %s: %v", name, err)
		}
		f.Write([]byte("firmware"))
		f.Close()
	}
	for _, name := range []string{"image.bin", "escaped.bin", "passwd-roost-test"} {
		if b, err := os.ReadFile(filepath.Join(ts.staging, name)); err != nil || string(b) != "firmware" {
			t.Errorf("%s is not in the staging folder: %v", name, err)
		}
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(filepath.Dir(ts.staging)), "escaped.bin")); err == nil {
		t.Error("an upload left the staging folder")
	}
	if err := client.Symlink("image.bin", "link"); err == nil {
		t.Error("a symlink was made in the staging folder")
	}
	if err := client.Link("image.bin", "hard"); err == nil {
		t.Error("a hard link was made in the staging folder")
	}
	if err := client.Rename("image.bin", "../../../moved.bin"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(ts.staging, "moved.bin")); err != nil {
		t.Errorf("a rename out of the staging folder did not stay in it: %v", err)
	}
	client.Close()
	stillServes(t, c)
}

func TestHostKeyKept(t *testing.T) {
	file := filepath.Join(t.TempDir(), "host_key")
	first, err := LoadHostKey(file)
	if err != nil {
		t.Fatal(err)
	}
	again, err := LoadHostKey(file)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first.PublicKey().Marshal(), again.PublicKey().Marshal()) {
		t.Fatal("the host key changed between two loads")
	}
	if fi, _ := os.Stat(file); fi.Mode().Perm() != 0o600 {
		t.Fatalf("the host key file is mode %v, want 0600", fi.Mode().Perm())
	}
}

func TestParseAuthorizedKeys(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	signer, _ := ssh.NewSignerFromKey(priv)
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey())))
	for _, tc := range []struct {
		name    string
		data    string
		keys    int
		wantErr bool
	}{
		{"one key", line + " laptop\n", 1, false},
		{"comments and blank lines", "# mine\n\n" + line + "\n  \n# end\n", 1, false},
		{"two", line + "\n" + line + " again", 2, false},
		{"empty", "", 0, false},
		{"garbage", "ssh-ed25519 not-base64!\n", 0, true},
		{"garbage after a key", line + "\nnot a key\n", 1, true},
		{"restrictions roostd fulfils, and a trailing comment", "restrict,no-pty " + line + "\n# laptop\n", 1, false},
		{"from= is not enforced", `from="192.168.1.0/24" ` + line, 0, true},
		{"command= is not enforced", `command="roostd status" ` + line, 0, true},
		{"cert-authority is not enforced", "cert-authority " + line, 0, true},
	} {
		keys, err := ParseAuthorizedKeys([]byte(tc.data))
		if len(keys) != tc.keys || (err != nil) != tc.wantErr {
			t.Errorf("%s: %d keys, %v; want %d keys, error %v", tc.name, len(keys), err, tc.keys, tc.wantErr)
		}
	}
}

// parseString reads a request's string: a length, then that many bytes.
func TestParseString(t *testing.T) {
	for _, tc := range []struct {
		in   []byte
		want string
		ok   bool
	}{
		{binary.BigEndian.AppendUint32(nil, 3), "", false},
		{append(binary.BigEndian.AppendUint32(nil, 3), "abc"...), "abc", true},
		{append(binary.BigEndian.AppendUint32(nil, 3), "abcdef"...), "abc", true},
		{[]byte{0, 0, 0}, "", false},
		{append(binary.BigEndian.AppendUint32(nil, 0xffffffff), "abc"...), "", false},
	} {
		got, ok := parseString(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("parseString(%x) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}
