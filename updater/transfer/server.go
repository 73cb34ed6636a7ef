package transfer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/klauspost/compress/zstd"

	"github.com/roostrouter/roost/updater/nixhash"
	"github.com/roostrouter/roost/updater/registry"
	"github.com/roostrouter/roost/updater/store"
	"github.com/roostrouter/roost/updater/storepath"
	"github.com/roostrouter/roost/updater/transfer/copydelta"
)

// Commit in batches: a sync per path would dominate closures of many small
// paths; a cut connection loses at most one batch.
const (
	batchPaths = 64
	batchBytes = 32 << 20
	// maxWindow bounds the decoder's memory: routers have 64 MB.
	maxWindow = 8 << 20
)

// Server is the router's end.
type Server struct {
	Store *store.Store
	Log   *slog.Logger
	Agent string // "roostd <version>", sent in the hello
	// Lock takes the store's writer lock (it may wait for another writer).
	Lock func(ctx context.Context) (*store.Txn, error)
	// MaxDeltaBase bounds the NAR of a delta's base, which the router holds
	// in memory; DefaultMaxDeltaBase if zero.
	MaxDeltaBase uint64
	// Running, if set, says what the router runs, for the laptop (version
	// 4): a rebuild of what runs needs no activation.
	Running func() *Running

	speak int // the version to speak, if not Version: tests play older routers
}

// Serve runs one transfer on r and w (the SSH channel, or stdio).
func (s *Server) Serve(ctx context.Context, r io.Reader, w io.Writer) (Summary, error) {
	c := newConn(r, w)
	sum, err := s.serve(ctx, c)
	if err != nil {
		var pe *PeerError
		if !errors.As(err, &pe) {
			c.sendError(err)
		}
		s.Log.Warn("transfer failed", "err", err, "received", sum.Received)
	}
	return sum, err
}

// serve runs the router's side of a transfer on c: the handshake, the
// closure and the answer with what is missing, then the NARs up to the
// laptop's finish frame, and the summary.
func (s *Server) serve(ctx context.Context, c *conn) (Summary, error) {
	h, err := s.handshake(c)
	if err != nil {
		return Summary{}, err
	}
	if h.Version >= 4 && len(h.Closure) == 0 && len(h.Roots) > 0 {
		if done, err := s.answerRoots(ctx, c, h); done || err != nil {
			return Summary{}, err
		}
	}
	var cl closureMsg
	if h.Version >= 4 && len(h.Closure) > 0 {
		err = decodeClosure(h.Closure, &cl)
	} else {
		err = c.readClosure(&cl)
	}
	if err != nil {
		return Summary{}, fmt.Errorf("read closure: %w", err)
	}
	infos, err := checkClosure(cl.Paths)
	if err != nil {
		return Summary{}, err
	}
	// The session holds the closure and the delta bases from gc while the
	// transfer lasts, and takes the store lock only to commit a batch: a
	// stalled peer holds up no other writer (a rollback above all).
	ss, err := s.Store.NewSession(s.Lock)
	if err != nil {
		return Summary{}, err
	}
	defer ss.Close()
	missing, reply, reg, err := s.plan(ctx, ss, h.Version, infos)
	if err != nil {
		return Summary{}, err
	}
	if h.Version >= 4 && s.Running != nil {
		reply.Running = s.Running()
	}
	if err := c.writeJSON(frameMissing, reply); err != nil {
		return Summary{}, err
	}
	if h.Version >= 4 && len(missing) == 0 {
		// Nothing to receive: the summary follows at once, no finish
		// frame awaited.
		s.Log.Info("transfer: nothing missing", "paths", len(infos), "peer", h.Agent)
		return Summary{}, c.writeJSON(frameSummary, Summary{})
	}
	s.Log.Info("transfer started", "paths", len(infos), "missing", len(missing), "peer", h.Agent)
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true), zstd.WithDecoderMaxWindow(maxWindow))
	if err != nil {
		return Summary{}, err
	}
	defer dec.Close()
	rc := &receiver{s: s, c: c, ss: ss, reg: reg, infos: infos, missing: missing, bases: reply.Bases, dec: dec}
	defer func() { store.Discard(rc.unacked) }()
	if err := rc.receiveAll(ctx); err != nil {
		return rc.sum, err
	}
	return rc.finish(ctx)
}

