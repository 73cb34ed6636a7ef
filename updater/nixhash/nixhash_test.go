package nixhash

import (
	"bytes"
	"crypto/sha256"
	"testing"
)

func TestKnownValues(t *testing.T) {
	// Values printed by `nix-hash --type sha256 --to-base32` (Nix 2.8) for the
	// SHA-256 of the empty string and of "hello\n".
	for _, tc := range []struct {
		in   string
		want string
	}{
		{"", "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73"},
		{"hello\n", "00xyyr3fi8l6hb839bv3f7yb86yjv7xi1cgh1xnhipym4asvb4aq"},
	} {
		h := SHA256(sha256.Sum256([]byte(tc.in)))
		if got := EncodeNix32(h[:]); got != tc.want {
			t.Errorf("EncodeNix32(sha256(%q)) = %s, want %s", tc.in, got, tc.want)
		}
		for _, form := range []string{h.String(), h.Base16(), h.SRI(), tc.want, "sha256:" + h.Base16()} {
			back, err := ParseSHA256(form)
			if err != nil || back != h {
				t.Errorf("ParseSHA256(%q) = %x, %v; want %x", form, back, err, h)
			}
		}
	}
}

func TestRoundTrip(t *testing.T) {
	for n := 1; n < 40; n++ {
		b := bytes.Repeat([]byte{0xa5, 0x13, 0xff, 0x00}, n)[:n]
		s := EncodeNix32(b)
		back, err := DecodeNix32(s, n)
		if err != nil || !bytes.Equal(back, b) {
			t.Fatalf("round trip of %x: %s -> %x, %v", b, s, back, err)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for _, in := range []string{"", "sha256:", "md5:abc", "sha256:eeee", "sha256-!!", "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz"} {
		if _, err := ParseSHA256(in); err == nil {
			t.Errorf("ParseSHA256(%q) succeeded, want an error", in)
		}
	}
}

func FuzzDecodeNix32(f *testing.F) {
	f.Add("0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73")
	f.Fuzz(func(t *testing.T, s string) {
		b, err := DecodeNix32(s, 32)
		if err != nil {
			return
		}
		if got := EncodeNix32(b); got != s {
			t.Fatalf("decode/encode of %q gave %q", s, got)
		}
	})
}
