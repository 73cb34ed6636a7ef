package boot

import (
	"fmt"
	"path"
	"strconv"
	"strings"

	"github.com/roostrouter/roost/updater/storepath"
)

// Params are the kernel command line's roost.* parameters.
type Params struct {
	Board      string         // roost.board=NAME: the board, if the initrd does not say
	Disk       string         // roost.disk=/dev/...: the persistent storage
	FSType     string         // roost.fstype=ext4: its file system
	System     storepath.Path // roost.system=/nix/store/...: boot this system
	Generation int            // roost.generation=N: boot this generation
	Trial      bool           // roost.trial=1: a kexec trial, not yet the default
}

// ParseCmdline reads the roost.* parameters of a kernel command line. A
// malformed one is reported and ignored, as the kernel does with its own:
// the router boots anyway, on its defaults.
func ParseCmdline(cmdline string) (Params, []error) {
	var p Params
	var errs []error
	for _, f := range strings.Fields(cmdline) {
		key, val, _ := strings.Cut(f, "=")
		if !strings.HasPrefix(key, "roost.") {
			continue
		}
		if err := p.set(key, val); err != nil {
			errs = append(errs, fmt.Errorf("kernel parameter %q ignored: %w", f, err))
		}
	}
	return p, errs
}

func (p *Params) set(key, val string) error {
	switch key {
	case "roost.board":
		if val == "" || strings.ContainsAny(val, "/ ") {
			return fmt.Errorf("want a board's name")
		}
		p.Board = val
	case "roost.disk":
		if !strings.HasPrefix(val, "/dev/") || path.Clean(val) != val {
			return fmt.Errorf("want a device below /dev, like /dev/vda")
		}
		p.Disk = val
	case "roost.fstype":
		if val == "" || strings.ContainsAny(val, "/ ,") {
			return fmt.Errorf("want a file system type, like ext4")
		}
		p.FSType = val
	case "roost.system":
		sys, err := storepath.Parse(val)
		if err != nil {
			return err
		}
		p.System = sys
	case "roost.generation":
		n, err := strconv.Atoi(val)
		if err != nil || n <= 0 {
			return fmt.Errorf("want a generation number, like 3")
		}
		p.Generation = n
	case "roost.trial":
		p.Trial = val == "1"
	default:
		return fmt.Errorf("unknown roost parameter")
	}
	return nil
}
