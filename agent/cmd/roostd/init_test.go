package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/roostrouter/roost/agent/boot"
)

// TestPowerAsksInit: roostd reboot and poweroff signal the process that
// roostd init's marker names (here a sleep standing in for PID 1) with
// busybox init's signals, and refuse where no roostd init runs, rather
// than signal another init.
func TestPowerAsksInit(t *testing.T) {
	root, state := t.TempDir(), t.TempDir()
	if _, stderr, code := roostdRun(t, root, state, nil, "reboot"); code == 0 || !strings.Contains(stderr, "roostd init does not run here") {
		t.Fatalf("reboot without roostd init: exit %d, %q", code, stderr)
	}
	for _, tc := range []struct {
		cmd string
		sig syscall.Signal
	}{{"reboot", syscall.SIGTERM}, {"poweroff", syscall.SIGUSR2}} {
		init := exec.Command("sleep", "60")
		if err := init.Start(); err != nil {
			t.Fatal(err)
		}
		os.MkdirAll(filepath.Join(root, "run"), 0o755)
		os.WriteFile(boot.MarkerFile(root), []byte(strconv.Itoa(init.Process.Pid)+"\n"), 0o644)
		stdout, stderr, code := roostdRun(t, root, state, nil, tc.cmd, "--json")
		err := init.Wait()
		ws, _ := init.ProcessState.Sys().(syscall.WaitStatus)
		var out struct{ Requested string }
		if code != 0 || oneJSON(stdout, &out) != nil || out.Requested != tc.cmd || !ws.Signaled() || ws.Signal() != tc.sig {
			t.Fatalf("roostd %s --json: exit %d, %q, %q; init ended with %v, want %s", tc.cmd, code, stdout, stderr, err, tc.sig)
		}
	}
}