// answerRoots answers a hello that names the closure's roots but not the
// closure: if the router holds every root, it holds their closure (a path
// is registered only after its references, and gc keeps what a kept path
// references), so nothing is missing: the missing paths (none, with what
// the router runs and the closure's size) and the summary go at once, and
// done is true. Else the closure frame is awaited.
func (s *Server) answerRoots(ctx context.Context, c *conn, h hello) (done bool, err error) {
	if len(h.Roots) > MaxPaths {
		return false, fmt.Errorf("the hello names %d roots, more than the %d allowed", len(h.Roots), MaxPaths)
	}
	txn, err := s.Lock(ctx)
	if err != nil {
		return false, err
	}
	reg := txn.Registry()
	for _, r := range h.Roots {
		if !txn.Valid(r) {
			txn.Close()
			return false, nil
		}
	}
	var size ClosureSize
	for p := range store.Closure(reg, h.Roots) {
		if info, ok := reg.Get(p); ok {
			size.Paths++
			size.NARBytes += info.NarSize
		}
	}
	txn.Close()
	reply := missingMsg{Closure: &size}
	if s.Running != nil {
		reply.Running = s.Running()
	}
	if err := c.writeJSON(frameMissing, reply); err != nil {
		return true, err
	}
	s.Log.Info("transfer: the roots are here, nothing missing", "roots", len(h.Roots), "paths", size.Paths, "peer", h.Agent)
	return true, c.writeJSON(frameSummary, Summary{})
}

// handshake reads the laptop's hello (H), which must speak this protocol
// at version 1 or later, and answers with the router's (h). It returns the
// laptop's hello with the version both speak.
func (s *Server) handshake(c *conn) (hello, error) {
	var h hello
	if err := c.readJSON(frameHello, &h); err != nil {
		return h, fmt.Errorf("handshake: %w", err)
	}
	if h.Protocol != Protocol {
		return h, fmt.Errorf("handshake: peer speaks %q, not %s", h.Protocol, Protocol)
	}
	v := speaking(s.speak)
	if h.Version < 1 {
		return h, fmt.Errorf("handshake: peer speaks version %d, this roostd speaks %d", h.Version, v)
	}
	err := c.writeJSON(frameHelloReply, hello{Protocol: Protocol, Version: v, Compression: compressions(v), Agent: s.Agent})
	// From here on, h.Version is the version both ends speak.
	h.Version = min(h.Version, v)
	return h, err
}

// speaking is the version to speak: v if set (tests), else Version.
func speaking(v int) int {
	if v == 0 {
		return Version
	}
	return v
}

// compressions are those of narMsg that version v takes.
func compressions(v int) []string {
	if v >= 4 {
		return []string{compZstd, compNone, compDelta}
	}
	return []string{compZstd}
}

// receiver is the router's side of a transfer once the missing paths are
// known: it restores the NARs as they come and commits them in batches.
type receiver struct {
	s       *Server
	c       *conn
	ss      *store.Session
	reg     *registry.Registry // as plan saw it: the delta bases are in it
	infos   map[storepath.Path]*registry.Info
	missing []storepath.Path
	bases   map[storepath.Path]Base
	dec     *zstd.Decoder // for NARs sent without a base

	next         int          // index in missing of the NAR expected next
	unacked      []store.Item // restored, not yet committed
	unackedBytes uint64
	sum          Summary
}

// receiveAll reads NARs, each a NAR frame, data frames and an end frame,
// in the order of missing, until the laptop's finish frame (F). It
// commits a batch when it is large, or when the laptop has sent nothing
// more yet: it is waiting or slow, and acks let a cut transfer resume.
func (rc *receiver) receiveAll(ctx context.Context) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		t, payload, err := rc.c.read()
		if err != nil {
			return err
		}
		if t == frameFinish {
			return nil
		}
		nm, err := rc.expect(t, payload)
		if err != nil {
			return err
		}
		if err := rc.receive(nm); err != nil {
			return err
		}
		if len(rc.unacked) >= batchPaths || rc.unackedBytes >= batchBytes || rc.c.r.Buffered() == 0 {
			if err := rc.commit(ctx); err != nil {
				return err
			}
		}
	}
}

