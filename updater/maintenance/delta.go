package maintenance

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"
)

// DeltaDictID names the base in a delta's zstd frame (any fixed non-zero
// id; roost uses the same).
const DeltaDictID = 0x524f494d // "ROIM"

// MaxImage bounds an image and its base: no board has a bigger slot, and
// the decoder's window is sized from it.
const MaxImage = 256 << 20

// DeltaWindow is the zstd window a delta of an image of n bytes against a
// base of base bytes uses: a power of two covering both.
func DeltaWindow(base, n int64) int {
	w := 1 << 20
	for int64(w) < base+n && w < MaxImage {
		w *= 2
	}
	return w
}

// closeDecoder is a zstd decoder as an io.ReadCloser.
type closeDecoder struct{ *zstd.Decoder }

func (d closeDecoder) Close() error { d.Decoder.Close(); return nil }

// deltaDecoder reads the delta's base (checking its size and SHA-256) and
// returns the decoder of r against it.
func deltaDecoder(r io.Reader, d *Delta, base func() (io.ReadCloser, error)) (io.ReadCloser, error) {
	if d.BaseBytes <= 0 || d.BaseBytes > MaxImage {
		return nil, fmt.Errorf("receive image: delta base of %d bytes: want 1 to %d", d.BaseBytes, MaxImage)
	}
	want, err := hex.DecodeString(d.BaseSHA256)
	if err != nil || len(want) != sha256.Size {
		return nil, fmt.Errorf("receive image: delta base sha256 %q: want 64 hex digits", d.BaseSHA256)
	}
	rc, err := base()
	if err != nil {
		return nil, fmt.Errorf("receive image: read the delta's base: %w", err)
	}
	buf := make([]byte, d.BaseBytes)
	_, err = io.ReadFull(rc, buf)
	rc.Close()
	if err != nil {
		return nil, fmt.Errorf("receive image: read the delta's base (%d bytes of the running slot): %w", d.BaseBytes, err)
	}
	if got := sha256.Sum256(buf); string(got[:]) != string(want) {
		return nil, fmt.Errorf("receive image: the running slot's first %d bytes hash to %x, not %s, the image the delta was made against: send the whole image (roost rebuild --full-image)", d.BaseBytes, got, d.BaseSHA256)
	}
	dec, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true),
		zstd.WithDecoderMaxWindow(uint64(DeltaWindow(d.BaseBytes, MaxImage))),
		zstd.WithDecoderDictRaw(DeltaDictID, buf))
	if err != nil {
		return nil, fmt.Errorf("receive image: delta decoder: %w", err)
	}
	return closeDecoder{dec}, nil
}

// EncodeDelta writes to w the zstd delta of image against base, as
// Receive decodes it (roost's side).
func EncodeDelta(w io.Writer, base, image []byte) error {
	enc, err := zstd.NewWriter(w, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedBestCompression),
		zstd.WithWindowSize(DeltaWindow(int64(len(base)), int64(len(image)))),
		zstd.WithEncoderDictRaw(DeltaDictID, base))
	if err != nil {
		return fmt.Errorf("delta encoder: %w", err)
	}
	if _, err := enc.Write(image); err != nil {
		enc.Close()
		return fmt.Errorf("encode delta: %w", err)
	}
	return enc.Close()
}
