package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/roostrouter/roost/boards"
	"github.com/roostrouter/roost/hosttool/deltacache"
	"github.com/roostrouter/roost/hosttool/image"
	"github.com/roostrouter/roost/hosttool/nixlocal"
	"github.com/roostrouter/roost/hosttool/progress"
	"github.com/roostrouter/roost/hosttool/sshclient"
	"github.com/roostrouter/roost/updater/maintenance"
	"github.com/roostrouter/roost/updater/storepath"
)

// imageResult is an image upgrade (a board that boots from an image) as
// `roost rebuild --json` reports it.
type imageUpgrade struct {
	Slot         string  `json:"slot"`
	Bytes        int64   `json:"bytes"`
	SHA256       string  `json:"sha256"`
	SentBytes    int64   `json:"sentBytes"`
	Delta        bool    `json:"delta"` // sent as a zstd delta against the running slot's image
	SendSeconds  float64 `json:"sendSeconds"`
	WriteSeconds float64 `json:"writeSeconds"` // from the router's answer to the end of its write
	UpSeconds    float64 `json:"upSeconds"`    // from the router's answer to the confirmation
	started      time.Time
}

// imageBoard is system's board (its board file, below the store's root)
// if it boots from an image.
func imageBoard(storeRoot string, system storepath.Path) (boards.Board, bool) {
	name, err := os.ReadFile(filepath.Join(storeRoot, system.String(), boards.PartBoard))
	if err != nil {
		return boards.Board{}, false
	}
	b, err := boards.Lookup(strings.TrimSpace(string(name)))
	return b, err == nil && b.Upgrade == boards.UpgradeImage
}

// builtImage is the squashfs a board's slot takes, built on this machine.
type builtImage struct {
	data   []byte
	sha256 string
	paths  int
}

