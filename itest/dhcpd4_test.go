package itest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"

	"github.com/roostrouter/roost/itest/labnet"
)

func loadMAC(i int) net.HardwareAddr {
	return net.HardwareAddr{0x02, 0x1d, 0, byte(i >> 16), byte(i >> 8), byte(i)}
}

// runHelper plays a part when the test binary is re-executed inside a
// namespace, and returns the exit status.
func runHelper(name string) int {
	switch name {
	case "dhcp-load":
		dhcpLoadClients()
		return 0
	case "hostile-lan", "hostile-isp":
		send := hostileLAN
		if name == "hostile-isp" {
			send = hostileISP
		}
		if err := send(); err != nil {
			fmt.Fprintln(os.Stderr, name+":", err)
			return 1
		}
		return 0
	}
	fmt.Fprintln(os.Stderr, "unknown helper", name)
	return 2
}

// dhcpLoadClients plays ROOST_HELPER_N DHCP clients on eth0 and prints
// "mac ip" lines.
func dhcpLoadClients() {
	from, _ := strconv.Atoi(os.Getenv("ROOST_HELPER_FROM"))
	n, _ := strconv.Atoi(os.Getenv("ROOST_HELPER_N"))
	var mu sync.Mutex
	var wg sync.WaitGroup
	work := make(chan int)
	for w := 0; w < 20; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				c, err := nclient4.New("eth0", nclient4.WithHWAddr(loadMAC(i)), nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(5))
				if err != nil {
					fmt.Printf("%s error %v\n", loadMAC(i), err)
					continue
				}
				l, err := c.Request(context.Background())
				c.Close()
				mu.Lock()
				if err != nil {
					fmt.Printf("%s error %v\n", loadMAC(i), err)
				} else {
					fmt.Printf("%s %s\n", loadMAC(i), l.ACK.YourIPAddr)
				}
				mu.Unlock()
			}
		}()
	}
	for i := from; i < from+n; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
}

// dhcpLoad runs n clients from index from in the LAN namespace and returns
// each MAC's address.
func dhcpLoad(t *testing.T, ns string, from, n int) map[string]string {
	t.Helper()
	exe, _ := os.Executable()
	cmd := exec.Command("ip", "netns", "exec", ns, exe)
	cmd.Env = append(os.Environ(), "ROOST_HELPER=dhcp-load", fmt.Sprintf("ROOST_HELPER_FROM=%d", from), fmt.Sprintf("ROOST_HELPER_N=%d", n))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("load generator: %v\n%s", err, out)
	}
	got := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && strings.Count(f[0], ":") == 5 {
			got[f[0]] = f[1]
		} else if len(f) > 2 && f[1] == "error" {
			t.Errorf("client %s got no lease: %s", f[0], line)
		}
	}
	return got
}

func TestDHCP4Server(t *testing.T) {
	need(t, "/bin/busybox")
	// The LAN host's MAC gets a static lease.
	n := labnet.New(fmt.Sprintf("rd%d-", os.Getpid()%100000))
	if err := n.Up(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Down)
	macOut := mustRun(t, nil, "ip", "-n", n.LAN, "-br", "link", "show", "eth0")
	hostMAC := strings.Fields(macOut)[2]
	cfg := strings.Replace(string(exampleConfig(t)), `"forwarding":`, fmt.Sprintf(`"lan-pool": { "kind": "address", "link": "lan", "address": "10.99.0.1/20" },
    "lan-dhcp": { "kind": "dhcp4-server", "link": "lan", "address": "lan-pool",
      "pool": { "start": "10.99.0.10", "end": "10.99.15.200" }, "leaseTime": "1h", "domain": "home.arpa",
      "static": [ { "mac": %q, "address": "10.99.0.77" } ] },
    "forwarding":`, hostMAC), 1)
	a := &agentLab{t: t, net: n, root: t.TempDir(), state: t.TempDir(), config: filepath.Join(t.TempDir(), "config.json")}
	os.WriteFile(a.config, []byte(cfg), 0o644)
	a.start()
	t.Cleanup(a.stop)
	a.waitServices("up", allUp)

	// A real client, busybox udhcpc, on the LAN host.
	r := run(t, nil, nil, "ip", labnet.In(n.LAN, "/bin/busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-f", "-t", "5", "-T", "1", "-s", "/bin/true")[1:]...)
	if !strings.Contains(r.stdout+r.stderr, "lease of 10.99.0.77 obtained") {
		t.Fatalf("udhcpc on the LAN host:\n%s%s", r.stdout, r.stderr)
	}

	// 1,000 simulated clients get 1,000 distinct addresses.
	got := dhcpLoad(t, n.LAN, 0, 1000)
	seen := map[string]string{}
	for mac, ip := range got {
		if other, dup := seen[ip]; dup {
			t.Fatalf("%s went to %s and %s", ip, other, mac)
		}
		if ip == "10.99.0.77" {
			t.Fatalf("the static address went to %s", mac)
		}
		seen[ip] = mac
	}
	if len(got) != 1000 {
		t.Fatalf("%d of 1,000 clients got an address", len(got))
	}

	// The lease database survives kill -9: the same hosts get the same
	// addresses back.
	a.kill9()
	a.start()
	a.waitServices("up again", allUp)
	again := dhcpLoad(t, n.LAN, 0, 20)
	for mac, ip := range again {
		if got[mac] != ip {
			t.Errorf("after kill -9, %s got %s, had %s", mac, ip, got[mac])
		}
	}
	if len(again) != 20 {
		t.Fatalf("%d of 20 clients got an address after the restart", len(again))
	}
}
