package itest

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/roostrouter/roost/agent/supervisor"
	"github.com/roostrouter/roost/itest/vm"
	"github.com/roostrouter/roost/itest/vm/guest"
)

// TestAgentOnMIPSInVM: roostd as a router runs it, on a router's kernel:
// Debian's MIPS 4kc-malta kernel in QEMU's malta board with 64 MiB, where
// nfnetlink, nf_tables and xfrm_user are modules that nothing loads
// (issue 12: roostd exited with "netlink: protocol not supported" there).
// roostd must come up with what the kernel has built in, and a service
// whose kernel support or folder is missing must fail alone, saying what
// to do.
func TestAgentOnMIPSInVM(t *testing.T) {
	need(t, "qemu-system-mipsel", "go")
	if _, err := vm.MIPSKernel(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(err)
		}
		t.Skipf("SKIPPED: %v", err)
	}
	initBin, roostdBin := buildMIPS(t)
	const forwarding = `"forwarding": { "kind": "sysctl", "values": { "net.ipv4.ip_forward": "1" } }`
	const rpFilter = `"rp-filter": { "kind": "sysctl", "values": { "net.ipv4.conf.all.rp_filter": "1" } }`
	const firewall = `"firewall": { "kind": "firewall", "zones": { "wan": { "interfaces": ["eth0"] }, "lan": { "interfaces": ["eth1"] } } }`
	tests := []struct {
		name          string
		services      string
		readOnlyState bool
		wait          map[string]string // service name or kind → state
		check         func(t *testing.T, svcs map[string]supervisor.Status, files map[string]string)
	}{
		{
			name:     "sysctl",
			services: forwarding,
			wait:     map[string]string{"forwarding": "up", "ssh": "up"},
			check: func(t *testing.T, svcs map[string]supervisor.Status, files map[string]string) {
				ipForwardOn(t, files)
				for name, s := range svcs {
					if s.State != supervisor.Up {
						t.Errorf("service %s is %s (%s), want up", name, s.State, s.LastError)
					}
				}
			},
		},
		{
			// The SSH endpoint is a service of its own: without its host
			// key it fails, and says where it could not write.
			name:          "read-only state",
			services:      forwarding,
			readOnlyState: true,
			wait:          map[string]string{"forwarding": "up", "ssh": "failed"},
			check: func(t *testing.T, svcs map[string]supervisor.Status, files map[string]string) {
				ipForwardOn(t, files)
				ssh, ok := sshService(svcs)
				if !ok {
					t.Fatalf("no SSH service in the status: %v", svcs)
				}
				t.Logf("the SSH service: %s: %s", ssh.State, ssh.LastError)
				if ssh.State != supervisor.Failed || !strings.Contains(ssh.LastError, "/persist/roost") {
					t.Errorf("SSH service %s is %s with error %q, want failed naming /persist/roost", ssh.Name, ssh.State, ssh.LastError)
				}
				for name, s := range svcs {
					if name != ssh.Name && s.State != supervisor.Up {
						t.Errorf("service %s is %s (%s), want up", name, s.State, s.LastError)
					}
				}
			},
		},
		{
			// Forwarding waits for the firewall (a router must not forward
			// unfiltered), so another sysctl stands for "everything else".
			name:     "firewall without nf_tables",
			services: forwarding + ",\n" + rpFilter + ",\n" + firewall,
			wait:     map[string]string{"firewall": "failed", "rp-filter": "up", "ssh": "up"},
			check: func(t *testing.T, svcs map[string]supervisor.Status, files map[string]string) {
				fw := svcs["firewall"]
				t.Logf("the firewall: %s: %s", fw.State, fw.LastError)
				if fw.State != supervisor.Failed || !strings.Contains(fw.LastError, "nf_tables") || !strings.Contains(fw.LastError, "modprobe") {
					t.Errorf("firewall is %s with error %q, want failed naming nf_tables and what to load", fw.State, fw.LastError)
				}
				if fwd := svcs["forwarding"]; fwd.State == supervisor.Up || files["/proc/sys/net/ipv4/ip_forward"] != "0" {
					t.Errorf("forwarding is %s and net.ipv4.ip_forward %q without a firewall, want it not up and 0", fwd.State, files["/proc/sys/net/ipv4/ip_forward"])
				}
				if got := files["/proc/sys/net/ipv4/conf/all/rp_filter"]; got != "1" {
					t.Errorf("net.ipv4.conf.all.rp_filter is %q, want 1 (the rp-filter service's)", got)
				}
				for name, s := range svcs {
					if name != "firewall" && name != "forwarding" && s.State != supervisor.Up {
						t.Errorf("service %s is %s (%s), want up", name, s.State, s.LastError)
					}
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			spec, err := json.Marshal(guest.Spec{
				Config:        json.RawMessage(`{ "hostname": "malta", "services": {` + tc.services + `} }`),
				ReadOnlyState: tc.readOnlyState,
				Wait:          tc.wait,
				WaitSeconds:   90,
				Read:          []string{"/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv4/conf/all/rp_filter"},
			})
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			console, err := vm.RunMIPS(context.Background(), vm.MIPSOptions{
				Init: initBin,
				Files: []vm.File{
					{Name: "bin/roostd", Data: roostdBin, Perm: 0o755},
					{Name: strings.TrimPrefix(guest.SpecFile, "/"), Data: spec, Perm: 0o644},
				},
				Memory:  64,
				Timeout: 5 * time.Minute,
			})
			if err != nil {
				t.Fatalf("the MIPS VM: %v", err)
			}
			wall := time.Since(start)
			r, log, err := guest.Parse(console)
			if err != nil {
				t.Fatalf("%v; the console:\n%s", err, console)
			}
			if r.Error != "" {
				t.Fatalf("in the VM: %s\nroostd's log:\n%s", r.Error, log)
			}
			t.Logf("boot to status %.1f s (roostd started %.1f s after boot, first answered at %.1f s); idle VmRSS %d KiB of MemTotal %d KiB; the VM ran %.1f s",
				r.WaitedAt, r.StartedAt, r.AnsweredAt, r.VmRSSKiB, r.MemTotalKiB, wall.Seconds())
			var st struct {
				Agent    string              `json:"agent"`
				Services []supervisor.Status `json:"services"`
			}
			if err := json.Unmarshal(r.Status, &st); err != nil {
				t.Fatalf("roostd status --json: %v\n%s", err, r.Status)
			}
			if !strings.HasPrefix(st.Agent, "roostd ") {
				t.Errorf("agent %q, want roostd running", st.Agent)
			}
			svcs := map[string]supervisor.Status{}
			for _, s := range st.Services {
				svcs[s.Name] = s
			}
			tc.check(t, svcs, r.Files)
			if r.VmRSSKiB <= 0 {
				t.Errorf("no VmRSS for roostd")
			}
			if r.StopStatus != "exit 0" {
				t.Errorf("roostd on SIGTERM: %s, want exit 0", r.StopStatus)
			}
			if t.Failed() {
				t.Logf("status: %s\nroostd's log:\n%s", r.Status, log)
			}
		})
	}
}

