package nar

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
)

// Dump writes the NAR of the file, symlink or directory at root to w,
// byte-identical to `nix-store --dump`.
func Dump(w io.Writer, root string) error {
	nw := NewWriter(w)
	if err := dumpNode(nw, root); err != nil {
		return err
	}
	return nw.Flush()
}

// Writer emits a NAR node by node. It writes through a bufio.Writer, which
// keeps the first error and returns it from Flush, so most methods return
// nothing.
type Writer struct {
	w   *bufio.Writer
	buf [8]byte
}

// NewWriter starts a NAR on w.
func NewWriter(w io.Writer) *Writer {
	nw := &Writer{w: bufio.NewWriterSize(w, 64<<10)}
	nw.str(magic)
	return nw
}

func (w *Writer) uint64(n uint64) {
	binary.LittleEndian.PutUint64(w.buf[:], n)
	w.w.Write(w.buf[:])
}

func (w *Writer) pad(n uint64) {
	var zero [8]byte
	w.w.Write(zero[:(8-n%8)%8])
}

func (w *Writer) str(ss ...string) {
	for _, s := range ss {
		w.uint64(uint64(len(s)))
		w.w.WriteString(s)
		w.pad(uint64(len(s)))
	}
}

// Regular writes a whole file node of size bytes read from r.
func (w *Writer) Regular(executable bool, size int64, r io.Reader) error {
	w.str("(", "type", "regular")
	if executable {
		w.str("executable", "")
	}
	w.str("contents")
	w.uint64(uint64(size))
	n, err := io.Copy(w.w, io.LimitReader(r, size))
	if err != nil {
		return err
	}
	if n != size {
		return fmt.Errorf("file has %d bytes, %d were announced", n, size)
	}
	w.pad(uint64(size))
	w.str(")")
	return nil
}

// Symlink writes a whole symlink node.
func (w *Writer) Symlink(target string) { w.str("(", "type", "symlink", "target", target, ")") }

// StartDirectory opens a directory node; entries follow, in byte order,
// then EndDirectory.
func (w *Writer) StartDirectory() { w.str("(", "type", "directory") }

// Entry opens a directory entry; its node follows, then EndEntry.
func (w *Writer) Entry(name string) { w.str("entry", "(", "name", name, "node") }

// EndEntry closes a directory entry.
func (w *Writer) EndEntry() { w.str(")") }

// EndDirectory closes a directory node.
func (w *Writer) EndDirectory() { w.str(")") }

// Flush writes what is buffered and returns the first error met.
func (w *Writer) Flush() error { return w.w.Flush() }

func dumpNode(w *Writer, p string) error {
	fi, err := os.Lstat(p)
	if err != nil {
		return fmt.Errorf("dump %s: %w", p, err)
	}
	switch mode := fi.Mode(); {
	case mode.IsRegular():
		f, err := os.Open(p)
		if err != nil {
			return fmt.Errorf("dump %s: %w", p, err)
		}
		defer f.Close()
		if err := w.Regular(mode&0o100 != 0, fi.Size(), f); err != nil {
			return fmt.Errorf("dump %s: %w", p, err)
		}
	case mode&os.ModeSymlink != 0:
		target, err := os.Readlink(p)
		if err != nil {
			return fmt.Errorf("dump %s: %w", p, err)
		}
		w.Symlink(target)
	case mode.IsDir():
		names, err := readDirNames(p)
		if err != nil {
			return fmt.Errorf("dump %s: %w", p, err)
		}
		w.StartDirectory()
		for _, name := range names {
			w.Entry(name)
			if err := dumpNode(w, filepath.Join(p, name)); err != nil {
				return err
			}
			w.EndEntry()
		}
		w.EndDirectory()
	default:
		return fmt.Errorf("dump %s: file type %v cannot be put in a NAR", p, mode.Type())
	}
	return nil
}

func readDirNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	sort.Strings(names) // byte order, as Nix sorts
	return names, err
}
