package activate

import "github.com/roostrouter/roost/updater/closurediff"

// Report is what `roostd activate --json` prints and roost reads back: what
// Activate did, and the packages that differ from the previous system. It is
// declared here, once, for both ends.
type Report struct {
	Result
	Changes []closurediff.Change `json:"changes"`
}
