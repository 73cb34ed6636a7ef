package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
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

// runBoards is "boards": the board data, as Go and the Nix library read it.
func runBoards(e *env, args []string) error {
	f := newFlags(e, "boards")
	pos, err := f.parse(args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return errors.New("usage: roostd boards [--json]")
	}
	all, err := boards.All()
	if err != nil {
		return err
	}
	if *f.json {
		printJSON(e.stdout, all)
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "BOARD\tARCH\tRAM\tINTERFACES\tUPGRADE\tKEXEC\tWATCHDOG\tTRIAL BOOT\tSTORAGE\tCMDLINE\tSYSTEM NEEDS")
	for _, b := range all {
		arch := b.GOARCH
		if b.GOMIPS != "" {
			arch += " (" + b.GOMIPS + ")"
		}
		if b.GOARM != "" {
			arch += " (v" + b.GOARM + ")"
		}
		var ifs []string
		for _, n := range b.InterfaceNames() {
			dev, _ := b.Device(n)
			ifs = append(ifs, n+"="+dev)
		}
		kexec := "no"
		if b.Kexec {
			kexec = "yes"
		}
		storage := "-"
		if st := b.Storage; st != nil {
			storage = st.Device + " (" + st.FSType + ")"
		}
		trial, _ := b.TrialMethod()
		fmt.Fprintf(tw, "%s\t%s\t%d MB\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", b.Name, arch, b.RAMMB, strings.Join(ifs, " "),
			b.Upgrade, kexec, watchdogText(b.Watchdog), trial, storage, orDash(strings.Join(b.Cmdline, " ")), strings.Join(b.Needs, " "))
	}
	tw.Flush()
	for _, b := range all {
		fmt.Fprintf(e.stdout, "%s: %s\n", b.Name, b.Description)
	}
	return nil
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

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
