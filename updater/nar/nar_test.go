package nar

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// tokens builds a NAR (or a broken one) from strings; an int64 is written as
// a bare number, for declared sizes.
func tokens(parts ...any) []byte {
	var b bytes.Buffer
	for _, p := range parts {
		switch v := p.(type) {
		case string:
			binary.Write(&b, binary.LittleEndian, uint64(len(v)))
			b.WriteString(v)
			b.Write(make([]byte, (8-len(v)%8)%8))
		case int64:
			binary.Write(&b, binary.LittleEndian, uint64(v))
		case []byte:
			b.Write(v)
		}
	}
	return b.Bytes()
}

func file(contents string) []any {
	return []any{"(", "type", "regular", "contents", contents, ")"}
}

func entry(name string, node []any) []any {
	return append(append([]any{"entry", "(", "name", name, "node"}, node...), ")")
}

func dir(entries ...[]any) []any {
	out := []any{"(", "type", "directory"}
	for _, e := range entries {
		out = append(out, e...)
	}
	return append(out, ")")
}

func nar(node []any) []byte { return tokens(append([]any{magic}, node...)...) }

func makeTree(t *testing.T, root string) {
	t.Helper()
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(root, "a/b/c"), 0o755))
	must(os.MkdirAll(filepath.Join(root, "empty"), 0o755))
	must(os.WriteFile(filepath.Join(root, "a/b/c/deep"), []byte("deep\n"), 0o644))
	must(os.WriteFile(filepath.Join(root, "empty-file"), nil, 0o644))
	must(os.WriteFile(filepath.Join(root, "exe"), []byte("#!/bin/sh\necho hi\n"), 0o755))
	must(os.WriteFile(filepath.Join(root, "big"), bytes.Repeat([]byte("0123456789abcdef"), 100_000), 0o644))
	must(os.WriteFile(filepath.Join(root, "odd7"), []byte("1234567"), 0o644))
	must(os.Symlink("a/b", filepath.Join(root, "rel-link")))
	must(os.Symlink("/nix/store/vcvqfhdlvpdwwj3ikxriym5ij6hqi9n7-a-1.0/file", filepath.Join(root, "abs-link")))
	must(os.Symlink("dangling", filepath.Join(root, "Z")))
}

