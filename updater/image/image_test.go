package image

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/roostrouter/roost/boards"
)

func u64(n uint64) *uint64 { return &n }

// testBoard has a NOR flash (bootloader, calibration, an image slot) and a
// NAND one (a raw image slot, then UBI with an image volume and the
// bootloader's environment).
func testBoard(method string) boards.Board {
	return boards.Board{Name: "testboard", ImageWrite: method, Flash: []boards.Flash{
		{Name: "nor", Kind: boards.FlashNOR, SizeMB: 1, Partitions: []boards.Partition{
			{Name: "u-boot", Use: boards.UseBootloader, Offset: u64(0), Size: u64(64 << 10), Never: true},
			{Name: "art", Use: boards.UseCalibration, Offset: u64(64 << 10), Size: u64(64 << 10), Never: true},
			{Name: "firmware", Use: boards.UseImage, Offset: u64(128 << 10), Size: u64(896 << 10)},
		}},
		{Name: "nand", Kind: boards.FlashSPINAND, SizeMB: 4, Partitions: []boards.Partition{
			{Name: "kernel", Use: boards.UseImage, Offset: u64(0), Size: u64(1 << 20)},
			{Name: "ubi", Use: boards.UseUBI, Offset: u64(1 << 20), Size: u64(3 << 20), Never: true},
			{Name: "fit", Use: boards.UseImage, Volume: true},
			{Name: "ubootenv", Use: boards.UseBootloaderEnv, Volume: true, Never: true},
		}},
	}}
}

const testProcMTD = `dev:    size   erasesize  name
mtd0: 00010000 00010000 "u-boot"
mtd1: 00010000 00010000 "art"
mtd2: 000e0000 00010000 "firmware"
mtd3: 00100000 00020000 "kernel"
mtd4: 00300000 00020000 "ubi"
`

const leb = 126976 // a 128 KiB block less UBI's two headers in 2 KiB pages

// fixture is a root with the test board's /proc/mtd, its flash, and UBI
// attached to mtd4 with volumes fit (8 LEBs) and ubootenv.
func fixture(t *testing.T) (Config, *fakeDevices) {
	t.Helper()
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "proc/mtd"), testProcMTD)
	writeFile(t, filepath.Join(root, "proc/self/mounts"), "tmpfs / tmpfs rw 0 0\nproc /proc proc rw 0 0\n")
	sys := filepath.Join(root, "sys/class/ubi/ubi0")
	writeFile(t, filepath.Join(sys, "mtd_num"), "4\n")
	writeFile(t, filepath.Join(sys, "eraseblock_size"), "126976\n")
	u := &fakeUBI{t: t, sys: sys, leb: leb, avail: 10, vols: map[int]*fakeVol{}}
	u.add("fit", 8)
	u.add("ubootenv", 1)
	u.vols[0].data = []byte("the old image")
	d := &fakeDevices{ubi: u, mtd: map[string]*fakeFlash{
		"mtd0": newFlash(64<<10, 64<<10, 1, 3),
		"mtd1": newFlash(64<<10, 64<<10, 1, 3),
		"mtd2": newFlash(896<<10, 64<<10, 1, 3),
		"mtd3": newFlash(1<<20, 128<<10, 2048, 4, 2*128<<10),
		"mtd4": newFlash(3<<20, 128<<10, 2048, 4),
	}}
	return Config{Board: testBoard(boards.ImageMTD), Root: root}, d
}

