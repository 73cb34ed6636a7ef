// Command imageinit is the /init of the image write test VM
// (itest/image_test.go): on a real kernel's MTD, UBI and block devices it
// writes images with updater/image, tries the writes the package must
// refuse, looks at the devices itself afterwards, and says each outcome on
// the console as a line "IMAGETEST-RESULT {json}", then "IMAGETEST DONE".
//
// The devices, from the modules /modules lists (loaded first):
//
//	mtdram   8 MiB "NOR" (MTD_RAM) in 64 KiB blocks: the NOR image slot
//	nandsim  64 MiB NAND, 2 KiB pages, 128 KiB blocks, in three partitions:
//	         0 (1 MiB, the "bootloader", never written), 1 (16 MiB, a raw
//	         image slot, with its block 3 bad), 2 (47 MiB, UBI)
//	brd      a 16 MiB RAM disk, /dev/ram0: the block image slot
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/roostrouter/roost/boards"
	"github.com/roostrouter/roost/itest/vm/guest"
	"github.com/roostrouter/roost/updater/image"
)

const (
	nor       = "mtdram test device"
	nandBoot  = "NAND simulator partition 0"
	nandImage = "NAND simulator partition 1"
	nandUBI   = "NAND simulator partition 2"
	eb        = 128 << 10 // the NAND's erase block
	badBlock  = 3         // of partition 1 (nandsim's badblocks= counts from the chip's start: 8+3)
)

func u64(n uint64) *uint64 { return &n }

// board is the VM's flash as a board describes it.
func board(method string) boards.Board {
	return boards.Board{Name: "vm", ImageWrite: method, Flash: []boards.Flash{
		{Name: "nor", Kind: boards.FlashNOR, SizeMB: 8, Partitions: []boards.Partition{
			{Name: nor, Use: boards.UseImage, Offset: u64(0), Size: u64(8 << 20)},
		}},
		{Name: "nand", Kind: boards.FlashSPINAND, SizeMB: 64, Partitions: []boards.Partition{
			{Name: nandBoot, Use: boards.UseBootloader, Offset: u64(0), Size: u64(1 << 20), Never: true},
			{Name: nandImage, Use: boards.UseImage, Offset: u64(1 << 20), Size: u64(16 << 20)},
			{Name: nandUBI, Use: boards.UseUBI, Offset: u64(17 << 20), Size: u64(47 << 20), Never: true},
			{Name: "fit", Use: boards.UseImage, Volume: true},
			{Name: "ubootenv", Use: boards.UseBootloaderEnv, Volume: true, Never: true},
		}},
		{Name: "ram0", Kind: boards.FlashEMMC, Partitions: []boards.Partition{
			{Name: "ram0", Use: boards.UseImage},
		}},
	}}
}

// result is one case's outcome.
type result struct {
	Case      string             `json:"case"`
	OK        bool               `json:"ok"`
	Error     string             `json:"error,omitempty"`
	Device    string             `json:"device,omitempty"`
	Bytes     int64              `json:"bytes,omitempty"`
	BadBlocks []uint64           `json:"badBlocks,omitempty"`
	Seconds   map[string]float64 `json:"seconds,omitempty"` // per phase
	Check     string             `json:"check,omitempty"`   // what the init saw on the device afterwards
	Volumes   map[string]int     `json:"volumes,omitempty"` // UBI: name → volume ID afterwards
}

func main() {
	if err := mountAll(); err != nil {
		say("mount: %v", err)
	}
	say("init started")
	guest.LoadModules("/modules", say)
	rng := rand.New(rand.NewPCG(1, 2))
	img := func(n int) []byte {
		b := make([]byte, n+7)
		for i := 0; i < n; i += 8 {
			binary.LittleEndian.PutUint64(b[i:], rng.Uint64())
		}
		return b[:n]
	}
	mtdCases(img)
	ubiCases(img)
	blockCase(img(10 << 20))
	memoryCases()
	say("IMAGETEST DONE")
	guest.PowerOff(say)
}

