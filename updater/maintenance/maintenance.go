// Package maintenance is the router's side of an image upgrade on a board
// whose root is a read-only image (pivot-to-maintenance): which slot runs,
// the plan that the agent in maintenance follows, the RAM check made
// before anything stops, and the new image received into RAM, whole or as
// a zstd delta against the running slot's image, and verified.
//
// Invariants:
//
//   - Everything that can refuse an upgrade (the board, the slot, the
//     image's size, the RAM) is checked by Check before the image is read
//     and before any service stops: a refusal leaves the router serving.
//   - The image in RAM is complete and its SHA-256 the sender's before the
//     plan exists: Receive writes it under a temporary name and renames it
//     only after the compare; a short, long or corrupt stream is an error
//     naming what was wrong, and leaves nothing.
//   - A delta is decoded only against a base whose SHA-256 is the one the
//     sender made it against, read from the running slot itself.
//   - The slot written is never the running one on a board with two slots
//     (updater/slots' Spare); on a board with one, it is the running one,
//     which is why the agent runs from RAM while it writes.
package maintenance

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/roostrouter/roost/boards"
	"github.com/roostrouter/roost/updater/image"
	"github.com/roostrouter/roost/updater/slots"
)

// Dir is where, below the root, the maintenance tmpfs is mounted: the new
// image, roostd's copy and the plan.
const Dir = "/run/roost/maintenance"

// Margin is the RAM kept free beyond the image and roostd's copy: the
// agent's heap, the decoder's buffers, the kernel's MTD buffers.
const Margin = 4 << 20

// Plan is what the agent in maintenance does, written by the agent that
// received the image into Dir/plan.json.
type Plan struct {
	Board    string `json:"board"`
	Slot     string `json:"slot"`    // the image partition written
	Running  string `json:"running"` // the slot that ran when the image came
	Image    string `json:"image"`   // the file in RAM, as the router sees it
	Binary   string `json:"binary"`  // the roostd in RAM that writes it
	Bytes    int64  `json:"bytes"`
	SHA256   string `json:"sha256"`
	System   string `json:"system,omitempty"` // the system the image boots, for the record
	Token    string `json:"token"`            // roostd confirm's, once the image booted
	Timeout  string `json:"confirmTimeout"`   // from the trial boot's start
	FromBoot string `json:"fromBoot"`
	State    string `json:"state"` // the state folder (slots.json, the host key)
	// SSH is what the agent in maintenance serves: its addresses (their
	// sockets are handed over) and the keys it lets in.
	SSHAddrs       []string `json:"sshAddrs"`
	AuthorizedKeys string   `json:"authorizedKeys"`
}

// Started is the router's answer to roostd image write: the maintenance
// is under way, and confirms with Token once the slot booted.
type Started struct {
	Slot     string    `json:"slot"`
	Running  string    `json:"running"`
	Token    string    `json:"token"`
	Deadline time.Time `json:"deadline"` // the confirmation's, counted from now
	Watchdog bool      `json:"watchdog"` // the board's watchdog resets a trial that hangs
	Why      string    `json:"why"`
}

// ReadPlan reads a plan written by WritePlan.
func ReadPlan(file string) (Plan, error) {
	var p Plan
	b, err := os.ReadFile(file)
	if err != nil {
		return p, fmt.Errorf("maintenance plan: %w", err)
	}
	if err := json.Unmarshal(b, &p); err != nil {
		return p, fmt.Errorf("maintenance plan %s: %w", file, err)
	}
	if p.Board == "" || p.Slot == "" || p.Image == "" || p.Binary == "" || p.Bytes <= 0 || len(p.SHA256) != 2*sha256.Size || p.State == "" {
		return p, fmt.Errorf("maintenance plan %s: incomplete (board %q, slot %q, image %q, binary %q, %d bytes, sha256 %q, state %q)",
			file, p.Board, p.Slot, p.Image, p.Binary, p.Bytes, p.SHA256, p.State)
	}
	return p, nil
}

