package itest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/roostrouter/roost/itest/labnet"
)

// The router's DHCPv4 server (dhcp/dhcpd4) with the LAN clients of Debian:
// ISC dhclient, dhcpcd and busybox udhcpc, each on a host of its own
// behind a switch on the router's lan0.

// lanClientsConfig is a LAN with a one-minute lease (the shortest the
// config takes), so that the hosts renew at T1, 30 s in.
const lanClientsConfig = `{
  "board": "lab",
  "services": {
    "lan": { "kind": "bridge", "name": "br-lan" },
    "lan0": { "kind": "link", "interface": "lan0", "bridge": "lan" },
    "lan-addr": { "kind": "address", "link": "lan", "address": "192.168.1.1/24" },
    "lan-dhcp": { "kind": "dhcp4-server", "link": "lan", "address": "lan-addr",
      "pool": { "start": "192.168.1.100", "end": "192.168.1.199" }, "leaseTime": "1m", "domain": "home.arpa" },
    "firewall": { "kind": "firewall", "zones": { "wan": { "interfaces": ["wan"] }, "lan": { "services": ["lan"] } } }
  }
}`

// lanClient is a DHCP client on a LAN host: start runs it in the host's
// namespace ns on eth0 with its files in dir, and returns a func that
// makes it give its lease back and stop.
type lanClient struct {
	name  string
	tools []string
	start func(t *testing.T, ns, dir string) (release func())
}

var lanClients = []lanClient{
	{"dhclient", []string{"dhclient"}, startDhclient},
	{"dhcpcd", []string{"dhcpcd", "unshare"}, startDhcpcd},
	{"udhcpc", []string{"/bin/busybox"}, startUdhcpc},
}

// daemon starts a client that runs until stopped, its output in dir/log.
func daemon(t *testing.T, dir string, args ...string) *exec.Cmd {
	t.Helper()
	log, err := os.Create(filepath.Join(dir, "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			// SIGTERM first: dhcpcd takes its privilege-separated helpers
			// down with it, and leaves them running on SIGKILL.
			stopWith(t, cmd, syscall.SIGTERM)
		}
	})
	return cmd
}

// stopWith signals cmd and waits, for at most 10 s, for it to exit.
func stopWith(t *testing.T, cmd *exec.Cmd, sig syscall.Signal) {
	t.Helper()
	cmd.Process.Signal(sig)
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Errorf("%v did not exit on %v", cmd.Args, sig)
		cmd.Process.Kill()
		<-done
	}
}

// dhclientScript configures the lease on the interface and nothing else:
// Debian's dhclient-script would write the host's /etc/resolv.conf.
const dhclientScript = `#!/bin/sh
case "$reason" in
PREINIT)
	ip link set dev "$interface" up ;;
BOUND|RENEW|REBIND|REBOOT)
	ip -4 addr replace "$new_ip_address/$new_subnet_mask" dev "$interface" \
		valid_lft "$new_dhcp_lease_time" preferred_lft "$new_dhcp_lease_time" ;;
EXPIRE|FAIL|RELEASE|STOP)
	[ -n "$old_ip_address" ] && ip -4 addr del "$old_ip_address/$old_subnet_mask" dev "$interface" ;;
esac
exit 0
`