func mtdCases(img func(int) []byte) {
	c := image.Config{Board: board(boards.ImageMTD), Root: "/"}
	a := img(6 << 20)
	r := write(c, "nor", nor, a)
	r.Check = compareMTD(nor, a, nil)
	report(r)

	b := img(12 << 20)
	r = write(c, "nand", nandImage, b)
	r.Check = compareMTD(nandImage, b, []int{badBlock})
	if bad, err := isBad(nandImage, badBlock*eb); err != nil || !bad {
		r.Check += fmt.Sprintf("; block %d bad: %v %v", badBlock, bad, err)
	}
	report(r)

	// Refusals: the partitions keep what they had.
	for _, tc := range []struct{ name, part string }{
		{"nand too big", nandImage}, {"never", nandBoot}, {"ubi partition raw", nandUBI},
	} {
		before, _ := hashMTD(tc.part)
		r := write(c, tc.name, tc.part, make([]byte, 16<<20-64<<10))
		after, err := hashMTD(tc.part)
		r.Check = map[bool]string{true: "unchanged", false: fmt.Sprintf("CHANGED (%v)", err)}[before == after && err == nil]
		report(r)
	}
}

func ubiCases(img func(int) []byte) {
	mtd, err := mtdIndex(nandUBI)
	if err == nil {
		err = attach(mtd)
	}
	old := img(3 << 20)
	if err == nil {
		_, err = makeVolume("fit", 4<<20, old)
	}
	if err == nil {
		_, err = makeVolume("ubootenv", eb, []byte("bootcmd=boot\n"))
	}
	if err != nil {
		report(result{Case: "ubi setup", Error: err.Error()})
		return
	}
	report(result{Case: "ubi setup", OK: true, Volumes: volumes()})
	c := image.Config{Board: board(boards.ImageUBI), Root: "/"}
	first := img(6 << 20)
	r := write(c, "ubi first", "fit", first)
	r.Volumes = volumes()
	r.Check = compareVolumes(map[string][]byte{"fit": first, "fit_spare": old})
	report(r)

	second := img(3<<20 + 12345)
	r = write(c, "ubi second", "fit", second)
	r.Volumes = volumes()
	r.Check = compareVolumes(map[string][]byte{"fit": second, "fit_spare": first})
	report(r)

	// What UBI keeps on the flash: detach and attach again.
	r = result{Case: "ubi reattached"}
	if err := detach(0); err != nil {
		r.Error = err.Error()
	} else if err := attach(mtd); err != nil {
		r.Error = err.Error()
	} else {
		r.OK = true
		r.Volumes = volumes()
		r.Check = compareVolumes(map[string][]byte{"fit": second, "fit_spare": first})
	}
	report(r)

	before := compareVolumes(map[string][]byte{"ubootenv": []byte("bootcmd=boot\n")})
	r = write(c, "ubi never", "ubootenv", img(1000))
	r.Check = before + "; after: " + compareVolumes(map[string][]byte{"ubootenv": []byte("bootcmd=boot\n")})
	report(r)
}

func blockCase(data []byte) {
	c := image.Config{Board: board(boards.ImageBlock), Root: "/"}
	r := write(c, "block", "ram0", data)
	f, err := os.Open("/dev/ram0")
	if err == nil {
		got := make([]byte, len(data))
		_, err = io.ReadFull(f, got)
		f.Close()
		if err == nil && !bytes.Equal(got, data) {
			err = fmt.Errorf("differs")
		}
	}
	r.Check = map[bool]string{true: "match", false: fmt.Sprintf("MISMATCH (%v)", err)}[err == nil]
	report(r)
}

func memoryCases() {
	for _, tc := range []struct {
		name  string
		image uint64
	}{{"memory fits", 6 << 20}, {"memory refused", 1 << 30}} {
		f, err := os.Open("/proc/meminfo")
		if err == nil {
			err = image.CheckMemory(f, tc.image, 12<<20, 2<<20)
			f.Close()
		}
		r := result{Case: tc.name, OK: err == nil}
		if err != nil {
			r.Error = err.Error()
		}
		report(r)
	}
}

