// Command lab runs roost's lab: network namespaces for an ISP, the router and
// a LAN host, joined by veth pairs; roostd in the router's namespace with its
// own root and state and the example config (docs/rotuer.json); and a
// rebuild to it with roost from the LAN host, where a user's laptop sits.
//
//	lab up   [--dir .lab] [--bin bin]   make lab
//	lab down [--dir .lab]               make lab-down
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/roostrouter/roost/itest/labnet"
)

// labNet is the lab's network: namespaces roost-isp, roost-router, roost-lan.
func labNet() *labnet.Net { return labnet.New("roost-") }

const (
	nsRouter = "roost-router"
	nsLAN    = "roost-lan"
)

func main() {
	if len(os.Args) < 2 || (os.Args[1] != "up" && os.Args[1] != "down") {
		fmt.Fprintln(os.Stderr, "usage: lab up|down [--dir .lab] [--bin bin]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	dir := fs.String("dir", ".lab", "the lab's `folder`: router root, state, laptop home, logs")
	bin := fs.String("bin", "bin", "the `folder` with roostd and roost")
	fs.Parse(os.Args[2:])
	abs, _ := filepath.Abs(*dir)
	binAbs, _ := filepath.Abs(*bin)
	var err error
	if os.Args[1] == "up" {
		err = up(abs, binAbs)
	} else {
		err = down(abs)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "lab:", err)
		os.Exit(1)
	}
}

func sh(args ...string) error {
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func in(ns string, args ...string) []string {
	return append([]string{"ip", "netns", "exec", ns}, args...)
}

func up(dir, bin string) error {
	if _, err := os.Stat(filepath.Join(dir, "roostd.pid")); err == nil {
		return errors.New("the lab is already up: make lab-down first")
	}
	if err := labNet().Up(); err != nil {
		return err
	}
	for _, d := range []string{"root", "state", "home/.ssh"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			return err
		}
	}
	// The laptop's key, allowed in by the bootstrap authorized_keys.
	key := filepath.Join(dir, "home/.ssh/id_ed25519")
	if _, err := os.Stat(key); err != nil {
		if err := sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "lab-laptop", "-f", key); err != nil {
			return err
		}
	}
	pub, _ := os.ReadFile(key + ".pub")
	os.WriteFile(filepath.Join(dir, "state/authorized_keys"), pub, 0o600)
	os.WriteFile(filepath.Join(dir, "home/.ssh/config"), []byte("Host rotuer\n  HostName 192.168.1.1\n  User root\n"), 0o600)

	cfg, err := labConfig(strings.TrimSpace(string(pub)))
	if err != nil {
		return err
	}
	cfgFile := filepath.Join(dir, "rotuer.json")
	os.WriteFile(cfgFile, cfg, 0o644)
	log, err := os.Create(filepath.Join(dir, "roostd.log"))
	if err != nil {
		return err
	}
	agent := exec.Command("ip", in(nsRouter, filepath.Join(bin, "roostd"), "run", "--root", filepath.Join(dir, "root"), "--state", filepath.Join(dir, "state"), "--config", cfgFile)[1:]...)
	agent.Stdout, agent.Stderr = log, log
	agent.SysProcAttr = &syscall.SysProcAttr{Setsid: true} // it outlives make lab
	if err := agent.Start(); err != nil {
		return err
	}
	os.WriteFile(filepath.Join(dir, "roostd.pid"), []byte(strconv.Itoa(agent.Process.Pid)), 0o644)
	fmt.Println("roostd is running in", nsRouter, "(log:", log.Name()+")")

	if err := waitFor(30*time.Second, func() bool { return sh(in(nsLAN, "ping", "-c", "1", "-W", "1", "198.51.100.1")...) == nil }); err != nil {
		return fmt.Errorf("the LAN host cannot reach the ISP through the router: see %s", log.Name())
	}
	fmt.Println("the LAN host reaches the ISP (198.51.100.1) through the router")
	if err := rebuild(dir, bin, cfg); err != nil {
		return err
	}
	status, _ := exec.Command("ip", in(nsRouter, filepath.Join(bin, "roostd"), "status", "--root", filepath.Join(dir, "root"))[1:]...).CombinedOutput()
	fmt.Printf("\n%s\n", status)
	env := fmt.Sprintf("HOME=%s NIX_REMOTE=%s", filepath.Join(dir, "home"), filepath.Join(dir, "nix"))
	fmt.Printf(`The lab is up. Try:
  ip netns exec %[1]s ping 198.51.100.1                                  # the LAN host, through the router
  ip netns exec %[1]s env %[2]s %[3]s/roost status --host rotuer    # roost, from the LAN host
  ip netns exec %[4]s %[3]s/roostd status --root %[5]s/root         # on the router
  make lab-down
`, nsLAN, env, bin, nsRouter, dir)
	return nil
}

// labConfig is docs/rotuer.json with the lab laptop's key.
func labConfig(pub string) ([]byte, error) {
	b, err := os.ReadFile("docs/rotuer.json")
	if err != nil {
		return nil, fmt.Errorf("the example config: %w (run from the repository's top folder)", err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(b, &cfg); err != nil {
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
	cmd := exec.Command("ip", in(nsLAN, "env", nixEnv[0], nixEnv[1], filepath.Join(bin, "roost"), "rebuild", "--host", "rotuer", "--system", system, "--accept-new-host-key")[1:]...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("roost rebuild from the LAN host: %w", err)
	}
	return nil
}

func waitFor(d time.Duration, ok func() bool) error {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if ok() {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return errors.New("timed out")
}

func down(dir string) error {
	if b, err := os.ReadFile(filepath.Join(dir, "roostd.pid")); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			syscall.Kill(pid, syscall.SIGTERM)
			waitFor(5*time.Second, func() bool { return syscall.Kill(pid, 0) != nil })
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
