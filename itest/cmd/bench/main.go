// Command bench measures roost against the tools it competes with, in one
// run, and prints tables: the router's store (import, gc) beside Nix's, and
// over-the-air transfers beside nix-copy-closure and nix copy over modelled
// links (a LAN, 10 ms of delay, a remote router at 20 Mbit/s); on the MIPS
// VM, roostd's idle memory and an image upgrade beside Debian's mipsel
// dnsmasq, dropbear, zstd and flashcp (mips.go). make bench runs it.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/roostrouter/roost/updater/storetest"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "delay-proxy" {
		// Run inside the laptop's namespace by benchOTA.
		// It serves until killed, so it returns only on failure.
		fmt.Fprintln(os.Stderr, "delay-proxy:", runDelayProxy(os.Args[2:]))
		os.Exit(1)
	}
	if len(os.Args) > 1 && os.Args[1] == "rusage" {
		// Run on the router, in front of nix-store, by benchOTA.
		os.Exit(runRusage(os.Args[2:]))
	}
	bin := flag.String("bin", "itest/bin", "the `folder` with roostd and roost")
	scale := flag.Int("scale", 1, "divide the closures' sizes by this, for a quick run")
	only := flag.String("only", "", "run only this table: store, agent, addressing, firewall, dns, boot, methods, ota or mips")
	links := flag.String("links", "", "over-the-air: only these links, comma-separated (lan, 10ms, remote)")
	var mips mipsOptions
	flag.StringVar(&mips.Base, "mips-base", "HEAD~20", "MIPS: the git `revision` whose roostd the running image holds (the new image's is this tree's)")
	flag.IntVar(&mips.Idle, "mips-idle", 20, "MIPS: `seconds` idle after every service is up before the resident sets are read")
	flag.IntVar(&mips.UpgradeMB, "mips-upgrade-mb", 128, "MIPS: the RAM (`MiB`) of a second run, of the image upgrade alone, as a 128 MB router has (0: none)")
	flag.StringVar(&mips.Console, "mips-console", "", "MIPS: append the VMs' consoles to this `file`")
	flag.Parse()
	roostd, roost := filepath.Join(*bin, "roostd"), filepath.Join(*bin, "roost")
	tables := []struct {
		name string
		run  func() error
	}{
		{"store", func() error { return benchStore(roostd, *scale) }},
		{"agent", benchAgent},
		{"addressing", func() error { return benchAddressing(roostd) }},
		{"firewall", benchFirewall},
		{"dns", func() error { return benchDNS(roostd) }},
		{"boot", func() error { return benchBoot(*bin) }},
		{"methods", func() error { return benchMethods(*bin) }},
		{"ota", func() error { return benchOTA(roostd, roost, *scale, *links) }},
		{"mips", func() error { return benchMIPS(mips) }},
	}
	for _, tb := range tables {
		if *only != "" && *only != tb.name {
			continue
		}
		if err := tb.run(); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		fmt.Println()
	}
}

// measurement is one timed command.
type measurement struct {
	wall   time.Duration
	maxRSS int64 // bytes
}

// timed runs a command with stdin from a file and returns its wall time and
// peak resident memory. It first flushes what earlier commands left dirty,
// so that no command pays for another's writes. With thenSync the time
// includes a sync after the command: what a command that does not make its
// writes durable would need to match one that does.
func timed(stdinFile string, thenSync bool, name string, args ...string) (measurement, error) {
	syscall.Sync()
	cmd := exec.Command(name, args...)
	if stdinFile != "" {
		f, err := os.Open(stdinFile)
		if err != nil {
			return measurement{}, err
		}
		defer f.Close()
		cmd.Stdin = f
	}
	out, err := os.CreateTemp("", "bench-out-")
	if err != nil {
		return measurement{}, err
	}
	defer os.Remove(out.Name())
	cmd.Stdout, cmd.Stderr = out, out
	start := time.Now()
	err = cmd.Run()
	if thenSync {
		syscall.Sync()
	}
	m := measurement{wall: time.Since(start)}
	if err != nil {
		log, _ := os.ReadFile(out.Name())
		return m, fmt.Errorf("%s %v: %v\n%s", name, args, err, log)
	}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		m.maxRSS = int64(ru.Maxrss) * 1024
	}
	return m, nil
}

func nixOpts(dir string) []string {
	return []string{"--store", dir, "--option", "build-users-group", "", "--option", "substituters", ""}
}

func writeExport(file string, pkgs []storetest.Package) (int64, error) {
	f, err := os.Create(file)
	if err != nil {
		return 0, err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	if err := storetest.WriteExport(w, pkgs); err != nil {
		f.Close()
		return 0, err
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return 0, err
	}
	fi, _ := f.Stat()
	return fi.Size(), f.Close()
}
