// Package copydelta describes a new version of a file as copies from an old
// version of it (the base) and new bytes, fast enough to make on the laptop
// while a link waits, and applies such a description on the router with
// only the base in memory.
//
// A delta is a format byte (1) and operations, each a kind byte and
// varints:
//
//	copy    'c' len offset         len bytes of base at cursor+offset
//	add     'a' len offset bytes   len bytes of base at cursor+offset, each plus a byte that follows (mod 256)
//	literal 'l' len bytes          len new bytes
//
// where len is an unsigned varint (at least 1) and offset a signed varint;
// cursor starts at 0 and is, after a copy or an add, the base position just
// past it. An add carries changed pointers in moved code as small, repetitive
// differences, which compress well (bsdiff's observation).
//
// Invariants of Reader: it never reads outside the base, never produces
// more than its limit, and never allocates by a length the delta names; a
// delta that breaks a rule is an error, not a short or wrong file (the
// caller checks the result's hash as well).
package copydelta

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Format is the format byte this package writes and reads.
const Format = 1

const (
	opCopy    = 'c'
	opAdd     = 'a'
	opLiteral = 'l'
)

// Reader produces the new file from a delta and its base.
type Reader struct {
	ops    *bufio.Reader
	base   []byte
	limit  uint64 // bytes it may still produce
	op     byte   // the operation in progress; 0 between operations
	left   uint64 // its bytes not yet produced
	pos    int64  // the base position it reads next (copy, add)
	cursor int64
	began  bool
	err    error
}

// NewReader reads the delta ops against base, producing at most limit
// bytes.
func NewReader(ops io.Reader, base []byte, limit uint64) *Reader {
	return &Reader{ops: bufio.NewReaderSize(ops, 32<<10), base: base, limit: limit}
}

func (r *Reader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	n := 0
	for n < len(p) {
		if r.left == 0 {
			if err := r.next(); err != nil {
				r.err = err
				break
			}
		}
		k := int(min(r.left, uint64(len(p)-n)))
		switch r.op {
		case opCopy:
			copy(p[n:n+k], r.base[r.pos:])
			r.pos += int64(k)
		case opAdd:
			if _, err := io.ReadFull(r.ops, p[n:n+k]); err != nil {
				r.err = truncated(err)
				return n, r.err
			}
			for i, b := range r.base[r.pos : r.pos+int64(k)] {
				p[n+i] += b
			}
			r.pos += int64(k)
		case opLiteral:
			if _, err := io.ReadFull(r.ops, p[n:n+k]); err != nil {
				r.err = truncated(err)
				return n, r.err
			}
		}
		n += k
		r.left -= uint64(k)
		if r.left == 0 && r.op != opLiteral {
			r.cursor = r.pos
		}
	}
	if n > 0 && errors.Is(r.err, io.EOF) {
		return n, nil
	}
	return n, r.err
}

func truncated(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errors.New("delta: truncated")
	}
	return err
}

// next reads the next operation's header; io.EOF at the end of the delta.
func (r *Reader) next() error {
	if !r.began {
		f, err := r.ops.ReadByte()
		if err != nil {
			return truncated(err)
		}
		if f != Format {
			return fmt.Errorf("delta: format %d, this roostd reads %d", f, Format)
		}
		r.began = true
	}
	op, err := r.ops.ReadByte()
	if err == io.EOF {
		return io.EOF
	}
	if err != nil {
		return err
	}
	n, err := binary.ReadUvarint(r.ops)
	if err != nil {
		return truncated(err)
	}
	if n == 0 || n > r.limit {
		return fmt.Errorf("delta: an operation of %d bytes with %d left to produce", n, r.limit)
	}
	switch op {
	case opCopy, opAdd:
		off, err := binary.ReadVarint(r.ops)
		if err != nil {
			return truncated(err)
		}
		if off < -r.cursor || off > int64(len(r.base))-r.cursor || n > uint64(int64(len(r.base))-r.cursor-off) {
			return fmt.Errorf("delta: %d bytes at %d%+d are outside the base of %d bytes", n, r.cursor, off, len(r.base))
		}
		r.pos = r.cursor + off
	case opLiteral:
	default:
		return fmt.Errorf("delta: unknown operation %#x", op)
	}
	r.op, r.left = op, n
	r.limit -= n
	return nil
}
