package main

import (
	"bufio"
	"fmt"
	"time"

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
		missing := 0
		for _, p := range paths {
			if _, ok := reg.Get(p); ok {
				fmt.Fprintln(e.stdout, p)
			} else {
				missing++
			}
		}
		if missing > 0 {
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

func storeImport(e *env, s *store.Store, asJSON bool) error {
	t, err := e.lock(s, "roostd store import")
	if err != nil {
		return err
	}
	defer t.Close()
	start := time.Now()
	last := start
	var paths int
	var bytes uint64
	res, err := t.ImportExport(e.ctx, e.stdin, func(p storepath.Path, n uint64) {
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
		var out []map[string]string
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
