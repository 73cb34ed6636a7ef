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

// Regular writes a file. It uses the system calls directly: an *os.File
// would register each file with Go's poller, three wasted calls a file,
// which on closures of thousands of small files is most of the cost.
func (r *Restorer) Regular(name string, executable bool, size int64, contents io.Reader) error {
	p := r.path(name)
	fd, err := unix.Open(p, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("restore: create %s: %w", p, err)
	}
	if r.buf == nil {
		r.buf = make([]byte, 128<<10)
	}
	mode := uint32(0o444)
	if executable {
		mode = 0o555
	}
	_, err = io.CopyBuffer(fdWriter(fd), contents, r.buf)
	if err == nil {
		err = unix.Fchmod(fd, mode)
	}
	if err == nil {
		err = unix.UtimesNanoAt(unix.AT_FDCWD, p, epochPlusOne, 0)
	}
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	if err != nil {
		var perr *Error
		if errors.As(err, &perr) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return err
		}
		return fmt.Errorf("restore %s: %w", p, err)
	}
	return nil
}

// fdWriter writes to a file descriptor.
type fdWriter int

func (fd fdWriter) Write(b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := unix.Write(int(fd), b[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return n, err
		}
		n += m
	}
	return n, nil
}

// Symlink creates a symbolic link.
func (r *Restorer) Symlink(name, target string) error {
	p := r.path(name)
	if err := os.Symlink(target, p); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	return setTimes(p)
}

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
