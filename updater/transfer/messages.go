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
}

type narMsg struct {
	Path        storepath.Path `json:"path"`
	Compression string         `json:"compression"`
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
