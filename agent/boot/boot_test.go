package boot

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/roostrouter/roost/boards"
	"github.com/roostrouter/roost/updater/activate"
	"github.com/roostrouter/roost/updater/generations"
	"github.com/roostrouter/roost/updater/storepath"
	"github.com/roostrouter/roost/updater/storetest"
)

// fakeClock jumps to the end of each wait, which it lets pass after a
// moment of real time, so that what is already there (an exit) comes
// first.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	c.now = c.now.Add(d)
	t := c.now
	c.mu.Unlock()
	ch := make(chan time.Time, 1)
	go func() {
		time.Sleep(2 * time.Millisecond)
		ch <- t
	}()
	return ch
}

// fakeSys is the kernel and the processes: it records every call, below
// the root, and plays agents that run until signalled, or exit at once if
// crash says so.
type fakeSys struct {
	root     string
	clock    *fakeClock
	crash    func(argv []string) bool
	busy     map[string]bool  // targets whose unmount is EBUSY
	wd       *fakeWatchdog    // nil: no watchdog device
	kexecErr error            // what reboot(KEXEC) returns
	mountErr map[string]error // by source: what mounting it returns
	// onModule, if set, plays the kernel's part as a module loads: made
	// devices and /proc files, below the root.
	onModule func(name string)

	mu      sync.Mutex
	calls   []string
	pid     int
	running map[int]bool
	exits   chan Exit
	starts  chan start
}

type start struct {
	argv []string
	at   time.Time
}

func newFakeSys(root string, clock *fakeClock) *fakeSys {
	return &fakeSys{root: root, clock: clock, crash: func([]string) bool { return false }, busy: map[string]bool{},
		pid: 100, running: map[int]bool{}, exits: make(chan Exit, 100), starts: make(chan start, 100)}
}

func (f *fakeSys) record(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprintf(format, args...))
}

func (f *fakeSys) rel(p string) string { return strings.TrimPrefix(p, f.root) }

func (f *fakeSys) Mount(source, target, fstype string, flags uintptr, data string) error {
	switch {
	case flags&unix.MS_REMOUNT != 0:
		f.record("remount-ro %s", f.rel(target))
	case flags&unix.MS_BIND != 0:
		f.record("bind %s %s", f.rel(source), f.rel(target))
	default:
		f.record("mount %s %s %s", fstype, source, f.rel(target))
		if err := f.mountErr[source]; err != nil {
			return err
		}
	}
	return nil
}

func (f *fakeSys) Unmount(target string, flags int) error {
	if f.busy[f.rel(target)] && flags == 0 {
		f.record("busy %s", f.rel(target))
		return unix.EBUSY
	}
	f.record("umount %s", f.rel(target))
	return nil
}

func (f *fakeSys) LoadModule(file *os.File, params string, flags int) error {
	f.record("module %s %q %d", filepath.Base(file.Name()), params, flags)
	if f.onModule != nil {
		f.onModule(filepath.Base(file.Name()))
	}
	return nil
}

func (f *fakeSys) LoopbackUp() error { f.record("lo up"); return nil }
func (f *fakeSys) Sync()             { f.record("sync") }
func (f *fakeSys) Reboot(cmd int) error {
	f.record("reboot %#x", cmd)
	if cmd == unix.LINUX_REBOOT_CMD_KEXEC {
		return f.kexecErr
	}
	return nil
}

func (f *fakeSys) OpenWatchdog(device string) (Watchdog, error) {
	f.record("watchdog open %s", f.rel(device))
	if f.wd == nil {
		return nil, &os.PathError{Op: "open", Path: device, Err: unix.ENOENT}
	}
	return f.wd, nil
}

// fakeWatchdog is a watchdog device that records its feeds, on the fake
// clock, in its system's calls too; onFeed, if set, runs at each.
type fakeWatchdog struct {
	sys    *fakeSys
	onFeed func(now time.Time)

	mu      sync.Mutex
	feeds   []time.Time
	timeout time.Duration
}

