// Package opensshd runs a real OpenSSH server for tests and benchmarks: on
// a port of the caller's choosing, with its own host key and authorized
// keys in a temporary folder, inside a private mount namespace whose /run
// is a fresh tmpfs (sshd needs /run/sshd), so nothing on the host changes.
package opensshd

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Server is a running sshd.
type Server struct {
	Addr string
	cmd  *exec.Cmd
	Log  *os.File
}

// Options configure a server.
type Options struct {
	Dir            string   // a temporary folder for its files
	Listen         string   // host:port
	AuthorizedKeys string   // authorized_keys content
	Env            []string // NAME=value set for every session (SetEnv)
	Path           string   // PATH for sessions
	// Netns, if set, runs sshd inside that network namespace.
	Netns string
}

// Start runs sshd and waits until it accepts connections.
func Start(o Options) (*Server, error) {
	hostKey := filepath.Join(o.Dir, "ssh_host_ed25519_key")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", hostKey).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ssh-keygen: %v: %s", err, out)
	}
	auth := filepath.Join(o.Dir, "authorized_keys")
	if err := os.WriteFile(auth, []byte(o.AuthorizedKeys), 0o600); err != nil {
		return nil, err
	}
	host, port, err := net.SplitHostPort(o.Listen)
	if err != nil {
		return nil, err
	}
	env := append([]string{"PATH=" + o.Path}, o.Env...)
	cfg := strings.Join([]string{
		"Port " + port,
		"ListenAddress " + host,
		"HostKey " + hostKey,
		"AuthorizedKeysFile " + auth,
		"PidFile none",
		"StrictModes no",
		"UsePAM no",
		"PasswordAuthentication no",
		"KbdInteractiveAuthentication no",
		"PermitRootLogin prohibit-password",
		"SetEnv " + strings.Join(env, " "),
		"LogLevel ERROR",
	}, "\n") + "\n"
	cfgFile := filepath.Join(o.Dir, "sshd_config")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	script := "mount -t tmpfs tmpfs /run && mkdir -m 755 /run/sshd && exec /usr/sbin/sshd -D -e -f " + cfgFile
	argv := []string{"unshare", "--mount", "--propagation", "private", "sh", "-c", script}
	if o.Netns != "" {
		argv = append([]string{"ip", "netns", "exec", o.Netns}, argv...)
	}
	log, err := os.Create(filepath.Join(o.Dir, "sshd.log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &Server{Addr: o.Listen, cmd: cmd, Log: log}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if listening(o.Netns, host, port) {
			return s, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.Stop()
	b, _ := os.ReadFile(log.Name())
	return nil, fmt.Errorf("sshd did not start: %s", b)
}

// Stop ends the server.
func (s *Server) Stop() {
	if s.cmd.Process != nil {
		s.cmd.Process.Kill()
		s.cmd.Wait()
	}
	s.Log.Close()
}

// listening reports whether host:port accepts connections, from inside
// netns if set.
func listening(netns, host, port string) bool {
	if netns == "" {
		c, err := net.Dial("tcp", net.JoinHostPort(host, port))
		if err == nil {
			c.Close()
		}
		return err == nil
	}
	return exec.Command("ip", "netns", "exec", netns, "bash", "-c", "exec 3<>/dev/tcp/"+host+"/"+port).Run() == nil
}