// expect decodes a NAR frame and checks that it names the next missing
// path, compressed with zstd, against a base only if the router offered it.
func (rc *receiver) expect(t byte, payload []byte) (narMsg, error) {
	var nm narMsg
	if err := decodeFrame(t, payload, frameNAR, &nm); err != nil {
		return nm, err
	}
	if rc.next >= len(rc.missing) || nm.Path != rc.missing[rc.next] {
		want := "nothing more"
		if rc.next < len(rc.missing) {
			want = rc.missing[rc.next].String()
		}
		return nm, fmt.Errorf("peer sent %s, expected %s (paths must come in the order given)", nm.Path, want)
	}
	switch {
	case nm.Compression != compZstd && nm.Compression != compNone && nm.Compression != compDelta:
		return nm, fmt.Errorf("NAR of %s: unsupported compression %q", nm.Path, nm.Compression)
	case nm.Compression == compDelta && nm.Base == "":
		return nm, fmt.Errorf("NAR of %s: a delta without a base", nm.Path)
	case nm.Compression == compNone && nm.Base != "":
		return nm, fmt.Errorf("NAR of %s: uncompressed, yet against a base", nm.Path)
	}
	if nm.Base != "" {
		if base, ok := rc.bases[nm.Path]; !ok || base.Path != nm.Base {
			return nm, fmt.Errorf("NAR of %s: a delta against %s, which the router did not offer", nm.Path, nm.Base)
		}
	}
	return nm, nil
}

// receive restores the NAR that nm announced from the data frames that
// follow, decoding a delta with its base's NAR (in memory: the offer
// bounded it), and keeps it for the next commit.
func (rc *receiver) receive(nm narMsg) error {
	info := rc.infos[nm.Path]
	data := &dataReader{c: rc.c}
	var nar io.Reader = data
	var z *zstd.Decoder // the stream that must end with the NAR
	var baseNAR bytes.Buffer
	if nm.Base != "" {
		if bi, ok := rc.reg.Get(nm.Base); ok {
			baseNAR.Grow(int(bi.NarSize)) // not twice that while it grows
		}
		if err := rc.s.Store.Dump(&baseNAR, rc.reg, nm.Base); err != nil {
			return fmt.Errorf("delta base %s: %w", nm.Base, err)
		}
	}
	switch {
	case nm.Compression == compZstd && nm.Base != "":
		dd, err := deltaReader(data, baseNAR.Bytes(), info.NarSize)
		if err != nil {
			return err
		}
		defer dd.Close()
		nar, z = dd, dd
	case nm.Compression == compZstd:
		if err := rc.dec.Reset(data); err != nil {
			return err
		}
		nar, z = rc.dec, rc.dec
	case nm.Compression == compDelta:
		if err := rc.dec.Reset(data); err != nil {
			return err
		}
		nar, z = copydelta.NewReader(rc.dec, baseNAR.Bytes(), info.NarSize), rc.dec
	}
	st, err := rc.s.receiveNAR(rc.ss, data, nar, z, info)
	if err != nil {
		return err
	}
	rc.next++
	rc.unacked = append(rc.unacked, store.Item{Staged: st, Info: *info})
	rc.unackedBytes += info.NarSize
	return nil
}

// commit registers the NARs received since the last commit and
// acknowledges them (A), so the laptop knows how far a transfer got.
func (rc *receiver) commit(ctx context.Context) error {
	if len(rc.unacked) == 0 {
		return nil
	}
	batch := rc.unacked
	rc.unacked = nil
	if _, err := rc.ss.Commit(ctx, batch); err != nil {
		return err
	}
	var paths []storepath.Path
	for _, it := range batch {
		paths = append(paths, it.Info.Path)
	}
	rc.sum.Received += len(batch)
	rc.sum.NARBytes += rc.unackedBytes
	rc.unackedBytes = 0
	return rc.c.writeJSON(frameAck, ackMsg{Paths: paths})
}

// finish commits what is left and sends the summary (S), the last frame.
func (rc *receiver) finish(ctx context.Context) (Summary, error) {
	if err := rc.commit(ctx); err != nil {
		return rc.sum, err
	}
	rc.sum.Missing = len(rc.missing) - rc.next
	rc.s.Log.Info("transfer done", "received", rc.sum.Received, "narBytes", rc.sum.NARBytes, "stillMissing", rc.sum.Missing)
	return rc.sum, rc.c.writeJSON(frameSummary, rc.sum)
}