func (w *fakeWatchdog) Feed() error {
	now := w.sys.clock.Now()
	w.mu.Lock()
	w.feeds = append(w.feeds, now)
	w.mu.Unlock()
	w.sys.record("watchdog feed")
	if w.onFeed != nil {
		w.onFeed(now)
	}
	return nil
}

func (w *fakeWatchdog) SetTimeout(d time.Duration) (time.Duration, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.timeout = d
	return d, nil
}

func (w *fakeWatchdog) Timeout() (time.Duration, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.timeout, nil
}

func (w *fakeWatchdog) fed() []time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]time.Time(nil), w.feeds...)
}

func (f *fakeSys) Kill(pid int, sig syscall.Signal) error {
	f.record("kill %d %s", pid, sig)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.running[pid] && (sig == syscall.SIGTERM || sig == syscall.SIGKILL) {
		delete(f.running, pid)
		f.exits <- Exit{Pid: pid, Status: "exit status 0"}
	}
	return nil
}

func (f *fakeSys) Start(argv, env []string, files []*os.File) (int, error) {
	f.mu.Lock()
	f.pid++
	pid := f.pid
	if f.crash(argv) {
		f.exits <- Exit{Pid: pid, Status: "exit status 2"}
	} else {
		f.running[pid] = true
		files[0].Write([]byte("\n")) // ready
	}
	f.mu.Unlock()
	select {
	case f.starts <- start{argv, f.clock.Now()}:
	default: // nobody reads them (a test that failed): init must not hang
	}
	return pid, nil
}

func (f *fakeSys) Exits() <-chan Exit { return f.exits }
func (f *fakeSys) Running() bool      { return false }
func (f *fakeSys) Hold() func()       { f.record("hold"); return func() { f.record("release") } }

func (f *fakeSys) callsSince(n int) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls[n:]...)
}

func (f *fakeSys) nextStart(t *testing.T) start {
	t.Helper()
	select {
	case s := <-f.starts:
		return s
	case <-time.After(10 * time.Second):
		t.Fatalf("the agent was not started; calls: %q", f.callsSince(0))
		return start{}
	}
}

