// Package transfer is roost's transfer protocol, spoken by `roostd receive`
// on stdio: the laptop sends a closure's whole path list in one message, the
// router answers with the paths it lacks in one reply, in dependency order,
// and the missing NARs stream, pipelined, each acknowledged once registered:
// zstd-compressed, as a delta against a version the router holds, or as
// they are, whichever the laptop expects to arrive first.
//
// From version 4 the closure rides in the laptop's hello (or, while the
// laptop's Nix is still answering, its roots: a router that holds them
// holds their closure) and the router says what it runs: a no-op is one
// round trip (hello out; hello, missing and summary back).
//
// Invariants: the router registers only what it rebuilt to the declared
// hash and size, whatever the compression; a delta is decoded only against
// a base the router offered, held in memory within its bound; the laptop
// sends only what the router's version takes (versions 1 to 4 interoperate
// both ways).
//
// Every message is a frame: a 4-byte big-endian length, a type byte and a
// payload, at most 16 MiB. Control payloads are JSON; NAR data travels in
// data frames between a start and an end frame.
package transfer

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/klauspost/compress/zstd"
)

const (
	// Protocol names the protocol in the hello messages.
	Protocol = "roost-transfer"
	// Version is the protocol version this package speaks: 2 added deltas,
	// 3 the compressed closure, 4 the closure in the hello, what the router
	// runs, a summary without a finish when nothing is missing, and NARs as
	// they are ("none") or as copy deltas ("delta").
	Version = 4

	maxFrame  = 16 << 20
	dataChunk = 128 << 10
	// MaxPaths bounds a closure's path list.
	MaxPaths = 100_000
	// MaxNARSize bounds one declared NAR size (1 TiB).
	MaxNARSize = 1 << 40
)

// Frame types.
const (
	frameHello      = 'H' // laptop → router: hello
	frameHelloReply = 'h' // router → laptop: hello
	frameClosure    = 'C' // laptop → router: every path of the closure with its info
	frameClosureZ   = 'c' // laptop → router: the same, zstd-compressed (version 3)
	frameMissing    = 'M' // router → laptop: the paths it lacks, in the order to send them
	frameNAR        = 'N' // laptop → router: a NAR follows
	frameData       = 'D' // laptop → router: compressed NAR bytes
	frameEnd        = 'E' // laptop → router: the NAR is complete
	frameAck        = 'A' // router → laptop: these paths are registered
	frameFinish     = 'F' // laptop → router: nothing more to send
	frameSummary    = 'S' // router → laptop: what the transfer did; the last frame
	frameError      = 'X' // either way: the sender gives up, with a message
)

func frameName(t byte) string {
	switch t {
	case frameHello, frameHelloReply:
		return "hello"
	case frameClosure, frameClosureZ:
		return "closure"
	case frameMissing:
		return "missing"
	case frameNAR:
		return "nar"
	case frameData:
		return "data"
	case frameEnd:
		return "end"
	case frameAck:
		return "ack"
	case frameFinish:
		return "finish"
	case frameSummary:
		return "summary"
	case frameError:
		return "error"
	}
	return fmt.Sprintf("unknown (%#x)", t)
}

// PeerError is an error frame from the other end.
type PeerError struct{ Message string }

func (e *PeerError) Error() string { return e.Message }

type errorMsg struct {
	Message string `json:"message"`
}

// conn reads and writes frames. Writes are serialised: the router's acks and
// the laptop's NARs may come from different goroutines.
type conn struct {
	r    *bufio.Reader
	wmu  sync.Mutex
	w    *bufio.Writer
	rbuf []byte
	hdr  [5]byte
}

func newConn(r io.Reader, w io.Writer) *conn {
	return &conn{r: bufio.NewReaderSize(r, 256<<10), w: bufio.NewWriterSize(w, 256<<10)}
}

func (c *conn) write(t byte, payload []byte, flush bool) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	var hdr [5]byte
	binary.BigEndian.PutUint32(hdr[:4], uint32(len(payload)+1))
	hdr[4] = t
	c.w.Write(hdr[:])
	c.w.Write(payload)
	if flush {
		return c.w.Flush()
	}
	return nil
}

func (c *conn) writeJSON(t byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if len(b)+1 > maxFrame {
		return fmt.Errorf("%s message of %d bytes is over the %d-byte frame limit", frameName(t), len(b), maxFrame)
	}
	return c.write(t, b, true)
}

// writeJSONZ writes v as zstd-compressed JSON in a frame of type t.
func (c *conn) writeJSONZ(t byte, v any) error {
	z, err := compressJSON(v)
	if err != nil {
		return err
	}
	if len(z)+1 > maxFrame {
		return fmt.Errorf("%s message of %d compressed bytes is over the %d-byte frame limit", frameName(t), len(z), maxFrame)
	}
	return c.write(t, z, true)
}

