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
	d := &dumper{w: bufio.NewWriterSize(w, 64<<10)}
	d.str(magic)
	if err := d.node(root); err != nil {
		return err
	}
	return d.w.Flush()
}

// dumper writes to a bufio.Writer, which remembers the first write error and
// returns it from Flush, so the individual writes need no checks.
type dumper struct {
	w   *bufio.Writer
	buf [8]byte
}

func (d *dumper) uint64(n uint64) {
	binary.LittleEndian.PutUint64(d.buf[:], n)
	d.w.Write(d.buf[:])
}

func (d *dumper) pad(n uint64) {
	var zero [8]byte
	d.w.Write(zero[:(8-n%8)%8])
}

func (d *dumper) str(s string) {
	d.uint64(uint64(len(s)))
	d.w.WriteString(s)
	d.pad(uint64(len(s)))
}

func (d *dumper) strs(ss ...string) {
	for _, s := range ss {
		d.str(s)
	}
}

func (d *dumper) node(p string) error {
	fi, err := os.Lstat(p)
	if err != nil {
		return fmt.Errorf("dump %s: %w", p, err)
	}
	d.strs("(", "type")
	switch mode := fi.Mode(); {
	case mode.IsRegular():
		d.str("regular")
		if mode&0o100 != 0 {
			d.strs("executable", "")
		}
		d.str("contents")
		if err := d.contents(p, fi.Size()); err != nil {
			return err
		}
	case mode&os.ModeSymlink != 0:
		target, err := os.Readlink(p)
		if err != nil {
			return fmt.Errorf("dump %s: %w", p, err)
		}
		d.strs("symlink", "target", target)
	case mode.IsDir():
		d.str("directory")
		names, err := readDirNames(p)
		if err != nil {
			return fmt.Errorf("dump %s: %w", p, err)
		}
		for _, name := range names {
			d.strs("entry", "(", "name", name, "node")
			if err := d.node(filepath.Join(p, name)); err != nil {
				return err
			}
			d.str(")")
		}
	default:
		return fmt.Errorf("dump %s: file type %v cannot be put in a NAR", p, mode.Type())
	}
	d.str(")")
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

func (d *dumper) contents(p string, size int64) error {
	f, err := os.Open(p)
	if err != nil {
		return fmt.Errorf("dump %s: %w", p, err)
	}
	defer f.Close()
	d.uint64(uint64(size))
	n, err := io.Copy(d.w, io.LimitReader(f, size))
	if err != nil {
		return fmt.Errorf("dump %s: %w", p, err)
	}
	if n != size {
		return fmt.Errorf("dump %s: file shrank from %d to %d bytes while being read", p, size, n)
	}
	d.pad(uint64(size))
	return nil
}