// router is a router's file system in a temporary folder, as the disk
// and the initrd have it, and an init running on it.
type router struct {
	t     *testing.T
	root  string
	sys   *fakeSys
	log   *syncBuffer
	reqs  chan Request
	done  chan error
	clock *fakeClock
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newRouter(t *testing.T, cmdline string) *router {
	root := t.TempDir()
	write(t, root, "proc/cmdline", cmdline+"\n", 0o444)
	write(t, root, "board", "qemu-x86_64\n", 0o644)
	write(t, root, "dev/vda", "", 0o600)
	write(t, root, "modules", "# what the disk needs\nlib/modules/virtio_blk.ko\nlib/modules/gone.ko\n/lib/modules/ext4.ko.xz\n", 0o644)
	write(t, root, "lib/modules/virtio_blk.ko", "elf", 0o644)
	write(t, root, "lib/modules/ext4.ko.xz", "xz", 0o644)
	clock := &fakeClock{now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	return &router{t: t, root: root, sys: newFakeSys(root, clock), log: &syncBuffer{}, reqs: make(chan Request, 1),
		done: make(chan error, 1), clock: clock}
}

func write(t *testing.T, root, name, data string, perm os.FileMode) {
	t.Helper()
	p := filepath.Join(root, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), perm); err != nil {
		t.Fatal(err)
	}
}

// system makes a system whose bin/roostd links into a roostd store path,
// as Nix builds it, with a modules list; without an agent if broken.
func (r *router) system(name string, broken bool) storepath.Path {
	sys := storetest.NewPath("system-" + name)
	agent := storetest.NewPath("roostd-" + name)
	dir := filepath.Join(r.root, sys.String())
	write(r.t, r.root, filepath.Join(agent.String(), "bin/roostd"), "#!", 0o555)
	write(r.t, r.root, filepath.Join(sys.String(), "modules"), "/lib/modules/virtio_net.ko\n", 0o444)
	write(r.t, r.root, "lib/modules/virtio_net.ko", "elf", 0o644)
	if !broken {
		os.MkdirAll(filepath.Join(dir, "bin"), 0o755)
		if err := os.Symlink(filepath.Join(agent.String(), "bin/roostd"), filepath.Join(dir, "bin/roostd")); err != nil {
			r.t.Fatal(err)
		}
	}
	return sys
}

// generation makes sys a new generation, the profile's default.
func (r *router) generation(sys storepath.Path) int {
	g, _, err := generations.System(r.root, nil).Set(sys)
	if err != nil {
		r.t.Fatal(err)
	}
	return g.Number
}

func (r *router) run() {
	in := New(Options{Root: r.root, Log: slog.New(slog.NewTextHandler(r.log, nil)), Mounter: r.sys, Kernel: r.sys,
		Procs: r.sys, Clock: r.clock, Requests: r.reqs})
	ctx, cancel := context.WithCancel(context.Background())
	r.t.Cleanup(func() {
		cancel()
		<-r.done
	})
	go func() { r.done <- in.Run(ctx) }()
}

// request asks init for req and waits until it has done it.
func (r *router) request(req Request) {
	r.t.Helper()
	r.reqs <- req
	r.ended("after " + req.String())
}

// ended waits until init has ended (rebooted, powered off) by itself or
// as asked.
func (r *router) ended(what string) {
	r.t.Helper()
	select {
	case err := <-r.done:
		r.done <- err // for Cleanup
		if err != nil {
			r.t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		r.t.Fatalf("init did not end %s; log:\n%s", what, r.log.String())
	}
}

func (r *router) link(name string) storepath.Path {
	target, err := os.Readlink(filepath.Join(r.root, name))
	if err != nil {
		r.t.Fatal(err)
	}
	p, err := storepath.FromLink(target)
	if err != nil {
		r.t.Fatal(err)
	}
	return p
}

// TestBootAndReboot: init mounts the kernel's file systems, loads the
// initrd's modules (a missing one loudly, without stopping), mounts the
// board's disk and binds its store and state folder, boots the profile's
// default, boots on without the board's watchdog when it has no device
// (loudly), runs its agent, and on a reboot request stops it, syncs,
// unmounts in reverse order (remounting the busy one read-only) and
// reboots. roost.trial=1 without a generation is no trial.
func TestBootAndReboot(t *testing.T) {
	r := newRouter(t, "console=ttyS0 quiet roost.trial=1")
	old := r.system("old", false)
	r.generation(old)
	sys := r.system("new", false)
	r.generation(sys)
	r.sys.busy["/storage"] = true
	r.run()
	s := r.sys.nextStart(t)
	want := []string{filepath.Join(sys.String(), "bin/roostd"), "run", "--root", r.root, "--state", filepath.Join(r.root, "persist/roost"), "--notify-fd", "3"}
	if !reflect.DeepEqual(s.argv, want) {
		t.Fatalf("agent started as %q, want %q", s.argv, want)
	}
	if cur, booted := r.link("run/current-system"), r.link("run/booted-system"); cur != sys || booted != sys {
		t.Fatalf("current %s, booted %s; want %s", cur, booted, sys)
	}
	waitLog(t, r.log, "agent ready")
	booted := r.sys.callsSince(0)
	r.request(Reboot)
	wantBoot := []string{
		"mount proc proc /proc", "mount sysfs sysfs /sys", "mount devtmpfs devtmpfs /dev", "mount tmpfs tmpfs /run", "lo up",
		`module virtio_blk.ko "" 0`, fmt.Sprintf(`module ext4.ko.xz "" %d`, unix.MODULE_INIT_COMPRESSED_FILE),
		"mount ext4 /dev/vda /storage", "bind /storage/nix /nix", "bind /storage/persist /persist",
		`module virtio_net.ko "" 0`, "watchdog open /dev/watchdog",
	}
	if !reflect.DeepEqual(booted, wantBoot) {
		t.Errorf("boot:\n got %q\nwant %q", booted, wantBoot)
	}
	wantDown := []string{"kill 101 terminated", "sync",
		"umount /persist", "umount /nix", "busy /storage", "remount-ro /storage",
		"umount /run", "umount /dev", "umount /sys", "umount /proc", "sync", fmt.Sprintf("reboot %#x", unix.LINUX_REBOOT_CMD_RESTART)}
	if down := r.sys.callsSince(len(booted)); !reflect.DeepEqual(down, wantDown) {
		t.Errorf("shutdown:\n got %q\nwant %q", down, wantDown)
	}
	log := r.log.String()
	for _, w := range []string{"MODULE NOT LOADED", "gone.ko", "roost.trial=1 without roost.generation=N: not a trial boot", "trial=false",
		"WATCHDOG NOT ARMED", "no such file", "busy: remounted read-only", "system down: reboot"} {
		if !strings.Contains(log, w) {
			t.Errorf("the log does not say %q:\n%s", w, log)
		}
	}
}

func waitLog(t *testing.T, log *syncBuffer, s string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if strings.Contains(log.String(), s) {
			return
		}
	}
	t.Fatalf("the log never said %q:\n%s", s, log.String())
}

// TestCrashingAgentRollsBack: the new system's agent keeps exiting while
// its activation awaits confirmation: after CrashLimit exits, the
// activation is rolled back (profile, current system, pending file) and
// the previous system's agent runs. The booted system stays the one
// booted.
func TestCrashingAgentRollsBack(t *testing.T) {
	r := newRouter(t, "")
	old := r.system("old", false)
	r.generation(old)
	bad := r.system("bad", false)
	r.generation(bad)
	p := activate.Pending{Token: "t", Mode: activate.Switch, System: bad, Deadline: r.clock.Now().Add(time.Hour), PrevSystem: old, PrevGeneration: 1}
	b, _ := json.Marshal(p)
	write(t, r.root, "persist/roost/pending-activation.json", string(b), 0o600)
	r.sys.crash = func(argv []string) bool { return strings.Contains(argv[0], bad.String()) }
	r.run()
	var starts []start
	for len(starts) < CrashLimit+1 {
		starts = append(starts, r.sys.nextStart(t))
	}
	for i, s := range starts {
		want := bad
		if i == CrashLimit {
			want = old
		}
		if !strings.HasPrefix(s.argv[0], want.String()+"/") {
			t.Fatalf("start %d ran %s, want %s's agent", i, s.argv[0], want)
		}
	}
	if _, err := activate.ReadPending(filepath.Join(r.root, "persist/roost")); !os.IsNotExist(err) {
		t.Fatalf("the pending activation is still there: %v", err)
	}
	if _, n, _ := generations.System(r.root, nil).List(); n != 1 {
		t.Fatalf("the profile is at generation %d after the rollback, want 1", n)
	}
	if cur, booted := r.link("run/current-system"), r.link("run/booted-system"); cur != old || booted != bad {
		t.Fatalf("current %s, booted %s; want %s, %s", cur, booted, old, bad)
	}
	if !strings.Contains(r.log.String(), "ROLLED BACK") || !slicesContain(r.sys.callsSince(0), "hold") {
		t.Fatalf("the rollback is not in the log, or was not made holding the reaper:\n%s", r.log.String())
	}
	r.request(PowerOff)
	if calls := r.sys.callsSince(0); calls[len(calls)-1] != fmt.Sprintf("reboot %#x", unix.LINUX_REBOOT_CMD_POWER_OFF) {
		t.Fatalf("last call %q, want a power off", calls[len(calls)-1])
	}
}

func slicesContain(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// TestCrashingAgentWithoutActivationBacksOff: with nothing to roll back
// to, a crashing agent is restarted with a doubling delay, the same one.
func TestCrashingAgentWithoutActivationBacksOff(t *testing.T) {
	r := newRouter(t, "")
	sys := r.system("only", false)
	r.generation(sys)
	r.sys.crash = func([]string) bool { return true }
	r.run()
	var gaps []time.Duration
	prev := r.sys.nextStart(t)
	for range 6 {
		s := r.sys.nextStart(t)
		if !strings.HasPrefix(s.argv[0], sys.String()) {
			t.Fatalf("ran %s", s.argv[0])
		}
		gaps = append(gaps, s.at.Sub(prev.at))
		prev = s
	}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 30 * time.Second}
	if !reflect.DeepEqual(gaps, want) {
		t.Fatalf("restart delays %v, want %v", gaps, want)
	}
	r.request(Halt)
}

// TestFailedBootReboots: without its disk, init says why, waits, undoes
// its mounts and reboots; no agent runs.
func TestFailedBootReboots(t *testing.T) {
	r := newRouter(t, "roost.disk=/dev/sdz")
	r.run()
	r.ended("rebooting")
	calls := r.sys.callsSince(0)
	if last := calls[len(calls)-1]; last != fmt.Sprintf("reboot %#x", unix.LINUX_REBOOT_CMD_RESTART) || slicesContain(calls, "mount ext4 /dev/sdz /storage") {
		t.Fatalf("calls: %q", calls)
	}
	if log := r.log.String(); !strings.Contains(log, "BOOT FAILED") || !strings.Contains(log, "no storage device /dev/sdz") {
		t.Fatalf("log:\n%s", log)
	}
	if len(r.sys.starts) != 0 {
		t.Fatal("an agent was started")
	}
}

func TestChoose(t *testing.T) {
	r := newRouter(t, "")
	s1 := r.system("one", false)
	s2 := r.system("two", true) // no bin/roostd
	s3 := r.system("three", false)
	for _, s := range []storepath.Path{s1, s2, s3} {
		r.generation(s)
	}
	nowhere := storetest.NewPath("system-nowhere")
	in := New(Options{Root: r.root})
	for _, tc := range []struct {
		name    string
		cur     int
		p       Params
		want    storepath.Path
		gen     int
		skipped int
	}{
		{"the profile's default", 3, Params{}, s3, 3, 0},
		{"a generation named", 3, Params{Generation: 1}, s1, 1, 0},
		{"a system named", 3, Params{System: s1}, s1, 1, 0},
		{"a system named that no generation has", 3, Params{System: r.system("loose", false)}, storetest.NewPath("system-loose"), 0, 0},
		{"a named generation without an agent", 3, Params{Generation: 2}, s3, 3, 1},
		{"a named generation that does not exist", 3, Params{Generation: 9}, s3, 3, 1},
		{"a named system not on the disk", 3, Params{System: nowhere}, s3, 3, 1},
		{"a default without an agent: the newest other", 2, Params{}, s3, 3, 1},
		{"an older default", 1, Params{}, s1, 1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := generations.System(r.root, nil).SwitchTo(tc.cur); err != nil {
				t.Fatal(err)
			}
			c, skipped, err := in.choose(tc.p)
			if err != nil || c.System != tc.want || c.Generation != tc.gen || len(skipped) != tc.skipped {
				t.Fatalf("choose(%+v) = %+v, skipped %v, %v; want %s (generation %d), %d skipped", tc.p, c, skipped, err, tc.want, tc.gen, tc.skipped)
			}
		})
	}
}

