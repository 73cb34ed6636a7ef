package transfer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"runtime"
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
	// A router from before version 3 takes the closure only uncompressed.
	send := func() error { return c.writeJSON(frameClosure, closureMsg{Paths: closure}) }
	if h.Version >= 3 {
		send = func() error { return c.writeJSONZ(frameClosureZ, closureMsg{Paths: closure}) }
	}
	if err := send(); err != nil {
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
	pctx, stopPrepare := context.WithCancel(ctx)
	defer stopPrepare()
	prepared, sent := s.prepareDeltas(pctx, src, m.Missing, m.Bases, byPath)
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
		if future, ok := prepared[p]; ok {
			var pr preparedNAR
			select {
			case pr = <-future:
				sent()
			case <-ctx.Done():
				return res, ctx.Err()
			}
			if pr.err != nil {
				return res, pr.err
			}
			if err := pr.send(c); err != nil {
				return res, routerGone(err, acks)
			}
			narBytes = pr.narSize
			if pr.msg.Base != "" {
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

// preparedNAR is a NAR compressed for sending: as a delta against its
// base, or plainly, whichever was smaller.
type preparedNAR struct {
	msg     narMsg
	data    []byte
	narSize uint64
	err     error
}

func (pr preparedNAR) send(c *conn) error {
	if err := c.writeJSON(frameNAR, pr.msg); err != nil {
		return err
	}
	if _, err := (&dataWriter{c: c}).Write(pr.data); err != nil {
		return err
	}
	return c.write(frameEnd, nil, true)
}

// prepareDeltas compresses, on every core, the paths that have a base, in
// the order they are sent, while the sender sends: a delta against a large
// base is CPU work (best-level zstd), and the link would otherwise wait for
// it. At most as many as there are cores are made ahead of the sender,
// which calls sent as it takes each.
func (s *Sender) prepareDeltas(ctx context.Context, src NARSource, missing []storepath.Path, bases map[storepath.Path]Base, byPath map[storepath.Path]registry.Info) (futures map[storepath.Path]chan preparedNAR, sent func()) {
	futures = map[storepath.Path]chan preparedNAR{}
	var order []storepath.Path
	for _, p := range missing {
		if _, ok := bases[p]; ok && byPath[p].NarSize <= maxDeltaTarget {
			futures[p] = make(chan preparedNAR, 1)
			order = append(order, p)
		}
	}
	ahead := make(chan struct{}, runtime.GOMAXPROCS(0))
	go func() {
		for _, p := range order {
			select {
			case ahead <- struct{}{}:
			case <-ctx.Done():
				return
			}
			go func(p storepath.Path) { futures[p] <- s.prepare(src, p, bases[p]) }(p)
		}
	}()
	return futures, func() { <-ahead }
}

// prepare compresses p plainly or against base, whichever is smaller;
// base is used only if the laptop's copy has the router's hash.
func (s *Sender) prepare(src NARSource, p storepath.Path, base Base) preparedNAR {
	var nar bytes.Buffer
	if err := src(p, &nar); err != nil {
		return preparedNAR{err: fmt.Errorf("read %s from the local store: %w", p, err)}
	}
	level := max(s.Level, zstd.SpeedDefault)
	pr := preparedNAR{msg: narMsg{Path: p, Compression: "zstd"}, narSize: uint64(nar.Len())}
	var baseNAR bytes.Buffer
	if err := src(base.Path, &baseNAR); err == nil {
		if h, err := nixhash.ParseSHA256(base.NarHash); err == nil && nixhash.SHA256(sha256.Sum256(baseNAR.Bytes())) == h {
			if delta, err := compress(nar.Bytes(), baseNAR.Bytes(), max(level, deltaLevel(baseNAR.Len()))); err == nil {
				pr.data, pr.msg.Base = delta, base.Path
			}
		}
	}
	// A delta under a tenth of the NAR beats any plain compression: skip
	// making the other to compare.
	if pr.data == nil || len(pr.data) > nar.Len()/10 {
		plain, err := compress(nar.Bytes(), nil, level)
		if err != nil {
			return preparedNAR{err: err}
		}
		if pr.data == nil || len(plain) < len(pr.data) {
			pr.data, pr.msg.Base = plain, ""
		}
	}
	return pr
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
