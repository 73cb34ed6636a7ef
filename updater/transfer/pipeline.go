package transfer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/roostrouter/roost/updater/nixhash"
	"github.com/roostrouter/roost/updater/registry"
	"github.com/roostrouter/roost/updater/transfer/copydelta"
)

// The pipeline prepares NARs ahead of the sender, in its order, on as
// many workers as there are cores, within a budget of tokens: a NAR
// takes one, and one more for each tokenBytes of it, until the sender
// has sent it. A NAR larger than maxPrepared is not held in memory: the
// sender streams it when its turn comes.
const (
	aheadTokens = 256
	tokenBytes  = 256 << 10
	maxPrepared = 256 << 20
)

// job is one missing path on its way out.
type job struct {
	info   registry.Info
	base   *Base // offered by the router, if any
	tokens int
	stream bool
	out    chan prepared // buffered: a worker never waits for the sender
}

// prepared is a NAR ready to send.
type prepared struct {
	msg     narMsg
	data    []byte
	narSize uint64
	cached  bool // a delta from the cache
	err     error
}

func (pr prepared) send(c *conn) error {
	if err := c.writeJSON(frameNAR, pr.msg); err != nil {
		return err
	}
	if _, err := (&dataWriter{c: c}).Write(pr.data); err != nil {
		return err
	}
	return c.write(frameEnd, nil, true)
}

type pipeline struct {
	src     NARSource
	model   *costModel
	allow   [nMethods]bool // what the router takes
	level   zstd.EncoderLevel
	enc     *zstd.Encoder // EncodeAll, from every worker at once
	cache   DeltaCache
	log     *slog.Logger
	tokens  chan struct{}
	workers chan struct{}
	jobs    []*job

	dispatched sync.WaitGroup // the dispatcher and the workers it started
	puts       sync.WaitGroup // cache writes
}

// dispatch starts a worker for each job in order, as tokens and workers
// allow, until ctx is done.
func (p *pipeline) dispatch(ctx context.Context) {
	defer p.dispatched.Done()
	for _, j := range p.jobs {
		if j.stream {
			continue
		}
		for range j.tokens {
			select {
			case p.tokens <- struct{}{}:
			case <-ctx.Done():
				return
			}
		}
		select {
		case p.workers <- struct{}{}:
		case <-ctx.Done():
			return
		}
		p.dispatched.Add(1)
		go func() {
			defer p.dispatched.Done()
			j.out <- p.prepare(ctx, j)
			<-p.workers
		}()
	}
}

// sent gives back the tokens of a job the sender has sent.
func (p *pipeline) sent(j *job) {
	for range j.tokens {
		<-p.tokens
	}
}

// wait waits for the workers (once ctx is done they end soon) and for
// the cache writes, then frees the encoder.
func (p *pipeline) wait() {
	p.dispatched.Wait()
	p.puts.Wait()
	p.enc.Close()
}

// streamAsIs says whether a streamed NAR goes as it is rather than
// compressed.
func (p *pipeline) streamAsIs(j *job) bool {
	allow := p.allow
	allow[copyDelta], allow[dictDelta] = false, false
	return p.model.choose(float64(j.info.NarSize), allow) == asIs
}

// prepare makes j's NAR ready to send: a delta from the cache if there
// is one, else by the method estimated to finish first; a delta that
// fails, takes too long or does not pay falls back to the next best.
func (p *pipeline) prepare(ctx context.Context, j *job) prepared {
	pr := prepared{msg: narMsg{Path: j.info.Path}, narSize: j.info.NarSize}
	allow := p.allow
	if j.base == nil || j.info.NarSize > maxDeltaTarget {
		allow[copyDelta], allow[dictDelta] = false, false
	}
	if allow[copyDelta] || allow[dictDelta] {
		if data, m, ok := p.cached(j, allow); ok {
			pr.msg.Compression, pr.msg.Base, pr.data, pr.cached = compressionOf(m), j.base.Path, data, true
			p.debug(j, m, "from the cache", len(data))
			return pr
		}
	}
	var nar bytes.Buffer
	nar.Grow(int(j.info.NarSize))
	if err := p.src(j.info.Path, &nar); err != nil {
		pr.err = fmt.Errorf("read %s from the local store: %w", j.info.Path, err)
		return pr
	}
	size := float64(nar.Len())
	for {
		m := p.model.choose(size, allow)
		start := time.Now()
		var data []byte
		switch m {
		case asIs:
			data = nar.Bytes()
		case plain:
			data = p.enc.EncodeAll(nar.Bytes(), make([]byte, 0, nar.Len()/2))
		default:
			var err error
			if data, err = p.delta(ctx, m, j, nar.Bytes()); err != nil {
				p.debug(j, m, "no delta: "+err.Error(), 0)
				allow[m] = false
				continue
			}
			pr.msg.Base = j.base.Path
		}
		p.model.observe(m, nar.Len(), len(data), time.Since(start))
		pr.msg.Compression, pr.data = compressionOf(m), data
		p.debug(j, m, "", len(data))
		return pr
	}
}

