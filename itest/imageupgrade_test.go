package itest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/roostrouter/roost/itest/vm"
)

// imageRebuildJSON is what roost rebuild --json says of an image upgrade.
type imageRebuildJSON struct {
	System    string `json:"system"`
	Confirmed bool   `json:"confirmed"`
	Image     *struct {
		Slot         string  `json:"slot"`
		Bytes        int64   `json:"bytes"`
		SHA256       string  `json:"sha256"`
		SentBytes    int64   `json:"sentBytes"`
		Delta        bool    `json:"delta"`
		SendSeconds  float64 `json:"sendSeconds"`
		WriteSeconds float64 `json:"writeSeconds"`
		UpSeconds    float64 `json:"upSeconds"`
	} `json:"image"`
}

// imageSlots is what roostd image plan --hash --json says.
type imageSlots struct {
	Slots   []string `json:"slots"`
	Running string   `json:"running"`
	Default string   `json:"default"`
	Trial   *struct {
		Slot string `json:"slot"`
	} `json:"trial"`
	Last         string `json:"last"`
	RunningImage *struct {
		SHA256 string `json:"sha256"`
	} `json:"runningImage"`
}

// configNamed is the lab's config with another hostname: another system.
func (l *mipsImageLab) configNamed(host string) []byte {
	return []byte(strings.Replace(string(l.config()), `"hostname": "malta"`, fmt.Sprintf("%q: %q", "hostname", host), 1))
}

