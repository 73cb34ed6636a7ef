package main

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func built(data string) *builtImage {
	s := sha256.Sum256([]byte(data))
	return &builtImage{data: []byte(data), sha256: hex.EncodeToString(s[:])}
}

// TestImageCache: the images sent are kept, the last keepImages of them,
// as the bases of the next deltas; a file that is not its name's image
// is no base.
func TestImageCache(t *testing.T) {
	home := t.TempDir()
	e := &env{getenv: func(k string) string { return map[string]string{"HOME": home}[k] }}
	c := e.imageCache()
	var imgs []*builtImage
	for i := range keepImages + 2 {
		img := built(string(rune('a'+i)) + " image")
		c.put(img)
		imgs = append(imgs, img)
		// mtimes a second apart: the oldest go first.
		old := time.Now().Add(time.Duration(i-10) * time.Second)
		os.Chtimes(filepath.Join(c.dir, img.sha256), old, old)
	}
	for i, img := range imgs {
		_, ok := c.get(img.sha256)
		if want := i >= 2; ok != want {
			t.Errorf("image %d: cached %v, want %v", i, ok, want)
		}
	}
	last := imgs[len(imgs)-1]
	os.WriteFile(filepath.Join(c.dir, last.sha256), []byte("tampered"), 0o600)
	if _, ok := c.get(last.sha256); ok {
		t.Error("a cached file whose hash is not its name's is used as a base")
	}
	if _, ok := c.get("../../etc/passwd"); ok {
		t.Error("a path is accepted as a hash")
	}
}
