package transfer

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"slices"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/roostrouter/roost/updater/registry"
	"github.com/roostrouter/roost/updater/storepath"
)

// NARSource writes the NAR of a path. Send calls it from several
// goroutines at once: NARs are prepared ahead, in parallel.
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
	// DeltasCached of them came from the Cache: nothing was compressed.
	DeltasCached int
	Uncompressed int      // NARs sent as they are: the link outran compression
	Running      *Running // what the router runs (a router of version 4)
	// Closure is the closure's size as the router counted it, when it
	// answered by the roots before the closure was known.
	Closure *ClosureSize
}

// Sender is the laptop's end.
type Sender struct {
	Agent string // "roost <version>"
	// Level is the zstd level of plain compression; zero means zstd's
	// default (fast).
	Level    zstd.EncoderLevel
	Progress func(Progress)
	// Cache, if set, keeps the deltas this transfer computes, and gives
	// back those an earlier one computed.
	Cache DeltaCache
	// Workers is how many NARs are prepared at once; GOMAXPROCS if zero.
	Workers int
	// Log, if set, gets a debug line for each NAR: how it went, and why.
	Log *slog.Logger

	speak int // the version to speak, if not Version: tests play older laptops
	// link, if set, stands for the link's measured throughput (tests).
	link func() float64
	// prepareLimit, if set, replaces maxPrepared (tests).
	prepareLimit uint64
}