// buildSlotImage builds the squashfs of system's closure (what an image
// slot holds, for MTD and UBI boards alike).
func (e *env) buildSlotImage(nix *nixlocal.Nix, system storepath.Path) (*builtImage, error) {
	log := func(s string) { fmt.Fprintln(e.stderr, "roost: "+s) }
	tmp, err := os.MkdirTemp("", "roost-image-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	root := filepath.Join(tmp, "root")
	paths, err := e.importRoot(nix, system, root, log)
	if err != nil {
		return nil, err
	}
	file := filepath.Join(tmp, "image.squashfs")
	if err := image.Squashfs(e.ctx, root, file, log); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	return newBuiltImage(data, paths), nil
}

func newBuiltImage(data []byte, paths int) *builtImage {
	sum := sha256.Sum256(data)
	return &builtImage{data: data, sha256: hex.EncodeToString(sum[:]), paths: paths}
}

// rebuildImage is roost rebuild on a board whose root is an image: build
// the slot's image, send it (as a delta against the running slot's image
// when this machine has that one), have the router write it from RAM
// (pivot-to-maintenance), follow the write, and confirm the trial boot.
func (e *env) rebuildImage(f *flags, nix *nixlocal.Nix, system storepath.Path, b boards.Board, timeout time.Duration, full bool, res *rebuildResult) error {
	if b.Boot != nil {
		// U-Boot boots a kernel in front of the root (a uImage or a FIT):
		// roostd init does not find its root there yet (docs/images.md).
		return fmt.Errorf("board %s's slot holds a %s image with the kernel in front of the root, which roost rebuild does not write yet: flash the image roost image builds (docs/install.md)", b.Name, b.Boot.Format)
	}
	img, err := e.buildSlotImage(nix, system)
	if err != nil {
		return err
	}
	cache := e.imageCache()
	cache.put(img)
	var hostKey ssh.PublicKey
	client, err := e.dialWith(f, func(o *sshclient.Options) { o.HostKey = func(_ string, k ssh.PublicKey) { hostKey = k } })
	if err != nil {
		return err
	}
	defer client.Close()
	out, err := sshclient.Output(client, "roostd image plan --hash --json", nil)
	if err != nil {
		return fmt.Errorf("the router's image slots: %w", err)
	}
	var info maintenance.Info
	if err := json.Unmarshal(out, &info); err != nil {
		return fmt.Errorf("the router's answer to image plan is not what roost expects (%v): %s", err, out)
	}
	if info.Board != b.Name {
		return fmt.Errorf("the router is a %s, and %s is a system for %s: build it for %s", info.Board, system, b.Name, info.Board)
	}
	if r := info.RunningImage; r != nil && r.SHA256 == img.sha256 {
		fmt.Fprintf(e.stdout, "the router's running slot %s holds this image already: nothing to write\n", info.Running)
		return nil
	}
	up := &imageUpgrade{Bytes: int64(len(img.data)), SHA256: img.sha256}
	res.Image = up
	payload, delta := e.imageDelta(img, &info, full)
	act, delta, err := e.startImageWrite(client, img, system, timeout, delta)
	if err != nil {
		return err
	}
	if delta == "" {
		payload = img.data
	}
	up.Slot, up.started = act.Slot, time.Now()
	r := &restart{f: f, hostKey: ssh.FingerprintSHA256(hostKey), start: time.Now(), what: "the image write", trial: true}
	if !*f.json {
		fmt.Fprintf(e.stdout, "the router can take the image (%s): %s\n", progress.MiB(up.Bytes), act.Why)
	}
	waitDown(e.ctx, client, 30*time.Second) // the agent hands over to its roostd in RAM
	if err := e.sendToMaintenance(r, img, payload, delta, timeout, up); err != nil {
		return err
	}
	if !*f.json {
		fmt.Fprintf(e.stdout, "sent the image (%s on the wire%s) in %.1fs\n", progress.MiB(up.SentBytes), map[bool]string{true: ", a delta"}[up.Delta], up.SendSeconds)
	}
	if up.WriteSeconds == 0 {
		if err := e.followWrite(r, timeout, up); err != nil {
			return err
		}
	}
	if _, err := e.back(r, r.start.Add(timeout+trialMargin), "roostd confirm "+act.Token); err != nil {
		var nb *notBackError
		var ce *commandError
		switch {
		case errors.As(err, &nb):
			return fmt.Errorf("the router did not come back after writing the image to %s: unconfirmed, it boots %s again; check with roost status --host %s (%v)", up.Slot, info.Running, *f.host, nb)
		case errors.As(err, &ce):
			return confirmError(ce.err)
		}
		return err
	}
	up.UpSeconds = time.Since(r.start).Seconds()
	res.Confirmed = true
	if *f.json {
		return json.NewEncoder(e.stdout).Encode(res)
	}
	fmt.Fprintf(e.stdout, "the image in %s booted and was confirmed in %.1fs: it is the default\n", up.Slot, up.UpSeconds)
	return nil
}

// imageDelta is what roost sends of img: a zstd delta against the
// running slot's image if this machine has that one and the delta is
// worth it (with the flags that say so), else the image.
func (e *env) imageDelta(img *builtImage, info *maintenance.Info, full bool) (payload []byte, deltaFlags string) {
	r := info.RunningImage
	if r == nil || full {
		return img.data, ""
	}
	base, ok := e.imageCache().get(r.SHA256)
	if !ok {
		return img.data, ""
	}
	var d bytes.Buffer
	if err := maintenance.EncodeDelta(&d, base, img.data); err != nil || d.Len() > len(img.data)*9/10 {
		return img.data, ""
	}
	return d.Bytes(), fmt.Sprintf(" --delta-base-bytes %d --delta-base-sha256 %s", len(base), r.SHA256)
}

// startImageWrite asks the router to take the image (roostd image write:
// its checks, then the pivot to RAM) and returns its answer. A router
// with RAM for the image but not for a delta's decoding takes the whole
// image: delta comes back "" then.
func (e *env) startImageWrite(client *ssh.Client, img *builtImage, system storepath.Path, timeout time.Duration, delta string) (maintenance.Started, string, error) {
	var act maintenance.Started
	cmd := fmt.Sprintf("roostd image write --bytes %d --sha256 %s%s --system %s --confirm-timeout %s --json", len(img.data), img.sha256, delta, system, timeout)
	out, err := sshclient.Output(client, cmd, nil)
	if err != nil && delta != "" && strings.Contains(err.Error(), "--full-image") {
		fmt.Fprintf(e.stderr, "roost: %v\nroost: sending the whole image instead of a delta\n", err)
		return e.startImageWrite(client, img, system, timeout, "")
	}
	if err != nil {
		return act, delta, fmt.Errorf("the router refused the image: %w", err)
	}
	if err := json.Unmarshal(out, &act); err != nil || act.Token == "" || act.Slot == "" {
		return act, delta, fmt.Errorf("the router's answer to image write is not what roost expects (%v): %s", err, out)
	}
	return act, delta, nil
}

// sendToMaintenance sends the image (or its delta) to the router's roostd
// in RAM (roostd maintenance receive), reaching it again until it
// listens; a delta whose base the router's slot is not is followed by the
// whole image.
func (e *env) sendToMaintenance(r *restart, img *builtImage, payload []byte, delta string, timeout time.Duration, up *imageUpgrade) error {
	until := time.Now().Add(timeout)
	start := time.Now()
	for {
		c, err := e.reach(r.f, func(o *sshclient.Options) { o.AcceptNewHostKey = false }, until)
		if err != nil {
			return fmt.Errorf("the router's roostd in RAM did not answer to receive the image (%v): it reboots into its running slot, unchanged, within 5 minutes", err)
		}
		err = e.sendPayload(c, payload, delta, up)
		c.Close()
		var wf *writeFailed
		switch {
		case errors.As(err, &wf):
			return err
		case err == nil:
			up.SentBytes, up.Delta, up.SendSeconds = int64(len(payload)), delta != "", time.Since(start).Seconds()
			return nil
		case delta != "" && strings.Contains(err.Error(), "--full-image"):
			fmt.Fprintf(e.stderr, "roost: %v\nroost: sending the whole image\n", err)
			payload, delta = img.data, ""
		case time.Now().After(until) || e.ctx.Err() != nil:
			return fmt.Errorf("send the image: %w", err)
		default:
			fmt.Fprintf(e.stderr, "roost: send the image: %v; trying again\n", err)
			time.Sleep(retryEvery)
		}
	}
}

// sendPayload sends the image on c and follows its write there, until
// the router reboots (or the connection ends).
func (e *env) sendPayload(c *ssh.Client, payload []byte, delta string, up *imageUpgrade) error {
	var stderr limitedBuffer
	sess, err := sshclient.Start(c, "roostd maintenance receive --follow --json"+delta, &stderr)
	if err != nil {
		return err
	}
	defer sess.Close()
	bar := &progress.Bar{W: e.stderr, TTY: e.tty, Label: "sending the image"}
	go func() {
		for off := 0; off < len(payload); off += 256 << 10 {
			end := min(off+256<<10, len(payload))
			if _, err := sess.Write(payload[off:end]); err != nil {
				return
			}
			bar.Update(0, 0, int64(end), int64(len(payload)))
		}
		sess.CloseWrite()
	}()
	sent := false
	err = e.showWrite(sess, up, func() {
		if !sent {
			bar.Done()
			sent = true
		}
	})
	if !sent {
		bar.Done()
	}
	if werr := sess.Wait(); werr != nil && !sent {
		return sshclient.RemoteError("roostd maintenance receive", werr, stderr.String())
	}
	return err
}

// writeFailed is the router's word that its write failed.
type writeFailed struct{ why string }

func (w *writeFailed) Error() string {
	return "the router's image write failed: " + w.why + "; it reboots into its running slot, unchanged"
}

// showWrite shows the maintenance's status lines (JSON) from r until the
// reboot; first is called at the first.
func (e *env) showWrite(r io.Reader, up *imageUpgrade, first func()) error {
	bar := &progress.Bar{W: e.stderr, TTY: e.tty, Label: "writing the image"}
	defer bar.Done()
	dec := json.NewDecoder(r)
	for {
		var m struct{ Maintenance maintenance.Status }
		if err := dec.Decode(&m); err != nil {
			return nil
		}
		first()
		st := m.Maintenance
		bar.Label = "image " + st.Phase
		bar.Update(0, 0, int64(st.Done), int64(st.Total))
		switch st.Phase {
		case "failed":
			return &writeFailed{st.Error}
		case "reboot":
			up.WriteSeconds = time.Since(up.started).Seconds()
			return nil
		}
	}
}

// followWrite follows the write from a new connection, when the one
// that sent the image ended before the reboot.
func (e *env) followWrite(r *restart, timeout time.Duration, up *imageUpgrade) error {
	c, err := e.reach(r.f, func(o *sshclient.Options) { o.AcceptNewHostKey = false }, time.Now().Add(timeout))
	if err != nil {
		return nil // rebooted already: the confirmation says how it went
	}
	defer c.Close()
	sess, err := sshclient.Start(c, "roostd maintenance status --follow --json", io.Discard)
	if err != nil {
		return nil
	}
	defer sess.Close()
	return e.showWrite(sess, up, func() {})
}

// imageCache keeps the last images sent to routers, by SHA-256: the bases
// of the next deltas.
type imageCache struct{ dir string }

const keepImages = 4

func (e *env) imageCache() imageCache {
	dir, err := deltacache.Dir(e.getenv)
	if err != nil {
		return imageCache{}
	}
	return imageCache{dir: filepath.Join(filepath.Dir(dir), "images")}
}

func (c imageCache) get(sum string) ([]byte, bool) {
	if c.dir == "" || len(sum) != 64 || strings.ContainsAny(sum, "./") {
		return nil, false
	}
	b, err := os.ReadFile(filepath.Join(c.dir, sum))
	if err != nil {
		return nil, false
	}
	got := sha256.Sum256(b)
	return b, hex.EncodeToString(got[:]) == sum
}

// put stores img, dropping the oldest beyond keepImages. A cache that
// cannot be written only costs a whole image next time.
func (c imageCache) put(img *builtImage) {
	if c.dir == "" || os.MkdirAll(c.dir, 0o700) != nil {
		return
	}
	file := filepath.Join(c.dir, img.sha256)
	tmp := file + ".tmp"
	if os.WriteFile(tmp, img.data, 0o600) != nil || os.Rename(tmp, file) != nil {
		os.Remove(tmp)
		return
	}
	now := time.Now()
	os.Chtimes(file, now, now)
	entries, _ := os.ReadDir(c.dir)
	sort.Slice(entries, func(i, j int) bool {
		a, _ := entries[i].Info()
		b, _ := entries[j].Info()
		return a != nil && b != nil && a.ModTime().After(b.ModTime())
	})
	for i, en := range entries {
		if i >= keepImages {
			os.Remove(filepath.Join(c.dir, en.Name()))
		}
	}
}
