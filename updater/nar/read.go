// Package nar reads, restores and writes Nix archives (NAR), the canonical
// serialisation of a store path that Nix hashes.
//
// The reader checks the whole grammar while it streams and never holds more
// than one name or symlink target in memory.
package nar

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"path"
	"strings"
)

const (
	magic = "nix-archive-1"

	// MaxNameLen is the longest entry name accepted, the limit of Linux file systems.
	MaxNameLen = 255
	// MaxTargetLen is the longest symlink target accepted (PATH_MAX less the NUL).
	MaxTargetLen = 4095
	// MaxDepth bounds directory nesting so that hostile input cannot exhaust the stack.
	MaxDepth = 256
	maxToken = 16
)

// Handler receives the nodes of a NAR in order. Paths are relative to the
// archive's root, which is "".
type Handler interface {
	Directory(name string) error
	// DirectoryDone is called after the last entry of a directory.
	DirectoryDone(name string) error
	// Regular must read contents to its end or return an error.
	Regular(name string, executable bool, size int64, contents io.Reader) error
	Symlink(name, target string) error
}

// Error is a violation of the NAR grammar or of a limit, with the byte offset
// at which it was found.
type Error struct {
	Offset int64
	Entry  string
	Msg    string
}

func (e *Error) Error() string {
	entry := e.Entry
	if entry == "" {
		entry = "/"
	}
	return fmt.Sprintf("invalid NAR at byte %d (entry %s): %s", e.Offset, entry, e.Msg)
}

// Parse reads exactly one NAR from r, no byte more, and calls h for each node.
// maxSize, if positive, is the size the caller expects: a NAR that declares
// or reaches more is refused at once, before its data is read.
func Parse(r io.Reader, h Handler, maxSize int64) error {
	p := &parser{r: r, h: h, max: maxSize}
	if maxSize <= 0 {
		p.max = math.MaxInt64
	}
	if err := p.expect("", magic); err != nil {
		return &Error{Msg: "not a NAR: it does not start with \"" + magic + "\""}
	}
	return p.node("", 0)
}

type parser struct {
	r   io.Reader
	h   Handler
	n   int64
	max int64
	buf [8]byte
}

func (p *parser) errorf(entry, format string, args ...any) error {
	return &Error{Offset: p.n, Entry: entry, Msg: fmt.Sprintf(format, args...)}
}

func (p *parser) readFull(entry string, b []byte) error {
	if p.n+int64(len(b)) > p.max {
		return p.errorf(entry, "longer than the expected %d bytes", p.max)
	}
	if _, err := io.ReadFull(p.r, b); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return p.errorf(entry, "truncated")
		}
		return fmt.Errorf("read NAR at byte %d: %w", p.n, err)
	}
	p.n += int64(len(b))
	return nil
}

func (p *parser) uint64(entry string) (uint64, error) {
	if err := p.readFull(entry, p.buf[:]); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(p.buf[:]), nil
}

func (p *parser) padding(entry string, n uint64) error {
	pad := (8 - n%8) % 8
	if pad == 0 {
		return nil
	}
	b := p.buf[:pad]
	if err := p.readFull(entry, b); err != nil {
		return err
	}
	for _, c := range b {
		if c != 0 {
			return p.errorf(entry, "non-zero padding")
		}
	}
	return nil
}

func (p *parser) string(entry, what string, maxLen int) (string, error) {
	n, err := p.uint64(entry)
	if err != nil {
		return "", err
	}
	if n > uint64(maxLen) {
		return "", p.errorf(entry, "%s of %d bytes is longer than the %d allowed", what, n, maxLen)
	}
	b := make([]byte, n)
	if err := p.readFull(entry, b); err != nil {
		return "", err
	}
	if err := p.padding(entry, n); err != nil {
		return "", err
	}
	return string(b), nil
}

func (p *parser) expect(entry, want string) error {
	got, err := p.string(entry, "token", maxToken)
	if err != nil {
		return err
	}
	if got != want {
		return p.errorf(entry, "expected %q, found %q", want, got)
	}
	return nil
}

