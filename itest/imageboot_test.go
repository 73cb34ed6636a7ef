package itest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/roostrouter/roost/itest/vm"
)

// mipsSystemExpr is a qemu-mipsel system from roost.lib.mkSystem, with
// prebuilt inputs: modules is a list of module files, one a line, in load
// order.
const mipsSystemExpr = `
{ repo, config, roostd, checker, kernel, initrd, modules, name }:
let words = s: sep: builtins.filter (w: builtins.isString w && w != "") (builtins.split sep s); in
(import (/. + repo + "/nix") { }).mkSystem {
  board = "qemu-mipsel";
  inherit roostd checker kernel initrd name;
  config = builtins.fromJSON config;
  modules = words modules "\n";
  kernelParams = [ "panic=-1" "quiet" ];
}
`

// mipsImageLab is the MIPS router VM booting from its flash: a system
// for qemu-mipsel built by the Nix library in the laptop's store, its
// squashfs image from roost image in slot image-a, and the laptop's
// ~/.ssh/config naming the VM's forwarded SSH port "rotuer". Other tests
// build more systems and images with buildSystem and makeImage.
type mipsImageLab struct {
	t       *testing.T
	lap     *laptop
	agent   string // roostd for mipsle, the systems' bin/roostd
	in      *vm.NixInputs
	system  string // the first system's store path
	image   string // its squashfs
	bytes   uint64 // the image's size
	cmdline string // the first system's kernel parameters
	router  *vm.MIPSRouter
}

// buildMIPSRouterRoostd builds roostd for the MIPS router (mipsle without
// an FPU), stripped as a router's build is.
func buildMIPSRouterRoostd(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "roostd")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, "github.com/roostrouter/roost/agent/cmd/roostd")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=mipsle", "GOMIPS=softfloat")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build roostd for mipsle: %v\n%s", err, b)
	}
	return out
}

// newMIPSImageLab builds the first system and its image.
func newMIPSImageLab(t *testing.T) *mipsImageLab {
	needMIPS(t)
	need(t, "mksquashfs", "nix-build", "ssh", "ssh-keygen", "/bin/busybox")
	l := &mipsImageLab{t: t, lap: newLaptop(t), agent: buildMIPSRouterRoostd(t)}
	in, err := vm.WriteMIPSNixInputs(t.TempDir(), l.agent)
	if err != nil {
		t.Fatal(err)
	}
	l.in = in
	l.system = l.buildSystem("roost-system-malta", l.config(), l.agent)
	cmdline, err := os.ReadFile(filepath.Join(l.lap.nix.physical(l.system), "cmdline"))
	if err != nil {
		t.Fatal(err)
	}
	l.cmdline = strings.TrimSpace(string(cmdline))
	l.image, l.bytes = l.makeImage(l.system)
	return l
}

// buildSystem builds a qemu-mipsel system called name with config, agent
// (a mipsle roostd) as its bin/roostd, and the lab's kernel, initrd and
// modules; the roostd under test checks the config.
func (l *mipsImageLab) buildSystem(name string, config []byte, agent string) string {
	l.t.Helper()
	return l.lap.nix.build(mipsSystemExpr, "repo", repoRoot(l.t), "config", string(config), "roostd", agent, "checker", roostd,
		"kernel", l.in.Kernel, "initrd", l.in.Initrd, "modules", strings.Join(l.in.Modules, "\n"), "name", name)
}

// makeImage makes sys's squashfs image with roost image, and says its size.
func (l *mipsImageLab) makeImage(sys string) (file string, size uint64) {
	l.t.Helper()
	file = filepath.Join(l.t.TempDir(), "malta.squashfs")
	var res imageJSON
	mustJSON(l.t, "roost image --json", l.lap.mustRoost("image", "--board", vm.MIPSBoard, "--system", sys, "-o", file, "--json"), &res)
	if res.Kind != "squashfs" || res.Partition != "image-a" {
		l.t.Fatalf("roost image: %+v, want a squashfs for slot image-a", res)
	}
	return file, res.Bytes
}

// config is the router's config: the WAN on QEMU's user network, and SSH
// on port 22 for the laptop's key.
func (l *mipsImageLab) config() []byte {
	return []byte(fmt.Sprintf(`{
  "hostname": "malta",
  "board": "qemu-mipsel",
  "ssh": { "listen": [":22"], "authorizedKeys": [%q] },
  "services": {
    "wan": { "kind": "link", "interface": "wan" },
    "wan-addr": { "kind": "address", "link": "wan", "address": "10.0.2.15/24" },
    "default": { "kind": "route", "link": "wan", "destination": "0.0.0.0/0", "gateway": "10.0.2.2", "after": ["wan-addr"] }
  }
}`, l.lap.key))
}

// boot makes the flash (the image in image-a) and starts the VM on it.
func (l *mipsImageLab) boot() *vm.MIPSRouter {
	flash, err := vm.MakeMIPSFlash(l.t.TempDir(), l.image)
	if err != nil {
		l.t.Fatal(err)
	}
	c := newTimedConsole()
	r, err := vm.StartMIPSRouter(vm.MIPSRouterOptions{Kernel: l.in.Kernel, Initrd: l.in.Initrd, Cmdline: l.cmdline, Flash: flash, Console: c})
	if err != nil {
		l.t.Fatal(err)
	}
	l.router = r
	l.t.Cleanup(func() {
		r.Close()
		if l.t.Failed() || os.Getenv("ROOST_SHOW_CONSOLE") != "" {
			l.t.Logf("the MIPS router's console:\n%s", c.String())
		}
	})
	l.lap.sshConfig(fmt.Sprint(r.SSHPort()))
	return r
}

