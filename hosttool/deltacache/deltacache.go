// Package deltacache keeps, on the laptop, the deltas roost computed, by
// their kind and the NAR hashes of their base and target, so that a second
// router at the same version, or a retried rebuild, costs no compression.
//
// Invariants: an entry is written under a temporary name, fsynced, and
// renamed into place (the folder fsynced), so a crash leaves a whole entry
// or none. Every entry holds its key and the SHA-256 of its data, checked
// on every read: an entry that is corrupt, cut short or for another key is
// removed, never returned. After each Put the folder is brought within its
// size bound by removing the entries used least recently (a read counts as
// a use).
package deltacache

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/roostrouter/roost/updater/atomicfile"
)

// DefaultMaxBytes bounds the cache's folder unless told otherwise.
const DefaultMaxBytes = 256 << 20

const (
	magic = "roost-delta-cache 1\n"
	ext   = ".delta"
)

// Cache is a folder of deltas.
type Cache struct {
	dir      string
	maxBytes int64
	now      func() time.Time
	mu       sync.Mutex // one eviction at a time
}

// Open returns the cache in dir (made on the first Put), bounded to
// maxBytes (DefaultMaxBytes if 0).
func Open(dir string, maxBytes int64) *Cache {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBytes
	}
	return &Cache{dir: dir, maxBytes: maxBytes, now: time.Now}
}

// Dir is where roost keeps deltas: roost/deltas in the user's cache
// folder ($XDG_CACHE_HOME, else ~/.cache), as os.UserCacheDir says it on
// Linux, read through getenv.
func Dir(getenv func(string) string) (string, error) {
	base := getenv("XDG_CACHE_HOME")
	if base == "" {
		home := getenv("HOME")
		if home == "" {
			return "", errors.New("neither $XDG_CACHE_HOME nor $HOME is set: no folder for roost's delta cache")
		}
		base = filepath.Join(home, ".cache")
	}
	return filepath.Join(base, "roost", "deltas"), nil
}

func (c *Cache) file(key string) string {
	sum := sha256.Sum256([]byte(key))
	return filepath.Join(c.dir, hex.EncodeToString(sum[:])+ext)
}

// Get returns the delta kept for key, if there is a sound one.
func (c *Cache) Get(key string) ([]byte, bool) {
	name := c.file(key)
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, false
	}
	data, err := decode(b, key)
	if err != nil {
		os.Remove(name)
		return nil, false
	}
	now := c.now()
	os.Chtimes(name, now, now) // used: the last to go
	return data, true
}

// decode checks an entry and returns its data.
func decode(b []byte, key string) ([]byte, error) {
	rest, ok := bytes.CutPrefix(b, []byte(magic))
	if !ok {
		return nil, errors.New("not an entry")
	}
	k, rest, ok := bytes.Cut(rest, []byte("\n"))
	if !ok || string(k) != key {
		return nil, errors.New("an entry for another key")
	}
	sum, data, ok := bytes.Cut(rest, []byte("\n"))
	want := sha256.Sum256(data)
	if !ok || string(sum) != hex.EncodeToString(want[:]) {
		return nil, errors.New("corrupt")
	}
	return data, nil
}

// Put keeps data for key, crash-safely, then evicts what exceeds the
// bound. A delta larger than the whole bound is not kept.
func (c *Cache) Put(key string, data []byte) error {
	if strings.Contains(key, "\n") {
		return fmt.Errorf("delta cache: a key with a newline: %q", key)
	}
	sum := sha256.Sum256(data)
	entry := make([]byte, 0, len(magic)+len(key)+66+len(data))
	entry = append(append(append(entry, magic...), key...), '\n')
	entry = append(append(entry, hex.EncodeToString(sum[:])...), '\n')
	entry = append(entry, data...)
	if int64(len(entry)) > c.maxBytes {
		return nil
	}
	if err := os.MkdirAll(c.dir, 0o700); err != nil {
		return fmt.Errorf("delta cache: %w", err)
	}
	name := c.file(key)
	if err := atomicfile.WriteFile(name, entry, 0o600); err != nil {
		return fmt.Errorf("delta cache: %w", err)
	}
	now := c.now()
	os.Chtimes(name, now, now)
	return c.evict()
}

// staleTemp is how old a temporary file must be to be taken for a crashed
// write's: younger ones may be another writer's, about to be renamed.
const staleTemp = 10 * time.Minute

// evict removes the least recently used entries until the folder fits
// its bound, and what a crash left under temporary names.
func (c *Cache) evict() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	entries, err := os.ReadDir(c.dir)
	if err != nil {
		return fmt.Errorf("delta cache: %w", err)
	}
	type file struct {
		name string
		size int64
		used time.Time
	}
	var files []file
	var total int64
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".tmp-") {
			if fi, err := e.Info(); err == nil && c.now().Sub(fi.ModTime()) > staleTemp {
				os.Remove(filepath.Join(c.dir, e.Name()))
			}
			continue
		}
		if !strings.HasSuffix(e.Name(), ext) {
			continue
		}
		if fi, err := e.Info(); err == nil && fi.Mode().IsRegular() {
			files = append(files, file{e.Name(), fi.Size(), fi.ModTime()})
			total += fi.Size()
		}
	}
	slices.SortFunc(files, func(a, b file) int { return a.used.Compare(b.used) })
	for _, f := range files {
		if total <= c.maxBytes {
			break
		}
		if err := os.Remove(filepath.Join(c.dir, f.name)); err == nil || errors.Is(err, os.ErrNotExist) {
			total -= f.size
		}
	}
	return nil
}
