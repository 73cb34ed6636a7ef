package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteFileReplaces(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Join(dir, "f")
	for _, content := range []string{"one", "two"} {
		if err := WriteFile(name, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(name)
		if err != nil || string(got) != content {
			t.Fatalf("read back %q, %v; want %q", got, err, content)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("folder has %d entries, want only f", len(entries))
	}
}

func TestSymlinkAndClean(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Join(dir, "link")
	for _, target := range []string{"a", "b"} {
		if err := Symlink(target, name); err != nil {
			t.Fatal(err)
		}
		if got, _ := os.Readlink(name); got != target {
			t.Fatalf("link points to %q, want %q", got, target)
		}
	}
	os.WriteFile(filepath.Join(dir, tempPrefix+"left-123"), nil, 0o600)
	if err := Clean(dir); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("after Clean the folder has %d entries, want 1", len(entries))
	}
}
