package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/roostrouter/roost/boards"
	"github.com/roostrouter/roost/updater/image"
)

// flash makes the board's block2mtd flashes MTD devices, as roostd init
// does (boards.Flash.Block2MTD, once each disk is there), and mounts the
// payload.
func flash(spec Spec) error {
	b, err := boards.Lookup(spec.Board)
	if err != nil {
		return err
	}
	disks := []string{spec.Payload}
	for _, f := range b.Flash {
		if f.Block2MTD() != "" {
			disks = append(disks, f.Name)
		}
	}
	for _, d := range disks {
		if err := waitFor("/dev/"+d, 30*time.Second); err != nil {
			return err
		}
	}
	for _, f := range b.Flash {
		p := f.Block2MTD()
		if p == "" {
			continue
		}
		if err := os.WriteFile("/sys/module/block2mtd/parameters/block2mtd", []byte(p), 0); err != nil {
			return fmt.Errorf("block2mtd %s: %w", p, err)
		}
	}
	if err := os.MkdirAll(payload, 0o755); err != nil {
		return err
	}
	if err := unix.Mount("/dev/"+spec.Payload, payload, "squashfs", unix.MS_RDONLY, ""); err != nil {
		return fmt.Errorf("mount the payload /dev/%s: %w", spec.Payload, err)
	}
	mtd, _ := os.ReadFile("/proc/mtd")
	say("flash: %s", strings.ReplaceAll(strings.TrimSpace(string(mtd)), "\n", "; "))
	say("PCI: %s", pciDevices())
	return nil
}

// pciDevices lists the PCI devices, their IRQ and driver: the malta
// board routes interrupts for some slots only.
func pciDevices() string {
	var out []string
	devs, _ := filepath.Glob("/sys/bus/pci/devices/*")
	for _, d := range devs {
		irq, _ := os.ReadFile(filepath.Join(d, "irq"))
		drv, _ := os.Readlink(filepath.Join(d, "driver"))
		out = append(out, fmt.Sprintf("%s irq %s %s", filepath.Base(d), strings.TrimSpace(string(irq)), filepath.Base(drv)))
	}
	ifs, _ := filepath.Glob("/sys/class/net/*")
	for i := range ifs {
		ifs[i] = filepath.Base(ifs[i])
	}
	return strings.Join(out, ", ") + "; interfaces " + strings.Join(ifs, " ")
}

func waitFor(file string, timeout time.Duration) error {
	for deadline := time.Now().Add(timeout); ; time.Sleep(100 * time.Millisecond) {
		if _, err := os.Stat(file); err == nil {
			return nil
		} else if time.Now().After(deadline) {
			return fmt.Errorf("%s: %w after %s", file, err, timeout)
		}
	}
}

// mtdDevice is the /dev/mtdN of the MTD partition called name.
func mtdDevice(name string) (string, error) {
	f, err := os.Open("/proc/mtd")
	if err != nil {
		return "", err
	}
	defer f.Close()
	all, err := image.ParseProcMTD(f)
	if err != nil {
		return "", err
	}
	for _, m := range all {
		if m.Name == name {
			return m.Device(), nil
		}
	}
	return "", fmt.Errorf("no MTD partition %q in /proc/mtd", name)
}

// meminfo is /proc/meminfo in KiB.
func meminfo() map[string]int64 {
	return kibFields("/proc/meminfo")
}

// procStatus is a process's /proc/PID/status figures in KiB (VmRSS,
// VmHWM, RssAnon, RssFile).
func procStatus(pid int) map[string]int64 {
	return kibFields(filepath.Join("/proc", strconv.Itoa(pid), "status"))
}

// kibFields reads the "Key: N kB" lines of a /proc file.
func kibFields(file string) map[string]int64 {
	out := map[string]int64{}
	f, err := os.Open(file)
	if err != nil {
		return out
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if v, found := strings.CutSuffix(strings.TrimSpace(v), " kB"); ok && found {
			n, _ := strconv.ParseInt(v, 10, 64)
			out[k] = n
		}
	}
	return out
}

// memLine is the run's memory as a BENCH line's figures (KiB): what
// holds the RAM that is not available.
func memLine() string {
	m := meminfo()
	return fmt.Sprintf("memtotal=%d memavail=%d memfree=%d cached=%d shmem=%d slab=%d sunreclaim=%d anon=%d kernelstack=%d pagetables=%d vmalloc=%d",
		m["MemTotal"], m["MemAvailable"], m["MemFree"], m["Cached"], m["Shmem"], m["Slab"], m["SUnreclaim"], m["AnonPages"], m["KernelStack"], m["PageTables"], m["VmallocUsed"])
}
