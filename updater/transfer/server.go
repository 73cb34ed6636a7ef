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
	txn, err := s.Lock(ctx)
	if err != nil {
		return sum, err
	}
	defer txn.Close()
	var missing []storepath.Path
	for p, info := range infos {
		if txn.Valid(p) {
			continue
		}
		for _, ref := range info.References {
			if _, ok := infos[ref]; !ok && !txn.Valid(ref) {
				return sum, fmt.Errorf("closure is not closed: %s references %s, which is neither in it nor on the router", p, ref)
			}
		}
		missing = append(missing, p)
	}
	missing = registry.TopoSort(infos, missing)
	reply := missingMsg{Missing: missing}
	if h.Version >= 2 {
		maxBase := s.MaxDeltaBase
		if maxBase == 0 {
			maxBase = DefaultMaxDeltaBase
		}
		reply.Bases = chooseBases(txn.Registry(), missing, maxBase)
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
	var unacked []storepath.Path
	var unackedBytes uint64
	commit := func() error {
		if len(unacked) == 0 {
			return nil
		}
		if err := txn.Commit(); err != nil {
			return err
		}
		sum.Received += len(unacked)
		sum.NARBytes += unackedBytes
		err := c.writeJSON(frameAck, ackMsg{Paths: unacked})
		unacked, unackedBytes = nil, 0
		return err
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
			if err := s.Store.Dump(&baseNAR, txn.Registry(), nm.Base); err != nil {
				return sum, fmt.Errorf("delta base %s: %w", nm.Base, err)
			}
			dd, err := deltaReader(nil, baseNAR.Bytes(), info.NarSize)
			if err != nil {
				return sum, err
			}
			d = dd
		}
		err = s.receiveNAR(txn, c, d, info)
		if d != dec {
			d.Close()
		}
		if err != nil {
			return sum, err
		}
		next++
		unacked = append(unacked, nm.Path)
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

// receiveNAR restores one NAR from data frames and queues it for the commit.
func (s *Server) receiveNAR(txn *store.Txn, c *conn, dec *zstd.Decoder, info *registry.Info) error {
	data := &dataReader{c: c}
	if err := dec.Reset(data); err != nil {
		return err
	}
	hash := info.NarHash
	st, err := txn.Restore(dec, store.Expect{Path: info.Path, NarHash: &hash, NarSize: info.NarSize})
	if err != nil {
		return err
	}
	// The compressed stream must end with the NAR, and the frames with it.
	var one [1]byte
	if n, err := dec.Read(one[:]); n != 0 || !errors.Is(err, io.EOF) {
		if err == nil || errors.Is(err, io.EOF) {
			err = errors.New("data after the end of the NAR")
		}
		return fmt.Errorf("NAR of %s: %w", info.Path, err)
	}
	if n, err := io.Copy(io.Discard, data); err != nil || n != 0 {
		if err == nil {
			err = fmt.Errorf("%d bytes after the compressed stream", n)
		}
		return fmt.Errorf("NAR of %s: %w", info.Path, err)
	}
	return txn.Add(st, *info)
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
