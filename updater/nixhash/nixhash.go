// Package nixhash parses and prints SHA-256 hashes in the forms Nix uses:
// nix32 (Nix's own base32), base16 and SRI base64.
package nixhash

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// Nix32Alphabet is Nix's base32 alphabet: the digits and lower-case letters
// without e, o, u and t.
const Nix32Alphabet = "0123456789abcdfghijklmnpqrsvwxyz"

// SHA256 is a SHA-256 digest.
type SHA256 [sha256.Size]byte

// Nix32Len returns the length of the nix32 encoding of n bytes.
func Nix32Len(n int) int { return (n*8-1)/5 + 1 }

// EncodeNix32 encodes b the way Nix does: least significant 5-bit group last.
func EncodeNix32(b []byte) string {
	l := Nix32Len(len(b))
	out := make([]byte, l)
	for n := l - 1; n >= 0; n-- {
		bit := n * 5
		i, j := bit/8, uint(bit%8)
		c := b[i] >> j
		if i+1 < len(b) {
			c |= b[i+1] << (8 - j)
		}
		out[l-1-n] = Nix32Alphabet[c&0x1f]
	}
	return string(out)
}

// DecodeNix32 decodes a nix32 string of exactly Nix32Len(size) characters.
func DecodeNix32(s string, size int) ([]byte, error) {
	if len(s) != Nix32Len(size) {
		return nil, fmt.Errorf("nix32 string %q has %d characters, want %d", s, len(s), Nix32Len(size))
	}
	out := make([]byte, size)
	for n := 0; n < len(s); n++ {
		c := s[len(s)-n-1]
		digit := strings.IndexByte(Nix32Alphabet, c)
		if digit < 0 {
			return nil, fmt.Errorf("nix32 string %q has invalid character %q", s, c)
		}
		bit := n * 5
		i, j := bit/8, uint(bit%8)
		out[i] |= byte(digit) << j
		carry := byte(digit >> (8 - j))
		if i+1 < size {
			out[i+1] |= carry
		} else if carry != 0 {
			return nil, fmt.Errorf("nix32 string %q does not fit in %d bytes", s, size)
		}
	}
	return out, nil
}

// String returns the hash as Nix prints NAR hashes: "sha256:<nix32>".
func (h SHA256) String() string { return "sha256:" + EncodeNix32(h[:]) }

// Base16 returns the hash as lower-case hex, as nix-store --dump-db prints it.
func (h SHA256) Base16() string { return hex.EncodeToString(h[:]) }

// SRI returns the hash as "sha256-<base64>".
func (h SHA256) SRI() string { return "sha256-" + base64.StdEncoding.EncodeToString(h[:]) }

// ParseSHA256 accepts "sha256:<nix32|base16|base64>", "sha256-<base64>" (SRI)
// or a bare nix32 or base16 string, as Nix's Hash::parseAny does for SHA-256.
func ParseSHA256(s string) (SHA256, error) {
	var h SHA256
	body := s
	switch {
	case strings.HasPrefix(s, "sha256:"):
		body = s[len("sha256:"):]
	case strings.HasPrefix(s, "sha256-"):
		b, err := base64.StdEncoding.DecodeString(s[len("sha256-"):])
		if err != nil || len(b) != len(h) {
			return h, fmt.Errorf("hash %q: invalid SRI SHA-256", s)
		}
		copy(h[:], b)
		return h, nil
	case strings.Contains(s, ":") || strings.Contains(s, "-"):
		return h, fmt.Errorf("hash %q: only sha256 is supported", s)
	}
	var b []byte
	var err error
	switch len(body) {
	case hex.EncodedLen(len(h)):
		b, err = hex.DecodeString(body)
	case Nix32Len(len(h)):
		b, err = DecodeNix32(body, len(h))
	case base64.StdEncoding.EncodedLen(len(h)):
		b, err = base64.StdEncoding.DecodeString(body)
	default:
		err = errors.New("wrong length for SHA-256")
	}
	if err != nil {
		return h, fmt.Errorf("hash %q: %w", s, err)
	}
	copy(h[:], b)
	return h, nil
}

// MarshalText prints the hash as String does.
func (h SHA256) MarshalText() ([]byte, error) { return []byte(h.String()), nil }

// UnmarshalText accepts what ParseSHA256 does.
func (h *SHA256) UnmarshalText(b []byte) error {
	v, err := ParseSHA256(string(b))
	*h = v
	return err
}
