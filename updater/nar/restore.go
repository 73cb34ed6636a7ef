package nar

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Restorer is a Handler that writes the archive below Dir, which must not
// exist yet, with the metadata Nix gives store paths: files 0444 or 0555,
// directories 0555, every timestamp 1 s after the epoch.
//
// It does not fsync each file: the caller syncs the file system once
// (syncfs) before it renames the result into place, which is far cheaper on
// closures of many small files and just as durable.
type Restorer struct {
	Dir string
	buf []byte
}

// epochPlusOne is the timestamp Nix gives everything in the store.
var epochPlusOne = []unix.Timespec{{Sec: 1}, {Sec: 1}}

func (r *Restorer) path(name string) string {
	if name == "" {
		return r.Dir
	}
	return filepath.Join(r.Dir, name)
}

func setTimes(p string) error {
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, epochPlusOne, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set timestamps of %s: %w", p, err)
	}
	return nil
}

// Directory creates a directory writable by its owner until DirectoryDone.
func (r *Restorer) Directory(name string) error {
	p := r.path(name)
	if err := os.Mkdir(p, 0o700); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	return nil
}

// DirectoryDone makes the directory read-only and sets its timestamps, after
// its last entry, since adding entries changes them.
func (r *Restorer) DirectoryDone(name string) error {
	p := r.path(name)
	if err := os.Chmod(p, 0o555); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	return setTimes(p)
}

// Regular writes a file.
func (r *Restorer) Regular(name string, executable bool, size int64, contents io.Reader) error {
	p := r.path(name)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	if r.buf == nil {
		r.buf = make([]byte, 128<<10)
	}
	mode := os.FileMode(0o444)
	if executable {
		mode = 0o555
	}
	_, err = io.CopyBuffer(onlyWriter{f}, contents, r.buf)
	if err == nil {
		err = f.Chmod(mode)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		var perr *Error
		if errors.As(err, &perr) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return err
		}
		return fmt.Errorf("restore %s: %w", p, err)
	}
	return setTimes(p)
}

// Symlink creates a symbolic link.
func (r *Restorer) Symlink(name, target string) error {
	p := r.path(name)
	if err := os.Symlink(target, p); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	return setTimes(p)
}

// onlyWriter hides *os.File's ReadFrom so that io.CopyBuffer uses our buffer
// and reads through the caller's hashing reader in large chunks.
type onlyWriter struct{ io.Writer }

// Discard is a Handler that only checks the grammar.
type Discard struct{}

func (Discard) Directory(string) error     { return nil }
func (Discard) DirectoryDone(string) error { return nil }
func (Discard) Symlink(string, string) error {
	return nil
}
func (Discard) Regular(_ string, _ bool, _ int64, contents io.Reader) error {
	_, err := io.Copy(io.Discard, contents)
	return err
}
