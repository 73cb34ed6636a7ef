package sshd

import (
	"encoding/binary"
	"testing"
)

// FuzzParseString: an exec or subsystem request's payload comes from the
// client: whatever it holds, parseString does not panic, and what it
// accepts is the bytes the length announces, right after it.
func FuzzParseString(f *testing.F) {
	f.Add(append(binary.BigEndian.AppendUint32(nil, 13), "roostd status"...))
	f.Add(binary.BigEndian.AppendUint32(nil, 0xffffffff))
	f.Add([]byte{0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		s, ok := parseString(b)
		if !ok {
			if s != "" {
				t.Fatalf("parseString(%x) refused but returned %q", b, s)
			}
			return
		}
		n := binary.BigEndian.Uint32(b)
		if uint64(len(s)) != uint64(n) || s != string(b[4:4+len(s)]) {
			t.Fatalf("parseString(%x) = %q, want the %d bytes after the length", b, s, n)
		}
	})
}