// WritePlan writes p as file (in the tmpfs: nothing to sync).
func WritePlan(file string, p Plan) error {
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(file, append(b, '\n'), 0o600)
}

// ImageSlots are the board's image partitions, in its order: the slots.
func ImageSlots(b boards.Board) []string {
	var out []string
	for _, f := range b.Flash {
		for _, p := range f.Partitions {
			if p.Use == boards.UseImage && !p.Never {
				out = append(out, p.Name)
			}
		}
	}
	return out
}

// RunningSlot is the image slot the router booted: the MTD partition whose
// mtdblock device is mounted on storageDir (below root).
func RunningSlot(root, storageDir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(root, "proc/self/mounts"))
	if err != nil {
		return "", fmt.Errorf("running slot: %w", err)
	}
	var dev string
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[1] == storageDir {
			dev = f[0]
		}
	}
	index, ok := strings.CutPrefix(dev, "/dev/mtdblock")
	if !ok {
		return "", fmt.Errorf("running slot: %s is not mounted from an MTD image slot (%q): this router was not booted from an image", storageDir, dev)
	}
	f, err := os.Open(filepath.Join(root, "proc/mtd"))
	if err != nil {
		return "", fmt.Errorf("running slot: %w", err)
	}
	defer f.Close()
	mtds, err := image.ParseProcMTD(f)
	if err != nil {
		return "", fmt.Errorf("running slot: %w", err)
	}
	for _, m := range mtds {
		if fmt.Sprint(m.Index) == index {
			return m.Name, nil
		}
	}
	return "", fmt.Errorf("running slot: no mtd%s in /proc/mtd", index)
}

// OpenSlot opens the mtdblock device of the MTD partition named slot,
// for reading: the running image, a delta's base.
func OpenSlot(root, slot string) (*os.File, error) {
	f, err := os.Open(filepath.Join(root, "proc/mtd"))
	if err != nil {
		return nil, fmt.Errorf("slot %s: %w", slot, err)
	}
	defer f.Close()
	mtds, err := image.ParseProcMTD(f)
	if err != nil {
		return nil, fmt.Errorf("slot %s: %w", slot, err)
	}
	for _, m := range mtds {
		if m.Name == slot {
			return os.Open(filepath.Join(root, fmt.Sprintf("dev/mtdblock%d", m.Index)))
		}
	}
	return nil, fmt.Errorf("slot %s: no such MTD partition in /proc/mtd", slot)
}

// Target is the slot an image is written to on board b while running runs.
func Target(b boards.Board, running string) (string, error) {
	all := ImageSlots(b)
	if len(all) == 1 && all[0] == running {
		return running, nil
	}
	return slots.Spare(all, running)
}

// Info is what the router says of its image slots (roostd image
// plan, roostd status).
type Info struct {
	Board   string                 `json:"board"`
	Slots   []string               `json:"slots"`
	Running string                 `json:"running"`
	Default string                 `json:"default"`
	Images  map[string]slots.Image `json:"images,omitempty"`
	Trial   *slots.Trial           `json:"trial,omitempty"`
	Last    string                 `json:"last,omitempty"`
	// RunningImage is the squashfs in the running slot, when asked for
	// (roostd image plan --hash): what a delta is made against.
	RunningImage *slots.Image `json:"runningImage,omitempty"`
	MemAvailable uint64       `json:"memAvailable,omitempty"`
	Budget       uint64       `json:"maintenanceBytes,omitempty"`
}

// Status is where the maintenance stands.
type Status struct {
	Slot    string    `json:"slot"`
	Phase   string    `json:"phase"` // detach, erase, write, verify, swap, commit, reboot, failed
	Done    uint64    `json:"done"`
	Total   uint64    `json:"total"`
	Started time.Time `json:"started"`
	Error   string    `json:"error,omitempty"`
	// Outcome is set once the image is recorded: what the next boot does.
	Outcome string `json:"outcome,omitempty"`
}

