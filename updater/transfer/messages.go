package transfer

import (
	"github.com/roostrouter/roost/updater/registry"
	"github.com/roostrouter/roost/updater/storepath"
)

type hello struct {
	Protocol    string   `json:"protocol"`
	Version     int      `json:"version"`
	Compression []string `json:"compression,omitempty"`
	Agent       string   `json:"agent,omitempty"` // the sender's program and version, for messages
	// Closure is the laptop's closure message, zstd-compressed (version
	// 4), so that the router answers it without waiting for another
	// frame; a router before version 4 ignores it and reads the closure
	// frame that the laptop then sends.
	Closure []byte `json:"closure,omitempty"`
	// Roots are the closure's roots, sent (version 4) when the closure
	// is not known yet as the transfer starts (the laptop's Nix is still
	// answering): a router that holds them all holds their closure, and
	// answers at once that nothing is missing; else it waits for the
	// closure frame.
	Roots []storepath.Path `json:"roots,omitempty"`
}

// closureMsg is every path of the closure. Registration times are ignored.
type closureMsg struct {
	Paths []registry.Info `json:"paths"`
}

type missingMsg struct {
	Missing []storepath.Path `json:"missing"`
	// Bases offers, for a missing path, a path of the same package the
	// router holds, to compress against (a delta).
	Bases map[storepath.Path]Base `json:"bases,omitempty"`
	// Running is what the router runs (version 4): with nothing missing,
	// the router sends its summary right after this message.
	Running *Running `json:"running,omitempty"`
	// Closure is the size of the roots' closure, when the router answered
	// by the roots alone.
	Closure *ClosureSize `json:"closure,omitempty"`
}

// ClosureSize is how many paths a closure has, and their NAR bytes.
type ClosureSize struct {
	Paths    int    `json:"paths"`
	NARBytes uint64 `json:"narBytes"`
}

// Running is what the router runs as it answers a transfer: a rebuild of
// the system that already runs, as the boot default and confirmed, has
// nothing to activate.
type Running struct {
	System     storepath.Path `json:"system,omitempty"`     // /run/current-system
	Default    storepath.Path `json:"default,omitempty"`    // the profile's: what the next boot runs
	Generation int            `json:"generation,omitempty"` // the profile's generation
	// Settled: no activation awaits confirmation, and the running
	// system's config is the one in force.
	Settled bool `json:"settled"`
}

// Base is a path the router holds, named with its NAR hash so that the
// laptop uses it only if its own copy is identical.
type Base struct {
	Path    storepath.Path `json:"path"`
	NarHash string         `json:"narHash"`
}

// narMsg announces a NAR. Its data is, by Compression:
//   - "zstd": a zstd stream of the NAR; with Base, the base's NAR is its raw
//     dictionary (version 2);
//   - "none": the NAR itself (version 4);
//   - "delta": a zstd stream of a copydelta against Base's NAR (version 4).
type narMsg struct {
	Path        storepath.Path `json:"path"`
	Compression string         `json:"compression"`
	// Base, if set, is the offered base the NAR is made from.
	Base storepath.Path `json:"base,omitempty"`
}

// Compressions: what narMsg.Compression may say.
const (
	compZstd  = "zstd"
	compNone  = "none"
	compDelta = "delta"
)

type ackMsg struct {
	Paths []storepath.Path `json:"paths"`
}

// Summary is what the router did in a transfer.
type Summary struct {
	Received int    `json:"received"` // NARs registered
	NARBytes uint64 `json:"narBytes"` // their uncompressed size
	Missing  int    `json:"missing"`  // paths still missing at the end (0 when complete)
}