func randomImage(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func TestRefusals(t *testing.T) {
	for _, tc := range []struct {
		name      string
		method    string
		partition string
		size      int64
		setup     func(t *testing.T, c Config, d *fakeDevices)
		want      string
		noOpens   bool // refused from the board's data alone
	}{
		{name: "never, calibration", partition: "art", size: 1, want: `partition "art" of board testboard (calibration, on nor) is never written: refused; the board's image partitions are "firmware", "kernel"`, noOpens: true},
		{name: "never, bootloader", partition: "u-boot", size: 1, want: "is never written", noOpens: true},
		{name: "never, the UBI partition raw", partition: "ubi", size: 1, want: `partition "ubi" of board testboard (ubi, on nand) is never written`, noOpens: true},
		{name: "never, a volume", method: boards.ImageUBI, partition: "ubootenv", size: 1, want: `"ubootenv" of board testboard (bootloader-env, on nand) is never written`, noOpens: true},
		{name: "a volume by MTD", partition: "fit", size: 1, want: `board testboard has no image partition "fit" that mtd writes: refused; its image partitions are "firmware", "kernel"`, noOpens: true},
		{name: "not the board's", partition: "rootfs_data", size: 1, want: `no image partition "rootfs_data"`, noOpens: true},
		{name: "which one", size: 1, want: `board testboard has 2 image partitions that mtd writes ("firmware", "kernel"): name one`, noOpens: true},
		{name: "no image writes", method: "-", partition: "firmware", size: 1, want: `board testboard writes no image (imageWrite "")`, noOpens: true},
		{name: "no size", partition: "firmware", size: 0, want: "size 0", noOpens: true},
		{name: "too big for NOR", partition: "firmware", size: 896<<10 + 1, want: `the image (917505 bytes) does not fit MTD partition "firmware" (/dev/mtd2): 917504 bytes usable (917504 of 917504, less 0 bad blocks of 65536): refused, build a smaller image`},
		{name: "too big with a bad block", partition: "kernel", size: 1<<20 - 64<<10, want: `does not fit MTD partition "kernel" (/dev/mtd3): 917504 bytes usable (1048576 of 1048576, less 1 bad blocks of 131072)`},
		{name: "not in /proc/mtd", partition: "firmware", size: 1, want: `no MTD partition "firmware" in /proc/mtd (the kernel has "u-boot", "art"): is this a testboard`,
			setup: func(t *testing.T, c Config, d *fakeDevices) {
				writeFile(t, c.path("proc/mtd"), strings.Join(strings.Split(testProcMTD, "\n")[:3], "\n"))
			}},
		{name: "twice in /proc/mtd", partition: "firmware", size: 1, want: `2 MTD partitions are called "firmware"`,
			setup: func(t *testing.T, c Config, d *fakeDevices) {
				writeFile(t, c.path("proc/mtd"), testProcMTD+`mtd5: 00010000 00010000 "firmware"`+"\n")
			}},
		{name: "another layout", partition: "firmware", size: 1, want: `MTD partition "firmware" (/dev/mtd2) has 983040 bytes, board testboard says 917504: refused, the kernel's partitions are not the board's`,
			setup: func(t *testing.T, c Config, d *fakeDevices) {
				writeFile(t, c.path("proc/mtd"), strings.Replace(testProcMTD, "000e0000", "000f0000", 1))
			}},
		{name: "UBI attached", partition: "kernel", size: 1, want: `MTD partition "kernel" (/dev/mtd3): UBI device ubi1 is attached to it: refused`,
			setup: func(t *testing.T, c Config, d *fakeDevices) {
				writeFile(t, c.path("sys/class/ubi/ubi1/mtd_num"), "3\n")
			}},
		{name: "mounted", partition: "firmware", size: 1, want: `MTD partition "firmware" (/dev/mtd2) is mounted (/dev/mtdblock2 on /rom): refused`,
			setup: func(t *testing.T, c Config, d *fakeDevices) {
				writeFile(t, c.path("proc/self/mounts"), "/dev/mtdblock2 /rom squashfs ro 0 0\n")
			}},
		{name: "NAND where the board says NOR", partition: "firmware", size: 1, want: `MTD partition "firmware" (/dev/mtd2) is MTD type 4, but board testboard's flash nor is nor: refused`,
			setup: func(t *testing.T, c Config, d *fakeDevices) { d.mtd["mtd2"].geo.Type = mtdNAND }},
		{name: "read-only", partition: "firmware", size: 1, want: "is read-only (its device tree node says so): refused",
			setup: func(t *testing.T, c Config, d *fakeDevices) { d.mtd["mtd2"].geo.Flags = 0 }},
		{name: "no device node", partition: "firmware", size: 1, want: `MTD partition "firmware" (/dev/mtd2): open`,
			setup: func(t *testing.T, c Config, d *fakeDevices) { delete(d.mtd, "mtd2") }},
		{name: "UBI not attached", method: boards.ImageUBI, partition: "fit", size: 1, want: `no UBI device is attached to /dev/mtd4 (partition "ubi"): refused, attach it (ubiattach -m 4`,
			setup: func(t *testing.T, c Config, d *fakeDevices) {
				os.RemoveAll(c.path("sys/class/ubi"))
			}},
		{name: "no live volume", method: boards.ImageUBI, partition: "fit", size: 1, want: `UBI device ubi0 has no volume "fit" (it has "fitx", "ubootenv"): refused`,
			setup: func(t *testing.T, c Config, d *fakeDevices) { d.ubi.rename([]ubiRename{{ID: 0, Name: "fitx"}}) }},
		{name: "no room for the spare", method: boards.ImageUBI, partition: "fit", size: 10*leb + 1, want: `the image (1269761 bytes) does not fit spare volume "fit_spare" on UBI device ubi0 (on /dev/mtd4): 1269760 bytes (10 LEBs of 126976: 0 in the spare, 10 free)`},
		{name: "spare is the board's", method: boards.ImageUBI, partition: "fit", size: 1, want: `the spare for volume "fit" would be "fit_spare", which board testboard has as a recovery partition`,
			setup: func(t *testing.T, c Config, d *fakeDevices) {
				f := &c.Board.Flash[1]
				f.Partitions = append(f.Partitions, boards.Partition{Name: "fit_spare", Use: boards.UseRecovery, Volume: true, Never: true})
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, d := fixture(t)
			switch tc.method {
			case "":
				c.Board.ImageWrite = boards.ImageMTD
			case "-":
				c.Board.ImageWrite = ""
			default:
				c.Board.ImageWrite = tc.method
			}
			c.Partition = tc.partition
			if tc.setup != nil {
				tc.setup(t, c, d)
			}
			img := randomImage(t, int(max(tc.size, 0)))
			_, err := c.write(context.Background(), Image{R: bytes.NewReader(img), Size: tc.size}, d)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v\nwant %q", err, tc.want)
			}
			if w := d.writeOpens(); len(w) > 0 {
				t.Errorf("refused, but opened for writing: %v", w)
			}
			if tc.noOpens && len(d.opens) > 0 {
				t.Errorf("refused from the board's data, but opened %v", d.opens)
			}
			if _, cerr := c.check(tc.size, d); cerr == nil || cerr.Error() != err.Error() {
				t.Errorf("Check says %v, Write %v", cerr, err)
			}
		})
	}
}