func compressJSON(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return compress(b, nil, zstd.SpeedDefault)
}

// maxClosureJSON bounds a compressed closure message once decompressed:
// MaxPaths paths with their references fit well within it.
const maxClosureJSON = 256 << 20

// readClosure reads the closure frame, plain or compressed.
func (c *conn) readClosure(v *closureMsg) error {
	t, payload, err := c.read()
	if err != nil {
		return err
	}
	if t != frameClosureZ {
		return decodeFrame(t, payload, frameClosure, v)
	}
	return decodeClosure(payload, v)
}

// decodeClosure decodes a zstd-compressed closure message, bounded.
func decodeClosure(payload []byte, v *closureMsg) error {
	dec, err := zstd.NewReader(bytes.NewReader(payload), zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true),
		zstd.WithDecoderMaxMemory(maxClosureJSON), zstd.WithDecoderMaxWindow(maxWindow))
	if err != nil {
		return err
	}
	defer dec.Close()
	b, err := io.ReadAll(io.LimitReader(dec, maxClosureJSON+1))
	if err != nil {
		return fmt.Errorf("decompress the closure: %w", err)
	}
	if len(b) > maxClosureJSON {
		return fmt.Errorf("the closure message is over %d bytes decompressed", maxClosureJSON)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("closure message: %w", err)
	}
	return nil
}

// sendError tells the peer why this end gives up; best effort.
func (c *conn) sendError(err error) {
	c.writeJSON(frameError, errorMsg{Message: err.Error()})
}

// read returns the next frame. The payload is valid until the next read.
func (c *conn) read() (byte, []byte, error) {
	if _, err := io.ReadFull(c.r, c.hdr[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return 0, nil, errors.New("connection closed by the peer")
		}
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(c.hdr[:4])
	if n == 0 || n > maxFrame {
		return 0, nil, fmt.Errorf("peer sent a frame of %d bytes (the limit is %d): not a roost transfer peer?", n, maxFrame)
	}
	t := c.hdr[4]
	size := int(n - 1)
	if cap(c.rbuf) < size {
		c.rbuf = make([]byte, size)
	}
	c.rbuf = c.rbuf[:size]
	if _, err := io.ReadFull(c.r, c.rbuf); err != nil {
		return 0, nil, fmt.Errorf("read %s frame: connection closed by the peer", frameName(t))
	}
	return t, c.rbuf, nil
}

// readJSON reads a frame that must be of type want and decodes it.
func (c *conn) readJSON(want byte, v any) error {
	t, payload, err := c.read()
	if err != nil {
		return err
	}
	return decodeFrame(t, payload, want, v)
}

func decodeFrame(t byte, payload []byte, want byte, v any) error {
	if t == frameError {
		var m errorMsg
		json.Unmarshal(payload, &m)
		return &PeerError{Message: m.Message}
	}
	if t != want {
		return fmt.Errorf("expected a %s frame, got %s", frameName(want), frameName(t))
	}
	if err := json.Unmarshal(payload, v); err != nil {
		return fmt.Errorf("bad %s frame: %w", frameName(t), err)
	}
	return nil
}

// dataReader reads the data frames of one NAR, up to its end frame.
type dataReader struct {
	c    *conn
	buf  []byte
	done bool
}

func (d *dataReader) Read(b []byte) (int, error) {
	for len(d.buf) == 0 {
		if d.done {
			return 0, io.EOF
		}
		t, payload, err := d.c.read()
		if err != nil {
			return 0, err
		}
		switch t {
		case frameData:
			d.buf = payload
		case frameEnd:
			d.done = true
		case frameError:
			var m errorMsg
			json.Unmarshal(payload, &m)
			return 0, &PeerError{Message: m.Message}
		default:
			return 0, fmt.Errorf("expected NAR data, got a %s frame", frameName(t))
		}
	}
	n := copy(b, d.buf)
	d.buf = d.buf[n:]
	return n, nil
}

// dataWriter cuts what is written into data frames.
type dataWriter struct {
	c *conn
	n int64
}

func (d *dataWriter) Write(b []byte) (int, error) {
	written := 0
	for len(b) > 0 {
		chunk := b[:min(len(b), dataChunk)]
		if err := d.c.write(frameData, chunk, false); err != nil {
			return written, err
		}
		d.n += int64(len(chunk)) + 5
		written += len(chunk)
		b = b[len(chunk):]
	}
	return written, nil
}
