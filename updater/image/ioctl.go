package image

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// realDevices opens the kernel's devices.
type realDevices struct{}

func ioctl(f *os.File, req uint, arg unsafe.Pointer) (uintptr, error) {
	r, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), uintptr(req), uintptr(arg))
	runtime.KeepAlive(f)
	if errno != 0 {
		return 0, errno
	}
	return r, nil
}

// openDevice opens a device node, refusing anything else (a file left
// where the node should be would take the image silently).
func openDevice(path string, flag int, char bool) (*os.File, error) {
	f, err := os.OpenFile(path, flag|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err == nil && (fi.Mode()&os.ModeDevice == 0 || (fi.Mode()&os.ModeCharDevice != 0) != char) {
		err = fmt.Errorf("%s is %s, not a %s device", path, fi.Mode().Type(), map[bool]string{true: "character", false: "block"}[char])
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func rw(write bool) int {
	if write {
		return os.O_RDWR
	}
	return os.O_RDONLY
}

// mtdFile is /dev/mtdN.
type mtdFile struct{ *os.File }

func (realDevices) openMTD(path string, write bool) (mtdDevice, error) {
	f, err := openDevice(path, rw(write), true)
	if err != nil {
		return nil, err
	}
	return mtdFile{f}, nil
}

func (m mtdFile) info() (mtdInfo, error) {
	var mi unix.MtdInfo
	if _, err := ioctl(m.File, unix.MEMGETINFO, unsafe.Pointer(&mi)); err != nil {
		return mtdInfo{}, err
	}
	return mtdInfo{Type: mi.Type, Flags: mi.Flags, Size: mi.Size, EraseSize: mi.Erasesize, WriteSize: mi.Writesize}, nil
}

func (m mtdFile) isBad(off uint64) (bool, error) {
	o := int64(off)
	r, err := ioctl(m.File, unix.MEMGETBADBLOCK, unsafe.Pointer(&o))
	return r == 1, err
}

func (m mtdFile) erase(off uint64, n uint32) error {
	e := unix.EraseInfo64{Start: off, Length: uint64(n)}
	_, err := ioctl(m.File, unix.MEMERASE64, unsafe.Pointer(&e))
	return err
}

// blockDevice is an open disk or disk partition.
type blockDevice interface {
	io.ReaderAt
	io.WriterAt
	size() (int64, error)
	Sync() error
	dropCache() error
	Close() error
}

// blockFile is a block device, opened exclusively (O_EXCL): the kernel
// refuses it while it is mounted or in use, and holds others off.
type blockFile struct{ *os.File }

func (realDevices) openBlock(path string, write bool) (blockDevice, error) {
	f, err := openDevice(path, rw(write)|unix.O_EXCL, false)
	if err != nil {
		return nil, err
	}
	return blockFile{f}, nil
}

func (b blockFile) size() (int64, error) { return b.Seek(0, io.SeekEnd) }

// dropCache drops the device's clean cached pages, so that the read back
// comes from the device, not from what write left in the page cache.
func (b blockFile) dropCache() error {
	return unix.Fadvise(int(b.Fd()), 0, 0, unix.FADV_DONTNEED)
}

// UBI's requests (include/uapi/mtd/ubi-user.h), packed.
const (
	ubiVolNumAuto  = -1
	ubiDynamic     = 3
	ubiStatic      = 4
	ubiMaxName     = 127
	ubiMaxRename   = 32
	mkvolReqSize   = 4 + 4 + 8 + 1 + 1 + 2 + 4 + ubiMaxName + 1 // struct ubi_mkvol_req
	rsvolReqSize   = 8 + 4                                      // struct ubi_rsvol_req
	rnvolEntrySize = 4 + 2 + 2 + ubiMaxName + 1
	rnvolReqSize   = 4 + 12 + ubiMaxRename*rnvolEntrySize // struct ubi_rnvol_req
)

// ubiDevice is /dev/ubiN, where volumes are made, resized and renamed.
type ubiDevice interface {
	makeVolume(name string, bytes int64, static bool) (int, error)
	resizeVolume(id int, bytes int64) error
	rename(renames []ubiRename) error
	openVolume(path string) (ubiVolume, error)
	Close() error
}

// ubiRename gives volume ID a new name.
type ubiRename struct {
	ID   int
	Name string
}

// ubiVolume is an open /dev/ubiN_M, read-write.
type ubiVolume interface {
	update(bytes int64) error // UBI_IOCVOLUP: the next bytes written replace the volume
	io.Writer
	io.ReaderAt
	Sync() error
	Close() error
}

type ubiFile struct{ *os.File }

func (realDevices) openUBI(path string) (ubiDevice, error) {
	f, err := openDevice(path, os.O_RDONLY, true)
	if err != nil {
		return nil, err
	}
	return ubiFile{f}, nil
}

var ne = binary.NativeEndian

func mkvolReq(name string, bytes int64, static bool) []byte {
	b := make([]byte, mkvolReqSize)
	id := int32(ubiVolNumAuto)
	ne.PutUint32(b[0:], uint32(id))
	ne.PutUint32(b[4:], 1) // alignment
	ne.PutUint64(b[8:], uint64(bytes))
	b[16] = ubiDynamic
	if static {
		b[16] = ubiStatic
	}
	ne.PutUint16(b[18:], uint16(len(name)))
	copy(b[24:], name)
	return b
}

func (u ubiFile) makeVolume(name string, bytes int64, static bool) (int, error) {
	b := mkvolReq(name, bytes, static)
	if _, err := ioctl(u.File, unix.UBI_IOCMKVOL, unsafe.Pointer(&b[0])); err != nil {
		return 0, err
	}
	return int(int32(ne.Uint32(b))), nil // the kernel writes the new volume's ID back
}

func (u ubiFile) resizeVolume(id int, bytes int64) error {
	b := make([]byte, rsvolReqSize)
	ne.PutUint64(b[0:], uint64(bytes))
	ne.PutUint32(b[8:], uint32(int32(id)))
	_, err := ioctl(u.File, unix.UBI_IOCRSVOL, unsafe.Pointer(&b[0]))
	return err
}

func rnvolReq(renames []ubiRename) []byte {
	b := make([]byte, rnvolReqSize)
	ne.PutUint32(b[0:], uint32(len(renames)))
	for i, r := range renames {
		e := b[16+i*rnvolEntrySize:]
		ne.PutUint32(e[0:], uint32(int32(r.ID)))
		ne.PutUint16(e[4:], uint16(len(r.Name)))
		copy(e[8:8+ubiMaxName], r.Name)
	}
	return b
}

func (u ubiFile) rename(renames []ubiRename) error {
	b := rnvolReq(renames)
	_, err := ioctl(u.File, unix.UBI_IOCRNVOL, unsafe.Pointer(&b[0]))
	return err
}

type ubiVolFile struct{ *os.File }

func (ubiFile) openVolume(path string) (ubiVolume, error) {
	f, err := openDevice(path, os.O_RDWR, true)
	if err != nil {
		return nil, err
	}
	return ubiVolFile{f}, nil
}

func (v ubiVolFile) update(bytes int64) error {
	_, err := ioctl(v.File, unix.UBI_IOCVOLUP, unsafe.Pointer(&bytes))
	return err
}
