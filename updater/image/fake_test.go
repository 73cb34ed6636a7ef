package image

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// The fakes here stand in for the kernel's MTD, UBI and block devices in
// unit tests; TestImageWriteInVM (itest) drives the real ones.

// fakeDevices records every open, so that tests can see what was opened
// for writing, and when.
type fakeDevices struct {
	mu    sync.Mutex
	opens []string // "ro PATH" or "rw PATH", in order
	mtd   map[string]*fakeFlash
	ubi   *fakeUBI
}

func (d *fakeDevices) record(path string, write bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.opens = append(d.opens, map[bool]string{true: "rw ", false: "ro "}[write]+path)
}

func (d *fakeDevices) writeOpens() []string {
	var out []string
	for _, o := range d.opens {
		if strings.HasPrefix(o, "rw ") {
			out = append(out, o)
		}
	}
	return out
}

func (d *fakeDevices) openMTD(path string, write bool) (mtdDevice, error) {
	d.record(path, write)
	f, ok := d.mtd[filepath.Base(path)]
	if !ok {
		return nil, &os.PathError{Op: "open", Path: path, Err: syscall.ENOENT}
	}
	return f, nil
}

// openBlock opens a regular file as the device.
func (d *fakeDevices) openBlock(path string, write bool) (blockDevice, error) {
	d.record(path, write)
	f, err := os.OpenFile(path, rw(write), 0)
	if err != nil {
		return nil, err
	}
	return fileBlock{f}, nil
}

func (d *fakeDevices) openUBI(path string) (ubiDevice, error) {
	d.record(path, false)
	if d.ubi == nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: syscall.ENOENT}
	}
	return d.ubi, nil
}

type fileBlock struct{ *os.File }

func (b fileBlock) size() (int64, error) { return b.Seek(0, io.SeekEnd) }
func (b fileBlock) dropCache() error     { return nil }

// fakeFlash is raw flash: erase sets a block to 0xff, a write can only
// clear bits (so a write without its erase reads back wrong), NAND is
// written in whole pages, and bad blocks fail every operation.
type fakeFlash struct {
	data      []byte
	geo       mtdInfo
	bad       map[uint64]bool
	flipWrite bool // a write that does not take: one bit comes out wrong
	erases    int
}

func newFlash(size, erase, write uint32, typ uint8, bad ...uint64) *fakeFlash {
	f := &fakeFlash{data: bytes.Repeat([]byte{0x5a}, int(size)), bad: map[uint64]bool{},
		geo: mtdInfo{Type: typ, Flags: mtdWritable, Size: size, EraseSize: erase, WriteSize: write}}
	for _, b := range bad {
		f.bad[b] = true
	}
	return f
}

func (f *fakeFlash) info() (mtdInfo, error) { return f.geo, nil }

func (f *fakeFlash) isBad(off uint64) (bool, error) {
	if off%uint64(f.geo.EraseSize) != 0 || off >= uint64(len(f.data)) {
		return false, syscall.EINVAL
	}
	return f.bad[off], nil
}

func (f *fakeFlash) block(off uint64) uint64 {
	return off / uint64(f.geo.EraseSize) * uint64(f.geo.EraseSize)
}

func (f *fakeFlash) erase(off uint64, n uint32) error {
	if off%uint64(f.geo.EraseSize) != 0 || n != f.geo.EraseSize || off+uint64(n) > uint64(len(f.data)) {
		return syscall.EINVAL
	}
	if f.bad[off] {
		return syscall.EIO
	}
	f.erases++
	for i := range n {
		f.data[off+uint64(i)] = 0xff
	}
	return nil
}

func (f *fakeFlash) WriteAt(p []byte, off int64) (int, error) {
	w := int64(f.geo.WriteSize)
	if off%w != 0 || int64(len(p))%w != 0 || off+int64(len(p)) > int64(len(f.data)) {
		return 0, syscall.EINVAL
	}
	for b := f.block(uint64(off)); b < uint64(off)+uint64(len(p)); b += uint64(f.geo.EraseSize) {
		if f.bad[b] {
			return 0, syscall.EIO
		}
	}
	for i, c := range p {
		f.data[off+int64(i)] &= c
	}
	if f.flipWrite && len(p) > 0 {
		f.data[off] ^= 1
	}
	return len(p), nil
}

func (f *fakeFlash) ReadAt(p []byte, off int64) (int, error) {
	if f.bad[f.block(uint64(off))] {
		return 0, syscall.EIO
	}
	if off >= int64(len(f.data)) {
		return 0, io.EOF
	}
	return copy(p, f.data[off:]), nil
}

func (f *fakeFlash) Close() error { return nil }