func TestDumpRestoreRoundTrip(t *testing.T) {
	tmp := t.TempDir()
	src := filepath.Join(tmp, "src")
	makeTree(t, src)
	var first bytes.Buffer
	if err := Dump(&first, src); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(tmp, "dst")
	if err := Parse(bytes.NewReader(first.Bytes()), &Restorer{Dir: dst}, int64(first.Len())); err != nil {
		t.Fatal(err)
	}
	var second bytes.Buffer
	if err := Dump(&second, dst); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first.Bytes(), second.Bytes()) {
		t.Fatal("NAR of the restored tree differs from the original's")
	}
	for name, want := range map[string]os.FileMode{
		"":           os.ModeDir | 0o555,
		"exe":        0o555,
		"empty-file": 0o444,
		"a/b/c":      os.ModeDir | 0o555,
		"rel-link":   os.ModeSymlink | 0o777,
	} {
		fi, err := os.Lstat(filepath.Join(dst, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want {
			t.Errorf("%q has mode %v, want %v", name, fi.Mode(), want)
		}
		if fi.ModTime().Unix() != 1 {
			t.Errorf("%q has mtime %v, want 1", name, fi.ModTime().Unix())
		}
	}
}

func TestRootKinds(t *testing.T) {
	for name, n := range map[string][]byte{
		"file":       nar(file("x")),
		"executable": nar([]any{"(", "type", "regular", "executable", "", "contents", "x", ")"}),
		"symlink":    nar([]any{"(", "type", "symlink", "target", "/nix/store/x", ")"}),
		"empty dir":  nar(dir()),
	} {
		dst := filepath.Join(t.TempDir(), "out")
		if err := Parse(bytes.NewReader(n), &Restorer{Dir: dst}, 0); err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		var back bytes.Buffer
		if err := Dump(&back, dst); err != nil || !bytes.Equal(back.Bytes(), n) {
			t.Errorf("%s: dump after restore differs (%v)", name, err)
		}
	}
}

func TestHostile(t *testing.T) {
	good := nar(dir(entry("a", file("x")), entry("b", file("y"))))
	truncated := good[:len(good)-20]
	for _, tc := range []struct {
		name    string
		in      []byte
		max     int64
		wantErr string
	}{
		{"garbage", []byte("this is not a NAR at all, not even close"), 0, "not a NAR"},
		{"empty", nil, 0, "not a NAR"},
		{"truncated", truncated, 0, "truncated"},
		{"truncated in contents", nar(file("hello world"))[:60], 0, "truncated"},
		{"unsorted", nar(dir(entry("b", file("x")), entry("a", file("y")))), 0, "must be sorted and unique"},
		{"duplicate", nar(dir(entry("a", file("x")), entry("a", file("y")))), 0, "must be sorted and unique"},
		{"dotdot", nar(dir(entry("..", file("x")))), 0, "invalid entry name \"..\""},
		{"dot", nar(dir(entry(".", file("x")))), 0, "invalid entry name \".\""},
		{"slash", nar(dir(entry("a/b", file("x")))), 0, "invalid entry name \"a/b\""},
		{"empty name", nar(dir(entry("", file("x")))), 0, "invalid entry name \"\""},
		{"nul", nar(dir(entry("a\x00b", file("x")))), 0, "invalid entry name"},
		{"unknown type", nar([]any{"(", "type", "fifo", ")"}), 0, "unknown node type \"fifo\""},
		{"bad executable", nar([]any{"(", "type", "regular", "executable", "yes", "contents", "x", ")"}), 0, "expected \"\""},
		{"empty target", nar([]any{"(", "type", "symlink", "target", "", ")"}), 0, "empty or has a NUL"},
		{"absurd size", tokens(magic, "(", "type", "regular", "contents", int64(1<<62)), 0, "truncated"},
		{"size over expected", tokens(magic, "(", "type", "regular", "contents", int64(1<<40)), 4096, "more than the 4096 bytes expected"},
		{"absurd name length", tokens(magic, "(", "type", "directory", "entry", "(", "name", int64(1<<60)), 0, "longer than the 255 allowed"},
		{"longer than expected", good, int64(len(good) - 8), "longer than the expected"},
		{"bad padding", append(tokens(magic, "(", "type", "regular", "contents", int64(1), []byte{'x', 1, 0, 0, 0, 0, 0, 0}), tokens(")")...), 0, "non-zero padding"},
		{"trailing junk in dir", nar(dir(entry("a", file("x")), []any{"junk"})), 0, "expected \"entry\" or \")\""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst := filepath.Join(t.TempDir(), "out")
			err := Parse(bytes.NewReader(tc.in), &Restorer{Dir: dst}, tc.max)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Parse error = %v, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}

func TestDepthLimit(t *testing.T) {
	node := file("x")
	for i := 0; i <= MaxDepth+1; i++ {
		node = dir(entry("d", node))
	}
	err := Parse(bytes.NewReader(nar(node)), Discard{}, 0)
	if err == nil || !strings.Contains(err.Error(), "nested deeper") {
		t.Fatalf("Parse error = %v, want a depth error", err)
	}
}

// TestParseStopsAtEnd checks that Parse consumes exactly one NAR, since an
// export stream continues right after it.
func TestParseStopsAtEnd(t *testing.T) {
	n := nar(dir(entry("a", file("x"))))
	r := bytes.NewReader(append(n, "TRAILER"...))
	if err := Parse(r, Discard{}, 0); err != nil {
		t.Fatal(err)
	}
	if r.Len() != len("TRAILER") {
		t.Fatalf("Parse left %d bytes, want %d", r.Len(), len("TRAILER"))
	}
}

func FuzzParse(f *testing.F) {
	f.Add(nar(dir(entry("a", file("x")), entry("b", []any{"(", "type", "symlink", "target", "a", ")"}))))
	f.Add(nar([]any{"(", "type", "regular", "executable", "", "contents", "x", ")"}))
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, in []byte) {
		// Whatever the input, Parse must not panic nor read past its limit, and
		// anything it accepts must restore and dump back to the same bytes.
		r := bytes.NewReader(in)
		if err := Parse(r, Discard{}, int64(len(in))); err != nil {
			return
		}
		consumed := in[:len(in)-r.Len()]
		dst := filepath.Join(t.TempDir(), "out")
		if err := Parse(bytes.NewReader(consumed), &Restorer{Dir: dst}, 0); err != nil {
			t.Fatalf("accepted by Discard, refused by Restorer: %v", err)
		}
		var back bytes.Buffer
		if err := Dump(&back, dst); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(back.Bytes(), consumed) {
			t.Fatal("accepted NAR does not dump back to itself")
		}
	})
}
