package nixexport

import (
	"bytes"
	"strings"
	"testing"

	"github.com/roostrouter/roost/updater/storepath"
)

const (
	a = "/nix/store/vcvqfhdlvpdwwj3ikxriym5ij6hqi9n7-a-1.0"
	d = "/nix/store/hijz96vb8wgyx0vx4431j70schpk7f07-a-1.0.drv"
)

func TestTrailerRoundTrip(t *testing.T) {
	pa, _ := storepath.Parse(a)
	pd, _ := storepath.Parse(d)
	for _, tr := range []Trailer{
		{Path: pa},
		{Path: pa, References: []storepath.Path{pa}, Deriver: pd},
	} {
		var b bytes.Buffer
		if err := WriteTrailer(&b, tr); err != nil {
			t.Fatal(err)
		}
		back, err := ReadTrailer(&b)
		if err != nil {
			t.Fatal(err)
		}
		if back.Path != tr.Path || back.Deriver != tr.Deriver || len(back.References) != len(tr.References) {
			t.Fatalf("round trip: %+v, want %+v", back, tr)
		}
		if b.Len() != 0 {
			t.Fatalf("%d bytes left after the trailer", b.Len())
		}
	}
}

func TestNext(t *testing.T) {
	var b bytes.Buffer
	WriteNext(&b, true)
	WriteNext(&b, false)
	b.WriteString("\x07\x00\x00\x00\x00\x00\x00\x00")
	for _, want := range []bool{true, false} {
		if more, err := Next(&b); err != nil || more != want {
			t.Fatalf("Next = %v, %v; want %v", more, err, want)
		}
	}
	if _, err := Next(&b); err == nil || !strings.Contains(err.Error(), "not a nix-store --export stream") {
		t.Fatalf("Next on a bad marker: %v", err)
	}
	if _, err := Next(&b); err == nil || !strings.Contains(err.Error(), "truncated") {
		t.Fatalf("Next at the end: %v", err)
	}
}

func FuzzReadTrailer(f *testing.F) {
	pa, _ := storepath.Parse(a)
	var b bytes.Buffer
	WriteTrailer(&b, Trailer{Path: pa, References: []storepath.Path{pa}})
	f.Add(b.Bytes())
	f.Fuzz(func(t *testing.T, in []byte) {
		tr, err := ReadTrailer(bytes.NewReader(in))
		if err != nil {
			return
		}
		var out bytes.Buffer
		WriteTrailer(&out, tr)
		if _, err := ReadTrailer(&out); err != nil {
			t.Fatalf("a trailer we accepted does not survive a round trip: %v", err)
		}
	})
}