func ipForwardOn(t *testing.T, files map[string]string) {
	t.Helper()
	if got := files["/proc/sys/net/ipv4/ip_forward"]; got != "1" {
		t.Errorf("net.ipv4.ip_forward is %q, want 1 (the sysctl service's)", got)
	}
}

// sshService is the SSH endpoint's service, by name or kind.
func sshService(svcs map[string]supervisor.Status) (supervisor.Status, bool) {
	for _, s := range svcs {
		if s.Name == "ssh" || s.Kind == "ssh" {
			return s, true
		}
	}
	return supervisor.Status{}, false
}

// buildMIPS builds the VM's /init and roostd for a MIPS router without an
// FPU, stripped as a router's build is, and returns them.
func buildMIPS(t *testing.T) (initBin, roostdBin []byte) {
	t.Helper()
	dir := t.TempDir()
	for _, b := range []struct{ out, pkg string }{
		{"init", "./itest/vm/cmd/mipsinit"},
		{"roostd", "./agent/cmd/roostd"},
	} {
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", filepath.Join(dir, b.out), b.pkg)
		cmd.Dir = ".."
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=mipsle", "GOMIPS=softfloat")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build %s for mipsle: %v\n%s", b.pkg, err, out)
		}
	}
	initBin, err := os.ReadFile(filepath.Join(dir, "init"))
	if err != nil {
		t.Fatal(err)
	}
	roostdBin, err = os.ReadFile(filepath.Join(dir, "roostd"))
	if err != nil {
		t.Fatal(err)
	}
	return initBin, roostdBin
}
