package transfer

import (
	"bytes"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"

	"github.com/roostrouter/roost/updater/closurediff"
	"github.com/roostrouter/roost/updater/registry"
	"github.com/roostrouter/roost/updater/storepath"
	"github.com/roostrouter/roost/updater/transfer/copydelta"
)

// DefaultMaxDeltaBase bounds a delta's base when the router's RAM is not
// known: the router holds the base's whole NAR in memory while it decodes.
const DefaultMaxDeltaBase = 4 << 20

// maxDeltaWindow bounds the zstd window of a delta (base and new NAR).
const maxDeltaWindow = 256 << 20

// dictID names the dictionary in the zstd frame; any fixed non-zero id.
const dictID = 0x524f4f53 // "ROOS"

// chooseBases finds, for each missing path, a valid path of the same
// package, preferring the same name (another build of it), then the same
// package at another version; the newest registration wins a tie.
func chooseBases(reg *registry.Registry, missing []storepath.Path, maxBase uint64) map[storepath.Path]Base {
	byName := map[string][]*registry.Info{}
	byPkg := map[string][]*registry.Info{}
	for _, p := range reg.Paths() {
		info, _ := reg.Get(p)
		if info.NarSize > maxBase {
			continue
		}
		pkg, _ := closurediff.SplitName(p.Name())
		byName[p.Name()] = append(byName[p.Name()], info)
		byPkg[pkg] = append(byPkg[pkg], info)
	}
	newest := func(infos []*registry.Info) *registry.Info {
		var best *registry.Info
		for _, i := range infos {
			if best == nil || i.RegistrationTime > best.RegistrationTime {
				best = i
			}
		}
		return best
	}
	bases := map[storepath.Path]Base{}
	for _, m := range missing {
		pkg, _ := closurediff.SplitName(m.Name())
		base := newest(byName[m.Name()])
		if base == nil {
			base = newest(byPkg[pkg])
		}
		if base != nil {
			bases[m] = Base{Path: base.Path, NarHash: base.NarHash.String()}
		}
	}
	return bases
}

// deltaWindow is the zstd window that lets the new NAR refer to all of
// its base: a power of two covering both.
func deltaWindow(base, nar int) int {
	w := maxWindow
	for w < base+nar && w < maxDeltaWindow {
		w *= 2
	}
	return w
}

// deltaReader decodes a zstd stream whose dictionary is base's NAR; the
// expected size bounds the window it accepts.
func deltaReader(r io.Reader, baseNAR []byte, narSize uint64) (*zstd.Decoder, error) {
	return zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true),
		zstd.WithDecoderMaxWindow(uint64(deltaWindow(len(baseNAR), int(min(narSize, maxDeltaWindow))))),
		zstd.WithDecoderDictRaw(dictID, baseNAR))
}

// deltaLevel is the zstd level a delta against a base of n bytes needs:
// the faster levels' match tables do not reach far into a large
// dictionary. Measured on a 12 MB Go binary at a new version: 6.7 MB at
// the default level, 1.9 MB at "better", 2.2 KB at "best" (0.45 s).
func deltaLevel(n int) zstd.EncoderLevel {
	if n > 8<<20 {
		return zstd.SpeedBestCompression
	}
	return zstd.SpeedBetterCompression
}

// compress returns nar compressed, against baseNAR if given.
func compress(nar, baseNAR []byte, level zstd.EncoderLevel) ([]byte, error) {
	window := maxWindow
	if baseNAR != nil {
		window = deltaWindow(len(baseNAR), len(nar))
	}
	opts := []zstd.EOption{zstd.WithEncoderLevel(level), zstd.WithEncoderConcurrency(1), zstd.WithWindowSize(window)}
	if baseNAR != nil {
		opts = append(opts, zstd.WithEncoderDictRaw(dictID, baseNAR))
	}
	var out bytes.Buffer
	enc, err := zstd.NewWriter(&out, opts...)
	if err != nil {
		return nil, err
	}
	if _, err := enc.Write(nar); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("compress: %w", err)
	}
	return out.Bytes(), nil
}

// compressUntil is compress against baseNAR, asking stop every MiB of nar
// whether to give up (copydelta.ErrStopped).
func compressUntil(nar, baseNAR []byte, level zstd.EncoderLevel, stop func() bool) ([]byte, error) {
	var out bytes.Buffer
	enc, err := zstd.NewWriter(&out, zstd.WithEncoderLevel(level), zstd.WithEncoderConcurrency(1),
		zstd.WithWindowSize(deltaWindow(len(baseNAR), len(nar))), zstd.WithEncoderDictRaw(dictID, baseNAR))
	if err != nil {
		return nil, err
	}
	defer enc.Close()
	for len(nar) > 0 {
		if stop() {
			return nil, copydelta.ErrStopped
		}
		n := min(len(nar), 1<<20)
		if _, err := enc.Write(nar[:n]); err != nil {
			return nil, err
		}
		nar = nar[n:]
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("compress: %w", err)
	}
	return out.Bytes(), nil
}
