// Command mipsinit is the /init of the MIPS malta test VM (itest/vm,
// RunMIPS): it mounts what a Linux system has, runs roostd as a router's
// init would, waits for `roostd status --json` to show what the test asks
// (guest.Spec), prints the status, roostd's resident set and its log on
// the console (guest.Report) and powers off. It loads no kernel module:
// roostd must come up on a kernel with only what is built in.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/roostrouter/roost/itest/vm/guest"
)

const (
	roostd = "/bin/roostd"
	state  = "/persist/roost"
	config = "/etc/roost.json"
	logF   = "/run/roostd.log"
)

func main() {
	if err := guest.MountAll(); err != nil {
		fmt.Println("mipsinit:", err) // without /dev, stdout may go nowhere; try anyway
	} else if err := guest.Console(); err != nil {
		fmt.Println("mipsinit:", err)
	}
	r, err := run(context.Background())
	if err != nil {
		r.Error = err.Error()
	}
	b, _ := json.Marshal(r)
	if log, err := os.ReadFile(logF); err == nil {
		fmt.Printf("%s\n%s\n%s\n", guest.LogBegin, strings.TrimRight(string(log), "\n"), guest.LogEnd)
	}
	fmt.Printf("%s\n%s\n%s\n", guest.ReportBegin, b, guest.ReportEnd)
	unix.Sync()
	// The malta board resets rather than powers off; QEMU runs with
	// -no-reboot, so either ends it.
	unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	select {}
}

// status is the part of `roostd status --json` the wait reads.
type status struct {
	Agent    string `json:"agent"`
	Services []struct {
		Name  string `json:"name"`
		Kind  string `json:"kind"`
		State string `json:"state"`
	} `json:"services"`
}

func run(ctx context.Context) (r guest.Report, err error) {
	b, err := os.ReadFile(guest.SpecFile)
	if err != nil {
		return r, err
	}
	var spec guest.Spec
	if err := json.Unmarshal(b, &spec); err != nil {
		return r, fmt.Errorf("%s: %w", guest.SpecFile, err)
	}
	if err := os.WriteFile(config, spec.Config, 0o644); err != nil {
		return r, err
	}
	if err := os.MkdirAll(state, 0o700); err != nil {
		return r, err
	}
	if spec.ReadOnlyState {
		if err := unix.Mount("tmpfs", state, "tmpfs", unix.MS_RDONLY, "mode=0700"); err != nil {
			return r, fmt.Errorf("mount a read-only tmpfs on %s: %w", state, err)
		}
	}
	log, err := os.Create(logF)
	if err != nil {
		return r, err
	}
	defer log.Close()
	cmd := exec.Command(roostd, "run", "--root", "/", "--state", state, "--config", config)
	cmd.Env = []string{"PATH=/bin", "HOME=/"}
	cmd.Stdout, cmd.Stderr = log, log
	r.StartedAt = guest.Uptime()
	if err := cmd.Start(); err != nil {
		return r, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() { r.StopStatus = stop(cmd, exited) }()

	deadline := time.Now().Add(time.Duration(spec.WaitSeconds) * time.Second)
	for {
		select {
		case err := <-exited:
			exited <- err // for stop
			return r, fmt.Errorf("roostd exited: %v", err)
		case <-time.After(250 * time.Millisecond):
		}
		out, st, err := roostdStatus(ctx)
		if err == nil && st.Agent != "not running" {
			r.Status = out
			if r.AnsweredAt == 0 {
				r.AnsweredAt = guest.Uptime()
			}
			if satisfied(spec.Wait, st) {
				r.Waited, r.WaitedAt = true, guest.Uptime()
				break
			}
		}
		if time.Now().After(deadline) {
			err = fmt.Errorf("waited %ds for %v; the last status: %s (%v)", spec.WaitSeconds, spec.Wait, r.Status, err)
			r.VmRSSKiB, _ = vmRSS(cmd.Process.Pid)
			return r, err
		}
	}
	time.Sleep(2 * time.Second) // idle: past the start's bursts
	r.VmRSSKiB, err = vmRSS(cmd.Process.Pid)
	if err != nil {
		return r, err
	}
	r.MemTotalKiB, _ = statusField("/proc/meminfo", "MemTotal:")
	r.Files = map[string]string{}
	for _, f := range spec.Read {
		b, err := os.ReadFile(f)
		if err != nil {
			r.Files[f] = "error: " + err.Error()
			continue
		}
		r.Files[f] = strings.TrimSpace(string(b))
	}
	return r, nil
}

func roostdStatus(ctx context.Context) (json.RawMessage, status, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var st status
	out, err := exec.CommandContext(ctx, roostd, "status", "--json", "--root", "/").Output()
	if err != nil {
		return nil, st, fmt.Errorf("roostd status: %w", err)
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return nil, st, fmt.Errorf("roostd status: %w", err)
	}
	var compact json.RawMessage
	compact, err = json.Marshal(json.RawMessage(out)) // one line: see guest.ReportBegin
	return compact, st, err
}

// satisfied: every service that wait names, by name or kind, is in the
// state it asks for.
func satisfied(wait map[string]string, st status) bool {
	for key, want := range wait {
		found := false
		for _, s := range st.Services {
			if s.Name == key || s.Kind == key {
				found = s.State == want
				if found {
					break
				}
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func vmRSS(pid int) (int, error) {
	return statusField(filepath.Join("/proc", strconv.Itoa(pid), "status"), "VmRSS:")
}

// statusField reads a "Key: N kB" line of a /proc file.
func statusField(file, key string) (int, error) {
	f, err := os.Open(file)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), key); ok {
			return strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
		}
	}
	return 0, fmt.Errorf("%s has no %s", file, key)
}

// stop ends roostd as a router's init does at shutdown and says how it
// ended: "exit 0" is a clean stop.
func stop(cmd *exec.Cmd, exited chan error) string {
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ProcessState.String()
		}
		if err != nil {
			return err.Error()
		}
		return "exit 0"
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		return "still running 20s after SIGTERM; killed"
	}
}
