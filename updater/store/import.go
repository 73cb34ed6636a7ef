package store

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/roostrouter/roost/updater/nixexport"
	"github.com/roostrouter/roost/updater/registry"
	"github.com/roostrouter/roost/updater/storepath"
)

// ImportResult says what an import did.
type ImportResult struct {
	Added   []storepath.Path // newly valid
	Present []storepath.Path // already valid, left alone
	Bytes   uint64           // NAR bytes read
}

// ImportExport reads a `nix-store --export` stream and makes its paths
// valid, all or none: they are committed together once the stream's end
// marker has arrived, so a cut or bad stream changes nothing. (roost's own
// transfer protocol commits path by path, to resume; this is the plain-sshd
// fallback.) One commit also means one syncfs for the whole closure.
func (t *Txn) ImportExport(ctx context.Context, r io.Reader, progress func(storepath.Path, uint64)) (ImportResult, error) {
	var res ImportResult
	if err := t.importExport(ctx, bufio.NewReaderSize(r, 256<<10), progress, &res); err != nil {
		t.Discard()
		return ImportResult{}, err
	}
	return res, t.Commit()
}

func (t *Txn) importExport(ctx context.Context, br *bufio.Reader, progress func(storepath.Path, uint64), res *ImportResult) error {
	return readExport(ctx, br, t.Restore, func(st *Staged, tr nixexport.Trailer) error {
		res.Bytes += st.NarSize
		if t.Valid(tr.Path) {
			res.Present = append(res.Present, tr.Path)
		} else {
			res.Added = append(res.Added, tr.Path)
		}
		if err := t.Add(st, registry.Info{Path: tr.Path, References: tr.References, Deriver: tr.Deriver}); err != nil {
			res.Added = res.Added[:len(res.Added)-1]
			return fmt.Errorf("import: %w", err)
		}
		if progress != nil {
			progress(tr.Path, st.NarSize)
		}
		return nil
	})
}

// readExport reads an export stream's entries, restoring each NAR with
// restore and handing it with its trailer to add.
func readExport(ctx context.Context, br *bufio.Reader, restore func(io.Reader, Expect) (*Staged, error), add func(*Staged, nixexport.Trailer) error) error {
	for n := 1; ; n++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		more, err := nixexport.Next(br)
		if err != nil {
			if n == 1 {
				return fmt.Errorf("import: %w", err)
			}
			return fmt.Errorf("import, after path %d: %w", n-1, err)
		}
		if !more {
			return nil
		}
		st, err := restore(br, Expect{})
		if err != nil {
			return fmt.Errorf("import, path %d: %w", n, err)
		}
		tr, err := nixexport.ReadTrailer(br)
		if err != nil {
			st.discard()
			return fmt.Errorf("import, path %d: %w", n, err)
		}
		if err := add(st, tr); err != nil {
			return err
		}
	}
}

// ErrNotValid is returned for a path that is not in the registry.
var ErrNotValid = errors.New("not a valid store path")