func TestChooseNothingToBoot(t *testing.T) {
	r := newRouter(t, "")
	r.generation(r.system("broken", true))
	if _, skipped, err := New(Options{Root: r.root}).choose(Params{}); err == nil || len(skipped) != 1 {
		t.Fatalf("choose = %v, skipped %v; want an error", err, skipped)
	}
}

func TestParseCmdline(t *testing.T) {
	sys := storetest.NewPath("system")
	for _, tc := range []struct {
		cmdline string
		want    Params
		errs    int
	}{
		{"", Params{}, 0},
		{"console=ttyS0 quiet root=/dev/sda1", Params{}, 0},
		{"roost.disk=/dev/vda roost.fstype=ext4 roost.board=qemu-x86_64", Params{Disk: "/dev/vda", FSType: "ext4", Board: "qemu-x86_64"}, 0},
		{"roost.generation=12 roost.trial=1", Params{Generation: 12, Trial: true}, 0},
		{"roost.system=" + sys.String(), Params{System: sys}, 0},
		{"roost.trial=0 roost.generation=2 roost.generation=3", Params{Generation: 3}, 0},
		{"roost.disk=vda roost.disk=/dev/../etc/passwd", Params{}, 2},
		{"roost.generation=0 roost.generation=x roost.generation=-1", Params{}, 3},
		{"roost.system=/etc roost.system=/nix/store/short", Params{}, 2},
		{"roost.frobnicate=1 roost.board=a/b roost.fstype=", Params{}, 3},
		{"roost.disk=/dev/vdb roost.generation=zz", Params{Disk: "/dev/vdb"}, 1},
	} {
		got, errs := ParseCmdline(tc.cmdline)
		if got != tc.want || len(errs) != tc.errs {
			t.Errorf("ParseCmdline(%q) = %+v, %v; want %+v and %d errors", tc.cmdline, got, errs, tc.want, tc.errs)
		}
	}
}

