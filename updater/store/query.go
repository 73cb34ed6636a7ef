package store

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/roostrouter/roost/updater/nar"
	"github.com/roostrouter/roost/updater/nixhash"
	"github.com/roostrouter/roost/updater/registry"
	"github.com/roostrouter/roost/updater/storepath"
)

// Dump writes the NAR of a valid path.
func (s *Store) Dump(w io.Writer, reg *registry.Registry, p storepath.Path) error {
	if _, ok := reg.Get(p); !ok {
		return fmt.Errorf("dump %s: %w", p, ErrNotValid)
	}
	return nar.Dump(w, s.PhysicalPath(p))
}

// DumpDB writes the registration of the given valid paths, in the order
// given (all in byte order if none), in the format of `nix-store --dump-db`,
// which `nix-store --load-db` reads.
func DumpDB(w io.Writer, reg *registry.Registry, paths []storepath.Path) error {
	if len(paths) == 0 {
		paths = reg.Paths()
	}
	var b strings.Builder
	for _, p := range paths {
		info, ok := reg.Get(p)
		if !ok {
			return fmt.Errorf("dump-db %s: %w", p, ErrNotValid)
		}
		deriver := ""
		if info.Deriver != "" {
			deriver = info.Deriver.String()
		}
		refs := append([]storepath.Path(nil), info.References...)
		sort.Slice(refs, func(i, j int) bool { return refs[i] < refs[j] })
		fmt.Fprintf(&b, "%s\n%s\n%d\n%s\n%d\n", p, info.NarHash.Base16(), info.NarSize, deriver, len(refs))
		for _, r := range refs {
			b.WriteString(r.String() + "\n")
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// Problem is a valid path that does not match its registration.
type Problem struct {
	Path storepath.Path
	Msg  string
}

func (p Problem) String() string { return p.Path.String() + ": " + p.Msg }

// Verify rehashes every valid path and reports those whose NAR hash or size
// differ from the registry, or that are missing.
func (s *Store) Verify(ctx context.Context, reg *registry.Registry, progress func(storepath.Path)) ([]Problem, error) {
	var problems []Problem
	for _, p := range reg.Paths() {
		if err := ctx.Err(); err != nil {
			return problems, err
		}
		if progress != nil {
			progress(p)
		}
		info, _ := reg.Get(p)
		h := sha256.New()
		cw := &countWriter{w: h}
		if err := nar.Dump(cw, s.PhysicalPath(p)); err != nil {
			if isNotExist(err) {
				problems = append(problems, Problem{p, "registered but missing from the store"})
			} else {
				problems = append(problems, Problem{p, err.Error()})
			}
			continue
		}
		var got nixhash.SHA256
		copy(got[:], h.Sum(nil))
		switch {
		case got != info.NarHash:
			problems = append(problems, Problem{p, fmt.Sprintf("hash is %s, registered %s", got, info.NarHash)})
		case cw.n != info.NarSize:
			problems = append(problems, Problem{p, fmt.Sprintf("NAR size is %d, registered %d", cw.n, info.NarSize)})
		}
	}
	return problems, nil
}

type countWriter struct {
	w io.Writer
	n uint64
}

func (c *countWriter) Write(b []byte) (int, error) {
	c.n += uint64(len(b))
	return c.w.Write(b)
}

// Closure returns the given paths and everything they reference, as far as
// the registry knows them.
func Closure(reg *registry.Registry, roots []storepath.Path) map[storepath.Path]bool {
	live := make(map[storepath.Path]bool)
	stack := append([]storepath.Path(nil), roots...)
	for len(stack) > 0 {
		p := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if live[p] {
			continue
		}
		live[p] = true
		if info, ok := reg.Get(p); ok {
			for _, r := range info.References {
				if !live[r] {
					stack = append(stack, r)
				}
			}
		}
	}
	return live
}

// Entries lists the names in the store folder that are store paths, valid
// or not; temporary and trash names are left out.
func (s *Store) Entries() ([]string, error) {
	f, err := os.Open(s.Dir())
	if err != nil {
		if os.IsNotExist(err) {
			return nil, nil
		}
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, n := range names {
		if !strings.HasPrefix(n, ".") {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out, nil
}
