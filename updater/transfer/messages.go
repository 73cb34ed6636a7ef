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
}

// Base is a path the router holds, named with its NAR hash so that the
// laptop uses it only if its own copy is identical.
type Base struct {
	Path    storepath.Path `json:"path"`
	NarHash string         `json:"narHash"`
}

type narMsg struct {
	Path        storepath.Path `json:"path"`
	Compression string         `json:"compression"`
	// Base, if set, is the offered base whose NAR is the zstd dictionary.
	Base storepath.Path `json:"base,omitempty"`
}

type ackMsg struct {
	Paths []storepath.Path `json:"paths"`
}

// Summary is what the router did in a transfer.
type Summary struct {
	Received int    `json:"received"` // NARs registered
	NARBytes uint64 `json:"narBytes"` // their uncompressed size
	Missing  int    `json:"missing"`  // paths still missing at the end (0 when complete)
}
