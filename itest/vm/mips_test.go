package vm

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestMIPSInitramfs: the archive the kernel unpacks holds /init and the
// files at their paths, with the folders above them and their modes.
func TestMIPSInitramfs(t *testing.T) {
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skip("SKIPPED: no /bin/busybox (make deps installs busybox-static)")
	}
	gz, err := mipsInitramfs([]byte("init"), []File{
		{Name: "bin/roostd", Data: []byte("roostd"), Perm: 0o755},
		{Name: "etc/roost/deep/spec.json", Data: []byte("{}"), Perm: 0o644},
	})
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatal(err)
	}
	archive, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "a.cpio")
	os.WriteFile(file, archive, 0o644)
	dest := t.TempDir()
	cmd := exec.Command("/bin/busybox", "cpio", "-i", "-d", "-F", file)
	cmd.Dir = dest
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("busybox cpio: %v\n%s", err, out)
	}
	for _, want := range []struct {
		name, data string
		perm       os.FileMode
	}{
		{"init", "init", 0o755},
		{"bin/roostd", "roostd", 0o755},
		{"etc/roost/deep/spec.json", "{}", 0o644},
	} {
		b, err := os.ReadFile(filepath.Join(dest, want.name))
		fi, _ := os.Stat(filepath.Join(dest, want.name))
		if err != nil || string(b) != want.data || fi.Mode().Perm() != want.perm {
			t.Errorf("%s: %q %v (%v), want %q %v", want.name, b, fi.Mode(), err, want.data, want.perm)
		}
	}
}

func TestMIPSInitramfsRefusesPaths(t *testing.T) {
	for _, name := range []string{"/etc/x", "../x", "init", "a/../../x"} {
		if _, err := mipsInitramfs([]byte("init"), []File{{Name: name, Data: nil, Perm: 0o644}}); err == nil {
			t.Errorf("%q: no error", name)
		}
	}
}