// fakeUBI is a UBI device whose volumes live in memory and in a sysfs
// fixture, which it keeps as the kernel keeps /sys/class/ubi.
type fakeUBI struct {
	t       *testing.T
	sys     string // the fixture's sys/class/ubi/ubiN
	num     int
	leb     uint64
	avail   uint64
	vols    map[int]*fakeVol
	renames [][]ubiRename
	removed []int
	corrupt bool // a write that does not take
}

type fakeVol struct {
	data     []byte
	reserved uint64
	updating int64 // bytes the update still wants, -1 if none
}

func (u *fakeUBI) write(id int, name string, reserved uint64, static bool) {
	dir := filepath.Join(u.sys, fmt.Sprintf("ubi%d_%d", u.num, id))
	typ := map[bool]string{true: "static", false: "dynamic"}[static]
	for f, v := range map[string]string{"name": name, "reserved_ebs": strconv.FormatUint(reserved, 10),
		"usable_eb_size": strconv.FormatUint(u.leb, 10), "type": typ} {
		writeFile(u.t, filepath.Join(dir, f), v+"\n")
	}
	writeFile(u.t, filepath.Join(u.sys, "avail_eraseblocks"), strconv.FormatUint(u.avail, 10)+"\n")
}

func (u *fakeUBI) name(id int) string {
	b, _ := os.ReadFile(filepath.Join(u.sys, fmt.Sprintf("ubi%d_%d", u.num, id), "name"))
	return strings.TrimSuffix(string(b), "\n")
}

func (u *fakeUBI) add(name string, reserved uint64) int {
	id := len(u.vols)
	for u.vols[id] != nil {
		id++
	}
	u.vols[id] = &fakeVol{reserved: reserved, updating: -1}
	u.write(id, name, reserved, false)
	return id
}

func (u *fakeUBI) makeVolume(name string, bytes int64, static bool) (int, error) {
	lebs := (uint64(bytes) + u.leb - 1) / u.leb
	if lebs > u.avail {
		return 0, syscall.ENOSPC
	}
	u.avail -= lebs
	return u.add(name, lebs), nil
}

func (u *fakeUBI) resizeVolume(id int, bytes int64) error {
	v := u.vols[id]
	lebs := (uint64(bytes) + u.leb - 1) / u.leb
	if lebs > v.reserved+u.avail {
		return syscall.ENOSPC
	}
	u.avail = u.avail + v.reserved - lebs
	v.reserved = lebs
	u.write(id, u.name(id), lebs, false)
	return nil
}

// rename is the kernel's: a volume whose name another takes is removed
// unless it is renamed in the same request.
func (u *fakeUBI) rename(rs []ubiRename) error {
	u.renames = append(u.renames, rs)
	renamed := map[int]bool{}
	for _, r := range rs {
		renamed[r.ID] = true
	}
	for _, r := range rs {
		for id := range u.vols {
			if u.name(id) == r.Name && !renamed[id] {
				u.removed = append(u.removed, id)
			}
		}
	}
	for _, r := range rs {
		writeFile(u.t, filepath.Join(u.sys, fmt.Sprintf("ubi%d_%d", u.num, r.ID), "name"), r.Name+"\n")
	}
	return nil
}

func (u *fakeUBI) openVolume(path string) (ubiVolume, error) {
	var num, id int
	if _, err := fmt.Sscanf(filepath.Base(path), "ubi%d_%d", &num, &id); err != nil || u.vols[id] == nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: syscall.ENOENT}
	}
	return &fakeVolFile{u: u, v: u.vols[id]}, nil
}

func (u *fakeUBI) Close() error { return nil }

type fakeVolFile struct {
	u *fakeUBI
	v *fakeVol
}

func (f *fakeVolFile) update(n int64) error {
	if uint64(n) > f.v.reserved*f.u.leb {
		return syscall.EINVAL
	}
	f.v.data, f.v.updating = nil, n
	return nil
}

func (f *fakeVolFile) Write(p []byte) (int, error) {
	if f.v.updating < int64(len(p)) {
		return 0, errors.New("write past the update")
	}
	f.v.data = append(f.v.data, p...)
	if f.u.corrupt {
		f.v.data[len(f.v.data)-1] ^= 0x80
	}
	f.v.updating -= int64(len(p))
	return len(p), nil
}

func (f *fakeVolFile) ReadAt(p []byte, off int64) (int, error) {
	if f.v.updating > 0 {
		return 0, syscall.EBUSY
	}
	if off >= int64(len(f.v.data)) {
		return 0, io.EOF
	}
	return copy(p, f.v.data[off:]), nil
}

func (f *fakeVolFile) Sync() error  { return nil }
func (f *fakeVolFile) Close() error { return nil }

func writeFile(t *testing.T, name, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(name, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
