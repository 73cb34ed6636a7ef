package deltacache

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func clocked(c *Cache) func() {
	t := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c.now = func() time.Time { return t }
	return func() { t = t.Add(time.Minute) }
}

func TestPutGet(t *testing.T) {
	c := Open(filepath.Join(t.TempDir(), "deltas"), 0)
	if _, ok := c.Get("k"); ok {
		t.Fatal("an empty cache has an entry")
	}
	data := bytes.Repeat([]byte("delta\n"), 1000)
	if err := c.Put("copydelta1+zstd sha256:a sha256:b", data); err != nil {
		t.Fatal(err)
	}
	got, ok := c.Get("copydelta1+zstd sha256:a sha256:b")
	if !ok || !bytes.Equal(got, data) {
		t.Fatalf("got %d bytes, %v", len(got), ok)
	}
	if _, ok := c.Get("copydelta1+zstd sha256:a sha256:c"); ok {
		t.Fatal("another key has an entry")
	}
	if err := c.Put("a\nb", data); err == nil {
		t.Fatal("a key with a newline was taken")
	}
}

// TestUnsoundEntries: an entry that is cut short, has a flipped bit, is
// for another key or is not an entry at all is not returned, and is gone.
func TestUnsoundEntries(t *testing.T) {
	for _, tc := range []struct {
		name  string
		spoil func(b []byte) []byte
	}{
		{"cut short", func(b []byte) []byte { return b[:len(b)-1] }},
		{"a flipped bit", func(b []byte) []byte { b[len(b)-10] ^= 1; return b }},
		{"another key", func(b []byte) []byte { return bytes.Replace(b, []byte("key"), []byte("kez"), 1) }},
		{"not an entry", func([]byte) []byte { return []byte("hello") }},
		{"empty", func([]byte) []byte { return nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Open(t.TempDir(), 0)
			if err := c.Put("key", []byte("some delta bytes")); err != nil {
				t.Fatal(err)
			}
			name := c.file("key")
			b, _ := os.ReadFile(name)
			os.WriteFile(name, tc.spoil(b), 0o600)
			if got, ok := c.Get("key"); ok {
				t.Fatalf("returned %q", got)
			}
			if _, err := os.Stat(name); !os.IsNotExist(err) {
				t.Fatalf("the unsound entry is still there: %v", err)
			}
		})
	}
}

// TestEviction: past the bound, the least recently used entries go; a
// read counts as a use; what a crash left under a temporary name long ago
// goes too, but not what another writer is writing; a delta larger than
// the bound is not kept.
func TestEviction(t *testing.T) {
	dir := t.TempDir()
	c := Open(dir, 3500)
	tick := clocked(c)
	crashed, writing := filepath.Join(dir, ".tmp-crashed.delta-123"), filepath.Join(dir, ".tmp-writing.delta-456")
	os.WriteFile(crashed, make([]byte, 10000), 0o600)
	old := c.now().Add(-time.Hour)
	os.Chtimes(crashed, old, old)
	os.WriteFile(writing, make([]byte, 10000), 0o600) // another writer's, not yet renamed
	os.Chtimes(writing, c.now(), c.now())
	kb := make([]byte, 1000)
	for _, k := range []string{"a", "b", "c"} {
		if err := c.Put(k, kb); err != nil {
			t.Fatal(err)
		}
		tick()
	}
	if _, err := os.Stat(crashed); !os.IsNotExist(err) {
		t.Fatalf("a crashed write's temporary file is still there: %v", err)
	}
	if _, err := os.Stat(writing); err != nil {
		t.Fatalf("another writer's temporary file is gone: %v", err)
	}
	if _, ok := c.Get("a"); !ok { // a is now the most recent
		t.Fatal("a is gone before the bound was reached")
	}
	tick()
	c.Put("d", kb)
	for k, want := range map[string]bool{"a": true, "b": false, "c": true, "d": true} {
		if _, ok := c.Get(k); ok != want {
			t.Errorf("%s kept: %v, want %v", k, ok, want)
		}
	}
	if err := c.Put("huge", make([]byte, 4000)); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.Get("huge"); ok {
		t.Error("a delta larger than the bound was kept")
	}
}

func TestDir(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"HOME": "/home/u"}, "/home/u/.cache/roost/deltas"},
		{map[string]string{"HOME": "/home/u", "XDG_CACHE_HOME": "/tmp/c"}, "/tmp/c/roost/deltas"},
		{map[string]string{}, ""},
	} {
		got, err := Dir(env(tc.env))
		if got != tc.want || (err != nil) != (tc.want == "") {
			t.Errorf("Dir(%v) = %q, %v; want %q", tc.env, got, err, tc.want)
		}
	}
}

// TestConcurrentPuts: writers at once (a transfer's workers) do not spoil
// each other's entries.
func TestConcurrentPuts(t *testing.T) {
	c := Open(t.TempDir(), 0)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := range 16 {
		wg.Go(func() { errs <- c.Put(fmt.Sprint("key ", i), bytes.Repeat([]byte{byte(i)}, 100_000)) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	for i := range 16 {
		if got, ok := c.Get(fmt.Sprint("key ", i)); !ok || len(got) != 100_000 || got[0] != byte(i) {
			t.Errorf("key %d: %d bytes, %v", i, len(got), ok)
		}
	}
}
