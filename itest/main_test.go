// Package itest holds roost's integration tests: the real roostd binary
// against real Nix, real servers and the kernel, in temporary folders and
// network namespaces that the tests make and remove.
package itest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// The binaries under test, built once by TestMain.
var roostd, roost string

func TestMain(m *testing.M) {
	if h := os.Getenv("ROOST_HELPER"); h != "" {
		// Re-executed inside a namespace to play a part (see dhcpLoad).
		os.Exit(runHelper(h))
	}
	if dir := os.Getenv("ROOST_BIN_DIR"); dir != "" {
		// Inside the test VM: the host built the binaries already.
		roostd, roost = filepath.Join(dir, "roostd"), filepath.Join(dir, "roost")
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "roost-itest-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	roostd = filepath.Join(dir, "roostd")
	roost = filepath.Join(dir, "roost")
	build := exec.Command("go", "build", "-o", dir, "github.com/roostrouter/roost/agent/cmd/roostd", "github.com/roostrouter/roost/hosttool/cmd/roost")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build roostd and roost:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// need fails the test in CI, and skips it loudly elsewhere, when a tool the
// test uses is not installed: CI installs everything in .ci/run.
func need(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s is not installed; .ci/run must install it", tool)
			}
			t.Skipf("SKIPPED: %s is not installed (make deps installs it)", tool)
		}
	}
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("integration tests must run as root in CI")
		}
		t.Skip("SKIPPED: integration tests need root")
	}
}

// result is a finished command.
type result struct {
	stdout, stderr string
	code           int
	killed         bool // ended by SIGKILL
}

// run runs a command with stdin, and env added to the environment.
func run(t *testing.T, stdin []byte, env []string, name string, args ...string) result {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	if stdin != nil {
		cmd.Stdin = strings.NewReader(string(stdin))
	}
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
			r.killed = true
		}
	} else if err != nil {
		t.Fatalf("%s %v: %v", name, args, err)
	}
	return r
}

// mustRun runs a command that must succeed and returns its stdout.
func mustRun(t *testing.T, stdin []byte, name string, args ...string) string {
	t.Helper()
	r := run(t, stdin, nil, name, args...)
	if r.code != 0 || r.killed {
		t.Fatalf("%s %s: exit %d\nstdout: %s\nstderr: %s", name, strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}