// TestStorage: the disk is the board's, from boards.json (the initrd's
// /board, or roost.board=), unless the command line names another; a
// board without storage needs roost.disk=.
func TestStorage(t *testing.T) {
	for _, tc := range []struct {
		name, initrdBoard string
		p                 Params
		want              boards.Storage
		err               string
	}{
		{"the initrd's board", "qemu-x86_64", Params{}, boards.Storage{Device: "/dev/vda", FSType: "ext4"}, ""},
		{"roost.board= wins", "nope", Params{Board: "qemu-x86_64"}, boards.Storage{Device: "/dev/vda", FSType: "ext4"}, ""},
		{"roost.disk= keeps the board's fstype", "qemu-x86_64", Params{Disk: "/dev/vdb"}, boards.Storage{Device: "/dev/vdb", FSType: "ext4"}, ""},
		{"roost.fstype=", "qemu-x86_64", Params{FSType: "btrfs"}, boards.Storage{Device: "/dev/vda", FSType: "btrfs"}, ""},
		{"a board without storage", "lab", Params{}, boards.Storage{}, `board "lab" has none in boards.json; put roost.disk=`},
		{"a board without storage, and roost.disk=", "qemu-mipsel", Params{Disk: "/dev/sda"}, boards.Storage{Device: "/dev/sda", FSType: "ext4"}, ""},
		{"an unknown board", "nope", Params{}, boards.Storage{}, `names no known board (unknown board "nope"`},
		{"no board", "", Params{}, boards.Storage{}, "put roost.disk=/dev/..."},
		{"an unknown board, and roost.disk=", "nope", Params{Disk: "/dev/sda", FSType: "f2fs"}, boards.Storage{Device: "/dev/sda", FSType: "f2fs"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			if tc.initrdBoard != "" {
				write(t, root, "board", tc.initrdBoard+"\n", 0o644)
			}
			got, err := New(Options{Root: root}).storage(tc.p)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("storage(%+v) = %+v, %v; want an error saying %q", tc.p, got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("storage(%+v) = %+v, %v; want %+v", tc.p, got, err, tc.want)
			}
		})
	}
}

