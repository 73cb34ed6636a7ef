package itest

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/roostrouter/roost/itest/labnet"
)

// serveHTTP runs busybox httpd in ns on port, serving a page and a CGI
// script that prints the client's address.
func serveHTTP(t *testing.T, ns, port, page string) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "cgi-bin"), 0o755)
	os.WriteFile(filepath.Join(dir, "index.html"), []byte(page), 0o644)
	os.WriteFile(filepath.Join(dir, "cgi-bin/ip"), []byte("#!/bin/sh\necho Content-Type: text/plain\necho\necho $REMOTE_ADDR\n"), 0o755)
	cmd := exec.Command("ip", labnet.In(ns, "/bin/busybox", "httpd", "-f", "-p", port, "-h", dir)[1:]...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	time.Sleep(100 * time.Millisecond)
}

// fetch gets url from inside ns with busybox wget. Addresses that busybox
// httpd prints as [::ffff:a.b.c.d] or [v6] come back plain.
func fetch(t *testing.T, ns, url string) (string, bool) {
	r := run(t, nil, nil, "ip", labnet.In(ns, "/bin/busybox", "timeout", "3", "/bin/busybox", "wget", "-q", "-O", "-", url)[1:]...)
	out := strings.TrimSpace(r.stdout)
	out = strings.TrimPrefix(strings.TrimSuffix(strings.TrimPrefix(out, "["), "]"), "::ffff:")
	return out, r.code == 0
}

// openPorts scans target from ns with nmap and returns the open ports.
func openPorts(t *testing.T, ns string, args ...string) []string {
	t.Helper()
	out := mustRun(t, nil, "ip", labnet.In(ns, append([]string{"nmap", "-n", "-Pn", "-oG", "-", "--max-retries", "1", "--min-rate", "20000", "-T5"}, args...)...)[1:]...)
	var open []string
	for _, m := range regexp.MustCompile(`(\d+)/open/`).FindAllStringSubmatch(out, -1) {
		open = append(open, m[1])
	}
	sort.Strings(open)
	return open
}