// DeltaCache keeps computed deltas across transfers, by key (which names
// the delta's kind and its base's and target's NAR hashes). Get returns
// only what Put was given; Put is best effort.
type DeltaCache interface {
	Get(key string) ([]byte, bool)
	Put(key string, data []byte) error
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

// maxInlineClosure bounds the compressed closure the hello carries; a
// larger one goes in its own frame.
const maxInlineClosure = 4 << 20

// Offer is a closure to offer the router: its roots, and the path infos
// of their closure, which the laptop's Nix may still be computing as the
// transfer starts.
type Offer struct {
	Roots []storepath.Path
	// Infos returns the closure (every path with its info), waiting for
	// it if need be.
	Infos func() ([]registry.Info, error)
	// Ready is closed once Infos no longer waits; nil if it never does.
	Ready <-chan struct{}
}

// Send offers closure to the router on r and w, and sends what it lacks:
// SendOffer with a closure known at once.
func (s *Sender) Send(ctx context.Context, r io.Reader, w io.Writer, closure []registry.Info, src NARSource) (Result, error) {
	return s.SendOffer(ctx, r, w, Offer{Infos: func() ([]registry.Info, error) { return closure, nil }}, src)
}

// SendOffer offers a closure to the router on r and w, and sends what it
// lacks. It returns when the router has sent its summary, on an error, or
// when ctx is done between NARs or while waiting for the summary; a write
// blocked on a stalled router ends only when the caller closes the
// connection, which is how it cancels.
func (s *Sender) SendOffer(ctx context.Context, r io.Reader, w io.Writer, o Offer, src NARSource) (Result, error) {
	var res Result
	link := &meter{w: w, now: time.Now}
	cw := &countingWriter{w: link}
	c := newConn(r, cw)
	h, closure, m, err := s.offer(ctx, c, o)
	res.Agent = h.Agent
	if err != nil {
		return res, err
	}
	res.Missing, res.Running, res.Closure = m.Missing, m.Running, m.Closure
	if h.Version >= 4 && len(m.Missing) == 0 {
		// The router sends its summary at once.
		if err := c.readJSON(frameSummary, &res.Summary); err != nil {
			return res, routerError(err)
		}
		res.WireBytes = cw.n
		return res, nil
	}
	rate := link.rate
	if s.link != nil {
		rate = s.link
	}
	err = s.sendMissing(ctx, c, cw, h, m, closure, src, rate, &res)
	res.WireBytes = cw.n
	return res, err
}

// offer makes the handshake and offers the closure: inside the hello if
// it is known by then, else (to a router of version 4) the roots, the
// closure following once known unless the router answered that it holds
// the roots; to an older router, in a frame after the hellos. It returns
// the router's hello, the closure (nil if the router never needed it) and
// the router's answer.
func (s *Sender) offer(ctx context.Context, c *conn, o Offer) (hello, []registry.Info, missingMsg, error) {
	v := speaking(s.speak)
	var closure []registry.Info
	var inline []byte
	var roots []storepath.Path
	var err error
	if o.Ready == nil || closed(o.Ready) {
		if closure, err = o.Infos(); err != nil {
			return hello{}, nil, missingMsg{}, err
		}
		if v >= 4 {
			if inline, err = compressJSON(closureMsg{Paths: closure}); err != nil {
				return hello{}, nil, missingMsg{}, err
			}
			if len(inline) > maxInlineClosure {
				inline = nil
			}
		}
	} else if v >= 4 {
		roots = o.Roots
	}
	h, err := s.handshake(c, inline, roots)
	if err != nil {
		return h, nil, missingMsg{}, err
	}
	var m missingMsg
	switch {
	case h.Version >= 4 && inline != nil:
		m, err = readMissing(c, closure)
	case h.Version >= 4 && len(roots) > 0:
		closure, m, err = raceRoots(ctx, c, o)
	default:
		if closure == nil {
			if closure, err = o.Infos(); err != nil {
				return h, nil, m, err
			}
		}
		if err = sendClosure(c, h.Version, closure); err == nil {
			m, err = readMissing(c, closure)
		}
	}
	return h, closure, m, err
}

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// raceRoots waits for whichever comes first, the router's answer to the
// roots (nothing is missing) or the closure, which then goes in a frame
// and gets the router's answer.
func raceRoots(ctx context.Context, c *conn, o Offer) ([]registry.Info, missingMsg, error) {
	type answer struct {
		m   missingMsg
		err error
	}
	answered := make(chan answer, 1)
	go func() {
		var m missingMsg
		err := c.readJSON(frameMissing, &m)
		answered <- answer{m, routerError(err)}
	}()
	select {
	case a := <-answered:
		if a.err == nil && len(a.m.Missing) > 0 {
			a.err = errors.New("the router asked for paths before it had the closure")
		}
		return nil, a.m, a.err
	case <-o.Ready:
	case <-ctx.Done():
		return nil, missingMsg{}, ctx.Err()
	}
	closure, err := o.Infos()
	if err != nil {
		return nil, missingMsg{}, err
	}
	if err := sendClosure(c, 4, closure); err != nil {
		return nil, missingMsg{}, err
	}
	select {
	case a := <-answered:
		if a.err != nil {
			return nil, a.m, a.err
		}
		return closure, a.m, checkMissing(a.m, closure)
	case <-ctx.Done():
		return nil, missingMsg{}, ctx.Err()
	}
}

// handshake sends the laptop's hello (H), with the compressed closure
// inline or the roots if given, and reads the router's (h), which must
// speak this protocol at version 1 or later. It returns the router's hello
// with the version both speak.
func (s *Sender) handshake(c *conn, inline []byte, roots []storepath.Path) (hello, error) {
	v := speaking(s.speak)
	if err := c.writeJSON(frameHello, hello{Protocol: Protocol, Version: v, Compression: compressions(v), Agent: s.Agent, Closure: inline, Roots: roots}); err != nil {
		return hello{}, fmt.Errorf("handshake: %w", err)
	}
	var h hello
	if err := c.readJSON(frameHelloReply, &h); err != nil {
		return hello{}, fmt.Errorf("handshake: %w", routerError(err))
	}
	if h.Protocol != Protocol || h.Version < 1 {
		return hello{}, fmt.Errorf("handshake: the router speaks %q version %d", h.Protocol, h.Version)
	}
	h.Version = min(h.Version, v)
	return h, nil
}

// sendClosure sends the whole closure in one frame: compressed (c) to a
// router of version 3 or later, plain (C) to an older one.
func sendClosure(c *conn, version int, closure []registry.Info) error {
	if version >= 3 {
		return c.writeJSONZ(frameClosureZ, closureMsg{Paths: closure})
	}
	return c.writeJSON(frameClosure, closureMsg{Paths: closure})
}

// readMissing reads the router's answer to the closure (M): the paths it
// lacks, in the order to send them, each of which must be in the closure.
func readMissing(c *conn, closure []registry.Info) (missingMsg, error) {
	var m missingMsg
	if err := c.readJSON(frameMissing, &m); err != nil {
		return missingMsg{}, routerError(err)
	}
	return m, checkMissing(m, closure)
}

func checkMissing(m missingMsg, closure []registry.Info) error {
	inClosure := make(map[storepath.Path]bool, len(closure))
	for _, i := range closure {
		inClosure[i.Path] = true
	}
	for _, p := range m.Missing {
		if !inClosure[p] {
			return fmt.Errorf("the router asked for %s, which is not in the closure", p)
		}
	}
	return nil
}

// sendMissing sends the paths the router lacks, as a pipeline prepares
// them, and takes the router's acks and summary.
func (s *Sender) sendMissing(ctx context.Context, c *conn, cw *countingWriter, h hello, m missingMsg, closure []registry.Info, src NARSource, link func() float64, res *Result) error {
	rep := &reporter{prog: Progress{Missing: m.Missing}, cw: cw, fn: s.Progress}
	rep.report()
	// Acks and the summary come back while NARs go out.
	acks := readAcks(c)
	defer acks.stop()
	pctx, stopPipeline := context.WithCancel(ctx)
	p, err := s.startPipeline(pctx, h, m, closure, src, link)
	if err != nil {
		stopPipeline()
		return err
	}
	defer func() {
		stopPipeline()
		p.wait()
	}()
	if err := s.sendNARs(ctx, c, p, acks, rep, res); err != nil {
		return err
	}
	res.Summary, err = finish(ctx, c, acks, rep)
	return err
}

// startPipeline starts preparing the missing paths in m, with the methods
// the router h takes.
func (s *Sender) startPipeline(ctx context.Context, h hello, m missingMsg, closure []registry.Info, src NARSource, link func() float64) (*pipeline, error) {
	var allow [nMethods]bool
	allow[plain] = true
	allow[asIs] = h.Version >= 4 && slices.Contains(h.Compression, compNone)
	allow[copyDelta] = h.Version >= 4 && slices.Contains(h.Compression, compDelta)
	allow[dictDelta] = h.Version >= 2 && !allow[copyDelta] // the router takes the faster kind
	workers := s.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	level := s.Level
	if level == 0 {
		level = zstd.SpeedDefault
	}
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(level), zstd.WithEncoderConcurrency(workers), zstd.WithWindowSize(maxWindow))
	if err != nil {
		return nil, err
	}
	p := &pipeline{src: src, model: newCostModel(workers, link), allow: allow, level: level, enc: enc, cache: s.Cache, log: s.Log,
		tokens: make(chan struct{}, aheadTokens), workers: make(chan struct{}, workers)}
	byPath := make(map[storepath.Path]registry.Info, len(closure))
	for _, i := range closure {
		byPath[i.Path] = i
	}
	for _, path := range m.Missing {
		j := &job{info: byPath[path], out: make(chan prepared, 1)}
		if b, ok := m.Bases[path]; ok {
			j.base = &b
		}
		j.stream = j.info.NarSize > cmp.Or(s.prepareLimit, maxPrepared)
		j.tokens = min(aheadTokens, 1+int(j.info.NarSize/tokenBytes))
		p.jobs = append(p.jobs, j)
	}
	p.dispatched.Add(1)
	go p.dispatch(ctx)
	return p, nil
}