// progressLog keeps Progress reports and checks each phase only grows.
type progressLog struct {
	t    *testing.T
	last map[string]Progress
	seq  []string // phases in the order they started
}

func newProgressLog(t *testing.T) *progressLog {
	return &progressLog{t: t, last: map[string]Progress{}}
}

func (l *progressLog) report(p Progress) {
	prev, seen := l.last[p.Phase]
	if !seen {
		l.seq = append(l.seq, p.Phase)
	} else if p.Done < prev.Done || p.Total != prev.Total {
		l.t.Errorf("progress went from %+v to %+v", prev, p)
	}
	if p.Done > p.Total {
		l.t.Errorf("progress %+v: done past the total", p)
	}
	l.last[p.Phase] = p
}

func TestWriteNOR(t *testing.T) {
	c, d := fixture(t)
	c.Partition = "firmware"
	log := newProgressLog(t)
	c.Progress = log.report
	img := randomImage(t, 500<<10)
	sum := sha256.Sum256(img)
	res, err := c.write(context.Background(), Image{R: bytes.NewReader(img), Size: int64(len(img)), SHA256: sum[:]}, d)
	if err != nil {
		t.Fatal(err)
	}
	flash := d.mtd["mtd2"]
	if !bytes.Equal(flash.data[:len(img)], img) {
		t.Error("the flash does not hold the image")
	}
	if !bytes.Equal(flash.data[len(img):512<<10], bytes.Repeat([]byte{0xff}, 12<<10)) || flash.data[512<<10] != 0x5a {
		t.Error("want the image's last block erased past it, and the blocks after it untouched")
	}
	if res.SHA256 != sum || res.Erased != 512<<10 || res.Device != "/dev/mtd2" || res.Method != boards.ImageMTD || len(res.BadBlocks) != 0 {
		t.Errorf("result %+v", res)
	}
	if want := []string{PhaseErase, PhaseWrite, PhaseVerify}; !slices.Equal(log.seq, want) {
		t.Errorf("phases %v, want %v", log.seq, want)
	}
	for phase, total := range map[string]uint64{PhaseErase: 512 << 10, PhaseWrite: 500 << 10, PhaseVerify: 500 << 10} {
		if p := log.last[phase]; p.Done != total || p.Total != total {
			t.Errorf("%s ended at %+v, want %d of %d", phase, p, total, total)
		}
	}
	root := c.Root
	if want := []string{"ro " + root + "/dev/mtd2", "rw " + root + "/dev/mtd2"}; !slices.Equal(d.opens, want) {
		t.Errorf("opens %v, want %v: read-only for the checks, then read-write", d.opens, want)
	}
}