func TestFirewall(t *testing.T) {
	need(t, "nmap", "nft", "/bin/busybox")
	a := startAgentLab(t, exampleConfig(t))
	// Another tool's table, which roost must never touch.
	mustRun(t, nil, "ip", labnet.In(a.net.Router, "nft", "add table inet tailscale; add chain inet tailscale c; add rule inet tailscale c counter")[1:]...)
	a.waitServices("up", allUp)
	serveHTTP(t, a.net.LAN, "80", "lan server")
	serveHTTP(t, a.net.ISP, "80", "isp server")

	// Scans from the WAN find only what the config opens: the forward of
	// 8080 to the LAN server on IPv4, port 80 of the LAN host on IPv6.
	if got := openPorts(t, a.net.ISP, "-sS", "-p-", "192.0.2.2"); strings.Join(got, ",") != "8080" {
		t.Errorf("TCP ports open on the router's WAN address: %v, want [8080]", got)
	}
	if got := openPorts(t, a.net.ISP, "-6", "-sS", "-p-", "2001:db8:0:1::2"); len(got) != 0 {
		t.Errorf("TCP ports open on the router's WAN IPv6 address: %v", got)
	}
	if got := openPorts(t, a.net.ISP, "-6", "-sS", "-p-", "fd00:1::100"); strings.Join(got, ",") != "80" {
		t.Errorf("TCP ports open on the LAN host's IPv6 address: %v, want [80]", got)
	}
	if got := openPorts(t, a.net.ISP, "-sU", "--top-ports", "100", "192.0.2.2"); len(got) != 0 {
		t.Errorf("UDP ports answering on the WAN: %v", got)
	}

	// A reload that changes the rules keeps the drop counters, which the
	// scans just filled.
	dropped := counterPackets(t, a.net.Router, "input_drop")
	if dropped == 0 {
		t.Fatal("the scans were not counted in input_drop")
	}
	withRule := strings.Replace(string(exampleConfig(t)), `"allow6": [`,
		`"rules": [ { "chain": "input", "from": "lan", "proto": "udp", "port": 123, "verdict": "accept" } ],
      "allow6": [`, 1)
	os.WriteFile(a.config, []byte(withRule), 0o644)
	a.cmd.Process.Signal(syscall.SIGHUP)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if strings.Count(a.log.String(), "firewall rules applied") == 2 {
			break
		}
	}
	ruleset := mustRun(t, nil, "ip", labnet.In(a.net.Router, "nft", "list", "table", "inet", "roost")[1:]...)
	if !strings.Contains(ruleset, "iifname @zone_lan udp dport 123 accept") {
		t.Fatalf("the reloaded rule is not in the ruleset:\n%s", ruleset)
	}
	if after := counterPackets(t, a.net.Router, "input_drop"); after < dropped {
		t.Errorf("input_drop went from %d to %d across a reload", dropped, after)
	}
	os.WriteFile(a.config, exampleConfig(t), 0o644)
	a.cmd.Process.Signal(syscall.SIGHUP)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if strings.Count(a.log.String(), "firewall rules applied") == 3 {
			break
		}
	}

	// LAN to WAN: IPv4 masqueraded, IPv6 routed; replies come back.
	if ip, ok := fetch(t, a.net.LAN, "http://198.51.100.1/cgi-bin/ip"); !ok || ip != "192.0.2.2" {
		t.Errorf("the ISP saw the LAN host as %q (ok %v), want the router's 192.0.2.2", ip, ok)
	}
	if ip, ok := fetch(t, a.net.LAN, "http://[2001:db8:0:1::1]/cgi-bin/ip"); !ok || ip != "fd00:1::100" {
		t.Errorf("over IPv6 the ISP saw the LAN host as %q (ok %v), want fd00:1::100", ip, ok)
	}
	// The port forward, from the WAN and by hairpin from the LAN.
	if page, ok := fetch(t, a.net.ISP, "http://192.0.2.2:8080/"); !ok || page != "lan server" {
		t.Errorf("port forward from the WAN: %q, %v", page, ok)
	}
	// Hairpin: another LAN host (on the spare port) reaches the server by
	// the router's public address.
	lan2 := a.net.LAN + "2"
	mustRun(t, nil, "ip", "netns", "add", lan2)
	defer exec.Command("ip", "netns", "del", lan2).Run()
	for _, args := range [][]string{
		{"-n", a.net.LAN, "link", "set", "spare", "netns", lan2},
		{"-n", lan2, "addr", "add", "192.168.1.101/24", "dev", "spare"},
		{"-n", lan2, "link", "set", "spare", "up"},
		{"-n", lan2, "route", "add", "default", "via", "192.168.1.1"},
	} {
		mustRun(t, nil, "ip", args...)
	}
	var page string
	var ok bool
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline) && page != "lan server"; {
		page, ok = fetch(t, lan2, "http://192.0.2.2:8080/")
	}
	if !ok || page != "lan server" {
		t.Errorf("port forward by hairpin from another LAN host: %q, %v", page, ok)
	}

	// An interface that appears later (ppp0, in the wan zone by name) is
	// filtered at once; the same port on the LAN side is open.
	mustRun(t, nil, "ip", "-n", a.net.ISP, "link", "add", "isp1", "type", "veth", "peer", "name", "ppp0", "netns", a.net.Router)
	mustRun(t, nil, "ip", "-n", a.net.ISP, "addr", "add", "203.0.113.1/24", "dev", "isp1")
	mustRun(t, nil, "ip", "-n", a.net.ISP, "link", "set", "isp1", "up")
	mustRun(t, nil, "ip", "-n", a.net.Router, "addr", "add", "203.0.113.2/24", "dev", "ppp0")
	mustRun(t, nil, "ip", "-n", a.net.Router, "link", "set", "ppp0", "up")
	if got := openPorts(t, a.net.ISP, "-sS", "-p", "1-1024", "203.0.113.2"); len(got) != 0 {
		t.Errorf("ports open through the late ppp0: %v", got)
	}
	if got := openPorts(t, a.net.LAN, "-sS", "-p", "22", "192.168.1.1"); strings.Join(got, ",") != "22" {
		t.Errorf("SSH from the LAN: %v", got)
	}

	// The live ruleset, as nft reads it, matches the golden file.
	a.checkNftGolden(t)
	show := mustRun(t, nil, "ip", labnet.In(a.net.Router, roostd, "firewall", "show")[1:]...)
	for _, want := range []string{"chain input {", "policy drop;", "counter input_drop {", `elements = { "ppp0", "wan" }`, "dnat ip to tcp dport map @forward_tcp", "8080 : 192.168.1.100 . 80"} {
		if !strings.Contains(show, want) {
			t.Errorf("roostd firewall show lacks %q:\n%s", want, show)
		}
	}

	// A restart rewrites nothing (rule handles stay); kill -9 leaves the
	// ruleset in place; the other tool's table is still there.
	before := mustRun(t, nil, "ip", labnet.In(a.net.Router, "nft", "-a", "list", "table", "inet", "roost")[1:]...)
	a.kill9()
	if after := mustRun(t, nil, "ip", labnet.In(a.net.Router, "nft", "-a", "list", "table", "inet", "roost")[1:]...); !strings.Contains(after, "policy drop") {
		t.Fatalf("after kill -9 the ruleset is gone:\n%s", after)
	}
	a.start()
	a.waitServices("up again", allUp)
	after := mustRun(t, nil, "ip", labnet.In(a.net.Router, "nft", "-a", "list", "table", "inet", "roost")[1:]...)
	if stripCounters(after) != stripCounters(before) {
		t.Errorf("a restart rewrote the ruleset:\n%s", after)
	}
	if strings.Contains(a.log.String(), "firewall rules applied") {
		t.Errorf("the restarted roostd applied the rules again")
	}
	if _, ok := fetch(t, a.net.ISP, "http://192.0.2.2:8080/"); !ok {
		t.Error("the port forward broke across the restart")
	}
	if out := mustRun(t, nil, "ip", labnet.In(a.net.Router, "nft", "list", "table", "inet", "tailscale")[1:]...); !strings.Contains(out, "counter") {
		t.Errorf("another table was changed:\n%s", out)
	}

	// A clean stop and start, as a hand-over to a new roostd is: the
	// outputs are gone meanwhile, yet no zone loses a member while the
	// links name themselves again (a LAN host's new connection would be
	// dropped). nft monitor watches.
	a.stop()
	monitor := exec.Command("ip", labnet.In(a.net.Router, "stdbuf", "-oL", "nft", "monitor", "elements")[1:]...) // line-buffered: it is killed
	var events bytes.Buffer
	monitor.Stdout = &events
	if err := monitor.Start(); err != nil {
		t.Fatal(err)
	}
	a.start()
	a.waitServices("up after a clean stop", allUp)
	monitor.Process.Kill()
	monitor.Wait()
	if strings.Contains(events.String(), "delete element") {
		t.Errorf("the restart took zone members out:\n%s", events.String())
	}
}

