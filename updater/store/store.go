// Package store is the router's Nix store: it restores NARs into
// $ROOT/nix/store, registers them in the validity registry, and dumps,
// verifies and deletes them, with one writer at a time.
//
// A new path becomes valid in this order, each step durable before the next:
// restore under a temporary name; syncfs; rename to its final name; fsync the
// store folder; write the transfer's temp root; append the registry records
// (the commit point). A crash before the commit point leaves at most a
// temporary name (removed when the next writer starts) or an unregistered
// final name (replaced by the next import, removed by gc); neither is valid.
//
// A store on a read-only file system (an image board's: the squashfs it
// booted) has no writer: Lock refuses it with ErrReadOnly, and it is read
// without one (Registry, PhysicalPath, dumps).
package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/roostrouter/roost/updater/atomicfile"
	"github.com/roostrouter/roost/updater/nixsig"
	"github.com/roostrouter/roost/updater/registry"
	"github.com/roostrouter/roost/updater/storepath"
)

const (
	tmpPrefix   = ".roost-tmp-"
	trashPrefix = ".roost-trash-"
	// DefaultTempRootTTL is how long paths received by a transfer stay
	// protected from gc after the transfer ended, if nothing activates or
	// pins them: long enough for the activation that follows a copy, short
	// enough that a wrong closure filling the flash can be freed at once.
	DefaultTempRootTTL = 10 * time.Minute
)

// Options are a store's dependencies.
type Options struct {
	Log *slog.Logger
	Now func() time.Time
	// Crash, if set, is called at each named step of a change, so that tests
	// can kill the process there.
	Crash       func(point string)
	TempRootTTL time.Duration
	// TrustedKeys, if it returns keys, makes every new path need a valid
	// signature by one of them before it is registered. An error refuses
	// every new path (the keys could not be known).
	TrustedKeys func() ([]nixsig.PublicKey, error)
}

// Store is a Nix store below a root folder.
type Store struct {
	Root string
	opts Options
}

// New returns the store below root ("/" on the router).
func New(root string, opts Options) *Store {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Crash == nil {
		opts.Crash = func(string) {}
	}
	if opts.TempRootTTL == 0 {
		opts.TempRootTTL = DefaultTempRootTTL
	}
	return &Store{Root: root, opts: opts}
}

// Dir is the physical store folder.
func (s *Store) Dir() string { return filepath.Join(s.Root, storepath.Dir) }

// VarDir holds the registry, the lock, temp roots and pins.
func (s *Store) VarDir() string { return filepath.Join(s.Root, "nix/var/roost") }

// GCRootsDir holds symlinks to store paths that gc must keep.
func (s *Store) GCRootsDir() string { return filepath.Join(s.VarDir(), "gcroots") }

func (s *Store) tempRootsDir() string { return filepath.Join(s.VarDir(), "temproots") }

func (s *Store) registryFile() string { return filepath.Join(s.VarDir(), "registry.log") }

// PhysicalPath is where p lives on this machine's file system.
func (s *Store) PhysicalPath(p storepath.Path) string { return filepath.Join(s.Dir(), p.Base()) }

// Registry loads a read-only snapshot of the registry; it needs no lock.
func (s *Store) Registry() (*registry.Registry, error) {
	return registry.Load(s.registryFile())
}

// ErrReadOnly is Lock's refusal of a store on a read-only file system.
var ErrReadOnly = errors.New("the store is read-only")

// readOnly makes a write's error on a read-only file system ErrReadOnly,
// saying why the store is so.
func readOnly(err error) error {
	if errors.Is(err, syscall.EROFS) {
		return fmt.Errorf("%w (%w): this router boots from an image, whose store changes only as a whole: a new system comes as a new image, written to the spare slot", ErrReadOnly, err)
	}
	return err
}

// Lock takes the store's writer lock, waiting for another writer to finish
// (waiting is called once, with the holder, if it has to), cleans what an
// earlier crashed writer left, and opens the registry for writing.
func (s *Store) Lock(ctx context.Context, who string, waiting func(holder string)) (*Txn, error) {
	for _, d := range []string{s.Dir(), s.VarDir(), s.tempRootsDir(), s.GCRootsDir()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, readOnly(fmt.Errorf("create %s: %w", d, err))
		}
	}
	lockFile := filepath.Join(s.VarDir(), "lock")
	f, err := os.OpenFile(lockFile, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, readOnly(fmt.Errorf("open store lock: %w", err))
	}
	told := false
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", lockFile, err)
		}
		holder, _ := os.ReadFile(lockFile)
		h := strings.TrimSpace(string(holder))
		if h == "" {
			h = "another process"
		}
		if !told && waiting != nil {
			waiting(h)
			told = true
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("store is locked by %s: %w", h, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(fmt.Sprintf("pid %d (%s)\n", os.Getpid(), who)), 0)
	}
	t := &Txn{s: s, lock: f, pending: map[storepath.Path]bool{}}
	if err := s.cleanLeftovers(); err != nil {
		t.Close()
		return nil, err
	}
	if t.reg, err = registry.OpenWritable(s.registryFile()); err != nil {
		t.Close()
		return nil, err
	}
	if t.reg.NeedsCompaction() {
		if err := t.reg.Compact(); err != nil {
			t.Close()
			return nil, err
		}
	}
	return t, nil
}

