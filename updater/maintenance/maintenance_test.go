package maintenance

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/roostrouter/roost/boards"
)

func sum(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func random(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// TestReceive: the image lands in RAM only complete and as announced,
// whole or from a delta against the running slot's image.
func TestReceive(t *testing.T) {
	old := random(1<<20, 1)
	img := append(append([]byte{}, old[:600<<10]...), random(300<<10, 2)...) // a new image sharing most of the old
	var delta bytes.Buffer
	if err := EncodeDelta(&delta, old, img); err != nil {
		t.Fatal(err)
	}
	t.Logf("delta of a %d-byte image against %d bytes: %d bytes", len(img), len(old), delta.Len())
	if delta.Len() > len(img)/2 {
		t.Errorf("delta %d bytes for an image sharing 2/3 with its base: not a delta", delta.Len())
	}
	base := func(b []byte) func() (io.ReadCloser, error) {
		return func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	}
	whole := Want{Bytes: int64(len(img)), SHA256: sum(img)}
	asDelta := Want{Bytes: int64(len(img)), SHA256: sum(img), Delta: &Delta{BaseBytes: int64(len(old)), BaseSHA256: sum(old)}}
	flipped := append([]byte{}, img...)
	flipped[1000] ^= 1
	for _, tc := range []struct {
		name    string
		stream  []byte
		want    Want
		base    []byte
		wantErr string
	}{
		{name: "whole", stream: img, want: whole},
		{name: "delta", stream: delta.Bytes(), want: asDelta, base: old},
		{name: "short", stream: img[:len(img)-1], want: whole, wantErr: "the stream was cut"},
		{name: "long", stream: append(append([]byte{}, img...), 0), want: whole, wantErr: "announced"},
		{name: "corrupt", stream: flipped, want: whole, wantErr: "corrupted on the way"},
		{name: "delta against another base", stream: delta.Bytes(), want: asDelta, base: random(1<<20, 3), wantErr: "roost rebuild --full-image"},
		{name: "delta base shorter than said", stream: delta.Bytes(), want: asDelta, base: old[:100], wantErr: "read the delta's base"},
		{name: "garbage delta", stream: img[:5000], want: asDelta, base: old, wantErr: "receive image"},
		{name: "bad hash", stream: img, want: Want{Bytes: int64(len(img)), SHA256: "xyz"}, wantErr: "want 64 hex digits"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst := filepath.Join(t.TempDir(), "image")
			var last int64
			err := Receive(bytes.NewReader(tc.stream), dst, tc.want, base(tc.base), func(n int64) { last = n })
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Receive: %v, want %q", err, tc.wantErr)
				}
				if entries, _ := os.ReadDir(filepath.Dir(dst)); len(entries) != 0 {
					t.Errorf("a refused image left %v", entries)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, _ := os.ReadFile(dst)
			if !bytes.Equal(got, img) {
				t.Fatalf("received %d bytes, not the image", len(got))
			}
			if last != int64(len(img)) {
				t.Errorf("last progress %d, want %d", last, len(img))
			}
		})
	}
}

func TestRunningSlot(t *testing.T) {
	for _, tc := range []struct{ mounts, want, wantErr string }{
		{mounts: "/dev/mtdblock1 /storage squashfs ro 0 0\n", want: "image-b"},
		{mounts: "/dev/vda /storage ext4 rw 0 0\n", wantErr: "not booted from an image"},
		{mounts: "proc /proc proc rw 0 0\n", wantErr: "not booted from an image"},
		{mounts: "/dev/mtdblock7 /storage squashfs ro 0 0\n", wantErr: "no mtd7"},
	} {
		root := t.TempDir()
		os.MkdirAll(filepath.Join(root, "proc/self"), 0o755)
		os.WriteFile(filepath.Join(root, "proc/self/mounts"), []byte(tc.mounts), 0o644)
		os.WriteFile(filepath.Join(root, "proc/mtd"), []byte("dev:    size   erasesize  name\nmtd0: 01000000 00010000 \"image-a\"\nmtd1: 01000000 00010000 \"image-b\"\nmtd2: 00400000 00010000 \"data\"\n"), 0o644)
		got, err := RunningSlot(root, "/storage")
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("mounts %q: %q, %v; want %q", tc.mounts, got, err, tc.wantErr)
			}
		} else if err != nil || got != tc.want {
			t.Errorf("mounts %q: %q, %v; want %q", tc.mounts, got, err, tc.want)
		}
	}
}

func TestTargetAndMemory(t *testing.T) {
	mips, err := boards.Lookup("gl-ar750")
	if err != nil {
		t.Fatal(err)
	}
	if s, err := Target(mips, "firmware"); err != nil || s != "firmware" {
		t.Errorf("one-slot board: Target = %q, %v; want the running slot", s, err)
	}
	meminfo := func(kb int) io.Reader {
		return strings.NewReader("MemTotal: 125000 kB\nMemAvailable: " + strconv.Itoa(kb) + " kB\n")
	}
	w := Want{Bytes: 10 << 20, SHA256: strings.Repeat("0", 64), Delta: &Delta{BaseBytes: 10 << 20}}
	if err := CheckMemory(mips, meminfo(100<<10), w, 12<<20); err != nil {
		t.Errorf("100 MiB available for 32 MiB: %v", err)
	}
	err = CheckMemory(mips, meminfo(30<<10), w, 12<<20)
	if err == nil || !strings.Contains(err.Error(), "have 30.0 MiB available") || !strings.Contains(err.Error(), "before stopping anything") {
		t.Errorf("30 MiB available for 40 MiB: %v", err)
	}
	big := Want{Bytes: 40 << 20, SHA256: w.SHA256}
	if err := CheckMemory(mips, meminfo(200<<10), big, 12<<20); err == nil || !strings.Contains(err.Error(), "maintenanceMB") {
		t.Errorf("over the board's budget: %v", err)
	}
}