// mipsStatus is what roost status --json says of the MIPS router.
type mipsStatus struct {
	vmStatus
	Slot *struct {
		Slot, Device string
		Trial        bool
		Chosen       string
	} `json:"slot"`
}

// waitStatus waits for roost status to answer over the forwarded port,
// after the boot whose console lines start at from: agent ready, then
// SSH (its host key known after the first answer).
func (l *mipsImageLab) waitStatus(from int) (mipsStatus, time.Duration) {
	l.t.Helper()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	line, _, err := l.router.Console().WaitFor(ctx, "agent ready", from)
	if err != nil {
		l.t.Fatal(err)
	}
	l.t.Logf("init: %s", line[strings.Index(line, "msg="):])
	// Before the endpoint listens, QEMU's forwarding takes the connection
	// and the guest resets it: roost would wait for a handshake.
	if _, _, err := l.router.Console().WaitFor(ctx, "ssh listening", from); err != nil {
		l.t.Fatal(err)
	}
	var st mipsStatus
	var last result
	for ctx.Err() == nil {
		last = l.lap.roost("status", "--host", "rotuer", "--json", "--accept-new-host-key")
		if last.code == 0 {
			mustJSON(l.t, "roost status --json", last.stdout, &st)
			return st, time.Since(start)
		}
		time.Sleep(time.Second)
	}
	l.t.Fatalf("roost status: exit %d\n%s%s", last.code, last.stdout, last.stderr)
	return st, 0
}

var memAvailable = regexp.MustCompile(`memAvailableKiB=(\d+)`)

// TestImageBootInMIPSVM: the qemu-mipsel board boots as an image router:
// roostd init makes its three flash disks MTD devices (block2mtd), mounts
// the data partition (erased: an empty jffs2) on /persist and the image
// slot updater/slots chooses (image-a, never written slots.json) as
// squashfs on /storage, and the agent runs from the read-only store. roost
// status, over QEMU's port forwarded to the router's SSH, says generation
// 1 runs from slot image-a; after a power cut (QEMU killed) the next boot
// says the same, and the SSH host key, on the data partition, is the same.
// roost gc finds nothing to collect in the read-only store; roostd
// poweroff ends QEMU after init unmounted the data partition.
func TestImageBootInMIPSVM(t *testing.T) {
	l := newMIPSImageLab(t)
	t.Logf("the image: %d bytes (%.1f MiB) of slot image-a's 16 MiB", l.bytes, float64(l.bytes)/(1<<20))
	r := l.boot()
	check := func(what string, from int) {
		t.Helper()
		st, took := l.waitStatus(from)
		if st.Generation != 1 || st.Current != l.system || st.Booted != l.system || st.Slot == nil || st.Slot.Slot != "image-a" || st.Slot.Trial || st.Slot.Chosen != "" {
			t.Fatalf("%s: roost status says %+v, slot %+v; want generation 1 (%s) from slot image-a", what, st.vmStatus, st.Slot, l.system)
		}
		for _, s := range st.Services {
			if s.State != "up" {
				t.Errorf("%s: service %s is %s (%s)", what, s.Name, s.State, s.LastError)
			}
		}
		mem := "?"
		if l, _, ok := r.Console().Find("agent ready", from); ok {
			if m := memAvailable.FindStringSubmatch(l); m != nil {
				mem = m[1]
			}
		}
		t.Logf("%s: generation %d from slot %s (%s), roost status answered %.1f s after the VM started; MemAvailable when the agent was ready: %s KiB",
			what, st.Generation, st.Slot.Slot, st.Slot.Device, took.Seconds(), mem)
	}
	check("first boot", 0)
	// The store is the image's squashfs, read-only: gc has nothing to do.
	if res := l.lap.roost("gc", "--host", "rotuer"); res.code != 0 || !strings.Contains(res.stdout, "read-only: nothing to collect") || !strings.Contains(res.stdout, "0 store paths deleted") {
		t.Errorf("roost gc on the read-only store: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	known, err := os.ReadFile(filepath.Join(l.lap.home, ".ssh/known_hosts"))
	if err != nil {
		t.Fatal(err)
	}

	from := r.Console().Mark()
	if err := r.Restart(nil); err != nil {
		t.Fatal(err)
	}
	check("after a power cut", from)
	// The host key is the data partition's: known_hosts took no new one
	// (roost refuses a changed key).
	if again, _ := os.ReadFile(filepath.Join(l.lap.home, ".ssh/known_hosts")); string(again) != string(known) {
		t.Errorf("known_hosts changed across the power cut:\n%s\nthen\n%s", known, again)
	}

	from = r.Console().Mark()
	l.powerOff()
	for _, want := range []string{"unmounted from=init path=/persist", "system down: poweroff"} {
		if _, _, ok := r.Console().Find(want, from); !ok {
			t.Errorf("the clean power off did not say %q", want)
		}
	}
}

// powerOff powers the router off cleanly (roostd poweroff over OpenSSH)
// and waits for QEMU to end.
func (l *mipsImageLab) powerOff() {
	l.t.Helper()
	// 255: the connection closed before ssh saw the command's exit.
	if res := l.lap.openssh("", nil, "rotuer", "roostd", "poweroff"); res.code != 0 && res.code != 255 {
		l.t.Fatalf("ssh rotuer roostd poweroff: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	if err := l.router.Wait(2 * time.Minute); err != nil {
		l.t.Fatalf("after roostd poweroff: %v", err)
	}
}
