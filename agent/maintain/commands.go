package maintain

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/roostrouter/roost/updater/activate"
	"github.com/roostrouter/roost/updater/maintenance"
)

// exec answers SSH clients while the image is written: its progress, and
// a refusal naming what is going on for anything else.
func (m *Maintenance) exec(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) > 0 && filepath.Base(args[0]) == "roostd" {
		args = args[1:]
	}
	switch {
	case len(args) >= 2 && args[0] == "maintenance" && args[1] == "status":
		return m.statusCommand(ctx, args[2:], stdout, stderr)
	case len(args) >= 2 && args[0] == "maintenance" && args[1] == "receive":
		return m.receiveCommand(ctx, args[2:], stdin, stdout, stderr)
	case len(args) >= 1 && args[0] == "status":
		return m.statusCommand(ctx, args[1:], stdout, stderr)
	case len(args) >= 1 && args[0] == "confirm":
		// roost confirms on the trial's boot, and tries again until then.
		fmt.Fprintf(stderr, "roostd: the image in %s %s: the router is writing it; confirm once it is back\n", m.opts.Plan.Slot, activate.NotBootedYet)
		return 1
	}
	st, _ := m.Status()
	fmt.Fprintf(stderr, "roostd: the router is in maintenance, writing a new image to %s (%s): only `roostd maintenance receive` and `roostd maintenance status [--follow] [--json]` answer now; it reboots when done\n", st.Slot, st.Phase)
	return 1
}

// receiveCommand reads the image on stdin, whole or as a delta, and
// with --follow says how its write goes.
func (m *Maintenance) receiveCommand(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("maintenance receive", flag.ContinueOnError)
	fs.SetOutput(stderr)
	baseBytes := fs.Int64("delta-base-bytes", 0, "stdin is a zstd delta against the running slot's first `bytes` bytes")
	baseSum := fs.String("delta-base-sha256", "", "the SHA-256 of the delta's base")
	asJSON := fs.Bool("json", false, "the status as JSON, one document a line")
	follow := fs.Bool("follow", false, "then print the write's progress until the router reboots")
	fs.String("root", "/", "ignored: the maintenance's root")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var d *maintenance.Delta
	if *baseBytes != 0 || *baseSum != "" {
		d = &maintenance.Delta{BaseBytes: *baseBytes, BaseSHA256: *baseSum}
	}
	if err := m.receive(stdin, d); err != nil {
		fmt.Fprintln(stderr, "roostd:", err)
		return 1
	}
	if !*follow {
		fmt.Fprintln(stdout, "image received and verified: writing it")
		return 0
	}
	return m.statusCommand(ctx, []string{"--follow", "--json=" + fmt.Sprint(*asJSON)}, stdout, stderr)
}

// statusCommand prints the progress; --follow until the reboot.
func (m *Maintenance) statusCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("maintenance status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "one JSON document a line")
	follow := fs.Bool("follow", false, "print each change until the router reboots")
	fs.String("root", "/", "ignored: the maintenance's root")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	for {
		st, changed := m.Status()
		if *asJSON {
			b, _ := json.Marshal(map[string]Status{"maintenance": st})
			fmt.Fprintf(stdout, "%s\n", b)
		} else {
			fmt.Fprintln(stdout, line(st))
		}
		if !*follow || st.Phase == "reboot" {
			return 0
		}
		select {
		case <-ctx.Done():
			return 1
		case <-changed:
		}
		// At most a line a second while bytes move; the end at once.
		if next, _ := m.Status(); next.Phase != "reboot" && next.Phase != "failed" {
			select {
			case <-ctx.Done():
				return 1
			case <-time.After(time.Second):
			}
		}
	}
}

func line(s Status) string {
	var b strings.Builder
	fmt.Fprintf(&b, "maintenance: %s %s", s.Slot, s.Phase)
	if s.Total > 0 {
		fmt.Fprintf(&b, " %d%% (%d of %d bytes)", s.Done*100/s.Total, s.Done, s.Total)
	}
	if s.Error != "" {
		fmt.Fprintf(&b, ": %s", s.Error)
	}
	if s.Outcome != "" {
		fmt.Fprintf(&b, "; %s", s.Outcome)
	}
	return b.String()
}