func compressionOf(m method) string {
	switch m {
	case asIs:
		return compNone
	case copyDelta:
		return compDelta
	}
	return compZstd
}

// maxDeltaTarget bounds the NARs tried as deltas.
const maxDeltaTarget = maxPrepared

var errBaseDiffers = errors.New("the laptop's copy of the base differs from the router's")

// delta makes nar as a delta of kind m against j's base, in about the time
// plain compression would take at most: past that it gives up (and the
// time spent teaches the model to choose otherwise). A delta is kept only
// if it is smaller than plain compression is expected to be.
func (p *pipeline) delta(ctx context.Context, m method, j *job, nar []byte) ([]byte, error) {
	start := time.Now()
	baseHash, err := nixhash.ParseSHA256(j.base.NarHash)
	if err != nil {
		return nil, fmt.Errorf("the router's hash of %s: %w", j.base.Path, err)
	}
	var base bytes.Buffer
	base.Grow(len(nar)) // about the same size: not twice it while it grows
	if err := p.src(j.base.Path, &base); err != nil {
		return nil, fmt.Errorf("read %s: %w", j.base.Path, err)
	}
	if nixhash.SHA256(sha256.Sum256(base.Bytes())) != baseHash {
		return nil, errBaseDiffers
	}
	budget := p.model.alone(plain, float64(len(nar)))
	stop := func() bool { return ctx.Err() != nil || time.Since(start) > budget+20*time.Millisecond }
	var data []byte
	switch m {
	case copyDelta:
		var ops bytes.Buffer
		if _, err := copydelta.Encode(&ops, base.Bytes(), nar, stop); err != nil {
			p.model.observe(m, len(nar), len(nar), time.Since(start))
			return nil, err
		}
		data = p.enc.EncodeAll(ops.Bytes(), nil)
	case dictDelta:
		if data, err = compressUntil(nar, base.Bytes(), max(p.level, deltaLevel(base.Len())), stop); err != nil {
			p.model.observe(m, len(nar), len(nar), time.Since(start))
			return nil, err
		}
	}
	p.model.observe(m, len(nar), len(data), time.Since(start))
	if float64(len(data)) > p.model.plainSize(float64(len(nar))) {
		return nil, fmt.Errorf("a delta of %d bytes does not pay", len(data))
	}
	if p.cache != nil {
		p.puts.Add(1)
		go func() {
			defer p.puts.Done()
			if err := p.cache.Put(deltaKey(m, p.level, baseHash, j.info.NarHash), data); err != nil && p.log != nil {
				p.log.Debug("keep a delta", "path", j.info.Path, "err", err)
			}
		}()
	}
	return data, nil
}

// cached returns a delta an earlier transfer made for j, of a kind the
// router takes.
func (p *pipeline) cached(j *job, allow [nMethods]bool) ([]byte, method, bool) {
	if p.cache == nil {
		return nil, 0, false
	}
	baseHash, err := nixhash.ParseSHA256(j.base.NarHash)
	if err != nil {
		return nil, 0, false
	}
	for _, m := range []method{copyDelta, dictDelta} {
		if !allow[m] {
			continue
		}
		if data, ok := p.cache.Get(deltaKey(m, p.level, baseHash, j.info.NarHash)); ok {
			return data, m, true
		}
	}
	return nil, 0, false
}

// deltaKey names a delta in the cache: its kind (with what changes its
// bytes) and the NAR hashes of its base and target.
func deltaKey(m method, level zstd.EncoderLevel, base, target nixhash.SHA256) string {
	kind := fmt.Sprintf("copydelta%d+zstd", copydelta.Format)
	if m == dictDelta {
		kind = fmt.Sprintf("zstd-dict-%d", level)
	}
	return kind + " " + base.String() + " " + target.String()
}

func (p *pipeline) debug(j *job, m method, why string, out int) {
	if p.log == nil {
		return
	}
	p.log.Debug("prepared", "path", j.info.Path, "how", m.String(), "narBytes", j.info.NarSize, "bytes", out, "why", why)
}
