// Command lab runs roost's lab: network namespaces for an ISP, the router and
// a LAN host, joined by veth pairs; the router; and a rebuild to it with
// roost from the LAN host, where a user's laptop sits.
//
// The router's system comes from roost's Nix library: docs/rotuer.nix,
// built by roost.lib.mkSystem with the roostd in --bin as its prebuilt
// roostd, so every rebuild carries roostd itself. With --router ns (the
// default) the router is roostd in its namespace with its own root and
// state, started on that system's config; with --router vm it is a QEMU
// x86_64 VM booting that system (board qemu-x86_64, Debian's kernel) from
// its own disk, its NICs bridged into the router's namespace.
//
// With --wan dhcp (the default) the ISP runs kea-dhcp4, kea-dhcp6 with
// prefix delegation and router advertisements, the router runs the config
// of docs/rotuer-dhcp.json, and the LAN host gets its addresses from the
// router (busybox udhcpc, SLAAC). With --wan static the router runs
// docs/rotuer.json's, with fixed addresses. --wan pppoe runs in the QEMU
// test bed (the host's kernel has no PPP).
//
// up on a lab that is up rebuilds its router with the roostd in --bin as
// it is now: make lab after an edit to roostd hands the agent over in place.
//
//	lab up   [--dir .lab] [--bin itest/bin] [--wan dhcp|static|pppoe] [--router ns|vm]   make lab [WAN=static] [ROUTER=vm]
//	lab down [--dir .lab]                                                                  make lab-down
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/roostrouter/roost/agent/handover"
	"github.com/roostrouter/roost/itest/isp"
	"github.com/roostrouter/roost/itest/labnet"
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
	if len(os.Args) == 3 && os.Args[1] == "vm-router" {
		// Started by up --router vm, detached; it ends with the VM.
		if err := runVMRouter(os.Args[2]); err != nil {
			fmt.Fprintln(os.Stderr, "lab vm-router:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) < 2 || (os.Args[1] != "up" && os.Args[1] != "down") {
		fmt.Fprintln(os.Stderr, "usage: lab up|down [--dir .lab] [--bin itest/bin] [--wan dhcp|static|pppoe] [--router ns|vm]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	dir := fs.String("dir", ".lab", "the lab's `folder`: router root, state, laptop home, logs")
	bin := fs.String("bin", "itest/bin", "the `folder` with roostd and roost")
	wan := fs.String("wan", "dhcp", "how the ISP connects the router: `dhcp`, static or pppoe (in the QEMU test bed)")
	router := fs.String("router", "ns", "the router: `ns` (roostd in a network namespace) or vm (a QEMU VM booting its own disk)")
	fs.Parse(os.Args[2:])
	abs, _ := filepath.Abs(*dir)
	binAbs, _ := filepath.Abs(*bin)
	l := &lab{dir: abs, bin: binAbs, wan: *wan, router: *router, started: time.Now()}
	var err error
	switch {
	case os.Args[1] == "down":
		err = l.down()
	case *wan != "dhcp" && *wan != "static" && *wan != "pppoe":
		err = fmt.Errorf("--wan %q: want dhcp, static or pppoe", *wan)
	case *router != "ns" && *router != "vm":
		err = fmt.Errorf("--router %q: want ns or vm", *router)
	case *wan == "pppoe" && *router == "vm":
		err = errors.New("--wan pppoe runs roostd in a namespace inside the QEMU test bed: it takes no --router vm (make lab WAN=pppoe)")
	case *wan == "pppoe":
		err = l.upPPPoE()
	default:
		err = l.up()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "lab:", err)
		os.Exit(1)
	}
}

// lab is the lab's folder and what runs in it.
type lab struct {
	dir, bin string
	wan      string // dhcp, static or pppoe
	router   string // ns: roostd in the router's namespace; vm: the QEMU VM
	started  time.Time
	booted   time.Time // when QEMU started (vm)
}

func (l *lab) path(elem ...string) string { return filepath.Join(append([]string{l.dir}, elem...)...) }

// kind is what up records of a lab that came up, so that up again knows
// it is the same lab.
func (l *lab) kind() string { return "ROUTER=" + l.router + " WAN=" + l.wan }

// routerLog is where the router's agent logs: roostd's output, or the
// VM's console.
func (l *lab) routerLog() string {
	if l.router == "vm" {
		return l.path("vm", "console.log")
	}
	return l.path("roostd.log")
}

// rel is p relative to the working folder (the repository's top, where
// make runs), to print short paths.
func rel(p string) string {
	wd, _ := os.Getwd()
	if r, err := filepath.Rel(wd, p); err == nil && !strings.HasPrefix(r, "..") {
		return r
	}
	return p
}

func (l *lab) up() error {
	if kind, err := os.ReadFile(l.path("kind")); err == nil {
		if k := strings.TrimSpace(string(kind)); k != l.kind() {
			return fmt.Errorf("the lab is up with %s: make lab-down first", k)
		}
		fmt.Printf("the lab is up (%s): rebuilding the router with %s as it is now\n", l.kind(), rel(filepath.Join(l.bin, "roostd")))
		return l.rebuild()
	}
	if _, err := os.Stat(l.path("pids")); err == nil {
		return errors.New("the lab is already up, or half up: make lab-down first")
	}
	if l.router == "vm" {
		if err := vmNeeds(); err != nil {
			return err
		}
	}
	n := labNet()
	n.DynamicLAN = l.wan == "dhcp"
	netUp := make(chan error, 1)
	go func() { netUp <- n.Up() }()
	pub, err := laptop(l.dir, "pids", "kea4", "kea6", "nsd")
	if err != nil {
		return err
	}
	sys, err := l.system(pub)
	if err != nil {
		return err
	}
	if err := <-netUp; err != nil {
		return err
	}
	if l.router == "vm" {
		err = l.startVM(n, sys)
	} else {
		err = l.startRoostd(sys)
	}
	if err != nil {
		return err
	}
	if err := l.peers(n); err != nil {
		return err
	}
	if err := l.rebuild(); err != nil {
		return err
	}
	if err := os.WriteFile(l.path("kind"), []byte(l.kind()+"\n"), 0o644); err != nil {
		return err
	}
	l.printTry()
	return nil
}

// peers starts the ISP's servers and the LAN host's DHCP client, and shows
// what the LAN host gets through the router and reaches.
func (l *lab) peers(n *labnet.Net) error {
	if err := dnsISP(l.dir, n); err != nil {
		return err
	}
	if l.wan == "dhcp" {
		if err := ispDHCP(l.dir, n, l.routerLog()); err != nil {
			return err
		}
	} else {
		fmt.Printf("the ISP runs nsd (isp.example; log: %s)\n", rel(l.path("nsd")))
	}
	if l.router == "vm" {
		if err := l.waitAgentReady(); err != nil {
			return err
		}
	}
	if l.wan == "dhcp" {
		if err := lanDHCP(l.dir, n, l.routerLog()); err != nil {
			return err
		}
	}
	if err := l.lanReaches(); err != nil {
		return err
	}
	if err := resolves(l.wan == "dhcp"); err != nil {
		return fmt.Errorf("%w: see %s", err, rel(l.routerLog()))
	}
	return nil
}

// printTry says that the lab is up, and what to try.
func (l *lab) printTry() {
	roost := fmt.Sprintf("ip netns exec %s env %s %s", nsLAN, strings.Join(l.nixEnv(), " "), rel(filepath.Join(l.bin, "roost")))
	onRouter := fmt.Sprintf("ip netns exec %s %s status --root %s   # on the router", nsRouter, rel(filepath.Join(l.bin, "roostd")), rel(l.path("root")))
	again := "make lab"
	if l.router == "vm" {
		onRouter = fmt.Sprintf("less %s   # the VM's console", rel(l.routerLog()))
		again += " ROUTER=vm"
	}
	if l.wan == "static" {
		again += " WAN=static"
	}
	fmt.Printf(`The lab is up (%.1f s). Try:
  ip netns exec %[2]s ping 198.51.100.1                  # the LAN host, through the router
  ip netns exec %[2]s dig @192.168.1.1 www.isp.example   # a name, through the router's DNS forwarder
  %[3]s status --host rotuer
  %[3]s rebuild --host rotuer -f %[4]s   # after editing docs/rotuer.nix
  %[5]s
  %[6]s   # again, after editing roostd: builds it, rebuilds the router with it (handed over in place)
  make lab-down
`, time.Since(l.started).Seconds(), nsLAN, roost, rel(l.path("rotuer.nix")), onRouter, again)
}

// system writes and builds rotuer's system (docs/rotuer.nix through
// .lab/rotuer.nix) and returns its store path.
func (l *lab) system(pub string) (string, error) {
	var args systemArgs
	if l.router == "vm" {
		var err error
		if args, err = l.vmInputs(); err != nil {
			return "", err
		}
	}
	if err := l.writeSystemNix(pub, args, ""); err != nil {
		return "", err
	}
	sys, err := l.buildSystem()
	if err != nil {
		return "", err
	}
	board := "lab"
	if args.board != "" {
		board = args.board + ", Debian's kernel"
	}
	fmt.Printf("built rotuer's system with roost.lib.mkSystem (docs/rotuer.nix, board %s, roostd from %s): %s\n",
		board, rel(l.bin), sys)
	return sys, nil
}

// startRoostd runs the system's roostd in the router's namespace on the
// system's config, as a router's first boot would. It runs the binary in
// the laptop's store rather than the one in --bin, which make build
// replaces: an agent started from a path compares the binary now there,
// not its own, with the next system's.
func (l *lab) startRoostd(sys string) error {
	bin, err := handover.Resolve(l.path("nix"), sys+"/bin/roostd")
	if err != nil {
		return err
	}
	agent, log, err := roostdCommand(l.dir, bin, filepath.Join(l.physical(sys), "etc/roost/config.json"))
	if err != nil {
		return err
	}
	if err := detach(l.dir, "roostd", agent); err != nil {
		return err
	}
	fmt.Printf("roostd (the system's bin/roostd) runs in %s on the system's config (log: %s)\n", nsRouter, rel(log.Name()))
	return nil
}

// lanReaches waits until the LAN host reaches the ISP through the router
// over both families, and says with which addresses.
func (l *lab) lanReaches() error {
	for _, addr := range []string{"198.51.100.1", "2001:db8:0:1::1"} {
		if err := labnet.Wait(30*time.Second, 200*time.Millisecond, func() bool { return labnet.Reaches(nsLAN, addr) }); err != nil {
			return fmt.Errorf("the LAN host cannot reach the ISP's %s through the router: see %s", addr, rel(l.routerLog()))
		}
	}
	if l.wan != "dhcp" {
		fmt.Println("the LAN host (192.168.1.100, fd00:1::100: fixed) reaches the ISP through the router over IPv4 (198.51.100.1) and IPv6 (2001:db8:0:1::1)")
		return nil
	}
	out, _ := exec.Command("ip", "-n", nsLAN, "-br", "addr", "show", "dev", "eth0").Output()
	var v4, v6 string
	for _, a := range strings.Fields(string(out))[2:] {
		switch {
		case strings.Contains(a, "."):
			v4 = a
		case !strings.HasPrefix(a, "fe80:"):
			v6 = a
		}
	}
	fmt.Printf("the LAN host has %s (DHCPv4 from the router) and %s (SLAAC in the prefix kea delegated to the router),\n", v4, v6)
	fmt.Println("  and reaches the ISP through the router over IPv4 (198.51.100.1) and IPv6 (2001:db8:0:1::1)")
	return nil
}

// roostdCommand is roostd (the binary roostd) in the router's namespace
// with the lab's root, state and config, its output to dir/roostd.log.
func roostdCommand(dir, roostd, config string) (*exec.Cmd, *os.File, error) {
	log, err := os.Create(filepath.Join(dir, "roostd.log"))
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.Command("ip", labnet.In(nsRouter, roostd, "run", "--root", filepath.Join(dir, "root"),
		"--state", filepath.Join(dir, "state"), "--config", config)[1:]...)
	cmd.Stdout, cmd.Stderr = log, log
	return cmd, log, nil
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

// pid is the process up recorded as name, if it still runs.
func (l *lab) pid(name string) int {
	b, err := os.ReadFile(l.path("pids", name))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 || syscall.Kill(pid, 0) != nil {
		return 0
	}
	return pid
}

// agentStatus is what roost status --json says of the router's agent.
type agentStatus struct {
	Agent      string `json:"agent"`
	Generation int    `json:"generation"`
	Services   []struct {
		Name  string `json:"name"`
		State string `json:"state"`
	} `json:"services"`
}

// roost runs roost on the LAN host with the lab laptop's home and Nix.
func (l *lab) roost(args ...string) *exec.Cmd {
	env := append([]string{"env"}, l.nixEnv()...)
	return exec.Command("ip", labnet.In(nsLAN, append(append(env, filepath.Join(l.bin, "roost")), args...)...)[1:]...)
}

func (l *lab) agentStatus() (agentStatus, error) {
	var st agentStatus
	out, err := l.roost("status", "--host", "rotuer", "--json", "--accept-new-host-key").Output()
	if err != nil {
		msg := ""
		if e, ok := err.(*exec.ExitError); ok {
			msg = string(e.Stderr)
		}
		return st, fmt.Errorf("roost status --host rotuer from the LAN host: %v: %s(see %s)", err, msg, rel(l.routerLog()))
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return st, fmt.Errorf("roost status --json: %w: %s", err, out)
	}
	return st, nil
}

var (
	handingOver = regexp.MustCompile(`the new system's roostd is another: handing over`)
	tookOver    = regexp.MustCompile(`took over in place from the previous roostd" handover=(\S+)`)
)

// rebuild rebuilds the router from the LAN host as a user would, with
// roost building .lab/rotuer.nix, and says which roostd ran before and
// after: the system brings the roostd in --bin, which the agent hands over
// to in place when it is another binary.
func (l *lab) rebuild() error {
	before, err := l.agentStatus()
	if err != nil {
		return err
	}
	log0, _ := os.ReadFile(l.routerLog())
	fmt.Printf("rebuild from the LAN host: roost rebuild --host rotuer -f %s\n", rel(l.path("rotuer.nix")))
	cmd := l.roost("rebuild", "--host", "rotuer", "-f", l.path("rotuer.nix"))
	cmd.Stdout, cmd.Stderr = indent(os.Stdout), indent(os.Stderr)
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("roost rebuild from the LAN host: %w (see %s)", err, rel(l.routerLog()))
	}
	var took [][]string
	log1, _ := os.ReadFile(l.routerLog())
	if n := len(handingOver.FindAll(log0, -1)); len(handingOver.FindAll(log1, -1)) > n {
		// The rebuild confirmed over a connection the new agent answered:
		// its line is there, or comes in a moment.
		labnet.Wait(10*time.Second, 100*time.Millisecond, func() bool {
			log1, _ = os.ReadFile(l.routerLog())
			took = tookOver.FindAllStringSubmatch(string(log1), -1)
			return len(took) > len(tookOver.FindAll(log0, -1))
		})
	}
	after, err := l.agentStatus()
	if err != nil {
		return err
	}
	if len(took) > len(tookOver.FindAll(log0, -1)) {
		fmt.Printf("the agent before the rebuild: %s; after: %s, handed over in place to the system's roostd (running %s after the old one began)\n",
			before.Agent, after.Agent, took[len(took)-1][1])
	} else {
		fmt.Printf("the agent before and after the rebuild: %s (the system's roostd is the running binary: no hand-over)\n", after.Agent)
		if before.Agent != after.Agent {
			fmt.Printf("  (it was %s before: it restarted)\n", before.Agent)
		}
	}
	var notUp []string
	for _, s := range after.Services {
		if s.State != "up" {
			notUp = append(notUp, s.Name+" "+s.State)
		}
	}
	line := fmt.Sprintf("rotuer runs generation %d: %d of %d services up", after.Generation, len(after.Services)-len(notUp), len(after.Services))
	if len(notUp) > 0 {
		line += " (" + strings.Join(notUp, ", ") + ")"
	}
	fmt.Println(line)
	return nil
}

// indent prefixes every line written to w with two spaces.
func indent(w io.Writer) io.Writer { return &indenter{w: w, start: true} }

type indenter struct {
	w     io.Writer
	start bool
}

func (in *indenter) Write(p []byte) (int, error) {
	var b []byte
	for _, c := range p {
		if in.start {
			b = append(b, ' ', ' ')
		}
		b = append(b, c)
		in.start = c == '\n' || c == '\r'
	}
	if _, err := in.w.Write(b); err != nil {
		return 0, err
	}
	return len(p), nil
}

// down stops what up started (the router VM first, cleanly) and removes
// the namespaces and the lab's folder.
func (l *lab) down() error {
	if pid := l.pid("vm"); pid > 0 {
		l.powerOffVM(pid)
	}
	// Everything else at once: each gets SIGTERM, and SIGKILL if it has
	// not ended 5 s later.
	var pids []int
	entries, _ := os.ReadDir(l.path("pids"))
	for _, e := range entries {
		if pid := l.pid(e.Name()); pid > 0 {
			syscall.Kill(pid, syscall.SIGTERM)
			pids = append(pids, pid)
		}
	}
	labnet.Wait(5*time.Second, 100*time.Millisecond, func() bool {
		for _, pid := range pids {
			if syscall.Kill(pid, 0) == nil {
				return false
			}
		}
		return true
	})
	for _, pid := range pids {
		if syscall.Kill(pid, 0) == nil {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	labNet().Down()
	// The router's store is read-only, as on a router: make it writable to remove.
	filepath.Walk(l.dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.IsDir() {
			os.Chmod(p, 0o700)
		}
		return nil
	})
	if err := os.RemoveAll(l.dir); err != nil {
		return err
	}
	fmt.Println("the lab is down")
	return nil
}
