package image

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	"github.com/roostrouter/roost/updater/generations"
	"github.com/roostrouter/roost/updater/nixexport"
	"github.com/roostrouter/roost/updater/registry"
	"github.com/roostrouter/roost/updater/store"
	"github.com/roostrouter/roost/updater/storepath"
)

// Root lays out, below root, the folder a router boots from: the paths of
// export (a `nix-store --export` stream of system's closure) imported by
// the router's own store code, system as generation 1 (the profile's
// system-1-link and default), and an empty state folder persist/roost.
func Root(ctx context.Context, root string, export io.Reader, system storepath.Path) error {
	s := store.New(root, store.Options{})
	txn, err := s.Lock(ctx, "roost image", func(string) {})
	if err != nil {
		return fmt.Errorf("lock the store below %s: %w", root, err)
	}
	defer txn.Close()
	if _, err := txn.ImportExport(ctx, export, nil); err != nil {
		return fmt.Errorf("import %s's closure below %s: %w", system, root, err)
	}
	if _, _, err := generations.System(root, nil).Set(system); err != nil {
		return fmt.Errorf("make %s generation 1 below %s: %w", system, root, err)
	}
	return os.MkdirAll(filepath.Join(root, "persist/roost"), 0o700)
}

// WriteExport writes closure as a `nix-store --export` stream, references
// before the paths that hold them, each NAR by dump.
func WriteExport(w io.Writer, closure []registry.Info, dump func(storepath.Path, io.Writer) error) error {
	for _, i := range ordered(closure) {
		if err := nixexport.WriteNext(w, true); err != nil {
			return err
		}
		if err := dump(i.Path, w); err != nil {
			return fmt.Errorf("dump %s: %w", i.Path, err)
		}
		if err := nixexport.WriteTrailer(w, nixexport.Trailer{Path: i.Path, References: i.References}); err != nil {
			return err
		}
	}
	return nixexport.WriteNext(w, false)
}

// ordered sorts closure so that every path comes after what it
// references (self-references aside), by name where that leaves a choice.
func ordered(closure []registry.Info) []registry.Info {
	byPath := map[storepath.Path]registry.Info{}
	for _, i := range closure {
		byPath[i.Path] = i
	}
	sorted := append([]registry.Info(nil), closure...)
	sort.Slice(sorted, func(a, b int) bool { return sorted[a].Path < sorted[b].Path })
	var out []registry.Info
	done := map[storepath.Path]bool{}
	var visit func(i registry.Info)
	visit = func(i registry.Info) {
		if done[i.Path] {
			return
		}
		done[i.Path] = true
		for _, r := range i.References {
			if ri, ok := byPath[r]; ok && r != i.Path {
				visit(ri)
			}
		}
		out = append(out, i)
	}
	for _, i := range sorted {
		visit(i)
	}
	return out
}
