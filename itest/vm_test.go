package itest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/roostrouter/roost/firewall"
	"github.com/roostrouter/roost/itest/vm"
)

// runInVM runs the calling test function again inside the QEMU test bed
// (itest/vm), with modules and the firewall's modules loaded (as a board's
// init loads them), and fails the test if it fails there.
// A test that needs a kernel of its own starts with:
//
//	if !vm.Inside() { runInVM(t, "ppp_generic", "pppoe"); return }
func runInVM(t *testing.T, modules ...string) {
	t.Helper()
	need(t, "qemu-system-x86_64", "/bin/busybox")
	if _, _, err := vm.Kernel(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(err)
		}
		t.Skipf("SKIPPED: %v", err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var console strings.Builder
	start := time.Now()
	code, err := vm.Run(context.Background(), vm.Options{
		Command: []string{exe, "-test.run", "^" + t.Name() + "$", "-test.v", "-test.count", "1"},
		Env:     []string{"ROOST_BIN_DIR=" + filepath.Dir(roostd), "CI=" + os.Getenv("CI")},
		Modules: append(modules, firewall.KernelModules...),
		Timeout: 8 * time.Minute,
		Console: &console,
	})
	if err != nil {
		t.Fatalf("the test VM: %v", err)
	}
	t.Logf("in the VM (%.0fs):\n%s", time.Since(start).Seconds(), console.String())
	if code != 0 {
		t.Fatalf("%s failed in the VM (exit %d)", t.Name(), code)
	}
}

// TestVLANInVM runs TestVLAN's checks on Debian's kernel, which has 802.1Q.
func TestVLANInVM(t *testing.T) {
	if !vm.Inside() {
		runInVM(t, "8021q", "veth", "bridge")
		return
	}
	TestVLAN(t)
}
