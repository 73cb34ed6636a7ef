package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/roostrouter/roost/updater/registry"
	"github.com/roostrouter/roost/updater/store"
	"github.com/roostrouter/roost/updater/storepath"
)

func runStore(e *env, sub string, args []string) error {
	f := newFlags(e, "store "+sub)
	pos, err := f.parse(args)
	if err != nil {
		return err
	}
	s := e.openStore(*f.root)
	switch sub {
	case "import":
		return storeImport(e, s, *f.json)
	case "dump":
		if *f.json {
			return errors.New("store dump writes the path's NAR, as nix-store --dump does: --json does not apply (store dump-db --json describes paths)")
		}
		if len(pos) != 1 {
			return fmt.Errorf("store dump takes one store path, got %d", len(pos))
		}
		p, err := storepath.Parse(pos[0])
		if err != nil {
			return err
		}
		reg, err := s.Registry()
		if err != nil {
			return err
		}
		w := bufio.NewWriterSize(e.stdout, 256<<10)
		if err := s.Dump(w, reg, p); err != nil {
			return err
		}
		return w.Flush()
	case "dump-db":
		paths, err := parsePaths(pos)
		if err != nil {
			return err
		}
		reg, err := s.Registry()
		if err != nil {
			return err
		}
		if *f.json {
			return dumpDBJSON(e, reg, paths)
		}
		return store.DumpDB(e.stdout, reg, paths)
	case "query-valid":
		paths, err := parsePaths(pos)
		if err != nil {
			return err
		}
		reg, err := s.Registry()
		if err != nil {
			return err
		}
		valid, invalid := []storepath.Path{}, []storepath.Path{}
		for _, p := range paths {
			if _, ok := reg.Get(p); ok {
				valid = append(valid, p)
			} else {
				invalid = append(invalid, p)
			}
		}
		if *f.json {
			printJSON(e.stdout, map[string]any{"valid": valid, "invalid": invalid})
		} else {
			for _, p := range valid {
				fmt.Fprintln(e.stdout, p)
			}
		}
		if len(invalid) > 0 {
			return exitCode(1)
		}
		return nil
	case "verify":
		return storeVerify(e, s, *f.json)
	}
	return fmt.Errorf("unknown store command %q (want import, dump, dump-db, query-valid or verify)", sub)
}

func parsePaths(args []string) ([]storepath.Path, error) {
	var out []storepath.Path
	for _, a := range args {
		p, err := storepath.Parse(a)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// dumpDBJSON prints the registrations of paths (all if none) as a JSON
// array, the shape of Nix 2.3's nix path-info --json (which roost's
// nixlocal reads too).
func dumpDBJSON(e *env, reg *registry.Registry, paths []storepath.Path) error {
	if len(paths) == 0 {
		paths = reg.Paths()
	}
	out := []*registry.Info{}
	for _, p := range paths {
		info, ok := reg.Get(p)
		if !ok {
			return fmt.Errorf("dump-db %s: %w", p, store.ErrNotValid)
		}
		out = append(out, info)
	}
	printJSON(e.stdout, out)
	return nil
}

func storeImport(e *env, s *store.Store, asJSON bool) error {
	// A session: the stream is read without the store lock, which is taken
	// only for the commit at its end, so a stalled sender holds up no other
	// writer (a rollback above all).
	ss, err := s.NewSession(func(context.Context) (*store.Txn, error) { return e.lock(s, "roostd store import") })
	if err != nil {
		return err
	}
	defer ss.Close()
	start := time.Now()
	last := start
	var paths int
	var bytes uint64
	res, err := ss.ImportExport(e.ctx, e.stdin, func(p storepath.Path, n uint64) {
		paths++
		bytes += n
		if time.Since(last) >= 2*time.Second {
			last = time.Now()
			fmt.Fprintf(e.stderr, "roostd: imported %d paths, %s so far\n", paths, humanBytes(int64(bytes)))
		}
	})
	if asJSON {
		printJSON(e.stdout, map[string]any{"added": res.Added, "present": res.Present, "narBytes": res.Bytes, "error": errString(err)})
	} else {
		fmt.Fprintf(e.stderr, "roostd: imported %d new paths (%s of NAR) in %.1fs; %d were already valid\n",
			len(res.Added), humanBytes(int64(res.Bytes)), time.Since(start).Seconds(), len(res.Present))
		for _, p := range res.Added {
			fmt.Fprintln(e.stdout, p)
		}
	}
	return err
}

func storeVerify(e *env, s *store.Store, asJSON bool) error {
	reg, err := s.Registry()
	if err != nil {
		return err
	}
	problems, err := s.Verify(e.ctx, reg, nil)
	if err != nil {
		return err
	}
	if asJSON {
		out := []map[string]string{}
		for _, p := range problems {
			out = append(out, map[string]string{"path": p.Path.String(), "problem": p.Msg})
		}
		printJSON(e.stdout, map[string]any{"checked": reg.Len(), "problems": out})
	} else {
		for _, p := range problems {
			fmt.Fprintln(e.stdout, p)
		}
		fmt.Fprintf(e.stderr, "roostd: checked %d paths, %d problems\n", reg.Len(), len(problems))
	}
	if len(problems) > 0 {
		return exitCode(1)
	}
	return nil
}
