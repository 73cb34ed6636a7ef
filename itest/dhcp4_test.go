package itest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/roostrouter/roost/itest/labnet"
)

// kea is a kea server (kea-dhcp4 or kea-dhcp6) in a namespace, with its
// config, lease file and log in a folder of the test's.
type kea struct {
	t      *testing.T
	dir    string
	ns     string
	binary string
	cmd    *exec.Cmd
	exited chan struct{}
}

// startKea writes config (where %[1]s stands for kea's folder) and starts
// binary in ns; it fails the test if kea exits at once.
func startKea(t *testing.T, ns, binary, config string) *kea {
	need(t, binary)
	k := &kea{t: t, dir: t.TempDir(), ns: ns, binary: binary}
	os.WriteFile(filepath.Join(k.dir, "kea.json"), []byte(fmt.Sprintf(config, k.dir)), 0o644)
	k.start()
	t.Cleanup(k.stop)
	return k
}

func (k *kea) start() {
	k.cmd = exec.Command("ip", labnet.In(k.ns, k.binary, "-c", filepath.Join(k.dir, "kea.json"))[1:]...)
	k.cmd.Env = append(os.Environ(), "KEA_PIDFILE_DIR="+k.dir, "KEA_LOCKFILE_DIR="+k.dir)
	out, _ := os.Create(filepath.Join(k.dir, "stdout"))
	k.cmd.Stdout, k.cmd.Stderr = out, out
	if err := k.cmd.Start(); err != nil {
		k.t.Fatal(err)
	}
	k.exited = make(chan struct{})
	go func(cmd *exec.Cmd, exited chan struct{}) { cmd.Wait(); close(exited) }(k.cmd, k.exited)
	select {
	case <-k.exited:
		b, _ := os.ReadFile(filepath.Join(k.dir, "stdout"))
		k.t.Fatalf("%s exited:\n%s", k.binary, b)
	case <-time.After(time.Second):
	}
}

func (k *kea) stop() {
	if k.cmd != nil && k.cmd.Process != nil {
		k.cmd.Process.Kill()
		<-k.exited
		k.cmd = nil
	}
}

func (k *kea) count(msg string) int {
	b, _ := os.ReadFile(filepath.Join(k.dir, "kea.log"))
	return strings.Count(string(b), msg)
}

// startKea4 serves the lab's ISP side with short IPv4 leases.
func startKea4(t *testing.T, ns string) *kea {
	return startKea(t, ns, "kea-dhcp4", `{"Dhcp4": {
  "interfaces-config": {"interfaces": ["isp0"], "dhcp-socket-type": "raw"},
  "lease-database": {"type": "memfile", "persist": true, "name": "%[1]s/leases4.csv", "lfc-interval": 0},
  "valid-lifetime": 12, "renew-timer": 4, "rebind-timer": 8,
  "subnet4": [{"subnet": "192.0.2.0/24", "pools": [{"pool": "192.0.2.100 - 192.0.2.150"}],
    "option-data": [{"name": "routers", "data": "192.0.2.1"}, {"name": "domain-name-servers", "data": "192.0.2.53"},
      {"name": "domain-name", "data": "isp.example"}]}],
  "loggers": [{"name": "kea-dhcp4", "output_options": [{"output": "%[1]s/kea.log"}], "severity": "INFO"}]
}}`)
}

const dhcpWANConfig = `{
  "board": "lab",
  "services": {
    "wan": { "kind": "link", "interface": "wan" },
    "wan-dhcp": { "kind": "dhcp4-client", "link": "wan", "hostname": "rotuer" },
    "default": { "kind": "route", "link": "wan", "destination": "0.0.0.0/0", "gateway": { "service": "wan-dhcp", "output": "router" } }
  }
}`

// TestDHCP4Client: the router's WAN address from kea, renewed, kept across
// a roostd restart without a new DISCOVER, lost when the server is gone
// past expiry, and back when it returns.
func TestDHCP4Client(t *testing.T) {
	a := startAgentLab(t, []byte(dhcpWANConfig))
	k := startKea4(t, a.net.ISP)
	s := a.waitServices("leased", func(s map[string]serviceStatus) bool {
		return s["wan-dhcp"].State == "up" && s["default"].State == "up"
	})
	addr := s["wan-dhcp"].Outputs["address"]
	if !strings.HasPrefix(addr, "192.0.2.1") || s["wan-dhcp"].Outputs["router"] != "192.0.2.1" || s["wan-dhcp"].Outputs["dns"] != "192.0.2.53" || s["wan-dhcp"].Outputs["domain"] != "isp.example" {
		t.Fatalf("dhcp outputs: %v", s["wan-dhcp"].Outputs)
	}
	routes := mustRun(t, nil, "ip", "-n", a.net.Router, "route")
	if !strings.Contains(routes, "default via 192.0.2.1 dev wan") || !strings.Contains(mustRun(t, nil, "ip", "-n", a.net.Router, "addr", "show", "dev", "wan"), addr+"/24") {
		t.Fatalf("kernel state after the lease:\n%s", routes)
	}
	// A renewal reaches kea (renew-timer 4 s).
	deadline := time.Now().Add(10 * time.Second)
	for k.count("DHCP4_LEASE_ALLOC") < 2 && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	if n := k.count("DHCP4_LEASE_ALLOC"); n < 2 {
		t.Fatalf("kea saw %d allocations, want the first and a renewal", n)
	}
	// A restarted roostd adopts the lease: no new DISCOVER.
	discovers := k.count("DHCP4_LEASE_ADVERT")
	a.kill9()
	a.start()
	a.waitServices("up again", func(s map[string]serviceStatus) bool {
		return s["wan-dhcp"].State == "up" && s["default"].State == "up"
	})
	time.Sleep(time.Second)
	if n := k.count("DHCP4_LEASE_ADVERT"); n != discovers {
		t.Fatalf("the restarted roostd sent a DISCOVER (%d offers, were %d)", n, discovers)
	}
	// The server goes away past expiry (12 s): the address and the route go.
	k.stop()
	deadline = time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if !strings.Contains(mustRun(t, nil, "ip", "-n", a.net.Router, "addr", "show", "dev", "wan"), addr+"/24") {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if out := mustRun(t, nil, "ip", "-n", a.net.Router, "addr", "show", "dev", "wan"); strings.Contains(out, addr+"/24") {
		t.Fatalf("the address stayed after the lease expired:\n%s", out)
	}
	if routes := mustRun(t, nil, "ip", "-n", a.net.Router, "route"); strings.Contains(routes, "default") {
		t.Fatalf("the default route stayed after the lease expired:\n%s", routes)
	}
	a.waitServices("down after expiry", func(s map[string]serviceStatus) bool {
		return s["wan-dhcp"].State != "up" && s["wan-dhcp"].Outputs["address"] == "" && s["default"].State != "up"
	})
	// The server is back: so are the address and the route.
	k.start()
	a.waitServices("leased again", func(s map[string]serviceStatus) bool {
		return s["wan-dhcp"].State == "up" && s["default"].State == "up"
	})
	if routes := mustRun(t, nil, "ip", "-n", a.net.Router, "route"); !strings.Contains(routes, "default via 192.0.2.1 dev wan") {
		t.Fatalf("no default route after the server came back:\n%s", routes)
	}
}
