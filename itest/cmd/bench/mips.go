package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/roostrouter/roost/boards"
	"github.com/roostrouter/roost/firewall"
	"github.com/roostrouter/roost/itest/vm"
	"github.com/roostrouter/roost/updater/maintenance"
)

// mipsOptions say what the MIPS tables measure.
type mipsOptions struct {
	Base      string // the git revision whose roostd the running image holds
	Idle      int    // seconds idle before the resident sets are read
	UpgradeMB int    // RAM of a second run, of the upgrade alone (0: none)
	Console   string // a file the VMs' consoles are written to
}

// mipsRun is one boot of the VM and its BENCH lines.
type mipsRun struct {
	MemoryMB int
	Phases   []string // mipsinit's: idle, upgrade
	// Like is the board of the same target with this RAM, whose
	// maintenance budget the run's RAM check uses; "" for the VM's own.
	Like *boards.Board
	Res  map[string]map[string]string
	Wall time.Duration
}

// benchMIPS prints the MIPS VM's figures: roostd's size for every board
// target, then from a run of the qemu-mipsel VM (its 64 MiB, TCG) roostd's
// idle resident set with a router's config, and an image upgrade's delta
// decode and image write, each beside what Debian's mipsel tools (the
// ones OpenWrt-like systems use) take for the same in the same run; and
// the upgrade again in a second run with a bigger router's RAM.
func benchMIPS(o mipsOptions) error {
	work, err := os.MkdirTemp("", "mipsbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	deb, debErr := loadDebian()
	if err := benchSizes(work, deb, debErr); err != nil {
		return err
	}
	fmt.Println()
	in, err := prepareMIPS(work, o, deb)
	if err != nil {
		return err
	}
	runs := []*mipsRun{{MemoryMB: in.Board.RAMMB, Phases: []string{"idle", "upgrade"}}}
	if o.UpgradeMB > 0 && o.UpgradeMB != in.Board.RAMMB {
		runs = append(runs, &mipsRun{MemoryMB: o.UpgradeMB, Phases: []string{"upgrade"}, Like: likeBoard(in.Board, o.UpgradeMB)})
	}
	for _, r := range runs {
		var w io.Writer = io.Discard
		if o.Console != "" {
			f, err := os.OpenFile(o.Console, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
			if err != nil {
				return err
			}
			defer f.Close()
			fmt.Fprintf(f, "=== the MIPS VM, %d MiB, %v\n", r.MemoryMB, r.Phases)
			w = f
		}
		start := time.Now()
		console, err := runMIPSBench(work, in, r, w)
		r.Wall = time.Since(start)
		if err != nil {
			return err
		}
		r.Res = parseMIPS(console)
		if e, ok := r.Res["error"]; ok {
			return fmt.Errorf("the MIPS VM (%d MiB): %s\n%s", r.MemoryMB, e["error"], tail(console, 60))
		}
		if _, ok := r.Res["done"]; !ok {
			return fmt.Errorf("the MIPS VM (%d MiB) did not finish its run:\n%s", r.MemoryMB, tail(console, 60))
		}
	}
	printIdle(runs[0], in)
	fmt.Println()
	printUpgrade(runs, in)
	return nil
}

// benchSizes prints roostd's size for each Go target the boards need,
// built as make cross builds it, stripped, and xz-compressed; and Debian's
// mipsel dnsmasq and dropbear.
func benchSizes(work string, deb *debianSet, debErr error) error {
	_, xzErr := exec.LookPath("xz")
	xz := func(f string) (int64, error) {
		if xzErr != nil {
			return 0, nil
		}
		return xzSize(f)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "roostd per board target (go build as make cross; CGO_ENABLED=0)\tboards\tbinary MB\t-ldflags='-s -w' MB\tthat, xz -9 MB\t")
	if err := roostdSizes(tw, work, xz); err != nil {
		return err
	}
	if deb != nil {
		if err := debianSizes(tw, deb, xz); err != nil {
			return err
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Println("(MB = 10^6 bytes; xz: the whole stripped binary, where a squashfs (-comp xz) compresses 128 KiB blocks apart; roostd is the board's whole agent: links, addresses, routes, firewall, DHCP and DNS servers and clients, SSH and the updater)")
	switch {
	case debErr != nil:
		fmt.Printf("(no Debian mipsel competitors: %v)\n", debErr)
	case xzErr != nil:
		fmt.Println("(no xz on this machine: apt-get install xz-utils)")
	default:
		fmt.Println("(Debian's: the two programs roostd replaces that Debian has for mipsel; OpenWrt builds them with musl and without D-Bus or nftables sets, so smaller, and runs netifd, procd, ubus, odhcpd and firewall4 besides)")
	}
	return nil
}

// roostdSizes builds roostd for each Go target (boards.GoEnv, as roostd
// boards --targets lists them) and prints a row for each.
func roostdSizes(tw io.Writer, work string, xz func(string) (int64, error)) error {
	all, err := boards.All()
	if err != nil {
		return err
	}
	var envs [][]string
	byEnv := map[string][]string{}
	for _, b := range all {
		k := strings.Join(b.GoEnv(), " ")
		if _, ok := byEnv[k]; !ok {
			envs = append(envs, b.GoEnv())
		}
		byEnv[k] = append(byEnv[k], b.Name)
	}
	for _, env := range envs {
		k := strings.Join(env, " ")
		var sizes [3]int64
		for i, flags := range [][]string{nil, {"-ldflags=-s -w"}} {
			out := filepath.Join(work, fmt.Sprintf("roostd-%d", i))
			cmd := exec.Command("go", slices.Concat([]string{"build", "-o", out}, flags, []string{"./agent/cmd/roostd"})...)
			cmd.Env = slices.Concat(os.Environ(), []string{"CGO_ENABLED=0", "GOOS=linux"}, env)
			if b, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("go build %s: %v: %s", k, err, b)
			}
			sizes[i] = fileSize(out)
		}
		if sizes[2], err = xz(filepath.Join(work, "roostd-1")); err != nil {
			return err
		}
		fmt.Fprintf(tw, "%s\t%s\t%.2f\t%.2f\t%s\t\n", k, strings.Join(byEnv[k], " "), mb(sizes[0]), mb(sizes[1]), orDash(sizes[2]))
	}
	return nil
}

// debianSizes prints Debian's dnsmasq and dropbear, alone and with the
// libraries they load beyond glibc.
func debianSizes(tw io.Writer, deb *debianSet, xz func(string) (int64, error)) error {
	var bins, withLibs []string
	for _, p := range []string{"dnsmasq", "dropbear"} {
		bins = append(bins, deb.Bins[p])
		c, err := deb.closure(deb.Bins[p], true)
		if err != nil {
			return err
		}
		withLibs = append(withLibs, c...)
	}
	slices.Sort(withLibs)
	withLibs = slices.Compact(withLibs)
	for _, row := range []struct {
		what  string
		files []string
	}{
		{fmt.Sprintf("Debian 12 mipsel dnsmasq %s + dropbear %s (stripped already)", deb.Versions["dnsmasq-base"], deb.Versions["dropbear-bin"]), bins},
		{fmt.Sprintf("  with the %d libraries they load beyond glibc", len(withLibs)-len(bins)), withLibs},
	} {
		var size, compressed int64
		for _, f := range row.files {
			size += fileSize(f)
			n, err := xz(f)
			if err != nil {
				return err
			}
			compressed += n
		}
		fmt.Fprintf(tw, "%s\t%s\t%.2f\t%.2f\t%s\t\n", row.what, "-", mb(size), mb(size), orDash(compressed))
	}
	return nil
}

func fileSize(f string) int64 {
	fi, err := os.Stat(f)
	if err != nil {
		return 0
	}
	return fi.Size()
}

func xzSize(f string) (int64, error) {
	out, err := exec.Command("xz", "-9", "-c", f).Output()
	if err != nil {
		return 0, fmt.Errorf("xz -9 -c %s: %w", f, err)
	}
	return int64(len(out)), nil
}

func mb(n int64) float64 { return float64(n) / 1e6 }

func mib(kib int64) float64 { return float64(kib) / 1024 }

func orDash(n int64) string {
	if n == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", mb(n))
}

// mipsInputs are what the VM runs on.
type mipsInputs struct {
	Board        boards.Board
	Kernel       string
	Init         string   // mipsinit for mipsle
	Config       []byte   // the router's
	Disks        []string // raw files: the board's flashes in order, then the payload
	Old, New     mipsImage
	Delta, Patch int64 // bytes: roost's delta, zstd --patch-from's
	Base         string
	Idle         int
	Debian       *debianSet
	Slots        []string // the board's image slots: the running one, the one written
}

// prepareMIPS builds the VM's init, roostd (this tree's, and rev's for the
// running image), the two images and the deltas between them, and the
// disks.
func prepareMIPS(work string, o mipsOptions, deb *debianSet) (*mipsInputs, error) {
	b, err := boards.Lookup(mipsBoard)
	if err != nil {
		return nil, err
	}
	kernel, err := vm.MIPSKernel()
	if err != nil {
		return nil, err
	}
	in := &mipsInputs{Board: b, Kernel: kernel, Base: o.Base, Idle: o.Idle, Debian: deb, Slots: maintenance.ImageSlots(b)}
	if len(in.Slots) != 2 {
		return nil, fmt.Errorf("board %s has image slots %v, want two", b.Name, in.Slots)
	}
	initBin, newRoostd, oldRoostdBin := filepath.Join(work, "init"), filepath.Join(work, "roostd"), filepath.Join(work, "roostd-old")
	if err := buildMIPS(".", "./itest/cmd/bench/mipsinit", initBin); err != nil {
		return nil, err
	}
	if err := buildMIPS(".", "./agent/cmd/roostd", newRoostd); err != nil {
		return nil, err
	}
	if err := oldRoostd(work, o.Base, oldRoostdBin); err != nil {
		return nil, err
	}
	config, err := routerConfig(b)
	if err != nil {
		return nil, err
	}
	if in.Old, err = buildImage(filepath.Join(work, "old"), oldRoostdBin, config, b); err != nil {
		return nil, err
	}
	if in.New, err = buildImage(filepath.Join(work, "new"), newRoostd, config, b); err != nil {
		return nil, err
	}
	sq, err := buildPayload(work, in, newRoostd)
	if err != nil {
		return nil, err
	}
	if in.Disks, err = flashDisks(work, b, in.Slots[0], in.Old); err != nil {
		return nil, err
	}
	in.Disks = append(in.Disks, sq)
	in.Init, in.Config = initBin, config
	return in, nil
}

// buildPayload makes the payload disk, a squashfs of roostd, the new
// image, the deltas and Debian's programs, and returns its file.
func buildPayload(work string, in *mipsInputs, roostd string) (string, error) {
	pl := filepath.Join(work, "payload")
	for _, d := range []string{"bin", "img"} {
		if err := os.MkdirAll(filepath.Join(pl, d), 0o755); err != nil {
			return "", err
		}
	}
	var err error
	if in.Delta, err = writeDelta(filepath.Join(pl, "img/new.delta"), in.Old, in.New); err != nil {
		return "", err
	}
	for _, c := range [][2]string{{roostd, "bin/roostd"}, {in.New.File, "img/new.img"}} {
		if err := copyTo(filepath.Join(pl, c[1]), c[0]); err != nil {
			return "", err
		}
	}
	if in.Debian != nil {
		if in.Patch, err = zstdPatch(filepath.Join(pl, "img/new.zst"), in.Old, in.New); err != nil {
			return "", err
		}
		if err := debianPayload(filepath.Join(pl, "deb"), in.Debian); err != nil {
			return "", err
		}
	}
	sq := filepath.Join(work, "payload.squashfs")
	// Uncompressed: what is measured is not the payload's reading.
	if out, err := exec.Command("mksquashfs", pl, sq, "-noappend", "-all-root", "-no-progress", "-quiet", "-noI", "-noD", "-noF", "-noX").CombinedOutput(); err != nil {
		return "", fmt.Errorf("mksquashfs the payload: %v: %s", err, out)
	}
	return sq, nil
}

// routerConfig is the lab's example router (docs/rotuer.json: a bridged
// LAN, static WAN addresses and routes, DNS, the firewall, SSH) on the
// board's ports, with a DHCP server on the LAN as docs/rotuer-dhcp.json
// has it.
func routerConfig(b boards.Board) ([]byte, error) {
	data, err := os.ReadFile("docs/rotuer.json")
	if err != nil {
		return nil, fmt.Errorf("%w (run from the repository's top folder)", err)
	}
	var c map[string]any
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("docs/rotuer.json: %w", err)
	}
	c["board"] = b.Name
	svcs, ok := c["services"].(map[string]any)
	if !ok {
		return nil, fmt.Errorf("docs/rotuer.json has no services")
	}
	svcs["lan-dhcp"] = map[string]any{"kind": "dhcp4-server", "link": "lan", "address": "lan-addr",
		"pool": map[string]any{"start": "192.168.1.100", "end": "192.168.1.199"}, "domain": "home.arpa"}
	return json.MarshalIndent(c, "", "  ")
}

// likeBoard is a board of b's Go target with memMB of RAM, if one is.
func likeBoard(b boards.Board, memMB int) *boards.Board {
	all, _ := boards.All()
	for _, l := range all {
		if l.RAMMB == memMB && slices.Equal(l.GoEnv(), b.GoEnv()) && l.MaintenanceMB > 0 {
			return &l
		}
	}
	return nil
}

// sshListen is the config's first SSH address, where dropbear listens too.
func sshListen(config []byte) string {
	var c struct {
		SSH struct {
			Listen []string `json:"listen"`
		} `json:"ssh"`
	}
	json.Unmarshal(config, &c)
	if len(c.SSH.Listen) == 0 {
		return "192.168.1.1:22"
	}
	return c.SSH.Listen[0]
}

// zstdPatch makes zstd's own patch of image against base, as a tool-based
// updater would send it (zstd -19 --patch-from), and returns its size.
func zstdPatch(file string, base, image mipsImage) (int64, error) {
	out, err := exec.Command("zstd", "-q", "-f", "-19", "--patch-from="+base.File, image.File, "-o", file).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("zstd --patch-from: %v: %s (apt-get install zstd)", err, out)
	}
	return fileSize(file), nil
}

// debianPayload copies the competitors' programs into dir/bin and every
// library they load (glibc's loader included) into dir/lib, by soname.
func debianPayload(dir string, deb *debianSet) error {
	for _, d := range []string{"bin", "lib"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	for name, bin := range deb.Bins {
		files, err := deb.closure(bin, false)
		if err != nil {
			return err
		}
		if err := copyTo(filepath.Join(dir, "bin", name), bin); err != nil {
			return err
		}
		for _, f := range files[1:] {
			for soname, real := range deb.Libs {
				if real == f {
					if err := copyTo(filepath.Join(dir, "lib", soname), f); err != nil {
						return err
					}
				}
			}
		}
	}
	return copyTo(filepath.Join(dir, "lib", "ld.so.1"), deb.Libs["ld.so.1"])
}

func copyTo(dst, src string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	mode := os.FileMode(0o644)
	if fi, err := os.Stat(src); err == nil && fi.Mode()&0o111 != 0 {
		mode = 0o755
	}
	return os.WriteFile(dst, data, mode)
}

// flashDisks makes a raw disk for each of the board's block2mtd flashes,
// erased (0xff) as new flash is, the running slot's holding old.
func flashDisks(work string, b boards.Board, running string, old mipsImage) ([]string, error) {
	var disks []string
	for _, f := range b.Flash {
		if f.Block2MTD() == "" {
			continue
		}
		data := bytes.Repeat([]byte{0xff}, f.SizeMB<<20)
		if f.Partitions[0].Name == running {
			img, err := os.ReadFile(old.File)
			if err != nil {
				return nil, err
			}
			if len(img) > len(data) {
				return nil, fmt.Errorf("the old image (%d bytes) does not fit %s (%d MiB)", len(img), f.Name, f.SizeMB)
			}
			copy(data, img)
		}
		file := filepath.Join(work, f.Name+".raw")
		if err := os.WriteFile(file, data, 0o644); err != nil {
			return nil, err
		}
		disks = append(disks, file)
	}
	if len(disks) < 2 {
		return nil, fmt.Errorf("board %s has %d block2mtd flashes, want its two image slots", b.Name, len(disks))
	}
	return disks, nil
}

// mipsInitrd is the VM's initramfs: mipsinit as /init, its spec, the
// router's config, the modules (the disks, block2mtd, the payload's
// squashfs, the NICs, the LAN's bridge, the firewall's).
func mipsInitrd(in *mipsInputs, r *mipsRun) ([]byte, error) {
	config := in.Config
	init, err := os.ReadFile(in.Init)
	if err != nil {
		return nil, err
	}
	// crc32c_generic: libcrc32c's (nf_tables') soft dependency.
	mods, err := vm.MIPSModuleClosure(append([]string{"virtio_pci", "virtio_blk", "block2mtd", "squashfs", "virtio_net", "bridge", "crc32c_generic"}, firewall.KernelModules...))
	if err != nil {
		return nil, err
	}
	spec, err := json.Marshal(map[string]any{
		"board": in.Board.Name, "payload": "vd" + string(rune('a'+len(in.Disks)-1)), "idleSeconds": in.Idle,
		"oldBytes": in.Old.Bytes, "oldSHA256": in.Old.SHA256, "newBytes": in.New.Bytes, "newSHA256": in.New.SHA256, "patchBytes": in.Patch,
		"debian": in.Debian != nil, "sshListen": sshListen(config), "running": in.Slots[0], "spare": in.Slots[1], "phases": r.Phases, "maintenanceMB": maintenanceMB(r),
	})
	if err != nil {
		return nil, err
	}
	files := []vm.File{
		{Name: "etc/bench.json", Data: spec, Perm: 0o644},
		{Name: "etc/roost.json", Data: config, Perm: 0o644},
		// dnsmasq runs as root, by name.
		{Name: "etc/passwd", Data: []byte("root:x:0:0:root:/:/bin/sh\n"), Perm: 0o644},
		{Name: "etc/group", Data: []byte("root:x:0:\n"), Perm: 0o644},
	}
	var list strings.Builder
	for _, m := range mods {
		data, err := os.ReadFile(m)
		if err != nil {
			return nil, err
		}
		files = append(files, vm.File{Name: "kmod/" + filepath.Base(m), Data: data, Perm: 0o644})
		fmt.Fprintf(&list, "kmod/%s\n", filepath.Base(m))
	}
	files = append(files, vm.File{Name: "modules", Data: []byte(list.String()), Perm: 0o644})
	return vm.Initramfs(init, files)
}

// runMIPSBench boots the malta VM with the run's memory, the board's
// flash disks and the payload, and three NICs on hubs of their own (links
// up, nothing else there), and returns the console once it powers off.
func runMIPSBench(work string, in *mipsInputs, r *mipsRun, live io.Writer) (string, error) {
	archive, err := mipsInitrd(in, r)
	if err != nil {
		return "", err
	}
	initrd := filepath.Join(work, "initrd.gz")
	if err := os.WriteFile(initrd, archive, 0o644); err != nil {
		return "", err
	}
	args := []string{"-M", "malta", "-cpu", "24Kc", "-m", strconv.Itoa(r.MemoryMB),
		"-vga", "none", "-nographic", "-nic", "none", "-no-reboot",
		"-kernel", in.Kernel, "-initrd", initrd, "-append", strings.Join(in.Board.Cmdline, " ") + " panic=-1 quiet"}
	// Explicit PCI slots: Linux routes the malta's interrupts for some
	// only (arch/mips/pci/fixup-malta.c): a device in slot 0x11 or 0x16
	// got none here, and its NIC no interface.
	slots := []int{0x12, 0x13, 0x14, 0x15, 0x0b, 0x0c, 0x17}
	if len(in.Disks)+len(in.Board.Interfaces) > len(slots) {
		return "", fmt.Errorf("%d disks and %d NICs: the malta board has %d PCI slots with interrupts", len(in.Disks), len(in.Board.Interfaces), len(slots))
	}
	for i, d := range in.Disks {
		args = append(args, "-drive", fmt.Sprintf("if=none,id=d%d,file=%s,format=raw", i, d),
			"-device", fmt.Sprintf("virtio-blk-pci,drive=d%d,addr=%#x", i, slots[0]))
		slots = slots[1:]
	}
	for i := range len(in.Board.Interfaces) {
		// romfile=: the malta board does not run option ROMs.
		args = append(args, "-netdev", fmt.Sprintf("hubport,id=n%d,hubid=%d", i, i),
			"-device", fmt.Sprintf("virtio-net-pci,netdev=n%d,romfile=,addr=%#x", i, slots[i]))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "qemu-system-mipsel", args...)
	var console bytes.Buffer
	cmd.Stdout = io.MultiWriter(&console, live)
	cmd.Stderr = cmd.Stdout
	err = cmd.Run()
	if ctx.Err() != nil {
		return console.String(), fmt.Errorf("the MIPS VM did not power off within 20 minutes:\n%s", tail(console.String(), 60))
	}
	if err != nil {
		return console.String(), fmt.Errorf("qemu-system-mipsel: %v\n%s", err, tail(console.String(), 60))
	}
	return console.String(), nil
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// parseMIPS reads the run's BENCH lines: case → key → value.
func parseMIPS(console string) map[string]map[string]string {
	out := map[string]map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(console))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		_, rest, ok := strings.Cut(strings.TrimRight(sc.Text(), "\r"), "BENCH mips ")
		if !ok {
			continue
		}
		name, kv, _ := strings.Cut(rest, " ")
		out[name] = parseKV(kv)
	}
	return out
}

// parseKV splits key=value pairs, a value quoted as Go quotes it if it
// starts with a quote.
func parseKV(s string) map[string]string {
	m := map[string]string{}
	for s = strings.TrimSpace(s); s != ""; s = strings.TrimSpace(s) {
		k, rest, ok := strings.Cut(s, "=")
		if !ok {
			break
		}
		if strings.HasPrefix(rest, `"`) {
			q, err := strconv.QuotedPrefix(rest)
			if err == nil {
				m[k], _ = strconv.Unquote(q)
				s = rest[len(q):]
				continue
			}
		}
		v, after, _ := strings.Cut(rest, " ")
		m[k], s = v, after
	}
	return m
}

func num(m map[string]string, k string) int64 {
	n, _ := strconv.ParseInt(m[k], 10, 64)
	return n
}

func secs(m map[string]string, k string) float64 {
	f, _ := strconv.ParseFloat(m[k], 64)
	return f
}

// printIdle prints the idle table.
func printIdle(run *mipsRun, in *mipsInputs) {
	boot, r := run.Res["boot"], run.Res["idle-roostd"]
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "idle on the MIPS VM (%s: malta 24Kc, %d MiB, MemTotal %.1f MiB; TCG; the run took %.0f s), %d s after the services are up\tVmRSS MiB\tVmHWM MiB\tMemAvailable MiB\t\n",
		in.Board.Name, run.MemoryMB, mib(num(boot, "memtotal")), run.Wall.Seconds(), in.Idle)
	if r["error"] != "" {
		fmt.Fprintf(tw, "roostd: %s\t-\t-\t-\t\n", oneLine(r["error"]))
	} else {
		fmt.Fprintf(tw, "roostd, docs/rotuer.json + a DHCP server (%s services up)\t%.1f\t%.1f\t%.1f\t\n", r["up"], mib(num(r, "rss")), mib(num(r, "hwm")), mib(num(r, "memavail")))
	}
	d := run.Res["idle-debian"]
	if in.Debian != nil {
		what := fmt.Sprintf("Debian dnsmasq %s (DHCP, DNS) + dropbear %s (SSH)", in.Debian.Versions["dnsmasq-base"], in.Debian.Versions["dropbear-bin"])
		if d["error"] != "" {
			fmt.Fprintf(tw, "%s: %s\t-\t-\t-\t\n", what, oneLine(d["error"]))
		} else {
			fmt.Fprintf(tw, "%s\t%.1f\t%.1f\t%.1f\t\n", what, mib(num(d, "rss")), mib(num(d, "hwm")), mib(num(d, "memavail")))
		}
	}
	tw.Flush()
	if r["notup"] != "" && r["notup"] != "-" {
		fmt.Printf("(not up, unchanged for 45 s: %s)\n", r["notup"])
	}
	fmt.Printf("(roostd: %s of its RSS anonymous, %s file-backed (its binary's pages); started at %.1f s of uptime, its services up at %.1f s; MemAvailable is the VM's, whose initramfs (this bench's init %s, kernel modules) stays in RAM: at boot %s available)\n",
		kibStr(num(r, "anon")), kibStr(num(r, "file")), secs(r, "started"), secs(r, "upat"), mbStr(fileSize(in.Init)), kibStr(num(boot, "memavail")))
	if in.Debian != nil {
		fmt.Printf("(Debian's: dnsmasq %s, dropbear %s, in the same VM after roostd stopped, on %s with the LAN address; linked with glibc (and dnsmasq with D-Bus and nftables), where OpenWrt's are musl and smaller; they do DHCP, DNS and SSH only, not links, addresses, routes, the firewall or updates)\n",
			kibStr(num(d, "dnsmasq")), kibStr(num(d, "dropbear")), d["lan"])
	} else {
		fmt.Println("(no Debian competitors in this run: see the sizes table's note)")
	}
}

