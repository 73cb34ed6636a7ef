package main

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// runRusage runs a command (args[1:]) with this process's stdio, then
// appends its CPU time (user and system, nanoseconds) and peak resident
// memory (KiB) to the file args[0], and exits as it did. The benchmark
// puts it in front of the router's nix-store.
func runRusage(args []string) int {
	if len(args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: bench rusage FILE COMMAND [ARG...]")
		return 2
	}
	cmd := exec.Command(args[1], args[2:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	err := cmd.Run()
	if cmd.ProcessState == nil {
		fmt.Fprintln(os.Stderr, "rusage:", err)
		return 127
	}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		if f, err := os.OpenFile(args[0], os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644); err == nil {
			fmt.Fprintf(f, "%d %d\n", ru.Utime.Nano()+ru.Stime.Nano(), ru.Maxrss)
			f.Close()
		}
	}
	return cmd.ProcessState.ExitCode()
}

// readRusage sums the CPU times runRusage recorded and takes the largest
// peak; -1 if none was recorded.
func readRusage(file string) (time.Duration, int64) {
	b, err := os.ReadFile(file)
	if err != nil {
		return -1, 0
	}
	var cpu time.Duration
	var peak int64
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var ns, kib int64
		fmt.Sscan(l, &ns, &kib)
		cpu += time.Duration(ns)
		peak = max(peak, kib*1024)
	}
	return cpu, peak
}

// procCPU is the CPU time a running process has used (all its threads),
// from /proc: clock ticks of 10 ms.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The fields after the command name, which is in parentheses: utime
	// and stime are the 12th and 13th of them.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+s) * 10 * time.Millisecond, nil
}

// resetPeak makes a process's peak resident memory its current one
// (clear_refs 5, Linux 4.0 and later), so that procPeak measures from now.
func resetPeak(pid int) {
	os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}

// procPeak is a process's peak resident memory (VmHWM) in bytes.
func procPeak(pid int) int64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			kib, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kib * 1024
		}
	}
	return 0
}