func TestParseModules(t *testing.T) {
	for _, tc := range []struct {
		text string
		want []Module
		err  bool
	}{
		{"", nil, false},
		{"# nothing\n\n", nil, false},
		{"a.ko\n\t/nix/store/x/b.ko.xz  debug=1\tx=2 # comment\n", []Module{{"a.ko", ""}, {"/nix/store/x/b.ko.xz", "debug=1 x=2"}}, false},
		{"a.ko\nreadme.txt\n", nil, true},
	} {
		got, err := ParseModules(tc.text)
		if (err != nil) != tc.err || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseModules(%q) = %+v, %v; want %+v (error: %v)", tc.text, got, err, tc.want, tc.err)
		}
	}
}

func TestCrashLooping(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(secs ...int) []time.Time {
		var out []time.Time
		for _, s := range secs {
			out = append(out, t0.Add(time.Duration(s)*time.Second))
		}
		return out
	}
	for _, tc := range []struct {
		exits []time.Time
		now   int
		want  bool
	}{
		{nil, 0, false},
		{at(0, 1), 1, false},
		{at(0, 1, 3), 3, true},
		{at(0, 30, 59), 59, true},
		{at(0, 30, 60), 60, false}, // the first is a window ago
		{at(0, 100, 101, 102), 102, true},
		{at(0, 100, 200), 200, false},
	} {
		if got := crashLooping(tc.exits, t0.Add(time.Duration(tc.now)*time.Second)); got != tc.want {
			t.Errorf("crashLooping(%v, +%ds) = %v", tc.exits, tc.now, got)
		}
	}
}

