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
	// Boot is what U-Boot boots in the image (uimage, fit): formats,
	// addresses and where the root is; absent for the root alone.
	Boot *image.BootInfo `json:"boot,omitempty"`
}

// imageArgs are roost image's checked arguments.
type imageArgs struct {
	plan      image.Plan
	system    storepath.Path
	file      string
	diskBytes uint64
	dtb       string
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
	dtb := fs.String("dtb", "", "boot this device tree `file` (.dtb) instead of the system's dtbs/ one (uimage and fit images)")
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
	if *dtb != "" && a.plan.Boot.Format == "" {
		return a, fmt.Errorf("--dtb is for images U-Boot boots (uimage, fit); board %s's is %s, which has no kernel", b.Name, a.plan.Kind)
	}
	if a.system, err = systemPath(*system); err != nil {
		return a, err
	}
	a.file, a.diskBytes, a.dtb = *out, *sizeMB<<20, *dtb
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
	tmp, err := os.MkdirTemp("", "roost-image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	root := filepath.Join(tmp, "root")
	paths, err := e.importRoot(nix, a.system, root, log)
	if err != nil {
		return err
	}
	built, err := image.Build(e.ctx, a.plan, image.Input{Root: root, System: a.system, DTB: a.dtb, DiskBytes: a.diskBytes}, a.file, log)
	if err != nil {
		return err
	}
	size := built.Bytes
	if a.plan.Kind == image.KindSquashfs && built.Boot == nil {
		// What the board's slot holds: the base of roost rebuild's delta.
		if data, err := os.ReadFile(a.file); err == nil {
			e.imageCache().put(newBuiltImage(data, paths))
		}
	}
	res := imageResult{Board: a.plan.Board, Kind: a.plan.Kind, File: a.file, Bytes: size,
		Partition: a.plan.Partition, PartitionBytes: a.plan.PartitionBytes, Paths: paths, Boot: built.Boot}
	if a.json {
		return json.NewEncoder(e.stdout).Encode(res)
	}
	fits := ""
	if res.PartitionBytes > 0 {
		fits = fmt.Sprintf(" of %d for %s (%.0f%%)", res.PartitionBytes, res.Partition, 100*float64(size)/float64(res.PartitionBytes))
	}
	fmt.Fprintf(e.stdout, "%s: %s image for %s, %d bytes%s, %d store paths\n", a.file, res.Kind, res.Board, size, fits, res.Paths)
	if bt := res.Boot; bt != nil {
		fmt.Fprintf(e.stdout, "  kernel %d bytes (%s), load %s, entry %s; root at %d, %d bytes\n",
			bt.KernelBytes, bt.Compression, bt.LoadAddress, bt.EntryAddress, bt.RootOffset, bt.RootBytes)
	}
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

// importRoot lays out below root the folder a router boots from, with
// system's closure imported by the router's own store code, and says how
// many store paths it holds.
func (e *env) importRoot(nix *nixlocal.Nix, system storepath.Path, root string, log func(string)) (int, error) {
	log(fmt.Sprintf("reading %s's closure", system))
	closure, err := nix.Closure(e.ctx, system)
	if err != nil {
		return 0, err
	}
	log(fmt.Sprintf("importing %d store paths into the router's store below %s", len(closure), root))
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(image.WriteExport(pw, closure, nix.DumpNAR)) }()
	err = image.Root(e.ctx, root, pr, system)
	pr.CloseWithError(errors.New("import stopped"))
	return len(closure), err
}
