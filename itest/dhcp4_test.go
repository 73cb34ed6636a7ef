package itest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/roostrouter/roost/itest/isp"
)

// startKea starts binary in ns with config (where %[1]s stands for its
// folder), for as long as the test runs.
func startKea(t *testing.T, ns, binary, config string) *isp.Kea {
	need(t, binary)
	k, err := isp.StartKea(t.TempDir(), ns, binary, config, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		k.Stop()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(k.Dir, "log"))
			log, _ := os.ReadFile(filepath.Join(k.Dir, "kea.log"))
			b = append(b, log...)
			lines := strings.Split(strings.TrimSpace(string(b)), "\n")
			t.Logf("%s's log, last lines:\n%s", binary, strings.Join(lines[max(0, len(lines)-40):], "\n"))
		}
	})
	return k
}

// restart starts a stopped kea again.
func restart(t *testing.T, k *isp.Kea) {
	t.Helper()
	if err := k.Start(); err != nil {
		t.Fatal(err)
	}
}

// startKea4 serves the lab's ISP side with short IPv4 leases.
func startKea4(t *testing.T, ns string) *isp.Kea {
	return startKea(t, ns, "kea-dhcp4", isp.Kea4Config(isp.Short4))
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
	for k.Count("DHCP4_LEASE_ALLOC") < 2 && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	if n := k.Count("DHCP4_LEASE_ALLOC"); n < 2 {
		t.Fatalf("kea saw %d allocations, want the first and a renewal", n)
	}
	// A restarted roostd adopts the lease: no new DISCOVER.
	discovers := k.Count("DHCP4_LEASE_ADVERT")
	a.kill9()
	a.start()
	a.waitServices("up again", func(s map[string]serviceStatus) bool {
		return s["wan-dhcp"].State == "up" && s["default"].State == "up"
	})
	time.Sleep(time.Second)
	if n := k.Count("DHCP4_LEASE_ADVERT"); n != discovers {
		t.Fatalf("the restarted roostd sent a DISCOVER (%d offers, were %d)", n, discovers)
	}
	// The server goes away past expiry (12 s): the address and the route go.
	k.Stop()
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
	restart(t, k)
	a.waitServices("leased again", func(s map[string]serviceStatus) bool {
		return s["wan-dhcp"].State == "up" && s["default"].State == "up"
	})
	if routes := mustRun(t, nil, "ip", "-n", a.net.Router, "route"); !strings.Contains(routes, "default via 192.0.2.1 dev wan") {
		t.Fatalf("no default route after the server came back:\n%s", routes)
	}
}