func (p *parser) node(name string, depth int) error {
	if depth > MaxDepth {
		return p.errorf(name, "directories nested deeper than %d", MaxDepth)
	}
	if err := p.expect(name, "("); err != nil {
		return err
	}
	if err := p.expect(name, "type"); err != nil {
		return err
	}
	typ, err := p.string(name, "type", maxToken)
	if err != nil {
		return err
	}
	switch typ {
	case "regular":
		err = p.regular(name)
	case "symlink":
		err = p.symlink(name)
	case "directory":
		// The loop over entries ends by consuming the directory's ")".
		return p.directory(name, depth)
	default:
		return p.errorf(name, "unknown node type %q", typ)
	}
	if err != nil {
		return err
	}
	return p.expect(name, ")")
}

func (p *parser) regular(name string) error {
	tok, err := p.string(name, "token", maxToken)
	if err != nil {
		return err
	}
	executable := false
	if tok == "executable" {
		if err := p.expect(name, ""); err != nil {
			return err
		}
		executable = true
		if tok, err = p.string(name, "token", maxToken); err != nil {
			return err
		}
	}
	if tok != "contents" {
		return p.errorf(name, "expected \"contents\", found %q", tok)
	}
	size, err := p.uint64(name)
	if err != nil {
		return err
	}
	if size > uint64(p.max-p.n) {
		return p.errorf(name, "file declares %d bytes, more than the %d bytes expected in all", size, p.max)
	}
	lr := &io.LimitedReader{R: p.r, N: int64(size)}
	herr := p.h.Regular(name, executable, int64(size), lr)
	p.n += int64(size) - lr.N
	if herr != nil {
		var perr *Error
		if errors.As(herr, &perr) {
			return herr
		}
		if lr.N > 0 && (errors.Is(herr, io.EOF) || errors.Is(herr, io.ErrUnexpectedEOF)) {
			return p.errorf(name, "truncated in file contents")
		}
		return herr
	}
	if lr.N > 0 {
		if _, err := io.Copy(io.Discard, lr); err != nil {
			return fmt.Errorf("read NAR at byte %d: %w", p.n, err)
		}
		if lr.N > 0 {
			return p.errorf(name, "truncated in file contents")
		}
		p.n += int64(size) - lr.N
	}
	return p.padding(name, size)
}

func (p *parser) symlink(name string) error {
	if err := p.expect(name, "target"); err != nil {
		return err
	}
	target, err := p.string(name, "symlink target", MaxTargetLen)
	if err != nil {
		return err
	}
	if target == "" || strings.IndexByte(target, 0) >= 0 {
		return p.errorf(name, "symlink target %q is empty or has a NUL byte", target)
	}
	return p.h.Symlink(name, target)
}

func (p *parser) directory(name string, depth int) error {
	if err := p.h.Directory(name); err != nil {
		return err
	}
	prev := ""
	for first := true; ; first = false {
		tok, err := p.string(name, "token", maxToken)
		if err != nil {
			return err
		}
		if tok == ")" {
			break
		}
		if tok != "entry" {
			return p.errorf(name, "expected \"entry\" or \")\", found %q", tok)
		}
		if err := p.expect(name, "("); err != nil {
			return err
		}
		if err := p.expect(name, "name"); err != nil {
			return err
		}
		entry, err := p.string(name, "entry name", MaxNameLen)
		if err != nil {
			return err
		}
		if entry == "" || entry == "." || entry == ".." || strings.ContainsAny(entry, "/\x00") {
			return p.errorf(name, "invalid entry name %q", entry)
		}
		if !first && entry <= prev {
			return p.errorf(name, "entry %q is not after %q: entries must be sorted and unique", entry, prev)
		}
		prev = entry
		if err := p.expect(name, "node"); err != nil {
			return err
		}
		if err := p.node(path.Join(name, entry), depth+1); err != nil {
			return err
		}
		if err := p.expect(name, ")"); err != nil {
			return err
		}
	}
	return p.h.DirectoryDone(name)
}