// startDhclient runs ISC dhclient in the foreground with a private script,
// config, lease and pid file; dhclient -r releases and stops it.
func startDhclient(t *testing.T, ns, dir string) func() {
	script := filepath.Join(dir, "dhclient-script")
	if err := os.WriteFile(script, []byte(dhclientScript), 0o755); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "dhclient.conf")
	os.WriteFile(conf, []byte("request subnet-mask, routers, domain-name-servers, domain-name;\n"), 0o644)
	files := []string{"-sf", script, "-cf", conf, "-lf", filepath.Join(dir, "dhclient.leases"), "-pf", filepath.Join(dir, "dhclient.pid")}
	cmd := daemon(t, dir, labnet.In(ns, append(append([]string{"dhclient", "-4", "-d", "-v"}, files...), "eth0")...)...)
	return func() {
		r := run(t, nil, nil, "ip", labnet.In(ns, append(append([]string{"dhclient", "-4", "-r", "-v"}, files...), "eth0")...)[1:]...)
		if r.code != 0 {
			t.Errorf("dhclient -r: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		stopWith(t, cmd, syscall.SIGTERM)
	}
}

// startDhcpcd runs dhcpcd in the foreground, IPv4 only, with no hook
// scripts, in a private mount and UTS namespace (its /run, /var/lib,
// /etc/resolv.conf and hostname are its own: nothing it writes reaches the
// host's). Its config says to release on the way out.
func startDhcpcd(t *testing.T, ns, dir string) func() {
	conf := filepath.Join(dir, "dhcpcd.conf")
	os.WriteFile(conf, []byte(`allowinterfaces eth0
script /bin/true
nohook resolv.conf, hostname, ntp
ipv4only
noarp
release
`), 0o644)
	resolv := filepath.Join(dir, "resolv.conf")
	os.WriteFile(resolv, nil, 0o644)
	cmd := daemon(t, dir, labnet.In(ns, "unshare", "-m", "-u", "sh", "-c",
		"mount -t tmpfs none /run && mount -t tmpfs none /var/lib && mount --bind "+resolv+" /etc/resolv.conf && "+
			"mkdir -p /run/dhcpcd /var/lib/dhcpcd && exec dhcpcd -4 -B -d -f "+conf+" eth0")...)
	return func() { stopWith(t, cmd, syscall.SIGTERM) }
}

// startUdhcpc runs busybox udhcpc in the foreground with the lab's script;
// -R: it releases on SIGTERM.
func startUdhcpc(t *testing.T, ns, dir string) func() {
	script, err := labnet.UdhcpcScript(dir)
	if err != nil {
		t.Fatal(err)
	}
	cmd := daemon(t, dir, labnet.In(ns, "/bin/busybox", "udhcpc", "-i", "eth0", "-f", "-R", "-t", "20", "-T", "1", "-A", "1", "-s", script)...)
	return func() { stopWith(t, cmd, syscall.SIGTERM) }
}

// dbLease is a line of the router's lease database.
type dbLease struct {
	MAC      string    `json:"mac"`
	IP       string    `json:"ip"`
	Expires  time.Time `json:"expires"`
	Released bool      `json:"released"`
}

// leaseLog is every line of the router's lease database for mac, in order.
func leaseLog(t *testing.T, file, mac string) []dbLease {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []dbLease
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var l dbLease
		if json.Unmarshal(sc.Bytes(), &l) == nil && l.MAC == mac {
			out = append(out, l)
		}
	}
	return out
}

