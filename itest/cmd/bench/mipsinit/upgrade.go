package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/roostrouter/roost/boards"
	"github.com/roostrouter/roost/updater/image"
	"github.com/roostrouter/roost/updater/maintenance"
)

// upgrade measures an image upgrade's two steps on the router: the new
// image decoded from a delta against the running slot (image-a) into RAM,
// then written into the other slot (image-b); and Debian's tools doing
// the same.
func upgrade(spec Spec) {
	// roostd checks RAM before it receives anything (and before it stops
	// a service): a delta needs its base beside the image.
	b, err := boards.Lookup(spec.Board)
	if err != nil {
		bench("delta-roost", "error=%q", err.Error())
		return
	}
	if spec.MaintenanceMB > 0 {
		b.MaintenanceMB = spec.MaintenanceMB
	}
	closure := fileSize(roostd)
	whole := maintenance.Want{Bytes: spec.NewBytes, SHA256: spec.NewSHA256}
	delta := whole
	delta.Delta = &maintenance.Delta{BaseBytes: spec.OldBytes, BaseSHA256: spec.OldSHA256}
	deltaCheck, wholeCheck := checkMemory(b, delta, closure), checkMemory(b, whole, closure)
	bench("checks", "closure=%d delta=%q whole=%q", closure, deltaCheck, wholeCheck)
	if deltaCheck != "ok" {
		// Decoding all the same would have the OOM killer end it, or
		// the kernel panic once only the tmpfs is left to free.
		bench("delta-roost", "refused=%q", deltaCheck)
	} else if err := copyFile("/run/new.delta", payload+"/img/new.delta", -1); err != nil {
		bench("delta-roost", "error=%q", err.Error())
	} else {
		// The delta as it came over SSH: in RAM.
		report("delta-roost", measure(exec.Command("/init", "delta")))
		os.Remove("/run/new.delta")
	}
	if _, err := os.Stat(newImage); err != nil {
		// No image decoded: write the image as it came whole. roostd's
		// check (whole=) may refuse this too; the write is measured all
		// the same, since it fits without roostd's copy beside it.
		if err := copyFile(newImage, payload+"/img/new.img", -1); err != nil {
			bench("write-roost", "error=%q", err.Error())
			return
		}
	}
	report("write-roost", measure(exec.Command("/init", "write")))
	if spec.Debian {
		dev, err := mtdDevice(spec.Spare)
		if err != nil {
			bench("write-flashcp", "error=%q", err.Error())
		} else {
			r := measure(debian("flashcp", newImage, dev))
			if r.err == nil {
				r.out = fmt.Sprintf("%s check=%s", r.out, checkDevice(dev, spec.NewBytes, spec.NewSHA256))
			}
			report("write-flashcp", r)
		}
	}
	os.Remove(newImage)
	if spec.Debian {
		zstdDelta(spec)
	}
}

// checkMemory is roostd's RAM check for an image upgrade, "ok" or why it
// refuses.
func checkMemory(b boards.Board, w maintenance.Want, closure int64) string {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	if err := maintenance.CheckMemory(b, f, w, uint64(closure)); err != nil {
		return err.Error()
	}
	return "ok"
}

