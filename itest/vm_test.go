package itest

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/roostrouter/roost/firewall"
	"github.com/roostrouter/roost/itest/labnet"
	"github.com/roostrouter/roost/itest/vm"
)

// runInVM runs the calling test function again inside the QEMU test bed
// (itest/vm), with modules, the lab's and the firewall's loaded (as a
// board's init loads them), and fails the test if it fails there.
// A test that needs a kernel of its own starts with:
//
//	if !vm.Inside() { runInVM(t, isp.PPPoEModules...); return }
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
		Modules: slices.Concat(modules, labnet.KernelModules, firewall.KernelModules),
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

// TestVLANInVM: a VLAN on the WAN with an address, on Debian's kernel
// (the development machines' kernel has no 802.1Q).
func TestVLANInVM(t *testing.T) {
	if !vm.Inside() {
		runInVM(t, "8021q")
		return
	}
	cfg := strings.Replace(string(exampleConfig(t)), `"forwarding":`,
		`"wan7": { "kind": "vlan", "parent": "wan", "id": 7, "name": "wan.7" },
    "wan7-addr": { "kind": "address", "link": "wan7", "address": "10.77.0.2/24" },
    "forwarding":`, 1)
	a := startAgentLab(t, []byte(cfg))
	a.waitServices("up", allUp)
	vlan := mustRun(t, nil, "ip", "-n", a.net.Router, "-d", "addr", "show", "dev", "wan.7")
	if !strings.Contains(vlan, "vlan protocol 802.1Q id 7") || !strings.Contains(vlan, "10.77.0.2/24") {
		t.Fatalf("wan.7:\n%s", vlan)
	}
}