func maintenanceMB(r *mipsRun) int {
	if r.Like == nil {
		return 0
	}
	return r.Like.MaintenanceMB
}

func kibStr(k int64) string { return fmt.Sprintf("%.1f MiB", mib(k)) }

func mbStr(n int64) string { return fmt.Sprintf("%.1f MB", mb(n)) }

// printUpgrade prints the image upgrade table: a column group per run.
func printUpgrade(runs []*mipsRun, in *mipsInputs) {
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "image upgrade on the MIPS VM (image %.2f MiB, its slot %d MiB; roostd of %s → this tree)\t", float64(in.New.Bytes)/(1<<20), slotMB(in), in.Base)
	for _, r := range runs {
		fmt.Fprintf(tw, "%d MiB: s\tpeak MiB\tlowest avail MiB\t", r.MemoryMB)
	}
	fmt.Fprintln(tw)
	rows := []struct{ name, what string }{
		{"delta-roost", fmt.Sprintf("roostd: delta (%s) into RAM: maintenance.Receive", kibOf(in.Delta))},
		{"delta-zstd", fmt.Sprintf("zstd -d --patch-from (Debian %s), its -19 patch (%s)", debVersion(in, "zstd"), kibOf(in.Patch))},
		{"write-roost", fmt.Sprintf("roostd: image.Write into %s", in.Slots[1])},
		{"write-flashcp", fmt.Sprintf("flashcp (Debian mtd-utils %s)", debVersion(in, "mtd-utils"))},
	}
	var notes []string
	for _, row := range rows {
		if in.Debian == nil && row.name != "delta-roost" && row.name != "write-roost" {
			continue
		}
		fmt.Fprintf(tw, "%s\t", row.what)
		for _, r := range runs {
			m, ok := r.Res[row.name]
			switch {
			case !ok:
				fmt.Fprintf(tw, "-\t-\t-\t")
			case m["refused"] != "":
				fmt.Fprintf(tw, "refused\t-\t-\t") // the check's note says why
			case m["skipped"] != "":
				fmt.Fprintf(tw, "not run\t-\t-\t")
				notes = append(notes, fmt.Sprintf("%s at %d MiB not run: %s", row.name, r.MemoryMB, m["skipped"]))
			case m["error"] != "":
				fmt.Fprintf(tw, "%s\t%s\t%.1f\t", failure(m["error"]), mibOrDash(num(m, "peak")), mib(num(m, "lowavail")))
				notes = append(notes, fmt.Sprintf("%s at %d MiB failed after %.1f s: %s", row.name, r.MemoryMB, secs(m, "seconds"), oneLine(m["error"])))
			default:
				fmt.Fprintf(tw, "%.2f\t%.1f\t%.1f\t", secs(m, "seconds"), mib(num(m, "peak")), mib(num(m, "lowavail")))
			}
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
	upgradeNotes(runs, in)
	for _, n := range notes {
		fmt.Printf("(%s)\n", n)
	}
	fmt.Println("(block2mtd over virtio-blk under TCG: the times are the code's on an emulated 24Kc, not a NOR flash's, whose erase and write are far slower; peak is the process's VmHWM (its own report, or sampled every 50 ms), without the files in tmpfs, which the lowest MemAvailable, sampled as often, includes)")
}

// upgradeNotes prints what the images are, each run's RAM check and the
// operations' parts.
func upgradeNotes(runs []*mipsRun, in *mipsInputs) {
	fmt.Printf("(the images: squashfs as roost image makes them for %s, of a system with roostd, the malta kernel with the router's modules and an initrd whose /init is roostd: %d bytes running in %s, %d bytes new; the delta and patch are in RAM (tmpfs) before the decode, as a received one is, and the decode writes the image into RAM)\n",
		in.Board.Name, in.Old.Bytes, in.Slots[0], in.New.Bytes)
	for _, r := range runs {
		c := r.Res["checks"]
		budget := fmt.Sprintf("%s's budget, %d MiB", in.Board.Name, in.Board.MaintenanceMB)
		if r.Like != nil {
			budget = fmt.Sprintf("the budget of %s (%d MB, the same target), %d MiB", r.Like.Name, r.Like.RAMMB, r.Like.MaintenanceMB)
		}
		fmt.Printf("(%d MiB: MemAvailable %s at the upgrade's start (MemTotal %s); roostd's RAM check there (maintenance.CheckMemory, its copy of %s beside the image, %s): delta: %s; whole image: %s)\n",
			r.MemoryMB, kibStr(num(r.Res["upgrade-start"], "memavail")), kibStr(num(r.Res["upgrade-start"], "memtotal")),
			mbStr(num(c, "closure")), budget, orQ(c["delta"]), orQ(c["whole"]))
		var parts []string
		if d := r.Res["delta-roost"]; d["decode"] != "" {
			parts = append(parts, fmt.Sprintf("roostd's delta: reading the base %s s, decode and SHA-256 %s s", d["base"], d["decode"]))
		}
		if w := r.Res["write-roost"]; w["erase"] != "" {
			parts = append(parts, fmt.Sprintf("its write: erase %s s, write (and SHA-256) %s s, read back and SHA-256 %s s", w["erase"], w["write"], w["verify"]))
		}
		if z := r.Res["delta-zstd"]; z["copy"] != "" {
			parts = append(parts, fmt.Sprintf("zstd takes the base as a file: %s's first %d bytes copied into RAM first (%s s, not counted); its output %s", in.Slots[0], in.Old.Bytes, z["copy"], z["check"]))
		}
		if f := r.Res["write-flashcp"]; f["check"] != "" {
			parts = append(parts, "flashcp's slot afterwards: "+f["check"])
		}
		if len(parts) > 0 {
			fmt.Printf("(%d MiB: %s)\n", r.MemoryMB, strings.Join(parts, "; "))
		}
	}
}

// failure is a failed operation's table cell: killed (the OOM killer, at
// these sizes) or failed.
func failure(err string) string {
	if strings.Contains(err, "signal: killed") {
		return "killed"
	}
	return "failed"
}

func orQ(s string) string {
	if s == "" {
		return "?"
	}
	return s
}

// slotMB is the size of the slot the image is written into.
func slotMB(in *mipsInputs) int {
	for _, f := range in.Board.Flash {
		if len(f.Partitions) > 0 && f.Partitions[0].Name == in.Slots[1] {
			return f.SizeMB
		}
	}
	return 0
}

func kibOf(n int64) string { return fmt.Sprintf("%.0f KiB", float64(n)/1024) }

func mibOrDash(kib int64) string {
	if kib == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f", mib(kib))
}

func oneLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > 160 {
		s = s[:160] + "…"
	}
	return s
}

func debVersion(in *mipsInputs, pkg string) string {
	if in.Debian == nil {
		return "?"
	}
	return in.Debian.Versions[pkg]
}
