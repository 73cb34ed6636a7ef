// Package atomicfile replaces files and symlinks crash-safely: write under a
// temporary name, fsync, rename over the old name, fsync the folder.
//
// After a crash the name holds either the old content or the new, never a
// mix; the commit point is the rename, made durable by the folder's fsync.
package atomicfile

import (
	"fmt"
	"os"
	"path/filepath"
)

// tempPrefix marks temporary names, which Clean removes.
const tempPrefix = ".tmp-"

// WriteFile replaces name with data.
func WriteFile(name string, data []byte, perm os.FileMode) error {
	dir, base := filepath.Split(name)
	f, err := os.CreateTemp(dir, tempPrefix+base+"-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(perm)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, name)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", name, err)
	}
	return SyncDir(dir)
}

// Symlink points name at target, replacing whatever name was.
func Symlink(target, name string) error {
	dir, base := filepath.Split(name)
	tmp := filepath.Join(dir, tempPrefix+base)
	os.Remove(tmp)
	if err := os.Symlink(target, tmp); err != nil {
		return fmt.Errorf("link %s to %s: %w", name, target, err)
	}
	if err := os.Rename(tmp, name); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("link %s to %s: %w", name, target, err)
	}
	return SyncDir(dir)
}

// SyncDir makes the folder's entries (creations, renames, removals) durable.
func SyncDir(dir string) error {
	if dir == "" {
		dir = "."
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync folder %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync folder %s: %w", dir, err)
	}
	return nil
}

// Clean removes temporary names left in dir by a crash.
func Clean(dir string) error {
	matches, err := filepath.Glob(filepath.Join(dir, tempPrefix+"*"))
	if err != nil {
		return err
	}
	for _, m := range matches {
		if err := os.Remove(m); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("remove leftover %s: %w", m, err)
		}
	}
	return nil
}
