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

func (s *Server) serve(ctx context.Context, c *conn) (Summary, error) {
	var sum Summary
	var h hello
	if err := c.readJSON(frameHello, &h); err != nil {
		return sum, fmt.Errorf("handshake: %w", err)
	}
	if h.Protocol != Protocol {
		return sum, fmt.Errorf("handshake: peer speaks %q, not %s", h.Protocol, Protocol)
	}
	if h.Version < 1 {
		return sum, fmt.Errorf("handshake: peer speaks version %d, this roostd speaks %d", h.Version, Version)
	}
	if err := c.writeJSON(frameHelloReply, hello{Protocol: Protocol, Version: Version, Compression: []string{"zstd"}, Agent: s.Agent}); err != nil {
		return sum, err
	}
	var cl closureMsg
	if err := c.readClosure(&cl); err != nil {
		return sum, fmt.Errorf("read closure: %w", err)
	}
	infos, err := checkClosure(cl.Paths)
	if err != nil {
		return sum, err
	}
	// The session holds the closure and the delta bases from gc while the
	// transfer lasts, and takes the store lock only to commit a batch: a
	// stalled peer holds up no other writer (a rollback above all).
	ss, err := s.Store.NewSession(s.Lock)
	if err != nil {
		return sum, err
	}
	defer ss.Close()
	missing, reply, reg, err := s.plan(ctx, ss, h.Version, infos)
	if err != nil {
		return sum, err
	}
	if err := c.writeJSON(frameMissing, reply); err != nil {
		return sum, err
	}
	s.Log.Info("transfer started", "paths", len(infos), "missing", len(missing), "peer", h.Agent)

	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true), zstd.WithDecoderMaxWindow(maxWindow))
	if err != nil {
		return sum, err
	}
	defer dec.Close()
	var unacked []store.Item
	var unackedBytes uint64
	defer func() { store.Discard(unacked) }()
	commit := func() error {
		if len(unacked) == 0 {
			return nil
		}
		batch := unacked
		unacked = nil
		if _, err := ss.Commit(ctx, batch); err != nil {
			return err
		}
		var paths []storepath.Path
		for _, it := range batch {
			paths = append(paths, it.Info.Path)
		}
		sum.Received += len(batch)
		sum.NARBytes += unackedBytes
		unackedBytes = 0
		return c.writeJSON(frameAck, ackMsg{Paths: paths})
	}
	next := 0
	for {
		if err := ctx.Err(); err != nil {
			return sum, err
		}
		t, payload, err := c.read()
		if err != nil {
			return sum, err
		}
		if t == frameFinish {
			break
		}
		var nm narMsg
		if err := decodeFrame(t, payload, frameNAR, &nm); err != nil {
			return sum, err
		}
		if next >= len(missing) || nm.Path != missing[next] {
			want := "nothing more"
			if next < len(missing) {
				want = missing[next].String()
			}
			return sum, fmt.Errorf("peer sent %s, expected %s (paths must come in the order given)", nm.Path, want)
		}
		if nm.Compression != "zstd" {
			return sum, fmt.Errorf("NAR of %s: unsupported compression %q", nm.Path, nm.Compression)
		}
		info := infos[nm.Path]
		d := dec
		if nm.Base != "" {
			if base, ok := reply.Bases[nm.Path]; !ok || base.Path != nm.Base {
				return sum, fmt.Errorf("NAR of %s: a delta against %s, which the router did not offer", nm.Path, nm.Base)
			}
			var baseNAR bytes.Buffer
			if err := s.Store.Dump(&baseNAR, reg, nm.Base); err != nil {
				return sum, fmt.Errorf("delta base %s: %w", nm.Base, err)
			}
			dd, err := deltaReader(nil, baseNAR.Bytes(), info.NarSize)
			if err != nil {
				return sum, err
			}
			d = dd
		}
		st, err := s.receiveNAR(ss, c, d, info)
		if d != dec {
			d.Close()
		}
		if err != nil {
			return sum, err
		}
		next++
		unacked = append(unacked, store.Item{Staged: st, Info: *info})
		unackedBytes += info.NarSize
		if len(unacked) >= batchPaths || unackedBytes >= batchBytes || c.r.Buffered() == 0 {
			// Also commit when the peer has nothing buffered for us: it is
			// waiting or slow, and acks let a cut transfer resume from here.
			if err := commit(); err != nil {
				return sum, err
			}
		}
	}
	if err := commit(); err != nil {
		return sum, err
	}
	sum.Missing = len(missing) - next
	s.Log.Info("transfer done", "received", sum.Received, "narBytes", sum.NARBytes, "stillMissing", sum.Missing)
	return sum, c.writeJSON(frameSummary, sum)
}

// receiveNAR restores one NAR from data frames, for the next commit.
func (s *Server) receiveNAR(ss *store.Session, c *conn, dec *zstd.Decoder, info *registry.Info) (st *store.Staged, err error) {
	data := &dataReader{c: c}
	if err := dec.Reset(data); err != nil {
		return nil, err
	}
	hash := info.NarHash
	st, err = ss.Restore(dec, store.Expect{Path: info.Path, NarHash: &hash, NarSize: info.NarSize})
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			store.Discard([]store.Item{{Staged: st}})
		}
	}()
	// The compressed stream must end with the NAR, and the frames with it.
	var one [1]byte
	if n, err := dec.Read(one[:]); n != 0 || !errors.Is(err, io.EOF) {
		if err == nil || errors.Is(err, io.EOF) {
			err = errors.New("data after the end of the NAR")
		}
		return nil, fmt.Errorf("NAR of %s: %w", info.Path, err)
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