// sendNARs sends the missing paths in the router's order, each as a NAR
// frame, its data frames and an end frame, as the pipeline prepared it
// (or streaming it, if it is too large to prepare). Before each path it
// takes the acks that came back meanwhile, and stops at the router's
// error.
func (s *Sender) sendNARs(ctx context.Context, c *conn, p *pipeline, acks *ackReader, rep *reporter, res *Result) error {
	var enc *zstd.Encoder // for streamed NARs
	defer func() {
		if enc != nil {
			enc.Close()
		}
	}()
	for _, j := range p.jobs {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := acks.drain(rep); err != nil {
			return err
		}
		rep.prog.Current = j.info.Path
		rep.report()
		var narBytes uint64
		var err error
		switch {
		case j.stream && p.streamAsIs(j):
			narBytes, err = sendAsIs(c, j.info.Path, p.src, acks)
			res.Uncompressed++
		case j.stream:
			if enc == nil {
				if enc, err = zstd.NewWriter(nil, zstd.WithEncoderLevel(p.level), zstd.WithEncoderConcurrency(1), zstd.WithWindowSize(maxWindow)); err != nil {
					return err
				}
			}
			narBytes, err = sendNAR(c, enc, j.info.Path, p.src, acks)
		default:
			var pr prepared
			select {
			case pr = <-j.out:
			case <-ctx.Done():
				return ctx.Err()
			}
			p.sent(j)
			if pr.err != nil {
				return pr.err
			}
			if err = pr.send(c); err != nil {
				return acks.routerGone(err)
			}
			narBytes = pr.narSize
			res.count(pr)
		}
		if err != nil {
			return err
		}
		rep.prog.Sent++
		rep.prog.NARBytes += narBytes
		res.NARBytes += narBytes
		rep.report()
	}
	return nil
}

func (res *Result) count(pr prepared) {
	switch {
	case pr.msg.Base != "":
		res.Deltas++
		if pr.cached {
			res.DeltasCached++
		}
	case pr.msg.Compression == compNone:
		res.Uncompressed++
	}
}

// sendNAR compresses p's NAR as the local store writes it and sends it: a
// NAR frame naming p, data frames, an end frame.
func sendNAR(c *conn, enc *zstd.Encoder, p storepath.Path, src NARSource, acks *ackReader) (narBytes uint64, err error) {
	if err := c.writeJSON(frameNAR, narMsg{Path: p, Compression: compZstd}); err != nil {
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

// sendAsIs sends p's NAR as the local store writes it, uncompressed.
func sendAsIs(c *conn, p storepath.Path, src NARSource, acks *ackReader) (narBytes uint64, err error) {
	if err := c.writeJSON(frameNAR, narMsg{Path: p, Compression: compNone}); err != nil {
		return 0, acks.routerGone(err)
	}
	// Frames of dataChunk bytes, not one for every small write of the NAR.
	bw := bufio.NewWriterSize(&dataWriter{c: c}, dataChunk)
	counted := &countingWriter{w: bw}
	if err := src(p, counted); err != nil {
		return 0, fmt.Errorf("read %s from the local store: %w", p, err)
	}
	if err := bw.Flush(); err != nil {
		return 0, acks.routerGone(err)
	}
	if err := c.write(frameEnd, nil, true); err != nil {
		return 0, acks.routerGone(err)
	}
	return uint64(counted.n), nil
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
