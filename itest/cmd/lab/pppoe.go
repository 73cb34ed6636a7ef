package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/roostrouter/roost/agent/handover"
	"github.com/roostrouter/roost/firewall"
	"github.com/roostrouter/roost/itest/isp"
	"github.com/roostrouter/roost/itest/labnet"
	"github.com/roostrouter/roost/itest/vm"
)

// upPPPoE runs the lab with a PPPoE WAN. The host's kernel has no PPP, so
// it boots the QEMU test bed and runs itself there: pppoe-server with CHAP
// at the ISP, roostd with the PPPoE variant of docs/rotuer.json, the LAN
// host reaching the ISP through the session over both families (a prefix
// delegated over it), then a rebuild from the LAN host. The VM powers off
// when it is done, so this lab shows the session and the router's status
// rather than staying up.
func (l *lab) upPPPoE() error {
	dir, bin := l.dir, l.bin
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
	// The system the library builds of this config: roostd runs its
	// config and roostd, which the rebuild then brings again. (A config
	// that differs only in its JSON's layout would restart every service:
	// the agent compares a service's JSON text.)
	cfgFile := filepath.Join(dir, "rotuer-pppoe.json")
	os.WriteFile(cfgFile, cfg, 0o644)
	if err := l.writeSystemNix(pub, systemArgs{}, cfgFile); err != nil {
		return err
	}
	sys, err := l.buildSystem()
	if err != nil {
		return err
	}
	srv, err := isp.StartPPPoEServer(n.ISP, filepath.Join(dir, "isp"))
	if err != nil {
		return err
	}
	defer srv.Stop()
	roostd, err := handover.Resolve(l.path("nix"), sys+"/bin/roostd")
	if err != nil {
		return err
	}
	agent, log, err := roostdCommand(dir, roostd, filepath.Join(l.physical(sys), "etc/roost/config.json"))
	if err != nil {
		return err
	}
	if err := agent.Start(); err != nil {
		return err
	}
	defer func() { agent.Process.Signal(syscall.SIGTERM); agent.Wait() }()
	fmt.Println("roostd runs the PPPoE variant of docs/rotuer.json, built by roost.lib.mkSystem; pppoe-server (CHAP) is the ISP")
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
	if err := l.rebuild(); err != nil {
		return err
	}
	routes, _ := exec.Command("ip", "-n", nsRouter, "route").CombinedOutput()
	routes6, _ := exec.Command("ip", "-n", nsRouter, "-6", "route", "show", "default").CombinedOutput()
	fmt.Printf("\nthe router's routes:\n%s%s\nThe PPPoE lab ran in the VM, which powers off now.\n", routes, routes6)
	return nil
}