func TestNextDelay(t *testing.T) {
	for _, tc := range []struct{ prev, ran, want time.Duration }{
		{0, 0, MinDelay},
		{MinDelay, time.Second, 2 * MinDelay},
		{16 * time.Second, 0, MaxDelay},
		{MaxDelay, 0, MaxDelay},
		{MaxDelay, StableAfter, 0},
		{0, time.Hour, 0},
	} {
		if got := nextDelay(tc.prev, tc.ran); got != tc.want {
			t.Errorf("nextDelay(%s, %s) = %s, want %s", tc.prev, tc.ran, got, tc.want)
		}
	}
}

// TestAsk: roostd reboot and poweroff signal roostd init as its marker
// names it, and refuse where it does not run (no marker: another init).
func TestAsk(t *testing.T) {
	root := t.TempDir()
	var got []string
	kill := func(pid int, sig syscall.Signal) error {
		got = append(got, fmt.Sprintf("%d %s", pid, sig))
		return nil
	}
	if err := Ask(root, Reboot, kill); err == nil || !strings.Contains(err.Error(), "roostd init does not run here") || got != nil {
		t.Fatalf("Ask without init: %v, signalled %q", err, got)
	}
	write(t, root, "run/roostd-init.pid", "1\n", 0o644)
	for _, r := range []Request{Reboot, PowerOff, Halt, Kexec} {
		if err := Ask(root, r, kill); err != nil {
			t.Fatal(err)
		}
		if back, ok := RequestFor(r.Signal()); !ok || back != r {
			t.Errorf("RequestFor(%s) = %s, %v; want %s", r.Signal(), back, ok, r)
		}
	}
	if want := []string{"1 terminated", "1 user defined signal 2", "1 user defined signal 1", "1 signal 40"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("signalled %q, want %q", got, want)
	}
	write(t, root, "run/roostd-init.pid", "garbage\n", 0o644)
	if err := Ask(root, Reboot, kill); err == nil {
		t.Fatal("Ask with a garbage marker: no error")
	}
}

// TestReaper, with the real kernel: a child's exit is reported with its
// status; under Hold, os/exec waits for its own child undisturbed.
func TestReaper(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := NewReaper(ctx)
	pid, err := r.Start([]string{"/bin/sh", "-c", "exit 3"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-r.Exits():
		if e.Pid != pid || e.Status != "exit status 3" {
			t.Fatalf("exit %+v, want pid %d with status 3", e, pid)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no exit reported")
	}
	if r.Running() {
		t.Fatal("Running with no child left")
	}
	release := r.Hold()
	err = exec.Command("/bin/sh", "-c", "exit 0").Run()
	release()
	if err != nil {
		t.Fatalf("a child waited for under Hold: %v", err)
	}
}
