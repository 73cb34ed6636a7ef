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
// and sends what it lacks. It returns when the router has sent its
// summary, on an error, or when ctx is done between NARs or while waiting
// for the summary; a write blocked on a stalled router ends only when the
// caller closes the connection, which is how it cancels.
func (s *Sender) Send(ctx context.Context, r io.Reader, w io.Writer, closure []registry.Info, src NARSource) (Result, error) {
	var res Result
	cw := &countingWriter{w: w}
	c := newConn(r, cw)
	h, err := s.handshake(c)
	if err != nil {
		return res, err
	}
	res.Agent = h.Agent
	m, err := offerClosure(c, h.Version, closure)
	if err != nil {
		return res, err
	}
	res.Missing = m.Missing
	rep := &reporter{prog: Progress{Missing: m.Missing}, cw: cw, fn: s.Progress}
	rep.report()
	// Acks and the summary come back while NARs go out.
	acks := readAcks(c)
	defer acks.stop()
	if err := s.sendNARs(ctx, c, closure, m, src, acks, rep, &res); err != nil {
		return res, err
	}
	sum, err := finish(ctx, c, acks, rep)
	if err != nil {
		return res, err
	}
	res.Summary = sum
	res.WireBytes = cw.n
	return res, nil
}

// handshake sends the laptop's hello (H) and reads the router's (h),
// which must speak this protocol at version 1 or later.
func (s *Sender) handshake(c *conn) (hello, error) {
	if err := c.writeJSON(frameHello, hello{Protocol: Protocol, Version: Version, Compression: []string{"zstd"}, Agent: s.Agent}); err != nil {
		return hello{}, fmt.Errorf("handshake: %w", err)
	}
	var h hello
	if err := c.readJSON(frameHelloReply, &h); err != nil {
		return hello{}, fmt.Errorf("handshake: %w", routerError(err))
	}
	if h.Protocol != Protocol || h.Version < 1 {
		return hello{}, fmt.Errorf("handshake: the router speaks %q version %d", h.Protocol, h.Version)
	}
	return h, nil
}

// offerClosure sends the whole closure in one frame, compressed (c) to a
// router of version 3 or later and plain (C) to an older one, and reads
// the router's answer (M): the paths it lacks, in the order to send them,
// each of which must be in the closure.
func offerClosure(c *conn, version int, closure []registry.Info) (missingMsg, error) {
	var err error
	if version >= 3 {
		err = c.writeJSONZ(frameClosureZ, closureMsg{Paths: closure})
	} else {
		err = c.writeJSON(frameClosure, closureMsg{Paths: closure})
	}
	if err != nil {
		return missingMsg{}, err
	}
	var m missingMsg
	if err := c.readJSON(frameMissing, &m); err != nil {
		return missingMsg{}, routerError(err)
	}
	inClosure := make(map[storepath.Path]bool, len(closure))
	for _, i := range closure {
		inClosure[i.Path] = true
	}
	for _, p := range m.Missing {
		if !inClosure[p] {
			return missingMsg{}, fmt.Errorf("the router asked for %s, which is not in the closure", p)
		}
	}
	return m, nil
}

// sendNARs sends the missing paths in the router's order, each as a NAR
// frame, its zstd stream in data frames and an end frame; a path with a
// delta base goes as prepareDeltas made it. Before each path it takes the
// acks that came back meanwhile, and stops at the router's error.
func (s *Sender) sendNARs(ctx context.Context, c *conn, closure []registry.Info, m missingMsg, src NARSource, acks *ackReader, rep *reporter, res *Result) error {
	byPath := make(map[storepath.Path]registry.Info, len(closure))
	for _, i := range closure {
		byPath[i.Path] = i
	}
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(max(s.Level, zstd.SpeedDefault)), zstd.WithEncoderConcurrency(1), zstd.WithWindowSize(maxWindow))
	if err != nil {
		return err
	}
	defer enc.Close()
	pctx, stopPrepare := context.WithCancel(ctx)
	defer stopPrepare()
	prepared, sent := s.prepareDeltas(pctx, src, m.Missing, m.Bases, byPath)
	for _, p := range m.Missing {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := acks.drain(rep); err != nil {
			return err
		}
		rep.prog.Current = p
		rep.report()
		var narBytes uint64
		if future, ok := prepared[p]; ok {
			pr, err := sendPrepared(ctx, c, future, sent, acks)
			if err != nil {
				return err
			}
			narBytes = pr.narSize
			if pr.msg.Base != "" {
				res.Deltas++
			}
		} else if narBytes, err = sendNAR(c, enc, p, src, acks); err != nil {
			return err
		}
		rep.prog.Sent++
		rep.prog.NARBytes += narBytes
		res.NARBytes += narBytes
		rep.report()
	}
	return nil
}