func TestWriteNANDSkipsBadBlocks(t *testing.T) {
	c, d := fixture(t)
	c.Partition = "kernel"
	img := randomImage(t, 700<<10)
	flash := d.mtd["mtd3"]
	res, err := c.write(context.Background(), Image{R: bytes.NewReader(img), Size: int64(len(img))}, d)
	if err != nil {
		t.Fatal(err)
	}
	const eb = 128 << 10
	// Blocks 0, 1, then 3 to 6: block 2 is bad and keeps what it had.
	got := append(append([]byte{}, flash.data[:2*eb]...), flash.data[3*eb:]...)
	if !bytes.Equal(got[:len(img)], img) {
		t.Error("the flash does not hold the image around its bad block")
	}
	if !bytes.Equal(flash.data[2*eb:3*eb], bytes.Repeat([]byte{0x5a}, eb)) {
		t.Error("the bad block was written")
	}
	if res.Erased != 6*eb || !slices.Equal(res.BadBlocks, []uint64{2 * eb}) || res.Usable != 7*eb || flash.erases != 6 {
		t.Errorf("result %+v, %d erases", res, flash.erases)
	}
}

func TestWriteFailures(t *testing.T) {
	img := randomImage(t, 200<<10)
	other := sha256.Sum256([]byte("another image"))
	for _, tc := range []struct {
		name  string
		img   Image
		setup func(c *Config, d *fakeDevices)
		want  string
	}{
		{name: "a write that does not take", img: Image{R: bytes.NewReader(img), Size: int64(len(img))},
			setup: func(c *Config, d *fakeDevices) { d.mtd["mtd2"].flipWrite = true },
			want:  `MTD partition "firmware" (/dev/mtd2) reads back SHA-256 `},
		{name: "short image", img: Image{R: bytes.NewReader(img[:100<<10]), Size: int64(len(img))},
			want: "read the image: unexpected EOF after 102400 of 204800 bytes"},
		{name: "wrong hash", img: Image{R: bytes.NewReader(img), Size: int64(len(img)), SHA256: other[:]},
			want: "its sender said " + hex.EncodeToString(other[:]) + ": refused"},
		{name: "bad hash length", img: Image{R: bytes.NewReader(img), Size: int64(len(img)), SHA256: []byte{1}},
			want: "SHA256 of 1 bytes: want 32"},
		{name: "cancelled", img: Image{R: bytes.NewReader(img), Size: int64(len(img))},
			want: `MTD partition "firmware" (/dev/mtd2): stopped after 131072 of 262144 bytes: context canceled`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, d := fixture(t)
			c.Partition = "firmware"
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tc.name == "cancelled" {
				c.Progress = func(p Progress) {
					if p.Done >= 128<<10 {
						cancel()
					}
				}
			}
			if tc.setup != nil {
				tc.setup(&c, d)
			}
			_, err := c.write(ctx, tc.img, d)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}

// TestWriteReadsNoFurther: a stream that goes on past the image (a
// connection waiting for the result) is not read past it.
func TestWriteReadsNoFurther(t *testing.T) {
	c, d := fixture(t)
	c.Partition = "firmware"
	img := randomImage(t, 100<<10)
	r := bytes.NewReader(append(img, "more"...))
	if _, err := c.write(context.Background(), Image{R: r, Size: int64(len(img))}, d); err != nil {
		t.Fatal(err)
	}
	if r.Len() != 4 {
		t.Errorf("%d bytes left unread, want the 4 past the image", r.Len())
	}
}

func blockFixture(t *testing.T, size int) (Config, *fakeDevices) {
	c, d := fixture(t)
	c.Board = boards.Board{Name: "testdisk", ImageWrite: boards.ImageBlock, Flash: []boards.Flash{
		{Name: "mmcblk0", Kind: boards.FlashEMMC, Partitions: []boards.Partition{
			{Name: "mmcblk0p1", Use: boards.UseStore},
			{Name: "mmcblk0p2", Use: boards.UseImage},
			{Name: "mmcblk0p3", Use: boards.UseRecovery, Never: true},
		}},
	}}
	writeFile(t, c.path("dev/mmcblk0p2"), strings.Repeat("x", size))
	writeFile(t, c.path("sys/class/block/mmcblk0p2/ro"), "0\n")
	return c, d
}

func TestWriteBlock(t *testing.T) {
	c, d := blockFixture(t, 3<<20)
	log := newProgressLog(t)
	c.Progress = log.report
	img := randomImage(t, 2<<20+5)
	res, err := c.write(context.Background(), Image{R: bytes.NewReader(img), Size: int64(len(img))}, d)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(c.path("dev/mmcblk0p2"))
	if !bytes.Equal(got[:len(img)], img) || res.Device != "/dev/mmcblk0p2" || res.Usable != 3<<20 {
		t.Errorf("result %+v; the device holds the image: %v", res, bytes.Equal(got[:len(img)], img))
	}
	if want := []string{PhaseWrite, PhaseVerify}; !slices.Equal(log.seq, want) {
		t.Errorf("phases %v, want %v", log.seq, want)
	}
}

func TestBlockRefusals(t *testing.T) {
	for _, tc := range []struct {
		name, partition string
		size            int64
		setup           func(t *testing.T, c *Config)
		want            string
	}{
		{name: "never", partition: "mmcblk0p3", size: 1, want: `partition "mmcblk0p3" of board testdisk (recovery, on mmcblk0) is never written`},
		{name: "the store", partition: "mmcblk0p1", size: 1, want: `no image partition "mmcblk0p1"`},
		{name: "too big", size: 3<<20 + 1, want: `the image (3145729 bytes) does not fit partition "mmcblk0p2" (/dev/mmcblk0p2) (3145728 bytes)`},
		{name: "mounted", size: 1, want: `is mounted (/dev/mmcblk0p2 on /mnt)`,
			setup: func(t *testing.T, c *Config) {
				writeFile(t, c.path("proc/self/mounts"), "/dev/mmcblk0p2 /mnt ext4 rw 0 0\n")
			}},
		{name: "read-only", size: 1, want: "is read-only",
			setup: func(t *testing.T, c *Config) { writeFile(t, c.path("sys/class/block/mmcblk0p2/ro"), "1\n") }},
		{name: "held", size: 1, want: "is in use by dm-0",
			setup: func(t *testing.T, c *Config) { writeFile(t, c.path("sys/class/block/mmcblk0p2/holders/dm-0"), "") }},
		{name: "the whole disk", size: 1, want: "is the whole disk, which holds board testdisk's other partitions",
			setup: func(t *testing.T, c *Config) {
				c.Board.Flash[0].Partitions[1].Name = "mmcblk0"
				c.Partition = "mmcblk0"
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, d := blockFixture(t, 3<<20)
			c.Partition = tc.partition
			if tc.setup != nil {
				tc.setup(t, &c)
			}
			_, err := c.write(context.Background(), Image{R: bytes.NewReader(randomImage(t, int(tc.size))), Size: tc.size}, d)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
			if w := d.writeOpens(); len(w) > 0 {
				t.Errorf("refused, but opened for writing: %v", w)
			}
		})
	}
}

func TestWriteUBISwaps(t *testing.T) {
	c, d := fixture(t)
	c.Board.ImageWrite = boards.ImageUBI
	u := d.ubi
	log := newProgressLog(t)
	c.Progress = log.report
	first := randomImage(t, 3*leb+7)
	res, err := c.write(context.Background(), Image{R: bytes.NewReader(first), Size: int64(len(first))}, d)
	if err != nil {
		t.Fatal(err)
	}
	// The spare was made (ID 2), written, and took the live name; the old
	// image is the spare now, untouched.
	if u.name(2) != "fit" || u.name(0) != "fit_spare" || u.name(1) != "ubootenv" {
		t.Errorf("names after the swap: 0 %q, 1 %q, 2 %q", u.name(0), u.name(1), u.name(2))
	}
	if !bytes.Equal(u.vols[2].data, first) || string(u.vols[0].data) != "the old image" {
		t.Error("want the new image in volume 2 and the old one in volume 0")
	}
	if res.Device != "/dev/ubi0_2" || res.Spare != "fit_spare" || len(u.removed) != 0 {
		t.Errorf("result %+v; removed %v", res, u.removed)
	}
	if want := []string{PhaseWrite, PhaseVerify, PhaseSwap}; !slices.Equal(log.seq, want) {
		t.Errorf("phases %v, want %v", log.seq, want)
	}
	if want := [][]ubiRename{{{0, "fit_spare"}, {2, "fit"}}}; !slices.EqualFunc(u.renames, want, slices.Equal) {
		t.Errorf("renames %v, want %v: both in one request", u.renames, want)
	}

	c.Progress = nil
	// The next image goes into volume 0, grown from 8 LEBs to 9 (out of
	// the 10-4=6 free), and swaps back.
	second := randomImage(t, 9*leb-1)
	if _, err := c.write(context.Background(), Image{R: bytes.NewReader(second), Size: int64(len(second))}, d); err != nil {
		t.Fatal(err)
	}
	if u.name(0) != "fit" || u.name(2) != "fit_spare" || !bytes.Equal(u.vols[0].data, second) || !bytes.Equal(u.vols[2].data, first) || u.vols[0].reserved != 9 || u.avail != 5 {
		t.Errorf("after the second write: 0 %q (%d LEBs), 2 %q, %d free", u.name(0), u.vols[0].reserved, u.name(2), u.avail)
	}

	// A spare that does not read back what was written is not swapped in.
	u.corrupt = true
	third := randomImage(t, leb)
	_, err = c.write(context.Background(), Image{R: bytes.NewReader(third), Size: int64(len(third))}, d)
	if err == nil || !strings.Contains(err.Error(), `spare volume "fit_spare" (/dev/ubi0_2) reads back SHA-256`) {
		t.Fatalf("got %v", err)
	}
	if len(u.renames) != 2 || u.name(0) != "fit" || !bytes.Equal(u.vols[0].data, second) {
		t.Error("a spare that failed its compare was swapped in, or the live volume changed")
	}
}

func TestWriteUBIWrongHashNotSwapped(t *testing.T) {
	c, d := fixture(t)
	c.Board.ImageWrite = boards.ImageUBI
	img := randomImage(t, 1000)
	other := sha256.Sum256(nil)
	_, err := c.write(context.Background(), Image{R: bytes.NewReader(img), Size: 1000, SHA256: other[:]}, d)
	if err == nil || !strings.Contains(err.Error(), "its sender said") || !strings.Contains(err.Error(), "the spare is not swapped in") {
		t.Fatalf("got %v", err)
	}
	if len(d.ubi.renames) != 0 || d.ubi.name(0) != "fit" {
		t.Errorf("renamed %v", d.ubi.renames)
	}
}

func TestCheckReportsTarget(t *testing.T) {
	c, d := fixture(t)
	c.Partition = "kernel"
	tg, err := c.check(1, d)
	if err != nil {
		t.Fatal(err)
	}
	if tg.Method != boards.ImageMTD || tg.Device != "/dev/mtd3" || tg.Usable != 7*128<<10 || len(d.writeOpens()) != 0 {
		t.Errorf("target %+v, opens %v", tg, d.opens)
	}
	c.Board.ImageWrite = boards.ImageUBI
	c.Partition = ""
	tg, err = c.check(1, d)
	if err != nil {
		t.Fatal(err)
	}
	if tg.Method != boards.ImageUBI || tg.Partition != "fit" || tg.Device != "" || tg.Usable != 10*leb {
		t.Errorf("UBI target %+v", tg)
	}
}
