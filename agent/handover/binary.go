package handover

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Resolve returns where file, a path as the router sees it (absolute),
// is on this file system when the router's root is root: every link on
// the way is followed below root, so that a system's bin/roostd, a link to
// /nix/store/…-roostd/bin/roostd, names the router's copy, not the host's.
func Resolve(root, file string) (string, error) {
	// Not cleaned first: "link/.." is the link's target's parent.
	rest := strings.Split(file, "/")
	cur := "/" // the router's view of what is resolved so far
	for links := 0; len(rest) > 0; {
		name := rest[0]
		rest = rest[1:]
		switch name {
		case "", ".":
			continue
		case "..":
			cur = filepath.Dir(cur)
			continue
		}
		next := filepath.Join(cur, name)
		fi, err := os.Lstat(filepath.Join(root, next))
		if err != nil {
			return "", fmt.Errorf("resolve %s below %s: %w", file, root, err)
		}
		if fi.Mode()&os.ModeSymlink == 0 {
			cur = next
			continue
		}
		if links++; links > 40 { // as the kernel
			return "", fmt.Errorf("resolve %s below %s: too many levels of links", file, root)
		}
		target, err := os.Readlink(filepath.Join(root, next))
		if err != nil {
			return "", fmt.Errorf("resolve %s below %s: %w", file, root, err)
		}
		if filepath.IsAbs(target) {
			cur = "/"
		}
		rest = append(strings.Split(target, "/"), rest...)
	}
	return filepath.Join(root, cur), nil
}

// Same says whether the binaries a and b (paths on this file system) are
// the same roostd: the same file, or the same bytes (a store path built
// twice, or the binary the router was started with and its copy in a
// system). A hand-over to the same bytes would gain nothing.
func Same(a, b string) (bool, error) {
	fa, err := os.Stat(a)
	if err != nil {
		return false, err
	}
	fb, err := os.Stat(b)
	if err != nil {
		return false, err
	}
	if os.SameFile(fa, fb) {
		return true, nil
	}
	if fa.Size() != fb.Size() {
		return false, nil
	}
	ra, err := os.Open(a)
	if err != nil {
		return false, err
	}
	defer ra.Close()
	rb, err := os.Open(b)
	if err != nil {
		return false, err
	}
	defer rb.Close()
	return sameBytes(ra, rb)
}

func sameBytes(a, b io.Reader) (bool, error) {
	ba, bb := make([]byte, 64<<10), make([]byte, 64<<10)
	for {
		na, erra := io.ReadFull(a, ba)
		nb, errb := io.ReadFull(b, bb)
		if !bytes.Equal(ba[:na], bb[:nb]) {
			return false, nil
		}
		endA := errors.Is(erra, io.EOF) || errors.Is(erra, io.ErrUnexpectedEOF)
		endB := errors.Is(errb, io.EOF) || errors.Is(errb, io.ErrUnexpectedEOF)
		switch {
		case erra != nil && !endA:
			return false, erra
		case errb != nil && !endB:
			return false, errb
		case endA || endB:
			return endA == endB, nil
		}
	}
}

// ProbeTimeout bounds Probe: a roostd starts in well under a second even
// on a slow router; one that takes this long is hung.
const ProbeTimeout = 15 * time.Second

// Version is what `roostd version --json` prints.
type Version struct {
	Version  string `json:"version"`
	Handover int    `json:"handover"` // the Protocol it speaks; 0 if none
}

// Probe runs `binary version --json`, bounded by ProbeTimeout, and returns
// what it says: an error says why the binary does not run (another
// architecture, a crash at start, a hang), or why it cannot be handed
// over to.
func Probe(ctx context.Context, binary string) (Version, error) {
	var v Version
	ctx, cancel := context.WithTimeout(ctx, ProbeTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, "version", "--json")
	cmd.Env = clean(os.Environ())
	cmd.WaitDelay = time.Second // a child of it holding its output holds up nothing
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &limited{w: &stdout, n: 64 << 10}, &limited{w: &stderr, n: 4 << 10}
	err := cmd.Run()
	if ctx.Err() == context.DeadlineExceeded {
		return v, fmt.Errorf("`%s version --json` did not finish within %s", binary, ProbeTimeout)
	}
	if err != nil {
		if msg := strings.TrimSpace(stderr.String()); msg != "" {
			err = fmt.Errorf("%w: %s", err, msg)
		}
		return v, fmt.Errorf("`%s version --json`: %w", binary, err)
	}
	if err := json.Unmarshal(stdout.Bytes(), &v); err != nil || v.Version == "" {
		return v, fmt.Errorf("`%s version --json` printed %q, not roostd's version", binary, truncate(stdout.String(), 200))
	}
	if v.Handover < Protocol {
		return v, fmt.Errorf("roostd %s cannot take over the running agent's sockets (hand-over protocol %d, this one speaks %d): install it with a reboot (roost rebuild boot)", v.Version, v.Handover, Protocol)
	}
	return v, nil
}

// limited writes at most n bytes to w and drops the rest: a binary that
// prints without end must not fill the agent's memory.
type limited struct {
	w io.Writer
	n int
}

func (l *limited) Write(b []byte) (int, error) {
	if len(b) > l.n {
		l.w.Write(b[:l.n])
		l.n = 0
		return len(b), nil
	}
	l.n -= len(b)
	return l.w.Write(b)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