// sendNAR compresses p's NAR as the local store writes it and sends it: a
// NAR frame naming p, data frames, an end frame.
func sendNAR(c *conn, enc *zstd.Encoder, p storepath.Path, src NARSource, acks *ackReader) (narBytes uint64, err error) {
	if err := c.writeJSON(frameNAR, narMsg{Path: p, Compression: "zstd"}); err != nil {
		return 0, acks.routerGone(err)
	}
	enc.Reset(&dataWriter{c: c})
	counted := &countingWriter{w: enc}
	if err := src(p, counted); err != nil {
		return 0, fmt.Errorf("read %s from the local store: %w", p, err)
	}
	if err := enc.Close(); err != nil {
		return 0, acks.routerGone(err)
	}
	if err := c.write(frameEnd, nil, true); err != nil {
		return 0, acks.routerGone(err)
	}
	return uint64(counted.n), nil
}

// sendPrepared waits for a NAR that prepareDeltas compressed, calls sent
// to let it make the next, and sends it: a NAR frame (naming the base of a
// delta), data frames, an end frame.
func sendPrepared(ctx context.Context, c *conn, future <-chan preparedNAR, sent func(), acks *ackReader) (preparedNAR, error) {
	var pr preparedNAR
	select {
	case pr = <-future:
		sent()
	case <-ctx.Done():
		return pr, ctx.Err()
	}
	if pr.err != nil {
		return pr, pr.err
	}
	if err := pr.send(c); err != nil {
		return pr, acks.routerGone(err)
	}
	return pr, nil
}

// finish tells the router that nothing more comes (F) and takes its acks
// up to its summary (S), the last frame of a transfer.
func finish(ctx context.Context, c *conn, acks *ackReader, rep *reporter) (Summary, error) {
	if err := c.write(frameFinish, nil, true); err != nil {
		return Summary{}, acks.routerGone(err)
	}
	for {
		var ev ackEvent
		select {
		case ev = <-acks.events:
		case <-ctx.Done():
			return Summary{}, ctx.Err()
		}
		if err := rep.ack(ev); err != nil {
			return Summary{}, err
		}
		if ev.sum != nil {
			return *ev.sum, nil
		}
	}
}

// reporter counts what Send did and tells Progress.
type reporter struct {
	prog Progress
	cw   *countingWriter
	fn   func(Progress)
}

func (r *reporter) report() {
	r.prog.WireBytes = r.cw.n
	if r.fn != nil {
		r.fn(r.prog)
	}
}

// ack counts an event of the ack reader, or returns the router's error.
func (r *reporter) ack(ev ackEvent) error {
	if ev.err != nil {
		return routerError(ev.err)
	}
	r.prog.Acked += ev.n
	r.report()
	return nil
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

// ackReader reads what the router sends while NARs go out, acks (A) and
// at last the summary (S), in a goroutine of its own, and hands each on
// events. It ends after the summary or an error, or once stop is called
// and its read returns: Send stops it on the way out, and the caller
// closing the connection ends a read that is waiting on the router.
type ackReader struct {
	events  chan ackEvent
	stopped chan struct{}
	done    chan struct{} // closed when the goroutine has ended
}

func readAcks(c *conn) *ackReader {
	a := &ackReader{events: make(chan ackEvent, 16), stopped: make(chan struct{}), done: make(chan struct{})}
	go a.run(c)
	return a
}

func (a *ackReader) run(c *conn) {
	defer close(a.done)
	for {
		select {
		case <-a.stopped:
			return
		default:
		}
		ev := nextAck(c)
		select {
		case a.events <- ev:
		case <-a.stopped:
			return
		}
		if ev.err != nil || ev.sum != nil {
			return
		}
	}
}

// stop tells the goroutine that nobody takes its events any more.
func (a *ackReader) stop() { close(a.stopped) }

// drain counts the events that are waiting, without waiting for more.
func (a *ackReader) drain(rep *reporter) error {
	for {
		select {
		case ev := <-a.events:
			if err := rep.ack(ev); err != nil {
				return err
			}
		default:
			return nil
		}
	}
}

// nextAck reads one frame from the router: an ack, the summary, or an
// error frame (as a PeerError).
func nextAck(c *conn) ackEvent {
	t, payload, err := c.read()
	if err != nil {
		return ackEvent{err: err}
	}
	if t == frameAck {
		var a ackMsg
		if err := decodeFrame(t, payload, frameAck, &a); err != nil {
			return ackEvent{err: err}
		}
		return ackEvent{n: len(a.Paths)}
	}
	var sum Summary
	err = decodeFrame(t, payload, frameSummary, &sum)
	return ackEvent{sum: &sum, err: err}
}

// routerGone prefers the router's own explanation, if it sent one, to the
// write error that its closing the connection caused.
func (a *ackReader) routerGone(err error) error {
	timeout := time.After(2 * time.Second)
	for {
		select {
		case ev := <-a.events:
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
