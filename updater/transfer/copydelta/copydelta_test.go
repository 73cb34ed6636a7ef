package copydelta

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
)

func random(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// code is random "machine code" with a pointer every 16 bytes: a new
// version moves some of it, which changes every pointer after.
func code(seed uint64, n int) []byte {
	b := random(seed, n)
	for i := 0; i+16 <= n; i += 16 {
		binary.LittleEndian.PutUint32(b[i+12:], uint32(i))
	}
	return b
}

// moveCode inserts 100 bytes at pos, which changes every later pointer.
func moveCode(base []byte, pos int) []byte {
	moved := append(append(bytes.Clone(base[:pos]), random(2, 100)...), base[pos:]...)
	for i := pos + 100; i+16 <= len(moved); i += 16 {
		binary.LittleEndian.PutUint32(moved[i+12:], uint32(i))
	}
	return moved
}

func roundTrip(t *testing.T, base, target []byte) (Stats, int) {
	t.Helper()
	var d bytes.Buffer
	st, err := Encode(&d, base, target, nil)
	if err != nil {
		t.Fatalf("Encode: %v", err)
	}
	got, err := io.ReadAll(NewReader(bytes.NewReader(d.Bytes()), base, uint64(len(target))))
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	if !bytes.Equal(got, target) {
		t.Fatalf("applied delta gives %d bytes, not the target's %d (or different ones)", len(got), len(target))
	}
	if st.Copied+st.Added+st.Literal != len(target) {
		t.Fatalf("stats %+v do not add up to %d", st, len(target))
	}
	return st, d.Len()
}

func TestRoundTrip(t *testing.T) {
	base := code(1, 3<<20)
	edited := bytes.Clone(base)
	copy(edited[1000:], "version 1.2")
	copy(edited[2<<20:], "another change")
	moved := moveCode(base, 1<<20)
	for _, c := range []struct {
		name     string
		base, t  []byte
		maxDelta int
	}{
		{"identical", base, base, 64},
		{"a few bytes changed", base, edited, 256},
		{"code moved, pointers changed", base, moved, len(moved) / 3},
		{"empty target", base, nil, 1},
		{"short target", base, base[5:12], 32},
		{"empty base", nil, base[:100], 200},
		{"base shorter than a hash", base[:10], base[:300], 400},
		{"blocks reordered", base[:1<<20], append(bytes.Clone(base[512<<10:1<<20]), base[:512<<10]...), 128},
	} {
		t.Run(c.name, func(t *testing.T) {
			st, n := roundTrip(t, c.base, c.t)
			t.Logf("%d bytes: %+v, delta %d bytes", len(c.t), st, n)
			if n > c.maxDelta {
				t.Errorf("delta of %d bytes (%+v), want at most %d", n, st, c.maxDelta)
			}
		})
	}
}

func TestNotSimilar(t *testing.T) {
	var d bytes.Buffer
	if _, err := Encode(&d, random(1, 4<<20), random(2, 4<<20), nil); !errors.Is(err, ErrNotSimilar) {
		t.Fatalf("unrelated files: %v, want ErrNotSimilar", err)
	}
	stops := 0
	_, err := Encode(&d, code(1, 4<<20), moveCode(code(1, 4<<20), 1000), func() bool { stops++; return stops == 2 })
	if !errors.Is(err, ErrStopped) {
		t.Fatalf("stopped: %v, want ErrStopped", err)
	}
}

func TestReaderRefuses(t *testing.T) {
	base := []byte("0123456789")
	op := func(kind byte, n uint64, rest ...int64) []byte {
		b := binary.AppendUvarint([]byte{kind}, n)
		for _, r := range rest {
			b = binary.AppendVarint(b, r)
		}
		return b
	}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	for _, c := range []struct {
		name  string
		delta []byte
		limit uint64
		want  string
	}{
		{"empty", nil, 10, "truncated"},
		{"other format", []byte{2}, 10, "format 2"},
		{"unknown operation", cat([]byte{Format}, op('z', 1)), 10, "unknown operation"},
		{"zero length", cat([]byte{Format}, op(opLiteral, 0)), 10, "operation of 0 bytes"},
		{"over the limit", cat([]byte{Format}, op(opCopy, 5, 0), op(opCopy, 5, 0)), 8, "operation of 5 bytes with 3 left"},
		{"past the base's end", cat([]byte{Format}, op(opCopy, 5, 6)), 100, "outside the base"},
		{"before the base", cat([]byte{Format}, op(opCopy, 5, 0), op(opCopy, 1, -6)), 100, "outside the base"},
		{"huge offset", cat([]byte{Format}, op(opCopy, 1, 1<<62)), 100, "outside the base"},
		{"truncated literal", cat([]byte{Format}, op(opLiteral, 5), []byte("ab")), 100, "truncated"},
		{"truncated add", cat([]byte{Format}, op(opAdd, 5, 0), []byte("ab")), 100, "truncated"},
		{"truncated header", cat([]byte{Format}, []byte{opCopy, 0x80}), 100, "truncated"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := io.ReadAll(NewReader(bytes.NewReader(c.delta), base, c.limit))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error with %q", err, c.want)
			}
		})
	}
	// Copies, adds and literals as documented.
	d := cat([]byte{Format}, op(opCopy, 3, 2), op(opAdd, 2, 0), []byte{1, 0}, op(opLiteral, 2), []byte("xy"), op(opCopy, 2, -7))
	got, err := io.ReadAll(NewReader(bytes.NewReader(d), base, 9))
	if err != nil || string(got) != "23466xy01" {
		t.Fatalf("got %q, %v; want 23466xy01", got, err)
	}
}

func FuzzReader(f *testing.F) {
	base := code(3, 4096)
	var d bytes.Buffer
	Encode(&d, base, append(bytes.Clone(base[100:2000]), "new"...), nil)
	f.Add(d.Bytes(), uint64(2000))
	f.Add([]byte{Format, opCopy, 10, 0, opLiteral, 1, 'x'}, uint64(11))
	f.Fuzz(func(t *testing.T, delta []byte, limit uint64) {
		limit %= 1 << 20
		n, _ := io.Copy(io.Discard, NewReader(bytes.NewReader(delta), base, limit))
		if uint64(n) > limit {
			t.Fatalf("produced %d bytes, over the limit of %d", n, limit)
		}
	})
}

func FuzzRoundTrip(f *testing.F) {
	f.Add([]byte("the quick brown fox jumps over the lazy dog, again and again"), []byte("the quick brown cat jumps over the lazy dog, again and again!"))
	f.Fuzz(func(t *testing.T, base, target []byte) {
		roundTrip(t, base, target)
	})
}

func BenchmarkEncode(b *testing.B) {
	base := code(1, 16<<20)
	target := bytes.Clone(base)
	copy(target[1000:], "version 1.2")
	b.SetBytes(int64(len(target)))
	for b.Loop() {
		Encode(io.Discard, base, target, nil)
	}
}
