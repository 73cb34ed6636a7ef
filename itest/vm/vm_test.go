package vm

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestCpioUnpacks: busybox's cpio (the same newc reader as the kernel's)
// lists and extracts what the writer wrote.
func TestCpioUnpacks(t *testing.T) {
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skip("SKIPPED: no /bin/busybox (make deps installs busybox-static)")
	}
	w := &cpioWriter{}
	w.dir("bin")
	w.file("bin/hello", []byte("#!/bin/sh\necho hi\n"), 0o755)
	w.file("odd", []byte("abc"), 0o644) // a length that needs padding
	archive := filepath.Join(t.TempDir(), "a.cpio")
	os.WriteFile(archive, w.close(), 0o644)
	dest := t.TempDir()
	cmd := exec.Command("/bin/busybox", "cpio", "-i", "-d", "-F", archive)
	cmd.Dir = dest
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("busybox cpio: %v\n%s", err, out)
	}
	b, err := os.ReadFile(filepath.Join(dest, "bin/hello"))
	fi, _ := os.Stat(filepath.Join(dest, "bin/hello"))
	odd, _ := os.ReadFile(filepath.Join(dest, "odd"))
	if err != nil || string(b) != "#!/bin/sh\necho hi\n" || fi.Mode().Perm() != 0o755 || string(odd) != "abc" {
		t.Fatalf("extracted %q (%v, %v), odd %q", b, fi.Mode(), err, odd)
	}
}

func TestModuleClosureOrdersDependenciesFirst(t *testing.T) {
	base := t.TempDir()
	os.WriteFile(filepath.Join(base, "modules.dep"), []byte(
		"kernel/fs/9p/9p.ko.xz: kernel/net/9p/9pnet.ko.xz kernel/fs/netfs/netfs.ko.xz\n"+
			"kernel/net/9p/9pnet.ko.xz:\n"+
			"kernel/net/9p/9pnet_virtio.ko.xz: kernel/net/9p/9pnet.ko.xz\n"+
			"kernel/fs/netfs/netfs.ko.xz:\n"+
			"kernel/fs/overlayfs/overlay.ko.xz:\n"), 0o644)
	os.WriteFile(filepath.Join(base, "modules.builtin"), []byte("kernel/drivers/virtio/virtio_pci.ko\n"), 0o644)
	got, err := moduleClosure(base, []string{"9pnet_virtio", "9p", "overlay", "virtio_pci"})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, g := range got {
		names = append(names, modName(g))
	}
	if s := strings.Join(names, " "); s != "9pnet 9pnet_virtio netfs 9p overlay" {
		t.Fatalf("order %s", s)
	}
	if _, err := moduleClosure(base, []string{"nosuch"}); err == nil {
		t.Fatal("a missing module was not an error")
	}
}
