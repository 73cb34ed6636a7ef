package isp

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Daemon is a server from Debian run in the foreground in a namespace,
// its files in Dir and everything it prints in Dir/log: the ISP's DHCP
// servers (kea, ISC dhcpd, WIDE dhcp6s, dnsmasq, udhcpd).
type Daemon struct {
	Name string // for errors
	Dir  string
	NS   string
	// Args is the command line. With Mounts, it runs under sh, after the
	// mounts, in the mount namespace ip netns exec makes for each command
	// (a slave of the host's: nothing propagates back to it).
	Args []string
	// Mounts bind Dir's subfolders over the fixed paths a server insists
	// on (dhcp6s keeps its DUID in /var/lib/dhcpv6): folder → path.
	Mounts map[string]string
	Env    []string // added to the test's environment
	cmd    *exec.Cmd
	exited chan struct{}
}

// Start starts the server; it fails if the server exits within a second.
func (d *Daemon) Start() error {
	args := d.Args
	if len(d.Mounts) > 0 {
		var script []string
		for sub, path := range d.Mounts {
			src := filepath.Join(d.Dir, sub)
			if err := os.MkdirAll(src, 0o755); err != nil {
				return err
			}
			script = append(script, fmt.Sprintf("mount --bind %q %q", src, path))
		}
		script = append(script, `exec "$@"`)
		args = append([]string{"sh", "-ec", strings.Join(script, " && "), "sh"}, args...)
	}
	d.cmd = exec.Command("ip", append([]string{"netns", "exec", d.NS}, args...)...)
	if len(d.Env) > 0 {
		d.cmd.Env = append(os.Environ(), d.Env...)
	}
	// Its own session: a signal to the test's process group is not its.
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	out, err := os.OpenFile(filepath.Join(d.Dir, "log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer out.Close()
	fmt.Fprintf(out, "=== start %s\n", time.Now().Format(time.RFC3339Nano))
	d.cmd.Stdout, d.cmd.Stderr = out, out
	if err := d.cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", d.Name, err)
	}
	d.exited = make(chan struct{})
	go func(cmd *exec.Cmd, exited chan struct{}) { cmd.Wait(); close(exited) }(d.cmd, d.exited)
	select {
	case <-d.exited:
		d.cmd = nil
		b, _ := os.ReadFile(filepath.Join(d.Dir, "log"))
		return fmt.Errorf("%s exited at once:\n%s", d.Name, b)
	case <-time.After(time.Second):
	}
	return nil
}

// Stop kills the server and waits for it: an ISP's server that crashes,
// or is restarted without saying goodbye.
func (d *Daemon) Stop() {
	if d.cmd != nil && d.cmd.Process != nil {
		d.cmd.Process.Kill()
		<-d.exited
		d.cmd = nil
	}
}

// Log is what the server printed so far, across restarts.
func (d *Daemon) Log() string {
	b, _ := os.ReadFile(filepath.Join(d.Dir, "log"))
	return string(b)
}

// Count is how often s appears in the log.
func (d *Daemon) Count(s string) int { return strings.Count(d.Log(), s) }

// Write writes a file into Dir: a config, or an empty lease file.
func (d *Daemon) Write(name, content string) error {
	return os.WriteFile(filepath.Join(d.Dir, name), []byte(content), 0o644)
}
