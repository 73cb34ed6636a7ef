package copydelta

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math/bits"
)

// ErrNotSimilar is returned when the target shares too little with the
// base for a delta to pay: more than half of what was read was new bytes.
var ErrNotSimilar = errors.New("copydelta: the file shares too little with its base")

// ErrStopped is returned when stop asked to give up.
var ErrStopped = errors.New("copydelta: stopped")

// Stats counts how the target's bytes were described.
type Stats struct {
	Copied, Added, Literal int
}

const (
	hashLen = 8  // bytes hashed to find a match at a new alignment
	stride  = 4  // the base is indexed at every stride-th position
	minNew  = 20 // bytes a match at a new alignment needs, unless
	// the bytes after it mostly match too (moved code whose pointers
	// changed)
	similarSpan = 64
	// alignedSearch is how far past the end of a match only the same
	// alignment is tried: changed pointers in code that did not move are
	// short, and the index is made only when it is needed.
	alignedSearch = 64
	// checkEvery is how often (target bytes) Encode asks stop and checks
	// that the delta pays.
	checkEvery = 1 << 20
	// maxAddGap: a longer gap between two copies at the same alignment is
	// an add only if a quarter of its bytes are unchanged, else literal.
	maxAddGap = 256
)

// Encode writes to w a delta that makes target from base. Every MiB it
// calls stop, if set, and gives up with ErrStopped when it returns true,
// or with ErrNotSimilar when the delta does not pay.
func Encode(w io.Writer, base, target []byte, stop func() bool) (Stats, error) {
	if uint64(len(base)) >= 1<<31 {
		return Stats{}, errors.New("copydelta: a base of 2 GiB or more")
	}
	e := &encoder{w: bufio.NewWriterSize(w, 64<<10), base: base, t: target, aligned: true}
	e.w.WriteByte(Format)
	if err := e.scan(stop); err != nil {
		return e.stats, err
	}
	return e.stats, e.w.Flush()
}

type encoder struct {
	w       *bufio.Writer
	base, t []byte
	table   []uint32 // hash of hashLen bytes → base position+1; made on first use
	shift   uint
	cursor  int  // the base position the decoder's offsets are relative to
	disp    int  // base position − target position of the current alignment
	aligned bool // disp holds: the last copy (or the start) set it
	stats   Stats
	hdr     [1 + 2*binary.MaxVarintLen64]byte
	diff    []byte
}

// scan walks the target: a match at the current alignment first (bytes
// that did not move), else, after a while, a match anywhere in the base.
func (e *encoder) scan(stop func() bool) error {
	t := e.t
	pos, lit, misses := 0, 0, 0
	check := checkEvery
	for pos+8 <= len(t) {
		if pos >= check {
			check += checkEvery
			if stop != nil && stop() {
				return ErrStopped
			}
			if e.stats.Literal+(pos-lit) > pos/2 {
				return ErrNotSimilar
			}
		}
		if bp := pos + e.disp; e.aligned && bp >= 0 && bp+8 <= len(e.base) && load64(e.base, bp) == load64(t, pos) {
			n := 8 + matchLen(e.base[bp+8:], t[pos+8:])
			e.gap(lit, pos)
			e.copy(bp, n)
			pos += n
			lit, misses = pos, 0
			continue
		}
		if e.aligned && pos-lit < alignedSearch {
			pos++
			continue
		}
		if cand, ok := e.lookup(pos); ok {
			m := matchLen(e.base[cand:], t[pos:])
			back := 0
			for back < pos-lit && back < cand && e.base[cand-back-1] == t[pos-back-1] {
				back++
			}
			if m+back >= minNew || e.similar(cand+m, pos+m) {
				e.aligned = false // the gap before is not at the new alignment
				e.gap(lit, pos-back)
				e.disp, e.aligned = cand-pos, true
				e.copy(cand-back, m+back)
				pos += m
				lit, misses = pos, 0
				continue
			}
		}
		// Through new bytes, look less often the longer nothing matches.
		misses++
		pos += 1 + misses>>6
	}
	e.gap(lit, len(t))
	return nil
}

