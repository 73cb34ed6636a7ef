package itest

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// openssh runs OpenSSH's ssh as the laptop's user: ~/.ssh/config names the
// router (OpenSSH reads the home of the passwd entry, not $HOME, hence -F
// and the files named). It is ended after 20 seconds, so a session that
// opened a shell and waits cannot hang the test.
func (l *laptop) openssh(stdin string, env []string, args ...string) result {
	l.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ssh", append(l.opensshOpts(), args...)...)
	cmd.Env = append(append(os.Environ(), l.env()...), env...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ctx.Err() != nil {
		l.t.Fatalf("ssh %s still ran after 20s: a session stayed open\nstdout: %s\nstderr: %s", strings.Join(args, " "), out.String(), errb.String())
	}
	r := result{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.code = ee.ExitCode()
	} else if err != nil {
		l.t.Fatalf("ssh %v: %v", args, err)
	}
	return r
}

func (l *laptop) opensshOpts() []string {
	ssh := filepath.Join(l.home, ".ssh")
	return []string{"-F", filepath.Join(ssh, "config"), "-i", filepath.Join(ssh, "id_ed25519"),
		"-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
		"-o", "UserKnownHostsFile=" + filepath.Join(ssh, "known_hosts"), "-o", "StrictHostKeyChecking=accept-new"}
}

// TestSSHDRefusalsWithOpenSSH: what a user of OpenSSH's ssh sees of what
// roostd's endpoint refuses (no shell, no terminal, no forwarding of any
// kind, only roostd's commands), and that the router still serves after.
func TestSSHDRefusalsWithOpenSSH(t *testing.T) {
	need(t, "ssh", "ssh-agent", "ssh-add")
	l := newLaptop(t)
	r := startRouter(t, l)
	l.sshConfig(r.port)

	serves := func() {
		t.Helper()
		res := l.openssh("", nil, "rotuer", "roostd", "store", "verify", "--json")
		var v struct{ Checked *int }
		if res.code != 0 || json.Unmarshal([]byte(res.stdout), &v) != nil || v.Checked == nil {
			t.Fatalf("ssh rotuer roostd store verify --json: exit %d\n%s\n%s", res.code, res.stdout, res.stderr)
		}
	}
	serves()

	// A line a shell would run: if one opened, its answer shows.
	const shellProbe = "echo SHELL-$((6*7))\n"
	for _, tc := range []struct {
		name string
		args []string
		code int
		says string // on stderr
	}{
		{"no command", []string{"rotuer"}, 1, "roostd: there is no shell here; run a roostd command"},
		{"ssh -tt, no command", []string{"-tt", "rotuer"}, 255, "PTY allocation request failed"},
		{"ssh -tt with a command", []string{"-tt", "rotuer", "roostd", "store", "verify"}, 255, "PTY allocation request failed"},
		{"a subsystem other than sftp", []string{"-s", "rotuer", "netconf"}, 255, "subsystem request failed"},
		{"shell syntax", []string{"rotuer", "roostd store verify; /bin/sh"}, 2, "needs a shell, and roostd runs no shell"},
	} {
		res := l.openssh(shellProbe, nil, tc.args...)
		if res.code != tc.code || !strings.Contains(res.stderr, tc.says) {
			t.Errorf("%s (ssh %s): exit %d, stderr %q; want exit %d saying %q", tc.name, strings.Join(tc.args, " "), res.code, res.stderr, tc.code, tc.says)
		}
		if strings.Contains(res.stdout, "SHELL-42") {
			t.Errorf("%s: a shell ran: %q", tc.name, res.stdout)
		}
	}

	// ssh -N -R: the router listens for no one.
	remote := freePort(t)
	res := l.openssh("", nil, "-N", "-o", "ExitOnForwardFailure=yes", "-R", "127.0.0.1:"+remote+":127.0.0.1:"+r.port, "rotuer")
	if res.code != 255 || !strings.Contains(res.stderr, "remote port forwarding failed for listen port "+remote) {
		t.Errorf("ssh -N -R: exit %d, %q; want the forward refused", res.code, res.stderr)
	}
	if c, err := net.Dial("tcp", "127.0.0.1:"+remote); err == nil {
		c.Close()
		t.Errorf("something listens on the -R port %s", remote)
	}

	// ssh -N -L: a connection to the forwarded port ends at once, and
	// nothing reaches the target.
	target, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	reached := make(chan struct{}, 1)
	go func() {
		if c, err := target.Accept(); err == nil {
			reached <- struct{}{}
			c.Close()
		}
	}()
	local := freePort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second) // ends ssh if SIGTERM does not
	defer cancel()
	fwd := exec.CommandContext(ctx, "ssh", append(l.opensshOpts(), "-N", "-L", "127.0.0.1:"+local+":"+target.Addr().String(), "rotuer")...)
	fwd.Env = append(os.Environ(), l.env()...)
	var fwdErr syncBuffer
	fwd.Stderr = &fwdErr
	if err := fwd.Start(); err != nil {
		t.Fatal(err)
	}
	r.waitListening(local, 10*time.Second)
	c, err := net.Dial("tcp", "127.0.0.1:"+local)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
	n, err := c.Read(make([]byte, 64))
	c.Close()
	if n != 0 || !(err == io.EOF || errors.Is(err, syscall.ECONNRESET)) {
		t.Errorf("a connection through ssh -L read %d bytes, %v; want it closed at once", n, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(fwdErr.String(), "administratively prohibited") && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	fwd.Process.Signal(syscall.SIGTERM)
	fwd.Wait()
	cancel()
	if !strings.Contains(fwdErr.String(), "open failed: administratively prohibited: roostd forwards nothing") {
		t.Errorf("ssh -N -L said %q, want the channel refused", fwdErr.String())
	}
	select {
	case <-reached:
		t.Error("a connection through ssh -L reached its target")
	default:
	}

	// ssh -A with a running agent: the command runs; the router opens no
	// channel to the agent, and says in its log that it refused it.
	sock := filepath.Join(t.TempDir(), "agent.sock")
	agent := exec.Command("ssh-agent", "-D", "-a", sock)
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { agent.Process.Kill(); agent.Wait() }()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(sock); err == nil {
			break
		}
	}
	agentEnv := []string{"SSH_AUTH_SOCK=" + sock}
	if add := run(t, nil, append(l.env(), agentEnv...), "ssh-add", filepath.Join(l.home, ".ssh/id_ed25519")); add.code != 0 {
		t.Fatalf("ssh-add: %s", add.stderr)
	}
	res = l.openssh("", agentEnv, "-v", "-A", "rotuer", "roostd", "store", "verify", "--json")
	if res.code != 0 || !strings.Contains(res.stderr, "Requesting authentication agent forwarding") {
		t.Errorf("ssh -A rotuer roostd store verify: exit %d, %s", res.code, res.stderr)
	}
	if strings.Contains(res.stderr, "ctype auth-agent") {
		t.Errorf("the router opened a channel to the forwarded agent:\n%s", res.stderr)
	}

	serves()
	log := r.log.String()
	for _, want := range []string{`msg="ssh shell refused"`, `request=pty-req`, `request=auth-agent-req@openssh.com`,
		`request=tcpip-forward`, `type=direct-tcpip`, `subsystem=netconf`, `msg="ssh exec refused"`} {
		if !strings.Contains(log, want) {
			t.Errorf("roostd's log lacks %s:\n%s", want, log)
		}
	}
}
