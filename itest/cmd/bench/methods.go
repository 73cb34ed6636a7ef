package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"text/tabwriter"
	"time"
)

// methodsTest is the VM test that measures the ways a rebuild reaches the
// router (itest/bootmethods_test.go); it logs a BENCH line for each.
const methodsTest = "TestBootMethodsInVM"

// benchMethods runs methodsTest (go test, from the repository's top
// folder, with the roostd and roost in bin) and prints what its BENCH
// lines say: for a switch of services alone, a kexec trial and a trial by
// full reboot, the time from roost rebuild to its confirmed answer, and
// the longest silence of a ping from the LAN host to the ISP across it.
// The test failing, or saying nothing, fails the table with its output.
func benchMethods(bin string) error {
	dir, err := filepath.Abs(bin)
	if err != nil {
		return err
	}
	for _, f := range []string{filepath.Join(dir, "roostd"), filepath.Join(dir, "roost"), "itest/bootmethods_test.go"} {
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("upgrade by method: %w (run from the repository's top folder after make build)", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "test", "-count=1", "-v", "-timeout", "40m", "-run", methodsTest+"$", "./itest/")
	// ROOST_BIN_DIR: the binaries under test are bin's, as for the other
	// tables, not ones the test builds.
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "ROOST_BIN_DIR="+dir)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go test -run %s: %w\n%s", methodsTest, err, out)
	}
	rows, err := parseMethods(out)
	if err != nil {
		return fmt.Errorf("go test -run %s: %w\n%s", methodsTest, err, out)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "upgrade by method on the router VM (qemu-x86_64, TCG, 1 CPU; one run of %s, %.0fs)\troost rebuild to confirmed (s)\tLAN ping downtime (s)\tpings sent\treceived\t\n",
		methodsTest, time.Since(start).Seconds())
	for _, m := range methodRows {
		r := rows[m.name]
		fmt.Fprintf(tw, "%s\t%.1f\t%.2f\t%d\t%d\t\n", m.what, r.confirmed, r.downtime, r.sent, r.received)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Printf("(the LAN host pings the ISP through the router every 50 ms; downtime is the longest time between two replies)\n")
	return nil
}

// methodRows are the test's cases, by the names its BENCH lines give.
var methodRows = []struct{ name, what string }{
	{"service", "service-only switch (a config change)"},
	{"kexec", "kexec trial (another kernel parameter)"},
	{"reboot", "full reboot (trial by reboot, --reboot)"},
}

// methodFigures are one BENCH line's figures.
type methodFigures struct {
	confirmed, downtime float64 // seconds
	sent, received      int
}

var benchLine = regexp.MustCompile(`BENCH boot-method (\S+) confirmed=([0-9.]+) downtime=([0-9.]+) sent=([0-9]+) received=([0-9]+)`)

// parseMethods reads the BENCH lines in the test's output: every row of
// methodRows must have one.
func parseMethods(out []byte) (map[string]methodFigures, error) {
	rows := map[string]methodFigures{}
	for _, m := range benchLine.FindAllSubmatch(out, -1) {
		var f methodFigures
		var errs [4]error
		f.confirmed, errs[0] = strconv.ParseFloat(string(m[2]), 64)
		f.downtime, errs[1] = strconv.ParseFloat(string(m[3]), 64)
		f.sent, errs[2] = strconv.Atoi(string(m[4]))
		f.received, errs[3] = strconv.Atoi(string(m[5]))
		for _, err := range errs {
			if err != nil {
				return nil, fmt.Errorf("a BENCH line the bench cannot read: %q: %w", m[0], err)
			}
		}
		rows[string(m[1])] = f
	}
	for _, r := range methodRows {
		if _, ok := rows[r.name]; !ok {
			return nil, fmt.Errorf("no BENCH line for %q (was the test skipped?)", r.name)
		}
	}
	return rows, nil
}
