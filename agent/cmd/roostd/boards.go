package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/roostrouter/roost/agent"
	"github.com/roostrouter/roost/agent/config"
	"github.com/roostrouter/roost/boards"
)

// runConfig is "config check FILE [--board B]": the config validated as
// the agent would load it, on the board it is built for. The Nix library
// runs it at build time, so that a bad config fails the build, not the
// router.
func runConfig(e *env, args []string) error {
	f := newFlags(e, "config check")
	board := f.String("board", "", "the `board` the config is for: it must match the config's board, or supplies it")
	pos, err := f.parse(args)
	if err != nil {
		return err
	}
	if len(pos) != 2 || pos[0] != "check" {
		return errors.New("usage: roostd config check FILE [--board B] [--json]")
	}
	file := pos[1]
	b, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("config check: %w", err)
	}
	res := checkConfig(b, *board)
	res.File = file
	if *f.json {
		printJSON(e.stdout, res)
	} else if res.Valid {
		fmt.Fprintf(e.stdout, "%s: valid for board %s (%d services)\n", file, res.Board, res.Services)
	} else {
		fmt.Fprintf(e.stderr, "roostd: config %s: %d problem(s):\n  %s\n", file, len(res.Problems), strings.Join(res.Problems, "\n  "))
	}
	if !res.Valid {
		return exitCode(1)
	}
	return nil
}

// configCheck is what config check found.
type configCheck struct {
	File     string   `json:"file"`
	Board    string   `json:"board,omitempty"`
	Valid    bool     `json:"valid"`
	Services int      `json:"services"`
	Problems []string `json:"problems"` // each starts with its JSON path
}

// checkConfig validates a config with every kind the agent has. board, if
// set, is the board the config is for: a config that names none gets it.
func checkConfig(b []byte, board string) configCheck {
	res := configCheck{Board: board, Problems: []string{}}
	if board != "" {
		if _, err := boards.Lookup(board); err != nil {
			res.Problems = append(res.Problems, "--board: "+err.Error())
			return res
		}
		var top map[string]json.RawMessage
		if json.Unmarshal(b, &top) == nil {
			var named string
			if raw, ok := top["board"]; !ok {
				b = withBoard(b, board)
			} else if json.Unmarshal(raw, &named) == nil && named != board {
				res.Problems = append(res.Problems, fmt.Sprintf("board: the config is for board %q, but it is checked (and built) for %s: make them one", named, board))
			}
		}
	}
	c, err := config.Parse(b, agent.Kinds(nil))
	var errs config.Errors
	switch {
	case errors.As(err, &errs):
		res.Problems = append(res.Problems, errs...)
	case err != nil:
		res.Problems = append(res.Problems, err.Error())
	default:
		res.Board, res.Services = c.Board, len(c.Services)
	}
	res.Valid = len(res.Problems) == 0
	return res
}

// withBoard adds "board" to a JSON object that has none. b is an object
// (the caller decoded it): it starts with '{' after white space.
func withBoard(b []byte, board string) []byte {
	i := strings.IndexByte(string(b), '{') + 1
	name, _ := json.Marshal(board)
	field := `"board":` + string(name)
	if rest := strings.TrimSpace(string(b[i:])); !strings.HasPrefix(rest, "}") {
		field += ","
	}
	return append(append(append([]byte{}, b[:i]...), field...), b[i:]...)
}

// runBoards is "boards": the board data, as Go and the Nix library read
// it; --targets lists the Go targets roostd builds for (make cross).
func runBoards(e *env, args []string) error {
	f := newFlags(e, "boards")
	targets := f.Bool("targets", false, "print each Go target the boards need, once: its go build environment, a tab, its boards")
	pos, err := f.parse(args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return errors.New("usage: roostd boards [--json | --targets]")
	}
	all, err := boards.All()
	if err != nil {
		return err
	}
	switch {
	case *f.json:
		printJSON(e.stdout, all)
	case *targets:
		printTargets(e.stdout, all)
	default:
		printBoards(e.stdout, all)
	}
	return nil
}

// printTargets prints each distinct go build environment of the boards,
// in the boards' order, with the boards that need it.
func printTargets(w io.Writer, all []boards.Board) {
	var order []string
	users := map[string][]string{}
	for _, b := range all {
		env := strings.Join(b.GoEnv(), " ")
		if _, ok := users[env]; !ok {
			order = append(order, env)
		}
		users[env] = append(users[env], b.Name)
	}
	for _, env := range order {
		fmt.Fprintf(w, "%s\t%s\n", env, strings.Join(users[env], " "))
	}
}

