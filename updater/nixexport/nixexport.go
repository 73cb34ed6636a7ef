// Package nixexport reads and writes the framing of `nix-store --export`
// streams: a marker before each NAR and, after it, the path's name,
// references and deriver.
package nixexport

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/roostrouter/roost/updater/storepath"
)

const (
	exportMagic = 0x4558494e // "NIXE"
	// maxPathLen bounds the strings of a trailer: a store path is far shorter.
	maxPathLen = 4096
	// MaxReferences bounds how many references a path may declare.
	MaxReferences = 1 << 16
	maxLegacySig  = 4096
)

// Trailer is what follows each NAR in an export stream.
type Trailer struct {
	Path       storepath.Path
	References []storepath.Path
	Deriver    storepath.Path // "" when unknown
}

// Next reads the marker before a path: true if a NAR follows, false at the
// end of the stream.
func Next(r io.Reader) (bool, error) {
	n, err := readUint64(r)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return false, errors.New("export stream ends without its end marker (truncated?)")
		}
		return false, err
	}
	switch n {
	case 0:
		return false, nil
	case 1:
		return true, nil
	}
	return false, fmt.Errorf("not a nix-store --export stream: marker is %#x, want 0 or 1", n)
}

// ReadTrailer reads and validates the trailer after a NAR.
func ReadTrailer(r io.Reader) (Trailer, error) {
	var t Trailer
	m, err := readUint64(r)
	if err != nil {
		return t, fmt.Errorf("read export trailer: %w", err)
	}
	if m != exportMagic {
		return t, fmt.Errorf("export trailer has magic %#x, want %#x (not a nix-store --export stream?)", m, exportMagic)
	}
	s, err := readString(r, maxPathLen)
	if err != nil {
		return t, fmt.Errorf("read path of export trailer: %w", err)
	}
	if t.Path, err = storepath.Parse(s); err != nil {
		return t, fmt.Errorf("export trailer: %w", err)
	}
	n, err := readUint64(r)
	if err != nil {
		return t, fmt.Errorf("read references of %s: %w", t.Path, err)
	}
	if n > MaxReferences {
		return t, fmt.Errorf("%s declares %d references, more than the %d allowed", t.Path, n, MaxReferences)
	}
	for i := uint64(0); i < n; i++ {
		s, err := readString(r, maxPathLen)
		if err != nil {
			return t, fmt.Errorf("read references of %s: %w", t.Path, err)
		}
		ref, err := storepath.Parse(s)
		if err != nil {
			return t, fmt.Errorf("reference of %s: %w", t.Path, err)
		}
		t.References = append(t.References, ref)
	}
	s, err = readString(r, maxPathLen)
	if err != nil {
		return t, fmt.Errorf("read deriver of %s: %w", t.Path, err)
	}
	if s != "" {
		if t.Deriver, err = storepath.Parse(s); err != nil {
			return t, fmt.Errorf("deriver of %s: %w", t.Path, err)
		}
	}
	// Nix before 2.0 could put a signature here; it is read and ignored, as Nix does.
	legacy, err := readUint64(r)
	if err != nil {
		return t, fmt.Errorf("read trailer of %s: %w", t.Path, err)
	}
	switch legacy {
	case 0:
	case 1:
		if _, err := readString(r, maxLegacySig); err != nil {
			return t, fmt.Errorf("read legacy signature of %s: %w", t.Path, err)
		}
	default:
		return t, fmt.Errorf("trailer of %s: unexpected value %#x after the deriver", t.Path, legacy)
	}
	return t, nil
}

// WriteNext writes the marker that announces another NAR (more) or the end.
func WriteNext(w io.Writer, more bool) error {
	var n uint64
	if more {
		n = 1
	}
	_, err := w.Write(binary.LittleEndian.AppendUint64(nil, n))
	return err
}

// WriteTrailer writes the trailer that follows a NAR.
func WriteTrailer(w io.Writer, t Trailer) error {
	var b []byte
	b = binary.LittleEndian.AppendUint64(b, exportMagic)
	b = appendString(b, t.Path.String())
	b = binary.LittleEndian.AppendUint64(b, uint64(len(t.References)))
	for _, r := range t.References {
		b = appendString(b, r.String())
	}
	deriver := ""
	if t.Deriver != "" {
		deriver = t.Deriver.String()
	}
	b = appendString(b, deriver)
	b = binary.LittleEndian.AppendUint64(b, 0)
	_, err := w.Write(b)
	return err
}

func appendString(b []byte, s string) []byte {
	b = binary.LittleEndian.AppendUint64(b, uint64(len(s)))
	b = append(b, s...)
	return append(b, make([]byte, (8-len(s)%8)%8)...)
}

func readUint64(r io.Reader) (uint64, error) {
	var b [8]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return 0, errors.New("truncated")
		}
		return 0, err
	}
	return binary.LittleEndian.Uint64(b[:]), nil
}

func readString(r io.Reader, maxLen int) (string, error) {
	n, err := readUint64(r)
	if err != nil {
		return "", err
	}
	if n > uint64(maxLen) {
		return "", fmt.Errorf("string of %d bytes is longer than the %d allowed", n, maxLen)
	}
	b := make([]byte, n+(8-n%8)%8)
	if _, err := io.ReadFull(r, b); err != nil {
		return "", errors.New("truncated")
	}
	for _, c := range b[n:] {
		if c != 0 {
			return "", errors.New("non-zero padding")
		}
	}
	return string(b[:n]), nil
}