// cleanLeftovers removes temporary and trash names that a crashed writer
// left; they were never valid.
func (s *Store) cleanLeftovers() error {
	entries, err := os.ReadDir(s.Dir())
	if err != nil {
		return fmt.Errorf("read store: %w", err)
	}
	for _, e := range entries {
		if id := ownerOfTemp(e.Name()); strings.HasPrefix(e.Name(), tmpPrefix) && id != "" && sessionLive(filepath.Join(s.tempRootsDir(), id)) {
			continue // a running transfer's, restored without the lock
		}
		if strings.HasPrefix(e.Name(), tmpPrefix) || strings.HasPrefix(e.Name(), trashPrefix) {
			p := filepath.Join(s.Dir(), e.Name())
			s.opts.Log.Info("removing leftover of an interrupted write", "path", p)
			if err := removeTree(p); err != nil {
				return err
			}
		}
	}
	for _, d := range []string{s.VarDir(), s.tempRootsDir()} {
		if err := atomicfile.Clean(d); err != nil {
			return err
		}
	}
	return nil
}

// removeTree removes a file or a tree whose folders are read-only.
func removeTree(p string) error {
	if err := os.RemoveAll(p); err == nil {
		return nil
	}
	filepath.Walk(p, func(q string, fi os.FileInfo, err error) error {
		if err == nil && fi.IsDir() {
			os.Chmod(q, 0o700)
		}
		return nil
	})
	if err := os.RemoveAll(p); err != nil {
		return fmt.Errorf("remove %s: %w", p, err)
	}
	return nil
}

func randomSuffix() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// syncFS flushes the whole file system holding dir: one call instead of an
// fsync per restored file.
func syncFS(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return fmt.Errorf("syncfs %s: %w", dir, err)
	}
	return nil
}

// TempRoot is what one transfer's temp root keeps from gc.
type TempRoot struct {
	ID      string           `json:"id"`
	Running bool             `json:"running"` // the transfer is still under way
	Expires time.Time        `json:"expires"` // when it ends, if not running
	Paths   []storepath.Path `json:"paths"`
}

// TempRoots returns the live temp roots (running transfers', and ended
// ones' within their grace period), and removes expired ones. The caller
// holds the lock.
func (t *Txn) TempRoots() ([]TempRoot, error) {
	dir := t.s.tempRootsDir()
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read temp roots: %w", err)
	}
	now := t.s.opts.Now()
	var out []TempRoot
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		tr, err := readTempRoot(p)
		tr.ID, tr.Running = e.Name(), sessionLive(p)
		if err != nil && !tr.Running {
			// Torn by a crash of its writer (it is rewritten in place):
			// what it held was never activated, and it protects nothing.
			t.s.opts.Log.Warn("removing an unreadable temp root", "file", p, "err", err)
			if err := os.Remove(p); err != nil {
				return nil, fmt.Errorf("remove unreadable temp root: %w", err)
			}
			continue
		}
		if !tr.Running && now.After(tr.Expires) {
			if err := os.Remove(p); err != nil {
				return nil, fmt.Errorf("remove expired temp root: %w", err)
			}
			continue
		}
		out = append(out, tr)
	}
	return out, nil
}

// ReleaseTempRoots drops the paths that an activation took over (taken)
// from the temp roots of ended transfers; a root left empty goes. Running
// transfers keep theirs until they end. The caller holds the lock.
func (t *Txn) ReleaseTempRoots(taken map[storepath.Path]bool) error {
	roots, err := t.TempRoots()
	if err != nil {
		return err
	}
	for _, r := range roots {
		if r.Running {
			continue
		}
		file := filepath.Join(t.s.tempRootsDir(), r.ID)
		var left []storepath.Path
		for _, p := range r.Paths {
			if !taken[p] {
				left = append(left, p)
			}
		}
		switch {
		case len(left) == len(r.Paths):
			continue
		case len(left) == 0:
			err = os.Remove(file)
		default:
			err = atomicfile.WriteFile(file, formatTempRoot(r.Expires, left), 0o644)
		}
		if err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("release temp root %s: %w", file, err)
		}
	}
	return nil
}

// formatTempRoot is a temp root file's content.
func formatTempRoot(expires time.Time, paths []storepath.Path) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "expires %d\n", expires.Unix())
	for _, p := range paths {
		b.WriteString(p.Base() + "\n")
	}
	return []byte(b.String())
}

// A temp root file is "expires <unix seconds>" then one store path a line.
func readTempRoot(file string) (TempRoot, error) {
	var tr TempRoot
	data, err := os.ReadFile(file)
	if err != nil {
		return tr, err
	}
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	exp, ok := strings.CutPrefix(lines[0], "expires ")
	if !ok {
		return tr, errors.New("no expires line")
	}
	secs, err := strconv.ParseInt(exp, 10, 64)
	if err != nil {
		return tr, fmt.Errorf("expires: %w", err)
	}
	tr.Expires = time.Unix(secs, 0)
	for _, l := range lines[1:] {
		p, err := storepath.ParseBase(l)
		if err != nil {
			return tr, err
		}
		tr.Paths = append(tr.Paths, p)
	}
	return tr, nil
}

func isNotExist(err error) bool {
	return errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ENOENT)
}
