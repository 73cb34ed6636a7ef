package store

import (
	"crypto/sha256"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/roostrouter/roost/updater/atomicfile"
	"github.com/roostrouter/roost/updater/nar"
	"github.com/roostrouter/roost/updater/nixhash"
	"github.com/roostrouter/roost/updater/nixsig"
	"github.com/roostrouter/roost/updater/registry"
	"github.com/roostrouter/roost/updater/storepath"
)

// Txn is a writer holding the store lock. Paths it adds become valid at
// Commit; Close releases the lock and removes what was not committed.
type Txn struct {
	s        *Store
	lock     *os.File
	reg      *registry.Registry
	staged   []*Staged // restored and added, awaiting Commit, references first
	pending  map[storepath.Path]bool
	rooted   []storepath.Path // committed by this Txn, kept by its temp root
	rootFile string
	session  *Session // if set, its temp root keeps what this Txn commits
}

// Staged is a NAR restored under a temporary name.
type Staged struct {
	tmp     string
	NarHash nixhash.SHA256
	NarSize uint64
	info    *registry.Info
}

// Expect is what the sender declared about a NAR; zero fields are not checked.
type Expect struct {
	Path    storepath.Path
	NarHash *nixhash.SHA256
	NarSize uint64
}

// Registry is the registry as this writer sees it.
func (t *Txn) Registry() *registry.Registry { return t.reg }

// Valid reports whether p is valid or added in this Txn.
func (t *Txn) Valid(p storepath.Path) bool {
	_, ok := t.reg.Get(p)
	return ok || t.pending[p]
}

// hashCounter hashes and counts what is read through it.
type hashCounter struct {
	r io.Reader
	h hash.Hash
	n uint64
}

func (hc *hashCounter) Read(b []byte) (int, error) {
	n, err := hc.r.Read(b)
	hc.h.Write(b[:n])
	hc.n += uint64(n)
	return n, err
}

// Restore reads one NAR from r, no byte more, into a temporary name,
// checking its grammar, size and hash while it streams.
func (t *Txn) Restore(r io.Reader, want Expect) (*Staged, error) {
	return t.s.restore(r, want, tmpPrefix+randomSuffix())
}

// restore reads one NAR into the temporary name tmp in the store folder.
func (s *Store) restore(r io.Reader, want Expect, tmp string) (*Staged, error) {
	what := "NAR"
	if want.Path != "" {
		what = "NAR of " + want.Path.String()
	}
	st := &Staged{tmp: filepath.Join(s.Dir(), tmp)}
	hc := &hashCounter{r: r, h: sha256.New()}
	err := nar.Parse(hc, &nar.Restorer{Dir: st.tmp}, int64(want.NarSize))
	if err != nil {
		st.discard()
		return nil, fmt.Errorf("restore %s: %w", what, err)
	}
	st.NarSize = hc.n
	copy(st.NarHash[:], hc.h.Sum(nil))
	if want.NarSize != 0 && st.NarSize != want.NarSize {
		st.discard()
		return nil, fmt.Errorf("restore %s: it has %d bytes, the sender declared %d", what, st.NarSize, want.NarSize)
	}
	if want.NarHash != nil && st.NarHash != *want.NarHash {
		st.discard()
		return nil, fmt.Errorf("restore %s: its hash is %s, the sender declared %s", what, st.NarHash, *want.NarHash)
	}
	s.opts.Crash("restored")
	return st, nil
}

func (st *Staged) discard() {
	removeTree(st.tmp)
}

// Add queues a restored NAR to become valid as info.Path at the next Commit;
// the hash and size are the ones measured. Its references must be valid,
// added before it, or itself. A path that is already valid is dropped.
func (t *Txn) Add(st *Staged, info registry.Info) error {
	if t.Valid(info.Path) {
		st.discard()
		return nil
	}
	for _, ref := range info.References {
		if ref != info.Path && !t.Valid(ref) {
			st.discard()
			return fmt.Errorf("refusing %s: its reference %s is not valid (send references first)", info.Path, ref)
		}
	}
	info.NarHash, info.NarSize = st.NarHash, st.NarSize
	if t.s.opts.TrustedKeys != nil {
		keys, err := t.s.opts.TrustedKeys()
		if err == nil {
			err = nixsig.Check(&info, keys)
		}
		if err != nil {
			st.discard()
			return fmt.Errorf("refusing %s: %w", info.Path, err)
		}
	}
	info.RegistrationTime = t.s.opts.Now().Unix()
	st.info = &info
	t.staged = append(t.staged, st)
	t.pending[info.Path] = true
	return nil
}