// TestDHCP4ServerLANClients: each client gets a lease from the router on
// a host of its own, configures it and reaches the router; renews it at
// T1 with a unicast to the router (counted at the router's input), which
// the router ACKs (a later expiry in its lease database) before the lease
// ends; and gives it back when stopped (the database says released).
func TestDHCP4ServerLANClients(t *testing.T) {
	need(t, "ip", "ping", "nft")
	prefix := fmt.Sprintf("rc%d-", os.Getpid()%100000)
	n := labnet.New(prefix)
	n.DynamicLAN = true
	if err := n.Up(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Down)
	// A host of its own for each client, behind a switch on lan0: the
	// lab's LAN namespace, its eth0 and the hosts' links bridged.
	mustRun(t, nil, "ip", "-n", n.LAN, "link", "add", "sw", "type", "bridge")
	mustRun(t, nil, "ip", "-n", n.LAN, "link", "set", "eth0", "master", "sw")
	mustRun(t, nil, "ip", "-n", n.LAN, "link", "set", "sw", "up")
	var counters strings.Builder
	for i := range lanClients {
		ns, port, mac := fmt.Sprintf("%sh%d", prefix, i+2), fmt.Sprintf("h%d", i+2), fmt.Sprintf("02:00:00:00:01:%02x", i+2)
		exec.Command("ip", "netns", "del", ns).Run()
		for _, args := range [][]string{
			{"netns", "add", ns},
			{"-n", ns, "link", "set", "lo", "up"},
			{"-n", ns, "link", "add", "eth0", "address", mac, "type", "veth", "peer", "name", port, "netns", n.LAN},
			{"-n", ns, "link", "set", "eth0", "up"},
			{"-n", n.LAN, "link", "set", port, "master", "sw", "up"},
		} {
			mustRun(t, nil, "ip", args...)
		}
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
		fmt.Fprintf(&counters, "\tcounter unicast_%d {}\n", i+2)
	}
	// Requests to the router's own address, by the host's MAC: a
	// broadcast (INIT, REBINDING) is not one.
	rules := ""
	for i := range lanClients {
		rules += fmt.Sprintf("\t\tether saddr 02:00:00:00:01:%02x ip daddr 192.168.1.1 udp sport 68 udp dport 67 counter name unicast_%d\n", i+2, i+2)
	}
	nft(t, n.Router, "table ip itest {\n"+counters.String()+"\tchain in {\n\t\ttype filter hook input priority -10; policy accept;\n"+rules+"\t}\n}\n")
	a := startAgentLabOn(t, n, []byte(lanClientsConfig), nil)
	a.waitServices("up", allUp)
	db := filepath.Join(a.state, "dhcpd4-br-lan.leases")
	t.Cleanup(func() {
		if b, err := os.ReadFile(db); err == nil {
			t.Logf("the router's lease database:\n%s", b)
		}
	})

	// Address → the client that holds it. The clients run two at a time
	// (go test's -parallel): a third may get an address released before.
	var holders sync.Map
	t.Run("clients", func(t *testing.T) {
		for i, c := range lanClients {
			ns, mac := fmt.Sprintf("%sh%d", prefix, i+2), fmt.Sprintf("02:00:00:00:01:%02x", i+2)
			counter := fmt.Sprintf("unicast_%d", i+2)
			t.Run(c.name, func(t *testing.T) {
				t.Parallel()
				need(t, c.tools...)
				dir := t.TempDir()
				release := c.start(t, ns, dir)
				clientLog := func() string { b, _ := os.ReadFile(filepath.Join(dir, "log")); return string(b) }

				// A lease, on the host's eth0, and the router reachable.
				var got dbLease
				var addrs string
				if labnet.Wait(20*time.Second, 200*time.Millisecond, func() bool {
					ls := leaseLog(t, db, mac)
					if len(ls) == 0 {
						return false
					}
					got = ls[len(ls)-1]
					addrs = mustRun(t, nil, "ip", "-n", ns, "-4", "addr", "show", "dev", "eth0")
					return strings.Contains(addrs, got.IP+"/24")
				}) != nil {
					t.Fatalf("%s got no lease on eth0 (router's database: %+v):\n%s\n%s\nthe router's links:\n%s", c.name, got, addrs, clientLog(),
						mustRun(t, nil, "ip", "-n", n.Router, "-br", "link"))
				}
				leased := time.Now()
				if !strings.HasPrefix(got.IP, "192.168.1.1") {
					t.Fatalf("%s got %s, outside the pool", c.name, got.IP)
				}
				if other, dup := holders.LoadOrStore(got.IP, c.name); dup {
					t.Fatalf("%s got %s, which %s holds", c.name, got.IP, other)
				}
				if !labnet.Reaches(ns, "192.168.1.1") {
					t.Fatalf("%s's host does not reach the router from %s", c.name, got.IP)
				}
				unicasts := nftCounter(t, n.Router, counter)

				// The renewal at T1 (30 s; dhclient picks 22.5 to 30 s),
				// unicast, ACKed before the lease ends.
				var renewed dbLease
				if labnet.Wait(time.Until(got.Expires), 200*time.Millisecond, func() bool {
					ls := leaseLog(t, db, mac)
					renewed = ls[len(ls)-1]
					return renewed.Expires.After(got.Expires.Add(time.Second)) && !renewed.Released
				}) != nil {
					t.Fatalf("%s did not renew before its lease ended at %v:\n%s", c.name, got.Expires, clientLog())
				}
				if renewed.IP != got.IP {
					t.Fatalf("%s renewed %s into %s", c.name, got.IP, renewed.IP)
				}
				if after := nftCounter(t, n.Router, counter); after <= unicasts {
					t.Fatalf("%s renewed without a unicast to the router (%d unicast requests before, %d after):\n%s", c.name, unicasts, after, clientLog())
				}
				t.Logf("%s: lease %s, renewed by unicast %v after it was granted", c.name, got.IP, time.Since(leased).Round(100*time.Millisecond))
				if addrs := mustRun(t, nil, "ip", "-n", ns, "-4", "addr", "show", "dev", "eth0"); !strings.Contains(addrs, got.IP+"/24") {
					t.Fatalf("%s lost %s after the renewal:\n%s", c.name, got.IP, addrs)
				}

				// Given back.
				release()
				if labnet.Wait(10*time.Second, 200*time.Millisecond, func() bool {
					ls := leaseLog(t, db, mac)
					return ls[len(ls)-1].Released && ls[len(ls)-1].IP == got.IP
				}) != nil {
					t.Fatalf("the router's database does not show %s released by %s: %+v\n%s", got.IP, c.name, leaseLog(t, db, mac), clientLog())
				}
				holders.Delete(got.IP)
			})
		}
	})
}
