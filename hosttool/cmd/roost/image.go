package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/roostrouter/roost/agent/cmdflag"
	"github.com/roostrouter/roost/boards"
	"github.com/roostrouter/roost/hosttool/image"
	"github.com/roostrouter/roost/hosttool/nixlocal"
	"github.com/roostrouter/roost/updater/storepath"
)

// imageResult is what roost image --json prints.
type imageResult struct {
	Board          string `json:"board"`
	Kind           string `json:"kind"`
	File           string `json:"file"`
	Bytes          uint64 `json:"bytes"`
	Partition      string `json:"partition"`
	PartitionBytes uint64 `json:"partitionBytes"`
	Paths          int    `json:"paths"` // store paths in the image
}

// imageArgs are roost image's checked arguments.
type imageArgs struct {
	plan      image.Plan
	system    storepath.Path
	file      string
	diskBytes uint64
	json      bool
}

func parseImageArgs(e *env, args []string) (imageArgs, error) {
	fs := flag.NewFlagSet("image", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	asJSON := fs.Bool("json", false, "print JSON for scripts")
	board := fs.String("board", "", "the board the image is for (roostd boards lists them)")
	system := fs.String("system", "", "the built system `path` (/nix/store/...-system, or nix-build's ./result)")
	out := fs.String("o", "", "write the image to this `file`")
	sizeMB := fs.Uint64("size-mb", 0, fmt.Sprintf("an ext4 image's size in MiB (default %d)", image.DefaultDiskBytes>>20))
	pos, err := cmdflag.Parse(fs, args)
	if err != nil {
		return imageArgs{}, err
	}
	var a imageArgs
	a.json = *asJSON
	switch {
	case len(pos) > 0:
		return a, fmt.Errorf("roost image takes no arguments, got %q", pos)
	case *board == "":
		return a, fmt.Errorf("--board is required (one of %s)", strings.Join(boards.Names(), ", "))
	case *system == "":
		return a, errors.New("--system is required: the built system, /nix/store/...-system")
	case *out == "":
		return a, errors.New("-o FILE is required: where to write the image")
	}
	b, err := boards.Lookup(*board)
	if err != nil {
		return a, fmt.Errorf("--board: %w", err)
	}
	if a.plan, err = image.PlanFor(b); err != nil {
		return a, err
	}
	if *sizeMB != 0 && a.plan.Kind != image.KindExt4 {
		return a, fmt.Errorf("--size-mb is for ext4 images; board %s's is %s, as large as its contents", b.Name, a.plan.Kind)
	}
	if a.system, err = systemPath(*system); err != nil {
		return a, err
	}
	a.file, a.diskBytes = *out, *sizeMB<<20
	return a, nil
}

// runImage builds the image a board boots from, with a system as its
// first generation.
func runImage(e *env, args []string) error {
	a, err := parseImageArgs(e, args)
	if err != nil {
		return err
	}
	nix := &nixlocal.Nix{Stderr: e.stderr, Getenv: e.getenv}
	if err := checkSystemBoard(nix.StoreRoot(), a.system, a.plan.Board); err != nil {
		return err
	}
	log := func(s string) { fmt.Fprintln(e.stderr, s) }
	log(fmt.Sprintf("reading %s's closure", a.system))
	closure, err := nix.Closure(e.ctx, a.system)
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "roost-image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	root := filepath.Join(tmp, "root")
	log(fmt.Sprintf("importing %d store paths into the router's store below %s", len(closure), root))
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(image.WriteExport(pw, closure, nix.DumpNAR)) }()
	err = image.Root(e.ctx, root, pr, a.system)
	pr.CloseWithError(errors.New("import stopped"))
	if err != nil {
		return err
	}
	size, err := image.Make(e.ctx, a.plan, root, a.file, a.diskBytes, log)
	if err != nil {
		return err
	}
	res := imageResult{Board: a.plan.Board, Kind: a.plan.Kind, File: a.file, Bytes: size,
		Partition: a.plan.Partition, PartitionBytes: a.plan.PartitionBytes, Paths: len(closure)}
	if a.json {
		return json.NewEncoder(e.stdout).Encode(res)
	}
	fits := ""
	if res.PartitionBytes > 0 {
		fits = fmt.Sprintf(" of %d for %s (%.0f%%)", res.PartitionBytes, res.Partition, 100*float64(size)/float64(res.PartitionBytes))
	}
	fmt.Fprintf(e.stdout, "%s: %s image for %s, %d bytes%s, %d store paths\n", a.file, res.Kind, res.Board, size, fits, res.Paths)
	return nil
}

// checkSystemBoard refuses a system built for another board, when it says
// which (its board file).
func checkSystemBoard(storeRoot string, system storepath.Path, board string) error {
	b, err := os.ReadFile(filepath.Join(storeRoot, system.String(), boards.PartBoard))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	if got := strings.TrimSpace(string(b)); got != board {
		return fmt.Errorf("%s is a system for board %s, not %s: build it for %s", system, got, board, board)
	}
	return nil
}