// write writes data into partition part with updater/image, timing each
// phase from the end of the one before.
func write(c image.Config, name, part string, data []byte) result {
	c.Partition = part
	r := result{Case: name, Seconds: map[string]float64{}}
	start := time.Now()
	last := start
	phase := ""
	c.Progress = func(p image.Progress) {
		if p.Phase != phase {
			phase, start = p.Phase, last
		}
		last = time.Now()
		r.Seconds[p.Phase] = last.Sub(start).Seconds()
	}
	sum := sha256.Sum256(data)
	res, err := image.Write(context.Background(), c, image.Image{R: bytes.NewReader(data), Size: int64(len(data)), SHA256: sum[:]})
	if err != nil {
		r.Error = err.Error()
		return r
	}
	r.OK, r.Device, r.Bytes, r.BadBlocks = true, res.Device, res.Bytes, res.BadBlocks
	return r
}

func report(r result) {
	b, _ := json.Marshal(r)
	fmt.Printf("IMAGETEST-RESULT %s\n", b)
}

// mtdIndex finds partition name in /proc/mtd.
func mtdIndex(name string) (int, error) {
	f, err := os.Open("/proc/mtd")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	all, err := image.ParseProcMTD(f)
	if err != nil {
		return 0, err
	}
	for _, m := range all {
		if m.Name == name {
			return m.Index, nil
		}
	}
	return 0, fmt.Errorf("no MTD partition %q", name)
}

// readMTD reads partition name's blocks but those in skip (bad ones).
func readMTD(name string, skip []int) ([]byte, error) {
	i, err := mtdIndex(name)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(fmt.Sprintf("/dev/mtd%d", i))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []byte
	buf := make([]byte, eb)
	for blk := 0; ; blk++ {
		if slices.Contains(skip, blk) {
			continue
		}
		n, err := f.ReadAt(buf, int64(blk)*eb)
		out = append(out, buf[:n]...)
		if err == io.EOF || n == 0 {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("block %d: %w", blk, err)
		}
	}
}

func compareMTD(name string, want []byte, skip []int) string {
	got, err := readMTD(name, skip)
	if err != nil {
		return fmt.Sprintf("MISMATCH (%v)", err)
	}
	if len(got) < len(want) || !bytes.Equal(got[:len(want)], want) {
		return "MISMATCH"
	}
	return "match"
}

func hashMTD(name string) ([32]byte, error) {
	i, err := mtdIndex(name)
	if err != nil {
		return [32]byte{}, err
	}
	f, err := os.Open(fmt.Sprintf("/dev/mtd%d", i))
	if err != nil {
		return [32]byte{}, err
	}
	defer f.Close()
	h := sha256.New()
	// A bad block cannot be read: hash what the reads give, block by block.
	buf := make([]byte, eb)
	for off := int64(0); ; off += eb {
		n, err := f.ReadAt(buf, off)
		h.Write(buf[:n])
		if err == io.EOF || n == 0 {
			break
		}
		if err != nil {
			fmt.Fprintf(h, "unreadable %d: %v", off, err)
		}
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum, nil
}

func isBad(name string, off int64) (bool, error) {
	i, err := mtdIndex(name)
	if err != nil {
		return false, err
	}
	f, err := os.Open(fmt.Sprintf("/dev/mtd%d", i))
	if err != nil {
		return false, err
	}
	defer f.Close()
	r, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.MEMGETBADBLOCK, uintptr(unsafe.Pointer(&off)))
	if errno != 0 {
		return false, errno
	}
	return r == 1, nil
}

// attach attaches UBI to MTD device mtd as ubi0 (UBI_IOCATT; a blank
// partition is formatted on the way).
func attach(mtd int) error {
	f, err := os.Open("/dev/ubi_ctrl")
	if err != nil {
		return err
	}
	defer f.Close()
	req := make([]byte, 24) // struct ubi_attach_req
	binary.NativeEndian.PutUint32(req[4:], uint32(mtd))
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.UBI_IOCATT, uintptr(unsafe.Pointer(&req[0]))); errno != 0 {
		return fmt.Errorf("attach UBI to mtd%d: %w", mtd, errno)
	}
	return waitFor("/dev/ubi0")
}

