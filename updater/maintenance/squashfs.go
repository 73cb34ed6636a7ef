package maintenance

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
)

// squashfsMagic is "hsqs", a little-endian squashfs superblock's first
// four bytes.
const squashfsMagic = 0x73717368

// SquashfsImage is the squashfs image at the start of a slot (r, of
// size bytes): its length as mksquashfs wrote it (the superblock's
// bytes_used, padded to 4 KiB as mksquashfs pads) and its SHA-256, which
// roost looks up among the images it sent to use it as a delta's base.
func SquashfsImage(r io.ReaderAt, size int64) (int64, string, error) {
	var sb [96]byte
	if _, err := r.ReadAt(sb[:], 0); err != nil {
		return 0, "", fmt.Errorf("read the slot's squashfs superblock: %w", err)
	}
	if m := binary.LittleEndian.Uint32(sb[0:]); m != squashfsMagic {
		return 0, "", fmt.Errorf("the slot holds no squashfs (magic %#x)", m)
	}
	used := binary.LittleEndian.Uint64(sb[40:])
	n := int64((used + 4095) &^ 4095)
	if used == 0 || n > size || n > MaxImage {
		return 0, "", fmt.Errorf("the slot's squashfs says it uses %d bytes, of a %d-byte slot", used, size)
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(r, 0, n)); err != nil {
		return 0, "", fmt.Errorf("hash the slot's image: %w", err)
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
}
