package transfer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/roostrouter/roost/updater/nixhash"
	"github.com/roostrouter/roost/updater/registry"
	"github.com/roostrouter/roost/updater/storepath"
)

// NARSource writes the NAR of a path.
type NARSource func(p storepath.Path, w io.Writer) error

// Progress is reported as the transfer goes.
type Progress struct {
	Missing   []storepath.Path // known after the router's reply
	Sent      int              // NARs sent
	Acked     int              // NARs the router registered
	NARBytes  uint64           // uncompressed NAR bytes sent
	WireBytes int64            // bytes written to the connection
	Current   storepath.Path   // being sent
}

// Result is what a transfer did.
type Result struct {
	Missing   []storepath.Path // what the router lacked
	Summary   Summary
	NARBytes  uint64
	WireBytes int64
	Agent     string // the router's program and version
	Deltas    int    // NARs sent as deltas against a path the router had
}

// Sender is the laptop's end.
type Sender struct {
	Agent string // "roost <version>"
	// Level is the zstd level; zero means zstd's default.
	Level    zstd.EncoderLevel
	Progress func(Progress)
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n += int64(n)
	return n, err
}

// Send offers closure (every path with its info) to the router on r and w,
// and sends what it lacks. The caller closes the connection to cancel.
func (s *Sender) Send(ctx context.Context, r io.Reader, w io.Writer, closure []registry.Info, src NARSource) (Result, error) {
	var res Result
	cw := &countingWriter{w: w}
	c := newConn(r, cw)
	if err := c.writeJSON(frameHello, hello{Protocol: Protocol, Version: Version, Compression: []string{"zstd"}, Agent: s.Agent}); err != nil {
		return res, fmt.Errorf("handshake: %w", err)
	}
	var h hello
	if err := c.readJSON(frameHelloReply, &h); err != nil {
		return res, fmt.Errorf("handshake: %w", routerError(err))
	}
	if h.Protocol != Protocol || h.Version < 1 {
		return res, fmt.Errorf("handshake: the router speaks %q version %d", h.Protocol, h.Version)
	}
	res.Agent = h.Agent
	if err := c.writeJSON(frameClosure, closureMsg{Paths: closure}); err != nil {
		return res, err
	}
	var m missingMsg
	if err := c.readJSON(frameMissing, &m); err != nil {
		return res, routerError(err)
	}
	inClosure := make(map[storepath.Path]bool, len(closure))
	for _, i := range closure {
		inClosure[i.Path] = true
	}
	for _, p := range m.Missing {
		if !inClosure[p] {
			return res, fmt.Errorf("the router asked for %s, which is not in the closure", p)
		}
	}
	res.Missing = m.Missing
	byPath := make(map[storepath.Path]registry.Info, len(closure))
	for _, i := range closure {
		byPath[i.Path] = i
	}
	prog := Progress{Missing: m.Missing}
	report := func() {
		prog.WireBytes = cw.n
		if s.Progress != nil {
			s.Progress(prog)
		}
	}
	report()

	// Acks and the summary come back while NARs go out.
	acks := make(chan ackEvent, 16)
	go func() {
		for {
			t, payload, err := c.read()
			if err != nil {
				acks <- ackEvent{err: err}
				return
			}
			switch t {
			case frameAck:
				var a ackMsg
				if err := decodeFrame(t, payload, frameAck, &a); err != nil {
					acks <- ackEvent{err: err}
					return
				}
				acks <- ackEvent{n: len(a.Paths)}
			default:
				var sum Summary
				err := decodeFrame(t, payload, frameSummary, &sum)
				acks <- ackEvent{sum: &sum, err: err}
				return
			}
		}
	}()
	handle := func(ev ackEvent) error {
		if ev.err != nil {
			return ev.err
		}
		prog.Acked += ev.n
		report()
		return nil
	}

	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(max(s.Level, zstd.SpeedDefault)), zstd.WithEncoderConcurrency(1), zstd.WithWindowSize(maxWindow))
	if err != nil {
		return res, err
	}
	defer enc.Close()
	for _, p := range m.Missing {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		for drained := false; !drained; {
			select {
			case ev := <-acks:
				if err := handle(ev); err != nil {
					return res, routerError(err)
				}
			default:
				drained = true
			}
		}
		prog.Current = p
		report()
		var narBytes uint64
		if base, ok := m.Bases[p]; ok && byPath[p].NarSize <= maxDeltaTarget {
			n, delta, err := s.sendSmaller(c, src, p, base)
			if err != nil {
				return res, routerGone(err, acks)
			}
			narBytes = n
			if delta {
				res.Deltas++
			}
		} else {
			if err := c.writeJSON(frameNAR, narMsg{Path: p, Compression: "zstd"}); err != nil {
				return res, routerGone(err, acks)
			}
			dw := &dataWriter{c: c}
			enc.Reset(dw)
			counted := &countingWriter{w: enc}
			if err := src(p, counted); err != nil {
				return res, fmt.Errorf("read %s from the local store: %w", p, err)
			}
			if err := enc.Close(); err != nil {
				return res, routerGone(err, acks)
			}
			if err := c.write(frameEnd, nil, true); err != nil {
				return res, routerGone(err, acks)
			}
			narBytes = uint64(counted.n)
		}
		prog.Sent++
		prog.NARBytes += narBytes
		res.NARBytes += narBytes
		report()
	}
	if err := c.write(frameFinish, nil, true); err != nil {
		return res, routerGone(err, acks)
	}
	for {
		ev := <-acks
		if err := handle(ev); err != nil {
			return res, routerError(err)
		}
		if ev.sum != nil {
			res.Summary = *ev.sum
			res.WireBytes = cw.n
			return res, nil
		}
	}
}