// Want is the image that is coming, as its sender described it.
type Want struct {
	Bytes  int64
	SHA256 string // hex
	// Delta: the stream is a zstd delta against the running slot's image,
	// of BaseBytes bytes and BaseSHA256; nil for the image itself.
	Delta *Delta
}

// Delta is what a delta was made against.
type Delta struct {
	BaseBytes  int64
	BaseSHA256 string
}

// Need is the RAM the upgrade fills: the image and, while a delta
// decodes, its base and the decoder's history, which holds what it
// decoded (the whole image: the window covers it).
func (w Want) Need() uint64 {
	n := uint64(w.Bytes)
	if w.Delta != nil {
		n += uint64(w.Delta.BaseBytes) + uint64(w.Bytes)
	}
	return n
}

// CheckMemory checks RAM (meminfo, /proc/meminfo's text) and the board's
// maintenance budget against the image (and a delta's base) and roostd's
// copy of closure bytes, before anything stops.
func CheckMemory(b boards.Board, meminfo io.Reader, w Want, closure uint64) error {
	if err := image.CheckMemory(meminfo, w.Need(), closure, Margin); err != nil {
		if w.Delta != nil {
			return fmt.Errorf("%w (as a delta, the image counts three times: the %d-byte image, its base and the decoder's copy)", err, w.Bytes)
		}
		return err
	}
	if budget := uint64(b.MaintenanceMB) << 20; budget > 0 && w.Need()+closure > budget {
		return fmt.Errorf("image %d bytes + roostd's copy %d bytes exceed board %s's maintenance budget of %d MiB (maintenanceMB): refused before stopping anything; build a smaller image",
			w.Need(), closure, b.Name, b.MaintenanceMB)
	}
	return nil
}

// Receive reads the image from r into dst, whole or decoded from a delta
// against base (the running slot's image, read as needed), and checks its
// size and SHA-256. dst exists only once it is right. progress, if set,
// gets the bytes of the image written so far.
func Receive(r io.Reader, dst string, w Want, base func() (io.ReadCloser, error), progress func(done int64)) error {
	want, err := hex.DecodeString(w.SHA256)
	if err != nil || len(want) != sha256.Size {
		return fmt.Errorf("receive image: sha256 %q: want 64 hex digits", w.SHA256)
	}
	src := r
	if w.Delta != nil {
		dec, err := deltaDecoder(r, w.Delta, base)
		if err != nil {
			return err
		}
		defer dec.Close()
		src = dec
	}
	tmp := dst + ".part"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("receive image: %w", err)
	}
	defer os.Remove(tmp)
	h := sha256.New()
	bw := bufio.NewWriterSize(io.MultiWriter(f, h), 256<<10)
	n, err := copyProgress(bw, io.LimitReader(src, w.Bytes+1), progress)
	if err == nil {
		err = bw.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	switch {
	case err != nil:
		return fmt.Errorf("receive image: after %d of %d bytes: %w", n, w.Bytes, err)
	case n != w.Bytes:
		return fmt.Errorf("receive image: %d bytes came, the sender announced %d: the stream was cut or is not the image", min(n, w.Bytes+1), w.Bytes)
	}
	if got := h.Sum(nil); string(got) != string(want) {
		return fmt.Errorf("receive image: its SHA-256 is %x, the sender announced %s: corrupted on the way, nothing was written", got, w.SHA256)
	}
	return os.Rename(tmp, dst)
}

func copyProgress(w io.Writer, r io.Reader, progress func(int64)) (int64, error) {
	buf := make([]byte, 128<<10)
	var n int64
	last := time.Now()
	for {
		k, err := r.Read(buf)
		if k > 0 {
			if _, werr := w.Write(buf[:k]); werr != nil {
				return n, werr
			}
			n += int64(k)
			if progress != nil && time.Since(last) > 500*time.Millisecond {
				progress(n)
				last = time.Now()
			}
		}
		if errors.Is(err, io.EOF) {
			if progress != nil {
				progress(n)
			}
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}