// receiveNAR restores one NAR, read from nar, for the next commit. nar
// decodes what comes in data's frames, through the zstd stream z if not
// nil.
func (s *Server) receiveNAR(ss *store.Session, data *dataReader, nar io.Reader, z *zstd.Decoder, info *registry.Info) (st *store.Staged, err error) {
	hash := info.NarHash
	st, err = ss.Restore(nar, store.Expect{Path: info.Path, NarHash: &hash, NarSize: info.NarSize})
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			store.Discard([]store.Item{{Staged: st}})
		}
	}()
	// The decoded stream must end with the NAR, and the frames with it.
	var one [1]byte
	if n, err := nar.Read(one[:]); n != 0 || !errors.Is(err, io.EOF) {
		if err == nil || errors.Is(err, io.EOF) {
			err = errors.New("data after the end of the NAR")
		}
		return nil, fmt.Errorf("NAR of %s: %w", info.Path, err)
	}
	if z != nil && z != nar {
		if n, err := z.Read(one[:]); n != 0 || !errors.Is(err, io.EOF) {
			if err == nil || errors.Is(err, io.EOF) {
				err = errors.New("data after the end of the delta")
			}
			return nil, fmt.Errorf("NAR of %s: %w", info.Path, err)
		}
	}
	if n, err := io.Copy(io.Discard, data); err != nil || n != 0 {
		if err == nil {
			err = fmt.Errorf("%d bytes after the compressed stream", n)
		}
		return nil, fmt.Errorf("NAR of %s: %w", info.Path, err)
	}
	return st, nil
}

// plan answers the closure: which paths are missing, and which delta bases
// the router offers. Under the store lock, briefly, the session holds the
// closure's paths and the bases, so that gc keeps what the answer counts
// on; it returns the registry as it was then.
func (s *Server) plan(ctx context.Context, ss *store.Session, version int, infos map[storepath.Path]*registry.Info) ([]storepath.Path, missingMsg, *registry.Registry, error) {
	var reply missingMsg
	txn, err := ss.Lock(ctx)
	if err != nil {
		return nil, reply, nil, err
	}
	defer txn.Close()
	var missing, hold []storepath.Path
	for p, info := range infos {
		hold = append(hold, p)
		if txn.Valid(p) {
			continue
		}
		for _, ref := range info.References {
			if _, ok := infos[ref]; !ok && !txn.Valid(ref) {
				return nil, reply, nil, fmt.Errorf("closure is not closed: %s references %s, which is neither in it nor on the router", p, ref)
			}
			hold = append(hold, ref)
		}
		missing = append(missing, p)
	}
	missing = registry.TopoSort(infos, missing)
	reply.Missing = missing
	if version >= 2 {
		maxBase := s.MaxDeltaBase
		if maxBase == 0 {
			maxBase = DefaultMaxDeltaBase
		}
		reply.Bases = chooseBases(txn.Registry(), missing, maxBase)
		for _, b := range reply.Bases {
			hold = append(hold, b.Path)
		}
	}
	if err := ss.Hold(hold...); err != nil {
		return nil, reply, nil, err
	}
	return missing, reply, txn.Registry(), nil
}

// checkClosure validates the laptop's path list.
func checkClosure(paths []registry.Info) (map[storepath.Path]*registry.Info, error) {
	if len(paths) == 0 {
		return nil, errors.New("closure is empty")
	}
	if len(paths) > MaxPaths {
		return nil, fmt.Errorf("closure has %d paths, more than the %d allowed", len(paths), MaxPaths)
	}
	infos := make(map[storepath.Path]*registry.Info, len(paths))
	var zero nixhash.SHA256
	for i := range paths {
		info := &paths[i]
		switch {
		case info.Path == "":
			return nil, fmt.Errorf("closure entry %d has no path", i)
		case infos[info.Path] != nil:
			return nil, fmt.Errorf("closure lists %s twice", info.Path)
		case info.NarHash == zero:
			return nil, fmt.Errorf("closure entry %s has no NAR hash", info.Path)
		case info.NarSize == 0 || info.NarSize > MaxNARSize:
			return nil, fmt.Errorf("closure entry %s declares a NAR size of %d bytes", info.Path, info.NarSize)
		case len(info.References) > 1<<16:
			return nil, fmt.Errorf("closure entry %s declares %d references", info.Path, len(info.References))
		}
		infos[info.Path] = info
	}
	return infos, nil
}