// maxDeltaTarget bounds the NARs tried as deltas: both forms are made in
// memory to send the smaller.
const maxDeltaTarget = 256 << 20

// sendSmaller sends p compressed plainly or against base, whichever is
// smaller; base is used only if the laptop's copy has the router's hash.
func (s *Sender) sendSmaller(c *conn, src NARSource, p storepath.Path, base Base) (uint64, bool, error) {
	var nar bytes.Buffer
	if err := src(p, &nar); err != nil {
		return 0, false, fmt.Errorf("read %s from the local store: %w", p, err)
	}
	level := max(s.Level, zstd.SpeedDefault)
	msg := narMsg{Path: p, Compression: "zstd"}
	var best []byte
	var baseNAR bytes.Buffer
	if err := src(base.Path, &baseNAR); err == nil {
		if h, err := nixhash.ParseSHA256(base.NarHash); err == nil && nixhash.SHA256(sha256.Sum256(baseNAR.Bytes())) == h {
			if delta, err := compress(nar.Bytes(), baseNAR.Bytes(), max(level, deltaLevel(baseNAR.Len()))); err == nil {
				best, msg.Base = delta, base.Path
			}
		}
	}
	// A delta under a tenth of the NAR beats any plain compression: skip
	// making the other to compare.
	if best == nil || len(best) > nar.Len()/10 {
		plain, err := compress(nar.Bytes(), nil, level)
		if err != nil {
			return 0, false, err
		}
		if best == nil || len(plain) < len(best) {
			best, msg.Base = plain, ""
		}
	}
	if err := c.writeJSON(frameNAR, msg); err != nil {
		return 0, false, err
	}
	if _, err := (&dataWriter{c: c}).Write(best); err != nil {
		return 0, false, err
	}
	return uint64(nar.Len()), msg.Base != "", c.write(frameEnd, nil, true)
}

// ackEvent is what the goroutine reading the router's frames reports.
type ackEvent struct {
	n   int
	sum *Summary
	err error
}

// routerGone prefers the router's own explanation, if it sent one, to the
// write error that its closing the connection caused.
func routerGone(err error, acks <-chan ackEvent) error {
	timeout := time.After(2 * time.Second)
	for {
		select {
		case ev := <-acks:
			if ev.err != nil {
				return routerError(ev.err)
			}
		case <-timeout:
			return fmt.Errorf("send to the router: %w", err)
		}
	}
}

func routerError(err error) error {
	var pe *PeerError
	if errors.As(err, &pe) {
		return fmt.Errorf("the router refused the transfer: %s", pe.Message)
	}
	return err
}