var counterRE = regexp.MustCompile(`packets \d+ bytes \d+`)

// counterPackets reads a named counter of roost's table.
func counterPackets(t *testing.T, ns, name string) int {
	out := mustRun(t, nil, "ip", labnet.In(ns, "nft", "list", "counter", "inet", "roost", name)[1:]...)
	m := regexp.MustCompile(`packets (\d+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("counter %s: %s", name, out)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

func stripCounters(s string) string { return counterRE.ReplaceAllString(s, "packets N bytes N") }

// checkNftGolden compares nft -j list table inet roost, with handles and
// counter values removed, to testdata/rotuer-nft.golden.
func (a *agentLab) checkNftGolden(t *testing.T) {
	t.Helper()
	out := mustRun(t, nil, "ip", labnet.In(a.net.Router, "nft", "-j", "list", "table", "inet", "roost")[1:]...)
	var v any
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatal(err)
	}
	got := string(must(json.MarshalIndent(dropKeys(v, "handle", "packets", "bytes"), "", " "))) + "\n"
	golden := "testdata/rotuer-nft.golden"
	if *update {
		os.WriteFile(golden, []byte(got), 0o644)
		return
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (go test ./itest -run TestFirewall -update writes it)", err)
	}
	if got != string(want) {
		t.Errorf("nft -j differs from %s:\n%s", golden, lineDiff(string(want), got))
	}
}

func dropKeys(v any, keys ...string) any {
	switch x := v.(type) {
	case []any:
		for i := range x {
			x[i] = dropKeys(x[i], keys...)
		}
	case map[string]any:
		for _, k := range keys {
			delete(x, k)
		}
		for k := range x {
			x[k] = dropKeys(x[k], keys...)
		}
	}
	return v
}
