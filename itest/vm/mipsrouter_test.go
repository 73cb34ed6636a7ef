package vm

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestMakeMIPSFlash: the flash is the board's block2mtd disks in its
// order, the image at the start of image-a and 0xff after it and in
// every other disk, each the size of its partition.
func TestMakeMIPSFlash(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "root.squashfs")
	os.WriteFile(img, []byte("hsqs and the rest"), 0o644)
	f, err := MakeMIPSFlash(dir, img)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range f.Disks {
		got = append(got, d.Name+"="+d.Partition)
		b, err := os.ReadFile(d.File)
		if err != nil || int64(len(b)) != d.Bytes {
			t.Fatalf("%s: %d bytes (%v), want %d", d.File, len(b), err, d.Bytes)
		}
		rest := b
		if d.Partition == "image-a" {
			if !bytes.HasPrefix(b, []byte("hsqs and the rest")) {
				t.Errorf("image-a starts %q", b[:16])
			}
			rest = b[len("hsqs and the rest"):]
		}
		if bytes.Count(rest, []byte{0xff}) != len(rest) {
			t.Errorf("%s: not erased after the image", d.Partition)
		}
	}
	if want := []string{"vda=image-a", "vdb=image-b", "vdc=data"}; !slices.Equal(got, want) {
		t.Errorf("disks %q, want %q", got, want)
	}
	if file, err := f.Disk("data"); err != nil || filepath.Base(file) != "data.img" {
		t.Errorf("Disk(data) = %q, %v", file, err)
	}
	if _, err := f.Disk("nvram"); err == nil {
		t.Error("Disk(nvram): no error")
	}
	big := filepath.Join(dir, "big")
	os.WriteFile(big, make([]byte, 16<<20+1), 0o644)
	if _, err := MakeMIPSFlash(t.TempDir(), big); err == nil || !strings.Contains(err.Error(), "does not fit slot image-a") {
		t.Errorf("an image larger than the slot: %v", err)
	}
}

// TestConsoleLog: lines are whole, without carriage returns, and a wait
// from a mark sees only what came after it.
func TestConsoleLog(t *testing.T) {
	c := &ConsoleLog{}
	c.Write([]byte("boot one\r\nagent re"))
	c.Write([]byte("ady\nmore\n"))
	mark := c.Mark()
	if mark != 3 {
		t.Fatalf("Mark = %d, want 3", mark)
	}
	if l, n, ok := c.Find("agent ready", 0); !ok || l != "agent ready" || n != 1 {
		t.Fatalf("Find = %q, %d, %v", l, n, ok)
	}
	go func() {
		time.Sleep(20 * time.Millisecond)
		c.Write([]byte("boot two\nagent ready again\n"))
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	l, n, err := c.WaitFor(ctx, "agent ready", mark)
	if err != nil || l != "agent ready again" || n != 4 {
		t.Fatalf("WaitFor after the mark = %q, %d, %v", l, n, err)
	}
	short, cancel2 := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel2()
	if _, _, err := c.WaitFor(short, "never", 0); err == nil || !strings.Contains(err.Error(), `did not say "never"`) {
		t.Fatalf("WaitFor of what never comes: %v", err)
	}
}

// TestMIPSModuleClosure: dependencies come first, from the modules' own
// .modinfo (Debian's malta package has no modules.dep).
func TestMIPSModuleClosure(t *testing.T) {
	if _, err := mipsModuleDir(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(err)
		}
		t.Skipf("SKIPPED: %v", err)
	}
	mods, err := MIPSModuleClosure([]string{"virtio_net", "block2mtd"})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range mods {
		names = append(names, modName(m))
	}
	at := func(n string) int { return slices.Index(names, n) }
	if at("virtio_net") < 0 || at("block2mtd") < 0 || at("virtio") < 0 || at("failover") > at("net_failover") || at("net_failover") > at("virtio_net") || at("virtio_ring") > at("virtio_net") {
		t.Errorf("closure %q: want virtio_net after virtio, virtio_ring and net_failover (after failover), and block2mtd", names)
	}
	if _, err := MIPSModuleClosure([]string{"no_such_module"}); err == nil {
		t.Error("an unknown module: no error")
	}
}
