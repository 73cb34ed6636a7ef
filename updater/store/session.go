package store

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/roostrouter/roost/updater/nixexport"
	"github.com/roostrouter/roost/updater/registry"
	"github.com/roostrouter/roost/updater/storepath"
)

// Session is a transfer's hold on the store. It restores NARs without the
// writer lock, into temporary names that no other writer removes while the
// session lives, and takes the lock only to make a batch valid (Commit): a
// peer that stalls holds up nobody else.
//
// Its temp root (temproots/<id>, flocked while the session lives) keeps
// what it holds and received from gc until the session ends, then for the
// store's TempRootTTL (a short grace period, so that the activation that
// follows a copy finds its paths), or until an activation takes them over.
type Session struct {
	s     *Store
	lock  func(ctx context.Context) (*Txn, error)
	id    string
	file  *os.File
	held  []storepath.Path
	isSet map[storepath.Path]bool
}

// Item is a restored NAR and what it becomes valid as.
type Item struct {
	Staged *Staged
	Info   registry.Info
}

// NewSession starts a session; lock takes the writer lock for a commit.
func (s *Store) NewSession(lock func(ctx context.Context) (*Txn, error)) (*Session, error) {
	for _, d := range []string{s.Dir(), s.tempRootsDir()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("create %s: %w", d, err)
		}
	}
	ss := &Session{s: s, lock: lock, id: strconv.FormatInt(s.opts.Now().UnixNano(), 10) + "-" + randomSuffix(),
		isSet: map[storepath.Path]bool{}}
	f, err := os.OpenFile(ss.rootFile(), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, fmt.Errorf("create temp root: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		os.Remove(ss.rootFile())
		return nil, fmt.Errorf("lock temp root %s: %w", ss.rootFile(), err)
	}
	ss.file = f
	return ss, ss.writeRoot()
}

func (ss *Session) rootFile() string { return filepath.Join(ss.s.tempRootsDir(), ss.id) }

// Hold keeps paths from gc for as long as the root lasts. Call it with the
// writer lock held (in Txn) for paths that are valid, so that gc cannot
// take them between the check and the hold.
func (ss *Session) Hold(paths ...storepath.Path) error {
	for _, p := range paths {
		if !ss.isSet[p] {
			ss.isSet[p] = true
			ss.held = append(ss.held, p)
		}
	}
	return ss.writeRoot()
}

// writeRoot rewrites the temp root in place: its name and flock stay.
func (ss *Session) writeRoot() error {
	// Written over in place, never truncated first: the paths only grow,
	// so a reader (gc) sees all that was held before, whatever it reads.
	b := formatTempRoot(ss.s.opts.Now().Add(ss.s.opts.TempRootTTL), ss.held)
	if _, err := ss.file.WriteAt(b, 0); err != nil {
		return fmt.Errorf("write temp root: %w", err)
	}
	if err := ss.file.Truncate(int64(len(b))); err != nil {
		return fmt.Errorf("write temp root: %w", err)
	}
	return ss.file.Sync()
}

// Restore reads one NAR into a temporary name of this session, as
// Txn.Restore does, without the lock.
func (ss *Session) Restore(r io.Reader, want Expect) (*Staged, error) {
	return ss.s.restore(r, want, tmpPrefix+ss.id+"."+randomSuffix())
}

// Lock takes the writer lock for a commit of this session's: what the
// Txn commits is held by the session's temp root.
func (ss *Session) Lock(ctx context.Context) (*Txn, error) {
	t, err := ss.lock(ctx)
	if err != nil {
		return nil, err
	}
	t.session = ss
	return t, nil
}

// Commit makes items valid in one commit, under the writer lock, and
// returns the paths that were not valid before. Items are discarded
// whatever happens.
func (ss *Session) Commit(ctx context.Context, items []Item) ([]storepath.Path, error) {
	if len(items) == 0 {
		return nil, nil
	}
	t, err := ss.Lock(ctx)
	if err != nil {
		Discard(items)
		return nil, err
	}
	defer t.Close()
	var added []storepath.Path
	for i, it := range items {
		if !t.Valid(it.Info.Path) {
			added = append(added, it.Info.Path)
		}
		if err := t.Add(it.Staged, it.Info); err != nil {
			Discard(items[i+1:])
			return nil, err
		}
	}
	if err := t.Commit(); err != nil {
		return nil, err
	}
	return added, nil
}

// Discard removes restored NARs that will not be committed.
func Discard(items []Item) {
	for _, it := range items {
		if it.Staged != nil && it.Staged.tmp != "" {
			it.Staged.discard()
		}
	}
}

// Close ends the session: its temp root lasts for the grace period.
func (ss *Session) Close() error {
	if ss.file == nil {
		return nil
	}
	err := ss.writeRoot()
	ss.file.Close() // releases the flock
	ss.file = nil
	return err
}

// ImportExport reads a `nix-store --export` stream and makes its paths
// valid, all or none, as Txn.ImportExport does, holding the writer lock
// only for the commit once the whole stream has arrived.
func (ss *Session) ImportExport(ctx context.Context, r io.Reader, progress func(storepath.Path, uint64)) (ImportResult, error) {
	var res ImportResult
	var items []Item
	br := bufio.NewReaderSize(r, 256<<10)
	err := readExport(ctx, br, ss.Restore, func(st *Staged, tr nixexport.Trailer) error {
		res.Bytes += st.NarSize
		items = append(items, Item{Staged: st, Info: registry.Info{Path: tr.Path, References: tr.References, Deriver: tr.Deriver}})
		if progress != nil {
			progress(tr.Path, st.NarSize)
		}
		return nil
	})
	if err != nil {
		Discard(items)
		return ImportResult{}, err
	}
	added, err := ss.Commit(ctx, items)
	if err != nil {
		return ImportResult{}, fmt.Errorf("import: %w", err)
	}
	res.Added = added
	isAdded := map[storepath.Path]bool{}
	for _, p := range added {
		isAdded[p] = true
	}
	for _, it := range items {
		if !isAdded[it.Info.Path] {
			res.Present = append(res.Present, it.Info.Path)
		}
	}
	return res, nil
}

// sessionLive reports whether the session whose temp root is file is still
// running: it holds the root's flock.
func sessionLive(file string) bool {
	f, err := os.Open(file)
	if err != nil {
		return false
	}
	defer f.Close()
	err = unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB)
	if err == nil {
		unix.Flock(int(f.Fd()), unix.LOCK_UN)
		return false
	}
	return errors.Is(err, unix.EWOULDBLOCK)
}

// ownerOfTemp returns the session a temporary store name belongs to ("" for
// a Txn's own, which only the lock holder makes).
func ownerOfTemp(name string) string {
	id, _, ok := strings.Cut(strings.TrimPrefix(name, tmpPrefix), ".")
	if !ok {
		return ""
	}
	return id
}