func fileSize(f string) int64 {
	fi, err := os.Stat(f)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// zstdDelta measures zstd --patch-from decoding its own patch against the
// old image, which it takes as a file: a copy of the running slot's first
// OldBytes in RAM (the copy's time is said apart).
func zstdDelta(spec Spec) {
	const name = "delta-zstd"
	// It needs in RAM the base's copy, the patch and the image, and
	// holds base and image while it decodes (as roostd's decoder does):
	// without room for that it is not run, lest the kernel panic.
	need := (2*spec.OldBytes + spec.PatchBytes + 2*spec.NewBytes) >> 10
	if avail := meminfo()["MemAvailable"]; avail < need {
		bench(name, "skipped=%q", fmt.Sprintf("needs about %.1f MiB (base copy, patch and image in RAM, base and image in the decoder), %.1f MiB available", float64(need)/1024, float64(avail)/1024))
		return
	}
	dev, err := mtdDevice(spec.Running)
	start := time.Now()
	if err == nil {
		err = copyFile("/run/old.img", dev, spec.OldBytes)
	}
	copied := time.Since(start)
	if err == nil {
		err = copyFile("/run/new.zst", payload+"/img/new.zst", -1)
	}
	if err != nil {
		bench(name, "error=%q", err.Error())
		return
	}
	r := measure(debian("zstd", "-d", "-q", "-f", "--patch-from=/run/old.img", "/run/new.zst", "-o", newImage))
	if r.err == nil {
		r.out = fmt.Sprintf("copy=%.2f check=%s", copied.Seconds(), checkDevice(newImage, spec.NewBytes, spec.NewSHA256))
	}
	report(name, r)
	for _, f := range []string{"/run/old.img", "/run/new.zst", newImage} {
		os.Remove(f)
	}
}

// measured is a child process's figures.
type measured struct {
	seconds          float64
	peak             int64 // KiB: its VmHWM
	before, lowAvail int64 // MemAvailable before it started and the lowest while it ran, KiB
	out              string
	err              error
}

// measure runs cmd and measures it. Its peak is its VmHWM, sampled every
// 50 ms while it runs, or the one it says itself as it ends (hwm=, this
// program's children): wait4's ru_maxrss cannot be used, since exec
// records in it the peak of the mm it replaces, and a child of Go's
// os/exec starts on its parent's (vfork), this init's.
func measure(cmd *exec.Cmd) measured {
	say("running %s", strings.Join(cmd.Args, " "))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	m := measured{before: meminfo()["MemAvailable"]}
	start := time.Now()
	if m.err = cmd.Start(); m.err != nil {
		return m
	}
	// A stuck operation (the VM short of RAM) ends as an error, not the run.
	timeout := time.AfterFunc(5*time.Minute, func() { cmd.Process.Kill() })
	defer timeout.Stop()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	m.lowAvail = m.before
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for running := true; running; {
		select {
		case m.err = <-done:
			running = false
		case <-t.C:
			m.lowAvail = min(m.lowAvail, meminfo()["MemAvailable"])
			m.peak = max(m.peak, procStatus(cmd.Process.Pid)["VmHWM"])
		}
	}
	m.seconds = time.Since(start).Seconds()
	hwm, rest := splitHWM(strings.TrimSpace(out.String()))
	m.peak, m.out = max(m.peak, hwm), rest
	if m.err != nil {
		m.err = fmt.Errorf("%v: %s", m.err, m.out)
	}
	return m
}

// splitHWM takes the peak a child of this program says on its output's
// last line (hwm=KiB, before its figures) out of the output.
func splitHWM(out string) (int64, string) {
	i := strings.LastIndexByte(out, '\n') + 1
	kv, ok := strings.CutPrefix(out[i:], "hwm=")
	if !ok {
		return 0, out
	}
	hwm, rest, _ := strings.Cut(kv, " ")
	n, err := strconv.ParseInt(hwm, 10, 64)
	if err != nil {
		return 0, out
	}
	return n, strings.TrimSpace(out[:i] + rest)
}

func report(name string, m measured) {
	if m.err != nil {
		bench(name, "seconds=%.2f peak=%d memavail=%d lowavail=%d error=%q", m.seconds, m.peak, m.before, m.lowAvail, m.err.Error())
		return
	}
	bench(name, "seconds=%.2f peak=%d memavail=%d lowavail=%d %s", m.seconds, m.peak, m.before, m.lowAvail, m.out)
}

// child is a measured operation, run as /init MODE: its output's last
// line is its own figures (key=value).
func child(mode string, args []string) int {
	b, err := os.ReadFile(SpecFile)
	var spec Spec
	if err == nil {
		err = json.Unmarshal(b, &spec)
	}
	if err == nil {
		switch mode {
		case "delta":
			err = decodeDelta(spec)
		case "write":
			err = writeImage(spec)
		default:
			err = fmt.Errorf("unknown mode %q (%v)", mode, args)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// decodeDelta receives the new image from the delta in RAM as roostd does
// (maintenance.Receive against the running slot, image-a).
func decodeDelta(spec Spec) error {
	dev, err := mtdDevice(spec.Running)
	if err != nil {
		return err
	}
	f, err := os.Open("/run/new.delta")
	if err != nil {
		return err
	}
	defer f.Close()
	start := time.Now()
	var baseRead time.Duration
	base := func() (io.ReadCloser, error) {
		d, err := os.Open(dev)
		return timedCloser{d, func() { baseRead = time.Since(start) }}, err
	}
	w := maintenance.Want{Bytes: spec.NewBytes, SHA256: spec.NewSHA256,
		Delta: &maintenance.Delta{BaseBytes: spec.OldBytes, BaseSHA256: spec.OldSHA256}}
	if err := maintenance.Receive(f, newImage, w, base, nil); err != nil {
		return err
	}
	fmt.Printf("hwm=%d base=%.2f decode=%.2f\n", procStatus(os.Getpid())["VmHWM"], baseRead.Seconds(), (time.Since(start) - baseRead).Seconds())
	return nil
}

// timedCloser calls closed when the base has been read.
type timedCloser struct {
	io.ReadCloser
	closed func()
}

func (t timedCloser) Close() error { t.closed(); return t.ReadCloser.Close() }

// writeImage writes the image in RAM into image-b as roostd maintain does
// (updater/image.Write, the board's flash), timing each phase.
func writeImage(spec Spec) error {
	b, err := boards.Lookup(spec.Board)
	if err != nil {
		return err
	}
	f, err := os.Open(newImage)
	if err != nil {
		return err
	}
	defer f.Close()
	sum, err := hex.DecodeString(spec.NewSHA256)
	if err != nil {
		return err
	}
	seconds := map[string]float64{}
	start := time.Now()
	last, phase := start, ""
	c := image.Config{Board: b, Partition: spec.Spare, Root: "/", Progress: func(p image.Progress) {
		if p.Phase != phase {
			// On the console, as it happens: stdout is the parent's.
			os.WriteFile("/dev/console", []byte("mipsinit: write: "+p.Phase+"\n"), 0)
			phase, start = p.Phase, last
		}
		last = time.Now()
		seconds[p.Phase] = last.Sub(start).Seconds()
	}}
	if _, err := image.Write(context.Background(), c, image.Image{R: f, Size: spec.NewBytes, SHA256: sum}); err != nil {
		return err
	}
	fmt.Printf("hwm=%d erase=%.2f write=%.2f verify=%.2f\n", procStatus(os.Getpid())["VmHWM"], seconds[image.PhaseErase], seconds[image.PhaseWrite], seconds[image.PhaseVerify])
	return nil
}

// copyFile copies n bytes (all if n < 0) of src into dst.
func copyFile(dst, src string, n int64) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	r := io.Reader(in)
	if n >= 0 {
		r = io.LimitReader(in, n)
	}
	if _, err := io.Copy(out, r); err != nil {
		out.Close()
		return fmt.Errorf("copy %s to %s: %w", src, dst, err)
	}
	return out.Close()
}

// checkDevice says whether the first n bytes of file hash to want.
func checkDevice(file string, n int64, want string) string {
	f, err := os.Open(file)
	if err != nil {
		return "error:" + err.Error()
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, io.LimitReader(f, n)); err != nil {
		return "error:" + err.Error()
	}
	if hex.EncodeToString(h.Sum(nil)) != want {
		return "MISMATCH"
	}
	return "match"
}
