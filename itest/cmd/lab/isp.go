package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/roostrouter/roost/itest/isp"
	"github.com/roostrouter/roost/itest/labnet"
)

// The lab's peers of the router: the ISP's servers and the LAN host.

// ispDHCP starts the ISP's router advertisements and DHCP servers.
func ispDHCP(dir string, n *labnet.Net, routerLog string) error {
	if err := labnet.WaitLinkLocal(n.ISP, "isp0", 10*time.Second); err != nil {
		return fmt.Errorf("the ISP's isp0 has no link-local address: is the router's wan up? see %s", rel(routerLog))
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if err := detach(dir, "isp-ra", exec.Command("ip", "netns", "exec", n.ISP, self, "isp-ra", "isp0")); err != nil {
		return err
	}
	k4, err := isp.StartKea(filepath.Join(dir, "kea4"), n.ISP, "kea-dhcp4", isp.Kea4Config(isp.Lab), true)
	if err != nil {
		return err
	}
	os.Rename(filepath.Join(k4.Dir, "pid"), filepath.Join(dir, "pids", "kea4"))
	k6, err := isp.StartKea(filepath.Join(dir, "kea6"), n.ISP, "kea-dhcp6", isp.Kea6Config(isp.Lab, "2001:db8:100::"), true)
	if err != nil {
		return err
	}
	os.Rename(filepath.Join(k6.Dir, "pid"), filepath.Join(dir, "pids", "kea6"))
	fmt.Printf("the ISP runs nsd (isp.example), kea-dhcp4, kea-dhcp6 (delegating /56s) and router advertisements (logs: %s)\n",
		rel(filepath.Join(dir, "{nsd,kea4,kea6}")))
	return nil
}

// lanDHCP starts the LAN host's DHCP client and waits for its lease from
// the router.
func lanDHCP(dir string, n *labnet.Net, routerLog string) error {
	script, err := labnet.UdhcpcScript(dir)
	if err != nil {
		return err
	}
	udhcpc := exec.Command("ip", labnet.In(n.LAN, "/bin/busybox", "udhcpc", "-i", "eth0", "-f", "-t", "60", "-T", "1", "-s", script, "-x", "hostname:"+lanHostname)[1:]...)
	out, err := os.Create(filepath.Join(dir, "udhcpc.log"))
	if err != nil {
		return err
	}
	udhcpc.Stdout, udhcpc.Stderr = out, out
	if err := detach(dir, "udhcpc", udhcpc); err != nil {
		return err
	}
	if err := labnet.Wait(60*time.Second, 100*time.Millisecond, func() bool {
		b, _ := os.ReadFile(out.Name())
		return strings.Contains(string(b), "obtained")
	}); err != nil {
		return fmt.Errorf("the LAN host got no DHCP lease from the router: see %s and %s", rel(out.Name()), rel(routerLog))
	}
	return nil
}

// lanHostname is the name the LAN host gives the router's DHCP server,
// and so its name in home.arpa.
const lanHostname = "laptop"

// dnsISP starts the ISP's DNS server, nsd, on the address its DHCP
// servers hand out, serving the test zone isp.example.
func dnsISP(dir string, n *labnet.Net) error {
	s, err := isp.StartNSD(filepath.Join(dir, "nsd"), n.ISP, "isp", isp.DNS1, isp.DNS1v6)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "pids", "nsd"), []byte(strconv.Itoa(s.Pid())), 0o644)
}

// resolves shows the LAN host resolving through the router: a name at
// the ISP, and with a DHCP lease its own name and address both ways.
func resolves(dhcp bool) error {
	digLAN := func(args ...string) string {
		out, _ := exec.Command("ip", labnet.In(nsLAN, append([]string{"dig", "@192.168.1.1", "+short", "+time=1", "+tries=1"}, args...)...)[1:]...).Output()
		var answers []string
		for _, l := range strings.Split(string(out), "\n") {
			if l != "" && !strings.HasPrefix(l, ";") { // not dig's complaints
				answers = append(answers, l)
			}
		}
		return strings.Join(answers, " ")
	}
	var www string
	if err := labnet.Wait(20*time.Second, 200*time.Millisecond, func() bool { www = digLAN("www.isp.example"); return www != "" }); err != nil {
		return errors.New("the LAN host cannot resolve www.isp.example through the router")
	}
	if !dhcp {
		fmt.Printf("the LAN host resolves www.isp.example (%s) through the router's DNS forwarder (dig @192.168.1.1)\n", www)
		return nil
	}
	name := lanHostname + ".home.arpa"
	var addr string
	if err := labnet.Wait(10*time.Second, 200*time.Millisecond, func() bool { addr = digLAN(name); return addr != "" }); err != nil {
		return fmt.Errorf("the router does not resolve the LAN host's name %s", name)
	}
	fmt.Printf("the LAN host resolves through the router's DNS forwarder (dig @192.168.1.1): www.isp.example is %s,\n  and its own name from its DHCP lease: %s is %s, and %s is %s\n",
		www, name, addr, addr, digLAN("-x", addr))
	return nil
}

// laptop makes the lab's folders (root, state, home and the extra ones)
// and the laptop's SSH key and config, and lets the key in through the
// router's bootstrap authorized_keys. It returns the public key.
func laptop(dir string, extra ...string) (string, error) {
	for _, d := range append([]string{"root", "state", "home/.ssh"}, extra...) {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			return "", err
		}
	}
	key := filepath.Join(dir, "home/.ssh/id_ed25519")
	if _, err := os.Stat(key); err != nil {
		if err := labnet.Run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "lab-laptop", "-f", key); err != nil {
			return "", err
		}
	}
	pub, err := os.ReadFile(key + ".pub")
	if err != nil {
		return "", err
	}
	os.WriteFile(filepath.Join(dir, "state/authorized_keys"), pub, 0o600)
	os.WriteFile(filepath.Join(dir, "home/.ssh/config"), []byte("Host rotuer\n  HostName 192.168.1.1\n  User root\n"), 0o600)
	return strings.TrimSpace(string(pub)), nil
}

// labConfig is an example config with the lab laptop's key.
func labConfig(example []byte, pub string) ([]byte, error) {
	var cfg map[string]any
	if err := json.Unmarshal(example, &cfg); err != nil {
		return nil, err
	}
	cfg["ssh"].(map[string]any)["authorizedKeys"] = []string{pub}
	return json.MarshalIndent(cfg, "", "  ")
}