// lookup finds a base position whose next hashLen bytes are target's at pos.
func (e *encoder) lookup(pos int) (int, bool) {
	if pos+hashLen > len(e.t) || len(e.base) < hashLen {
		return 0, false
	}
	if e.table == nil {
		e.index()
	}
	c := int(e.table[e.hash(e.t[pos:])]) - 1
	if c < 0 || load64(e.base, c) != load64(e.t, pos) {
		return 0, false
	}
	return c, true
}

// similar says whether at least half of the similarSpan bytes from base
// position bp and target position tp are the same.
func (e *encoder) similar(bp, tp int) bool {
	n := min(similarSpan, len(e.base)-bp, len(e.t)-tp)
	return n == similarSpan && sameBytes(e.base[bp:bp+n], e.t[tp:tp+n]) >= n/2
}

func (e *encoder) index() {
	n := len(e.base) / stride
	b := min(max(bits.Len(uint(n))+1, 10), 22)
	e.table, e.shift = make([]uint32, 1<<b), uint(64-b)
	for p := 0; p+hashLen <= len(e.base); p += stride {
		e.table[e.hash(e.base[p:])] = uint32(p + 1)
	}
}

func (e *encoder) hash(b []byte) uint32 {
	return uint32(load64(b, 0) * 0x9E3779B185EBCA87 >> e.shift)
}

// gap writes the target's bytes [from, to), between two copies: as an add
// against the base at the current alignment if they are there and look
// like changed pointers, else as new bytes.
func (e *encoder) gap(from, to int) {
	n := to - from
	if n <= 0 {
		return
	}
	if bp := from + e.disp; e.aligned && bp >= 0 && bp+n <= len(e.base) && (n <= maxAddGap || sameBytes(e.base[bp:bp+n], e.t[from:to]) >= n/4) {
		e.header(opAdd, n, bp-e.cursor)
		for i := 0; i < n; i += 32 << 10 {
			k := min(n-i, 32<<10)
			e.diff = e.diff[:0]
			for j := range k {
				e.diff = append(e.diff, e.t[from+i+j]-e.base[bp+i+j])
			}
			e.w.Write(e.diff)
		}
		e.cursor = bp + n
		e.stats.Added += n
		return
	}
	e.w.WriteByte(opLiteral)
	e.w.Write(binary.AppendUvarint(e.hdr[:0], uint64(n)))
	e.w.Write(e.t[from:to])
	e.stats.Literal += n
}

func (e *encoder) copy(bp, n int) {
	e.header(opCopy, n, bp-e.cursor)
	e.cursor = bp + n
	e.stats.Copied += n
}

func (e *encoder) header(op byte, n, off int) {
	h := append(e.hdr[:0], op)
	h = binary.AppendUvarint(h, uint64(n))
	h = binary.AppendVarint(h, int64(off))
	e.w.Write(h)
}

func sameBytes(a, b []byte) int {
	n := 0
	for i := range a {
		if a[i] == b[i] {
			n++
		}
	}
	return n
}

func load64(b []byte, i int) uint64 { return binary.LittleEndian.Uint64(b[i:]) }

// matchLen is how many leading bytes a and b share: whole blocks with
// bytes.Equal (vector instructions) while they match, then 8 bytes at a
// time.
func matchLen(a, b []byte) int {
	const block = 4 << 10
	n := 0
	for n+block <= len(a) && n+block <= len(b) && bytes.Equal(a[n:n+block], b[n:n+block]) {
		n += block
	}
	for n+8 <= len(a) && n+8 <= len(b) {
		if x := load64(a, n) ^ load64(b, n); x != 0 {
			return n + bits.TrailingZeros64(x)/8
		}
		n += 8
	}
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}
