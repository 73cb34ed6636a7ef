// Command lab runs roost's lab: network namespaces for an ISP, the router and
// a LAN host, joined by veth pairs; roostd in the router's namespace with its
// own root and state and an example config; and a rebuild to it with roost
// from the LAN host, where a user's laptop sits.
//
// With --wan dhcp (the default) the ISP runs kea-dhcp4, kea-dhcp6 with
// prefix delegation and router advertisements, the router runs
// docs/rotuer-dhcp.json, and the LAN host gets its addresses from the
// router (busybox udhcpc, SLAAC). With --wan static the router runs
// docs/rotuer.json with fixed addresses.
//
//	lab up   [--dir .lab] [--bin itest/bin] [--wan dhcp|static|pppoe]   make lab [WAN=static]
//	lab down [--dir .lab]                                   make lab-down
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/roostrouter/roost/firewall"
	"github.com/roostrouter/roost/itest/isp"
	"github.com/roostrouter/roost/itest/labnet"
	"github.com/roostrouter/roost/itest/vm"
)

// labNet is the lab's network: namespaces roost-isp, roost-router, roost-lan.
func labNet() *labnet.Net { return labnet.New("roost-") }

const (
	nsRouter = "roost-router"
	nsLAN    = "roost-lan"
)

func main() {
	if len(os.Args) == 3 && os.Args[1] == "isp-ra" {
		// Started by up in the ISP's namespace; stopped by down.
		if err := isp.Advertise(context.Background(), "", os.Args[2], 10*time.Second); err != nil {
			fmt.Fprintln(os.Stderr, "lab isp-ra:", err)
			os.Exit(1)
		}
		select {}
	}
	if len(os.Args) < 2 || (os.Args[1] != "up" && os.Args[1] != "down") {
		fmt.Fprintln(os.Stderr, "usage: lab up|down [--dir .lab] [--bin itest/bin] [--wan dhcp|static|pppoe]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	dir := fs.String("dir", ".lab", "the lab's `folder`: router root, state, laptop home, logs")
	bin := fs.String("bin", "itest/bin", "the `folder` with roostd and roost")
	wan := fs.String("wan", "dhcp", "how the ISP connects the router: `dhcp`, static or pppoe (in the QEMU test bed)")
	fs.Parse(os.Args[2:])
	abs, _ := filepath.Abs(*dir)
	binAbs, _ := filepath.Abs(*bin)
	var err error
	if os.Args[1] == "up" && *wan != "dhcp" && *wan != "static" && *wan != "pppoe" {
		err = fmt.Errorf("--wan %q: want dhcp, static or pppoe", *wan)
	} else if os.Args[1] == "up" && *wan == "pppoe" {
		err = upPPPoE(abs, binAbs)
	} else if os.Args[1] == "up" {
		err = up(abs, binAbs, *wan)
	} else {
		err = down(abs)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "lab:", err)
		os.Exit(1)
	}
}

func up(dir, bin, wan string) error {
	if _, err := os.Stat(filepath.Join(dir, "pids")); err == nil {
		return errors.New("the lab is already up: make lab-down first")
	}
	n := labNet()
	n.DynamicLAN = wan == "dhcp"
	if err := n.Up(); err != nil {
		return err
	}
	pub, err := laptop(dir, "pids", "kea4", "kea6", "nsd")
	if err != nil {
		return err
	}
	example := "docs/rotuer.json"
	if wan == "dhcp" {
		example = "docs/rotuer-dhcp.json"
	}
	b, err := os.ReadFile(example)
	if err != nil {
		return fmt.Errorf("the example config: %w (run from the repository's top folder)", err)
	}
	cfg, err := labConfig(b, pub)
	if err != nil {
		return err
	}
	cfgFile := filepath.Join(dir, "rotuer.json")
	os.WriteFile(cfgFile, cfg, 0o644)
	agent, log, err := roostdCommand(dir, bin, cfgFile)
	if err != nil {
		return err
	}
	if err := detach(dir, "roostd", agent); err != nil {
		return err
	}
	fmt.Println("roostd is running in", nsRouter, "(log:", log.Name()+")", "with", example)
	if err := dnsISP(dir, n); err != nil {
		return err
	}
	if wan == "dhcp" {
		if err := dhcpISP(dir, n, log.Name()); err != nil {
			return err
		}
	}

	if err := labnet.Wait(30*time.Second, 200*time.Millisecond, func() bool {
		return labnet.Reaches(nsLAN, "198.51.100.1")
	}); err != nil {
		return fmt.Errorf("the LAN host cannot reach the ISP through the router: see %s", log.Name())
	}
	fmt.Println("the LAN host reaches the ISP (198.51.100.1) through the router")
	if wan == "dhcp" {
		if err := labnet.Wait(30*time.Second, 200*time.Millisecond, func() bool {
			return labnet.Reaches(nsLAN, "2001:db8:0:1::1")
		}); err != nil {
			return fmt.Errorf("the LAN host cannot reach the ISP over IPv6 through the router: see %s", log.Name())
		}
		fmt.Println("the LAN host reaches the ISP over IPv6 (2001:db8:0:1::1) from its SLAAC address in the delegated prefix")
		addrs, _ := exec.Command("ip", "-n", nsLAN, "-br", "addr", "show", "dev", "eth0").Output()
		fmt.Printf("the LAN host's addresses, from the router (DHCPv4, SLAAC): %s\n", strings.Join(strings.Fields(string(addrs))[2:], " "))
	}
	if err := resolves(wan == "dhcp"); err != nil {
		return fmt.Errorf("%w: see %s", err, log.Name())
	}
	if err := rebuild(dir, bin, cfg); err != nil {
		return err
	}
	status := routerStatus(dir, bin)
	fmt.Printf("\n%s\n", status)
	env := fmt.Sprintf("HOME=%s NIX_REMOTE=%s", filepath.Join(dir, "home"), filepath.Join(dir, "nix"))
	fmt.Printf(`The lab is up. Try:
  ip netns exec %[1]s ping 198.51.100.1                                  # the LAN host, through the router
  ip netns exec %[1]s dig @192.168.1.1 www.isp.example                   # a name, through the router's DNS forwarder
  ip netns exec %[1]s env %[2]s %[3]s/roost status --host rotuer    # roost, from the LAN host
  ip netns exec %[4]s %[3]s/roostd status --root %[5]s/root         # on the router
  make lab-down
`, nsLAN, env, bin, nsRouter, dir)
	return nil
}

// upPPPoE runs the lab with a PPPoE WAN. The host's kernel has no PPP, so
// it boots the QEMU test bed and runs itself there: pppoe-server with CHAP
// at the ISP, roostd with the PPPoE variant of docs/rotuer.json, the LAN
// host reaching the ISP through the session over both families (a prefix
// delegated over it), then a rebuild from the LAN host. The VM powers off
// when it is done, so this lab shows the session and the router's status
// rather than staying up.
func upPPPoE(dir, bin string) error {
	if !vm.Inside() {
		self, err := os.Executable()
		if err != nil {
			return err
		}
		fmt.Println("booting the QEMU test bed (Debian's kernel, software emulation) to run the PPPoE lab in it")
		code, err := vm.Run(context.Background(), vm.Options{
			Command: []string{self, "up", "--dir", dir, "--bin", bin, "--wan", "pppoe"},
			Modules: slices.Concat(isp.PPPoEModules, labnet.KernelModules, firewall.KernelModules),
			Console: os.Stdout,
		})
		if err != nil {
			return err
		}
		if code != 0 {
			return fmt.Errorf("the PPPoE lab failed in the VM (exit %d)", code)
		}
		return nil
	}
	n := labNet()
	if err := n.Up(); err != nil {
		return err
	}
	pub, err := laptop(dir, "isp", "kea6")
	if err != nil {
		return err
	}
	secret := filepath.Join(dir, "state", "pppoe-password")
	os.WriteFile(secret, []byte(isp.PPPoEPassword+"\n"), 0o600)
	example, err := os.ReadFile("docs/rotuer.json")
	if err != nil {
		return fmt.Errorf("the example config: %w (run from the repository's top folder)", err)
	}
	pppoe, err := isp.PPPoEConfig(string(example), secret)
	if err != nil {
		return err
	}
	cfg, err := labConfig([]byte(pppoe), pub)
	if err != nil {
		return err
	}
	cfgFile := filepath.Join(dir, "rotuer-pppoe.json")
	os.WriteFile(cfgFile, cfg, 0o644)
	srv, err := isp.StartPPPoEServer(n.ISP, filepath.Join(dir, "isp"))
	if err != nil {
		return err
	}
	defer srv.Stop()
	agent, log, err := roostdCommand(dir, bin, cfgFile)
	if err != nil {
		return err
	}
	if err := agent.Start(); err != nil {
		return err
	}
	defer func() { agent.Process.Signal(syscall.SIGTERM); agent.Wait() }()
	fmt.Println("roostd is running with the PPPoE variant of docs/rotuer.json; pppoe-server (CHAP) is the ISP")
	fail := func(what string) error {
		b, _ := os.ReadFile(log.Name())
		return fmt.Errorf("%s; roostd's log:\n%s", what, b)
	}
	if err := labnet.Wait(60*time.Second, 200*time.Millisecond, func() bool {
		routes, _ := exec.Command("ip", "-n", nsRouter, "route", "show", "default").Output()
		return strings.Contains(string(routes), "dev ppp0") &&
			labnet.Reaches(nsLAN, "198.51.100.1")
	}); err != nil {
		return fail("the LAN host cannot reach the ISP through the PPPoE session")
	}
	fmt.Println("the LAN host reaches the ISP (198.51.100.1) through ppp0 and NAT")

	// The ISP delegates a prefix over the session, as a BNG would.
	if err := labnet.WaitLinkLocal(n.ISP, "ppp0", 10*time.Second); err != nil {
		return fail("the ISP's end of the session has no IPv6")
	}
	if err := isp.PlainLinkLocal(n.ISP, "ppp0"); err != nil {
		return err
	}
	k6, err := isp.StartKea(filepath.Join(dir, "kea6"), n.ISP, "kea-dhcp6", isp.Kea6ConfigOn("ppp0", isp.Lab, "2001:db8:100::"), false)
	if err != nil {
		return err
	}
	defer k6.Stop()
	if err := isp.RouteDelegations(n.ISP, "ppp0", labnet.DelegationPool); err != nil {
		return err
	}
	if err := labnet.Wait(60*time.Second, 200*time.Millisecond, func() bool {
		return labnet.Reaches(nsLAN, "2001:db8:0:1::1")
	}); err != nil {
		return fail("the LAN host cannot reach the ISP over IPv6 through the PPPoE session")
	}
	fmt.Println("the LAN host reaches the ISP over IPv6 (2001:db8:0:1::1) through ppp0, from its address in the prefix delegated over it")
	if err := rebuild(dir, bin, cfg); err != nil {
		return err
	}
	routes, _ := exec.Command("ip", "-n", nsRouter, "route").CombinedOutput()
	routes6, _ := exec.Command("ip", "-n", nsRouter, "-6", "route", "show", "default").CombinedOutput()
	status := routerStatus(dir, bin)
	fmt.Printf("\nthe router's routes:\n%s%s\n%s\nThe PPPoE lab ran in the VM, which powers off now.\n", routes, routes6, status)
	return nil
}

// roostdCommand is roostd in the router's namespace with the lab's root,
// state and config, its output to dir/roostd.log.
func roostdCommand(dir, bin, config string) (*exec.Cmd, *os.File, error) {
	log, err := os.Create(filepath.Join(dir, "roostd.log"))
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.Command("ip", labnet.In(nsRouter, filepath.Join(bin, "roostd"), "run", "--root", filepath.Join(dir, "root"),
		"--state", filepath.Join(dir, "state"), "--config", config)[1:]...)
	cmd.Stdout, cmd.Stderr = log, log
	return cmd, log, nil
}

// routerStatus is what roostd status prints on the router.
func routerStatus(dir, bin string) []byte {
	out, _ := exec.Command("ip", labnet.In(nsRouter, filepath.Join(bin, "roostd"), "status", "--root", filepath.Join(dir, "root"))[1:]...).CombinedOutput()
	return out
}

// detach starts cmd in its own session, so that it outlives make lab, and
// records its pid for down.
func detach(dir, name string, cmd *exec.Cmd) error {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	return os.WriteFile(filepath.Join(dir, "pids", name), []byte(strconv.Itoa(cmd.Process.Pid)), 0o644)
}

// dhcpISP starts the ISP's DHCP servers and router advertisements, and
// the LAN host's DHCP client.
func dhcpISP(dir string, n *labnet.Net, roostdLog string) error {
	if err := labnet.WaitLinkLocal(n.ISP, "isp0", 10*time.Second); err != nil {
		return fmt.Errorf("the ISP's isp0 has no link-local address: is the router's wan up? see %s", roostdLog)
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
	fmt.Println("the ISP runs kea-dhcp4, kea-dhcp6 (delegating /56s) and router advertisements (logs:", filepath.Join(dir, "kea4"), filepath.Join(dir, "kea6")+")")

	script, err := labnet.UdhcpcScript(dir)
	if err != nil {
		return err
	}
	udhcpc := exec.Command("ip", labnet.In(n.LAN, "/bin/busybox", "udhcpc", "-i", "eth0", "-f", "-t", "30", "-T", "1", "-s", script, "-x", "hostname:"+lanHostname)[1:]...)
	out, err := os.Create(filepath.Join(dir, "udhcpc.log"))
	if err != nil {
		return err
	}
	udhcpc.Stdout, udhcpc.Stderr = out, out
	if err := detach(dir, "udhcpc", udhcpc); err != nil {
		return err
	}
	if err := labnet.Wait(30*time.Second, 200*time.Millisecond, func() bool {
		b, _ := os.ReadFile(out.Name())
		return strings.Contains(string(b), "obtained")
	}); err != nil {
		return fmt.Errorf("the LAN host got no DHCP lease from the router: see %s and %s", out.Name(), roostdLog)
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
	if err := os.WriteFile(filepath.Join(dir, "pids", "nsd"), []byte(strconv.Itoa(s.Pid())), 0o644); err != nil {
		return err
	}
	fmt.Println("the ISP runs nsd with the zone isp.example on", isp.DNS1, "and", isp.DNS1v6, "(log:", filepath.Join(dir, "nsd")+")")
	return nil
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
	fmt.Printf("the LAN host resolves www.isp.example through the router's DNS forwarder: %s (dig @192.168.1.1)\n", www)
	if !dhcp {
		return nil
	}
	name := lanHostname + ".home.arpa"
	var addr string
	if err := labnet.Wait(10*time.Second, 200*time.Millisecond, func() bool { addr = digLAN(name); return addr != "" }); err != nil {
		return fmt.Errorf("the router does not resolve the LAN host's name %s", name)
	}
	fmt.Printf("and its own name from its DHCP lease: %s is %s, and %s is %s\n", name, addr, addr, digLAN("-x", addr))
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

// rebuild builds a system holding the lab config with the laptop's real
// Nix, and puts it on the router with roost from the LAN host.
func rebuild(dir, bin string, cfg []byte) error {
	expr := filepath.Join(dir, "system.nix")
	os.WriteFile(expr, []byte(`{ config }:
derivation {
  name = "rotuer-system";
  system = builtins.currentSystem;
  builder = "/bin/busybox";
  args = [ "sh" "-c" ''
    /bin/busybox mkdir -p $out/etc/roost
    /bin/busybox cp ${builtins.toFile "config.json" config} $out/etc/roost/config.json
  '' ];
}
`), 0o644)
	nixDir := filepath.Join(dir, "nix")
	nixEnv := []string{"NIX_REMOTE=" + nixDir, "HOME=" + filepath.Join(dir, "home"),
		"NIX_CONFIG=sandbox-paths = /bin/busybox\nbuild-users-group =\nsubstituters =\n"}
	build := exec.Command("nix-build", "--no-out-link", expr, "--argstr", "config", string(cfg))
	build.Env = append(os.Environ(), nixEnv...)
	out, err := build.Output()
	if err != nil {
		return fmt.Errorf("nix-build of the lab system: %w", err)
	}
	system := strings.TrimSpace(string(out))
	fmt.Println("built", system, "with nix-build")
	cmd := exec.Command("ip", labnet.In(nsLAN, "env", nixEnv[0], nixEnv[1], filepath.Join(bin, "roost"), "rebuild", "--host", "rotuer", "--system", system, "--accept-new-host-key")[1:]...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("roost rebuild from the LAN host: %w", err)
	}
	return nil
}

func down(dir string) error {
	pids, _ := os.ReadDir(filepath.Join(dir, "pids"))
	for _, p := range pids {
		b, err := os.ReadFile(filepath.Join(dir, "pids", p.Name()))
		if err != nil {
			continue
		}
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 1 {
			syscall.Kill(pid, syscall.SIGTERM)
			labnet.Wait(5*time.Second, 200*time.Millisecond, func() bool { return syscall.Kill(pid, 0) != nil })
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	labNet().Down()
	// The router's store is read-only, as on a router: make it writable to remove.
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.IsDir() {
			os.Chmod(p, 0o700)
		}
		return nil
	})
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	fmt.Println("the lab is down")
	return nil
}