func detach(num int32) error {
	f, err := os.Open("/dev/ubi_ctrl")
	if err != nil {
		return err
	}
	defer f.Close()
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.UBI_IOCDET, uintptr(unsafe.Pointer(&num))); errno != 0 {
		return fmt.Errorf("detach ubi%d: %w", num, errno)
	}
	return nil
}

// makeVolume makes a dynamic volume on ubi0 (UBI_IOCMKVOL) and writes
// data into it (UBI_IOCVOLUP), as an installer would.
func makeVolume(name string, size int64, data []byte) (int, error) {
	f, err := os.Open("/dev/ubi0")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	req := make([]byte, 152) // struct ubi_mkvol_req
	ne := binary.NativeEndian
	ne.PutUint32(req[0:], 0xffffffff) // UBI_VOL_NUM_AUTO
	ne.PutUint32(req[4:], 1)
	ne.PutUint64(req[8:], uint64(size))
	req[16] = 3 // dynamic
	ne.PutUint16(req[18:], uint16(len(name)))
	copy(req[24:], name)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.UBI_IOCMKVOL, uintptr(unsafe.Pointer(&req[0]))); errno != 0 {
		return 0, fmt.Errorf("make volume %s: %w", name, errno)
	}
	id := int(ne.Uint32(req))
	dev := fmt.Sprintf("/dev/ubi0_%d", id)
	if err := waitFor(dev); err != nil {
		return 0, err
	}
	v, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return 0, err
	}
	defer v.Close()
	n := int64(len(data))
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, v.Fd(), unix.UBI_IOCVOLUP, uintptr(unsafe.Pointer(&n))); errno != 0 {
		return 0, fmt.Errorf("update volume %s: %w", name, errno)
	}
	if _, err := v.Write(data); err != nil {
		return 0, err
	}
	return id, nil
}

// volumes is ubi0's volumes by name.
func volumes() map[string]int {
	out := map[string]int{}
	dirs, _ := filepath.Glob("/sys/class/ubi/ubi0/ubi0_*")
	for _, d := range dirs {
		id, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(d), "ubi0_"))
		name, _ := os.ReadFile(filepath.Join(d, "name"))
		if err == nil {
			out[strings.TrimSpace(string(name))] = id
		}
	}
	return out
}

// compareVolumes reads each named volume and compares its start with the
// data wanted there.
func compareVolumes(want map[string][]byte) string {
	vols := volumes()
	var out []string
	for _, name := range []string{"fit", "fit_spare", "ubootenv"} {
		data, ok := want[name]
		if !ok {
			continue
		}
		got, err := os.ReadFile(fmt.Sprintf("/dev/ubi0_%d", vols[name]))
		if _, exists := vols[name]; !exists {
			err = fmt.Errorf("no volume %s", name)
		}
		if err == nil && (len(got) < len(data) || !bytes.Equal(got[:len(data)], data)) {
			err = fmt.Errorf("differs")
		}
		out = append(out, fmt.Sprintf("%s %s", name, map[bool]string{true: "match", false: fmt.Sprintf("MISMATCH (%v)", err)}[err == nil]))
	}
	return strings.Join(out, ", ")
}

func waitFor(path string) error {
	for range 100 {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("%s did not appear", path)
}

func say(format string, a ...any) {
	fmt.Printf("IMAGETEST [%9.3f] %s\n", guest.Uptime(), fmt.Sprintf(format, a...))
}

// mountAll mounts /proc, /sys and /dev, and makes the console this
// process's output.
func mountAll() error {
	for _, m := range []struct{ fs, dir string }{{"proc", "/proc"}, {"sysfs", "/sys"}, {"devtmpfs", "/dev"}} {
		if err := os.MkdirAll(m.dir, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(m.fs, m.dir, m.fs, 0, ""); err != nil {
			return fmt.Errorf("%s on %s: %w", m.fs, m.dir, err)
		}
	}
	return guest.Console()
}
