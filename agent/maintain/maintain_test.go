package maintain

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/roostrouter/roost/agent/boot"
	"github.com/roostrouter/roost/updater/maintenance"
	"github.com/roostrouter/roost/updater/slots"
)

// TestFailedWriteReboots: a write that fails (here: the slot is not on
// this machine's flash) is recorded for roostd status, leaves the
// default slot as it was, and still ends in the reboot, which brings the
// router back on its running slot.
func TestFailedWriteReboots(t *testing.T) {
	root := t.TempDir()
	state := filepath.Join(root, "persist/roost")
	if err := slots.Save(state, slots.State{Default: "image-a"}); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(root, "run"), 0o755)
	os.WriteFile(boot.MarkerFile(root), []byte("4242\n"), 0o644)
	os.MkdirAll(filepath.Join(root, maintenance.Dir), 0o700)
	img := filepath.Join(maintenance.Dir, "image")
	content := []byte("not an image")
	sum := sha256.Sum256(content)
	signals := make(chan [2]int, 1)
	m, err := New(Options{Root: root, Log: slog.New(slog.DiscardHandler),
		Plan: maintenance.Plan{Board: "qemu-mipsel", Slot: "image-b", Running: "image-a", Image: img, Bytes: 12,
			SHA256: hex.EncodeToString(sum[:]), Token: "t", Timeout: "90s", State: state},
		Kill: func(pid int, sig syscall.Signal) error { signals <- [2]int{pid, int(sig)}; return nil }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- m.Run(ctx) }()
	// A corrupted image is refused, and may be sent again.
	var out, errOut bytes.Buffer
	if code := m.exec(ctx, []string{"roostd", "maintenance", "receive"}, strings.NewReader("not an imagX"), &out, &errOut); code == 0 || !strings.Contains(errOut.String(), "corrupted on the way") {
		t.Fatalf("receive of a corrupted image: %d, %q", code, errOut.String())
	}
	errOut.Reset()
	if code := m.exec(ctx, []string{"roostd", "maintenance", "receive"}, bytes.NewReader(content), &out, &errOut); code != 0 {
		t.Fatalf("receive: %d, %q", code, errOut.String())
	}
	select {
	case s := <-signals:
		if s[0] != 4242 || syscall.Signal(s[1]) != boot.Reboot.Signal() {
			t.Errorf("signalled pid %d with %d, want init (4242) asked to reboot", s[0], s[1])
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no reboot asked after the failed write")
	}
	st, _ := m.Status()
	if st.Phase != "reboot" || st.Error == "" {
		t.Errorf("status %+v: want the reboot, after an error", st)
	}
	out.Reset()
	if code := m.exec(ctx, []string{"roostd", "maintenance", "status", "--json"}, nil, &out, &errOut); code != 0 {
		t.Fatalf("maintenance status: %d, %s", code, errOut.String())
	}
	var got struct{ Maintenance maintenance.Status }
	if err := json.Unmarshal(out.Bytes(), &got); err != nil || got.Maintenance.Slot != "image-b" {
		t.Errorf("maintenance status --json: %s (%v)", out.String(), err)
	}
	if code := m.exec(ctx, []string{"roostd", "confirm", "t"}, nil, &out, &errOut); code == 0 || !strings.Contains(errOut.String(), "has not booted yet") {
		t.Errorf("confirm during maintenance: %d, %q; want the refusal roost retries", code, errOut.String())
	}
	s, err := slots.Load(state)
	if err != nil {
		t.Fatal(err)
	}
	if s.Default != "image-a" || s.Once != "" || s.Trial != nil || !strings.Contains(s.Last, "the image write to image-b: ") {
		t.Errorf("slots after the failed write: %+v", s)
	}
	if _, err := os.Stat(filepath.Join(root, "run/roost/health")); err != nil {
		t.Errorf("no health file while in maintenance: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