// slots asks the router for its slots and the running image's hash.
func (l *mipsImageLab) slots() imageSlots {
	l.t.Helper()
	res := l.lap.openssh("", nil, "rotuer", "roostd", "image", "plan", "--hash", "--json")
	if res.code != 0 {
		l.t.Fatalf("roostd image plan: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	var s imageSlots
	mustJSON(l.t, "roostd image plan", res.stdout, &s)
	return s
}

func fileSHA(t *testing.T, file string) string {
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// consoleBetween is the seconds between two lines of roostd's log.
func (l *mipsImageLab) consoleBetween(from int, a, b string) float64 {
	la, _, okA := l.router.Console().Find(a, from)
	lb, _, okB := l.router.Console().Find(b, from)
	if !okA || !okB {
		return -1
	}
	return consoleTime(lb) - consoleTime(la)
}

// consoleTime is the time of a line of roostd's log (slog's time=).
func consoleTime(line string) float64 {
	_, rest, _ := strings.Cut(line, "time=")
	ts, _, _ := strings.Cut(rest, " ")
	at, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		return 0
	}
	return float64(at.UnixNano()) / 1e9
}

// TestImageUpgradeInMIPSVM: pivot-to-maintenance on the 64 MiB MIPS
// router booting from its squashfs slot (issue 17). roost rebuild sends
// the new image; roostd checks RAM, receives it into a tmpfs, hands over
// to itself in RAM, detaches the store's image, writes the spare slot,
// names it for one trial boot and reboots; roost follows the write,
// confirms the trial, and the slot is the default. On less RAM the
// upgrade is refused with its numbers and nothing stops; on more, it goes
// as a delta. Power cuts at random points of the write (10) always come
// back on a complete image, old or new, which roostd status names.
func TestImageUpgradeInMIPSVM(t *testing.T) {
	l := newMIPSImageLab(t)
	r := l.boot()
	l.waitStatus(0)

	sys2 := l.buildSystem("roost-system-malta-2", l.configNamed("malta-2"), l.agent)
	from := r.Console().Mark()
	start := time.Now()
	res := l.lap.roost("rebuild", "--host", "rotuer", "--system", sys2, "--json")
	if res.code != 0 {
		t.Fatalf("roost rebuild to an image: exit %d\n%s\n%s", res.code, res.stdout, res.stderr)
	}
	var rb imageRebuildJSON
	mustJSON(t, "roost rebuild --json", res.stdout, &rb)
	if !rb.Confirmed || rb.Image == nil || rb.Image.Slot != "image-b" {
		t.Fatalf("roost rebuild: %s, want image-b written and confirmed", res.stdout)
	}
	writeSecs := l.consoleBetween(from, "maintenance: writing the image from RAM", "maintenance: image written and verified")
	receiveSecs := l.consoleBetween(from, "maintenance: running from RAM", "maintenance: image received and verified")
	t.Logf("rebuild on 64 MiB: %.1f s in all; image %d bytes, %d sent (delta %v), sent in %.1f s (in RAM %.1f s after the pivot), written %.1f s after the answer (the write itself %.1f s), confirmed %.1f s after it\nroost's stderr:\n%s",
		time.Since(start).Seconds(), rb.Image.Bytes, rb.Image.SentBytes, rb.Image.Delta, rb.Image.SendSeconds, receiveSecs, rb.Image.WriteSeconds, writeSecs, rb.Image.UpSeconds, res.stderr)
	st := l.slots()
	var status mipsStatus
	mustJSON(t, "roost status", l.lap.mustRoost("status", "--host", "rotuer", "--json"), &status)
	if st.Running != "image-b" || st.Default != "image-b" || st.Trial != nil || status.Hostname != "malta-2" || status.Current != sys2 {
		t.Fatalf("after the rebuild: slots %+v, hostname %q, system %s; want image-b the default, running %s", st, status.Hostname, status.Current, sys2)
	}
	newSHA := st.RunningImage.SHA256

	// Too little RAM: a delta of the image against the running one needs
	// the image, its base and the decoder's copy in RAM, more than the 64
	// MiB VM has (booting it with less leaves QEMU's malta no room for the
	// initramfs: "Initramfs unpacking failed" below 58 MiB).
	t.Run("TooLittleRAM", func(t *testing.T) {
		from := r.Console().Mark()
		img, _ := l.makeImage(l.system)
		fi, _ := os.Stat(img)
		st := l.slots()
		res := l.lap.openssh("", nil, "rotuer", "roostd", "image", "write", "--bytes", fmt.Sprint(fi.Size()), "--sha256", fileSHA(t, img),
			"--delta-base-bytes", fmt.Sprint(rb.Image.Bytes), "--delta-base-sha256", st.RunningImage.SHA256)
		t.Logf("a delta on 64 MiB: exit %d: %s", res.code, res.stderr)
		for _, want := range []string{"need", "MiB (image", "have", "available", "refused before stopping anything"} {
			if res.code == 0 || !strings.Contains(res.stderr, want) {
				t.Fatalf("roostd image write of a delta on 64 MiB: exit %d, stderr without %q", res.code, want)
			}
		}
		var status mipsStatus
		mustJSON(t, "roost status", l.lap.mustRoost("status", "--host", "rotuer", "--json"), &status)
		for _, s := range status.Services {
			if s.State != "up" {
				t.Errorf("after the refusal, service %s is %s", s.Name, s.State)
			}
		}
		if after := l.slots(); after.Running != "image-b" || after.Trial != nil || after.RunningImage.SHA256 != newSHA {
			t.Errorf("after the refusal: %+v", after)
		}
		if _, _, ok := r.Console().Find("pivot-to-maintenance", from); ok {
			t.Error("the refused upgrade started the maintenance")
		}
	})

	t.Run("DeltaOn128MiB", func(t *testing.T) {
		from := r.Console().Mark()
		if err := r.Restart(func(o *vm.MIPSRouterOptions) { o.Memory = 128 }); err != nil {
			t.Fatal(err)
		}
		l.waitStatus(from)
		sys3 := l.buildSystem("roost-system-malta-3", l.configNamed("malta-3"), l.agent)
		res := l.lap.roost("rebuild", "--host", "rotuer", "--system", sys3, "--json")
		if res.code != 0 {
			t.Fatalf("roost rebuild on 128 MiB: exit %d\n%s\n%s", res.code, res.stdout, res.stderr)
		}
		var rb imageRebuildJSON
		mustJSON(t, "roost rebuild --json", res.stdout, &rb)
		t.Logf("delta rebuild on 128 MiB: image %d bytes, %d sent (delta %v), up %.1f s", rb.Image.Bytes, rb.Image.SentBytes, rb.Image.Delta, rb.Image.UpSeconds)
		if !rb.Confirmed || rb.Image.Slot != "image-a" || !rb.Image.Delta || rb.Image.SentBytes > rb.Image.Bytes/2 {
			t.Fatalf("roost rebuild: %s, want image-a written from a delta of less than half the image", res.stdout)
		}
		newSHA = rb.Image.SHA256
	})

	t.Run("PowerCuts", func(t *testing.T) {
		// Back to 64 MiB; each cut comes during a write of the spare slot.
		from := r.Console().Mark()
		if err := r.Restart(func(o *vm.MIPSRouterOptions) { o.Memory = 64 }); err != nil {
			t.Fatal(err)
		}
		l.waitStatus(from)
		st := l.slots()
		if st.Running != "image-a" || st.Default != "image-a" {
			t.Fatalf("the boot after the delta's confirmation: %+v; want image-a, confirmed, the default", st)
		}
		running := st.RunningImage.SHA256
		// The images to write: the lab's other two systems'.
		sys2Image, _ := l.makeImage(sys2)
		images := []string{l.image, sys2Image}
		seed := uint64(time.Now().UnixNano())
		t.Logf("seed %d; the write took %.1f s", seed, writeSecs)
		rnd := rand.New(rand.NewPCG(seed, 17))
		// 10 cuts in the write; a send that stalls (seen once in 30: the
		// receive made no progress, roostd in RAM would reboot after 5
		// minutes) is cut too, and not counted.
		writeCuts := 0
		for i := 0; writeCuts < 10; i++ {
			if i >= 13 {
				t.Fatalf("only %d cuts of 13 came during the write", writeCuts)
			}
			from := r.Console().Mark()
			img := images[0]
			if fileSHA(t, img) == running {
				img = images[1]
			}
			imgSHA := fileSHA(t, img)
			fi, _ := os.Stat(img)
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			res := l.lap.openssh("", nil, "rotuer", "roostd", "image", "write", "--bytes", fmt.Sprint(fi.Size()), "--sha256", imgSHA, "--confirm-timeout", "5m", "--json")
			if res.code != 0 {
				t.Fatalf("cut %d: roostd image write: exit %d\n%s%s", i, res.code, res.stdout, res.stderr)
			}
			var started struct{ Token string }
			mustJSON(t, "roostd image write --json", res.stdout, &started)
			if _, _, err := r.Console().WaitFor(ctx, "maintenance: running from RAM", from); err != nil {
				t.Fatalf("cut %d: %v", i, err)
			}
			cmd := exec.CommandContext(ctx, "ssh", append(l.lap.opensshOpts(), "rotuer", "roostd", "maintenance", "receive")...)
			cmd.Env = append(os.Environ(), l.lap.env()...)
			in, _ := os.Open(img)
			cmd.Stdin = in
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			wctx, wcancel := context.WithTimeout(ctx, time.Minute)
			_, _, err := r.Console().WaitFor(wctx, "maintenance: writing the image from RAM", from)
			wcancel()
			// Most cuts in the write, some after its end: the commit, the
			// reboot.
			cut := time.Duration(rnd.Float64() * (writeSecs + 1.5) * float64(time.Second))
			phase := "in the write"
			if err != nil {
				phase, cut = "in a receive that stalled", 0
				t.Logf("cut %d: no write a minute after the receive started: %v", i, err)
			} else {
				writeCuts++
			}
			time.Sleep(cut)
			if _, _, ok := r.Console().Find("image written and verified", from); ok {
				phase = "after the commit"
			}
			r.Kill()
			cmd.Wait()
			in.Close()
			cancel()
			from = r.Console().Mark()
			if err := r.Restart(nil); err != nil {
				t.Fatal(err)
			}
			l.waitStatus(from)
			after := l.slots()
			got := after.RunningImage.SHA256
			which := map[string]string{running: "old", imgSHA: "new"}[got]
			if which == "" {
				t.Fatalf("cut %d at %s (%s): the router came up on slot %s holding an image that is neither: %s", i, cut, phase, after.Running, got)
			}
			t.Logf("cut %d at %.1f s into the write (%s): up on %s, the %s image; last: %s", i, cut.Seconds(), phase, after.Running, which, after.Last)
			if which == "new" {
				// Cut after the commit: the trial boot of the new image,
				// which roost would confirm.
				if after.Trial == nil || after.Running != after.Trial.Slot {
					t.Fatalf("cut %d: up on the new image, not as its trial: %+v", i, after)
				}
				if res := l.lap.openssh("", nil, "rotuer", "roostd", "confirm", started.Token); res.code != 0 {
					t.Fatalf("cut %d: confirm the trial: exit %d\n%s%s", i, res.code, res.stdout, res.stderr)
				}
				running = got
			} else if after.Trial != nil {
				t.Fatalf("cut %d: up on the old image with a trial pending: %+v", i, after)
			}
		}
	})
}
