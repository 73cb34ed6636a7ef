package image

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParseProcMTD(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []MTD
		err      string
	}{
		{name: "a router's", in: "dev:    size   erasesize  name\nmtd0: 00040000 00010000 \"u-boot\"\nmtd1: 00fa0000 00010000 \"firmware\"\n",
			want: []MTD{{0, 0x40000, 0x10000, "u-boot"}, {1, 0xfa0000, 0x10000, "firmware"}}},
		{name: "names with spaces and quotes", in: "dev:    size   erasesize  name\nmtd0: 00400000 00020000 \"NAND simulator partition 0\"\nmtd12: 00400000 00020000 \"a \"b\"\"\n",
			want: []MTD{{0, 0x400000, 0x20000, "NAND simulator partition 0"}, {12, 0x400000, 0x20000, `a "b"`}}},
		{name: "none", in: "dev:    size   erasesize  name\n"},
		{name: "empty name", in: "mtd0: 00040000 00010000 \"\"\n", want: []MTD{{0, 0x40000, 0x10000, ""}}},
		{name: "no quotes", in: "mtd0: 00040000 00010000 u-boot\n", err: `line 1 "mtd0: 00040000 00010000 u-boot": name u-boot: want it in quotes`},
		{name: "not mtd", in: "dev:    size   erasesize  name\nubi0: 00040000 00010000 \"x\"\n", err: "line 2"},
		{name: "index", in: "mtd01: 00040000 00010000 \"x\"\n", err: `device "mtd01"`},
		{name: "size", in: "mtd0: 0x040000 00010000 \"x\"\n", err: `size "0x040000"`},
		{name: "erase size", in: "mtd0: 00040000 100000000 \"x\"\n", err: "erase size"},
		{name: "short", in: "mtd0: 00040000\n", err: "want a size, an erase size and a name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseProcMTD(strings.NewReader(tc.in))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("got %v, %v; want error %q", got, err, tc.err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
	if d := (MTD{Index: 7}).Device(); d != "/dev/mtd7" {
		t.Errorf("device %s", d)
	}
}

// FuzzParseProcMTD: the parser never panics, and what it accepts it reads
// the same once written back as the kernel writes it.
func FuzzParseProcMTD(f *testing.F) {
	f.Add(testProcMTD)
	f.Add("mtd0: 00400000 00020000 \"NAND simulator partition 0\"\n")
	f.Add("mtd0: 0 0 \"\"\nmtd1: ffffffffffffffff ffffffff \"\"\"\n")
	f.Fuzz(func(t *testing.T, in string) {
		got, err := ParseProcMTD(strings.NewReader(in))
		if err != nil {
			return
		}
		var b strings.Builder
		b.WriteString("dev:    size   erasesize  name\n")
		for _, m := range got {
			fmt.Fprintf(&b, "mtd%d: %08x %08x \"%s\"\n", m.Index, m.Size, m.EraseSize, m.Name)
		}
		again, err := ParseProcMTD(strings.NewReader(b.String()))
		if err != nil || !reflect.DeepEqual(again, got) && len(got) > 0 {
			t.Fatalf("%q parses to %+v; written back, %q parses to %+v, %v", in, got, b.String(), again, err)
		}
	})
}

// TestRequestLayouts checks the UBI request sizes against those the
// ioctl numbers carry (x/sys/unix's, from the kernel's headers), and
// where the fields go.
func TestRequestLayouts(t *testing.T) {
	size := func(req uint) int { return int(req>>16) & 0x3fff } // this machine's _IOC layout (not MIPS)
	for _, tc := range []struct {
		name      string
		req, size int
	}{
		{"UBI_IOCMKVOL", size(unix.UBI_IOCMKVOL), mkvolReqSize},
		{"UBI_IOCRSVOL", size(unix.UBI_IOCRSVOL), rsvolReqSize},
		{"UBI_IOCRNVOL", size(unix.UBI_IOCRNVOL), rnvolReqSize},
		{"UBI_IOCVOLUP", size(unix.UBI_IOCVOLUP), 8},
		{"MEMERASE64", size(unix.MEMERASE64), 16},
		{"MEMGETBADBLOCK", size(unix.MEMGETBADBLOCK), 8},
		{"MEMGETINFO", size(unix.MEMGETINFO), 32},
	} {
		if tc.req != tc.size {
			t.Errorf("%s carries %d bytes, the struct here has %d", tc.name, tc.req, tc.size)
		}
	}
	mk := mkvolReq("fit_spare", 1<<20, true)
	if int32(ne.Uint32(mk)) != -1 || ne.Uint32(mk[4:]) != 1 || ne.Uint64(mk[8:]) != 1<<20 || mk[16] != ubiStatic || ne.Uint16(mk[18:]) != 9 || string(mk[24:33]) != "fit_spare" || mk[33] != 0 {
		t.Errorf("mkvol request % x", mk[:40])
	}
	rn := rnvolReq([]ubiRename{{0, "fit_spare"}, {2, "fit"}})
	e1 := rn[16+rnvolEntrySize:]
	if ne.Uint32(rn) != 2 || ne.Uint32(rn[16:]) != 0 || string(rn[24:33]) != "fit_spare" || ne.Uint32(e1) != 2 || ne.Uint16(e1[4:]) != 3 || string(e1[8:12]) != "fit\x00" {
		t.Errorf("rename request % x", rn[:16+2*rnvolEntrySize])
	}
}