// printBoards prints a table of the boards, then each board in full.
func printBoards(w io.Writer, all []boards.Board) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "BOARD\tARCH\tRAM\tUPGRADE\tKEXEC\tTRIAL BOOT\tWATCHDOG\tINTERFACES")
	for _, b := range all {
		trial, _ := b.TrialMethod()
		fmt.Fprintf(tw, "%s\t%s\t%d MB\t%s\t%s\t%s\t%s\t%s\n", b.Name, archText(b), b.RAMMB, upgradeText(b),
			orDash(b.KexecMethod), trial, watchdogText(b.Watchdog), interfacesText(b))
	}
	tw.Flush()
	for _, b := range all {
		fmt.Fprintf(w, "\n%s: %s\n", b.Name, b.Description)
		printBoard(w, b)
	}
}

// printBoard prints what the table leaves out, one fact a line.
func printBoard(w io.Writer, b boards.Board) {
	line := func(k, v string) { fmt.Fprintf(w, "  %-12s %s\n", k+":", v) }
	ram := fmt.Sprintf("%d MB", b.RAMMB)
	if b.MaintenanceMB > 0 {
		ram += fmt.Sprintf(", of which an image upgrade may use %d MB", b.MaintenanceMB)
	}
	line("RAM", ram)
	line("upgrade", upgradeText(b))
	_, why := b.TrialMethod()
	line("trial boot", why)
	if wd := b.Watchdog; wd != nil {
		line("watchdog", watchdogDetail(*wd))
	}
	storage := "-"
	if st := b.Storage; st != nil {
		storage = st.Device + " (" + st.FSType + ")"
	}
	line("storage", storage)
	line("cmdline", orDash(strings.Join(b.Cmdline, " ")))
	line("needs", strings.Join(b.Needs, " "))
	for _, f := range b.Flash {
		printFlash(w, f)
	}
	for _, s := range b.Sources {
		line("source", s)
	}
	for _, n := range b.Notes {
		line("note", n)
	}
}

// printFlash prints a flash and its partitions: offset, size, name, use,
// and whether roost ever writes it.
func printFlash(w io.Writer, f boards.Flash) {
	size := "size read from the disk"
	if f.SizeMB > 0 {
		size = fmt.Sprintf("%d MiB", f.SizeMB)
	}
	if f.EraseBlockBytes > 0 {
		size += fmt.Sprintf(", %d KiB erase blocks, %d-byte pages", f.EraseBlockBytes>>10, f.PageBytes)
	}
	fmt.Fprintf(w, "  %-12s %s (%s, %s)\n", "flash:", f.Name, f.Kind, size)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, p := range f.Partitions {
		place := "partition table\t" + bytesText(p.Size)
		switch {
		case p.Volume:
			place = "UBI volume\t" + bytesText(p.Size)
		case p.Offset != nil:
			place = fmt.Sprintf("%#08x\t%s", *p.Offset, bytesText(p.Size))
		}
		never := ""
		if p.Never {
			never = "\tnever written"
		}
		fmt.Fprintf(tw, "    %s\t%s\t%s%s\n", place, p.Name, p.Use, never)
	}
	tw.Flush()
}

func bytesText(n *uint64) string {
	if n == nil {
		return "-"
	}
	return fmt.Sprintf("%#08x", *n)
}

func archText(b boards.Board) string {
	switch {
	case b.GOMIPS != "":
		return b.GOARCH + " (" + b.GOMIPS + ")"
	case b.GOARM != "":
		return b.GOARCH + " (v" + b.GOARM + ")"
	}
	return b.GOARCH
}

func upgradeText(b boards.Board) string {
	if b.ImageWrite == "" {
		return b.Upgrade
	}
	if b.Upgrade == boards.UpgradeImage {
		return "image by " + b.ImageWrite
	}
	return b.Upgrade + " (images by " + b.ImageWrite + ")"
}

func interfacesText(b boards.Board) string {
	var ifs []string
	for _, n := range b.InterfaceNames() {
		dev, _ := b.Device(n)
		ifs = append(ifs, n+"="+dev)
	}
	return strings.Join(ifs, " ")
}

// watchdogText is a board's watchdog in a word or few: "/dev/watchdog
// (20s, grace 90s, survives kexec)".
func watchdogText(w *boards.Watchdog) string {
	if w == nil {
		return "-"
	}
	s := fmt.Sprintf("%s (%s, grace %s", w.Device, w.Timeout(), w.Grace())
	if w.SurvivesKexec {
		s += ", survives kexec"
	}
	return s + ")"
}

// watchdogDetail is the watchdog's driver and the facts about it.
func watchdogDetail(w boards.Watchdog) string {
	how := "module"
	if w.BuiltIn {
		how = "built in"
	}
	max := "hardware maximum not known"
	if w.MaxTimeoutSeconds != nil {
		max = fmt.Sprintf("hardware maximum %ds", *w.MaxTimeoutSeconds)
	}
	s := fmt.Sprintf("%s, driver %s (%s), timeout %s (%s), grace %s", w.Device, w.Driver, how, w.Timeout(), max, w.Grace())
	for _, mod := range slices.Sorted(maps.Keys(w.ModuleParams)) {
		s += fmt.Sprintf(", %s %s", mod, w.ModuleParams[mod])
	}
	return s
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