// Commit makes everything added valid.
func (t *Txn) Commit() error {
	if len(t.staged) == 0 {
		return nil
	}
	if err := syncFS(t.s.Dir()); err != nil {
		return err
	}
	t.s.opts.Crash("synced")
	var infos []*registry.Info
	for _, st := range t.staged {
		final := t.s.PhysicalPath(st.info.Path)
		if _, err := os.Lstat(final); err == nil {
			// An unregistered leftover of a crash between rename and
			// register, or of an interrupted gc: never valid, so replace it.
			if err := t.trash(st.info.Path); err != nil {
				return err
			}
		}
		if err := os.Rename(st.tmp, final); err != nil {
			return fmt.Errorf("move %s into place: %w", st.info.Path, err)
		}
		st.tmp = ""
		t.s.opts.Crash("renamed")
		infos = append(infos, st.info)
	}
	if err := atomicfile.SyncDir(t.s.Dir()); err != nil {
		return err
	}
	for _, i := range infos {
		t.rooted = append(t.rooted, i.Path)
	}
	if err := t.writeTempRoot(); err != nil {
		return err
	}
	t.s.opts.Crash("before-register")
	if err := t.reg.Commit(infos, nil); err != nil {
		return err
	}
	t.s.opts.Crash("registered")
	t.staged = nil
	t.pending = map[storepath.Path]bool{}
	return nil
}

// writeTempRoot keeps what this Txn committed from gc until it expires
// (the grace period after the writer ends), or while its session lives.
func (t *Txn) writeTempRoot() error {
	if t.session != nil {
		return t.session.Hold(t.rooted...)
	}
	if t.rootFile == "" {
		t.rootFile = filepath.Join(t.s.tempRootsDir(), strconv.FormatInt(t.s.opts.Now().UnixNano(), 10)+"-"+randomSuffix())
	}
	return atomicfile.WriteFile(t.rootFile, formatTempRoot(t.s.opts.Now().Add(t.s.opts.TempRootTTL), t.rooted), 0o644)
}

// trash renames a store entry out of the way, then removes it: removal is
// not atomic, and a partial tree must never stand under a store path's name.
// After a crash, the next writer removes the trash.
func (t *Txn) trash(p storepath.Path) error {
	trashed := filepath.Join(t.s.Dir(), trashPrefix+p.Base())
	if err := os.Rename(t.s.PhysicalPath(p), trashed); err != nil {
		return fmt.Errorf("move %s out of the store: %w", p, err)
	}
	return removeTree(trashed)
}

// Delete makes paths invalid and removes them. Nothing valid may reference
// them. The registry commit is the commit point: from then on the paths are
// gone, whatever happens to their files. It returns the bytes freed on disk.
func (t *Txn) Delete(paths []storepath.Path, invalid []string) (int64, error) {
	if err := t.reg.Commit(nil, paths); err != nil {
		return 0, err
	}
	t.s.opts.Crash("unregistered")
	var names []string
	for _, p := range paths {
		names = append(names, p.Base())
	}
	names = append(names, invalid...)
	var trashed []string
	for _, name := range names {
		src := filepath.Join(t.s.Dir(), name)
		dst := filepath.Join(t.s.Dir(), trashPrefix+name)
		if err := os.Rename(src, dst); err != nil {
			if isNotExist(err) {
				continue
			}
			return 0, fmt.Errorf("move %s out of the store: %w", src, err)
		}
		trashed = append(trashed, dst)
	}
	if err := atomicfile.SyncDir(t.s.Dir()); err != nil {
		return 0, err
	}
	t.s.opts.Crash("trashed")
	var freed int64
	for _, p := range trashed {
		freed += DiskUsage(p)
		if err := removeTree(p); err != nil {
			return freed, err
		}
		t.s.opts.Crash("removed")
	}
	return freed, nil
}

// DiskUsage is the space a file or tree takes on disk.
func DiskUsage(p string) int64 {
	var n int64
	filepath.Walk(p, func(_ string, fi os.FileInfo, err error) error {
		if err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				n += st.Blocks * 512
			} else {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// Discard drops what was added since the last Commit.
func (t *Txn) Discard() {
	for _, st := range t.staged {
		if st.tmp != "" {
			st.discard()
		}
	}
	t.staged = nil
	t.pending = map[storepath.Path]bool{}
}

// Close removes what was restored but not committed, and releases the lock.
func (t *Txn) Close() error {
	t.Discard()
	if t.reg != nil {
		t.reg.Close()
	}
	return t.lock.Close() // closing the descriptor releases the flock
}

// Store returns the store this writer locks.
func (t *Txn) Store() *Store { return t.s }
