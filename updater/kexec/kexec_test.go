package kexec

import (
	"os"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	ram := []Range{{0, 64 << 20}, {128 << 20, 192 << 20}}
	page := make([]byte, 4096)
	seg := func(mem, memsz uint64) Segment { return Segment{Buf: page[:min(memsz, 4096)], Mem: mem, Memsz: memsz} }
	tests := []struct {
		name  string
		img   Image
		want  string // part of the error; "" for none
		pageS uint64
	}{
		{"fine", Image{Entry: 0x1000, Segments: []Segment{seg(0x1000, 0x2000), seg(0x3000, 0x1000)}}, "", 4096},
		{"no segments", Image{}, "no segments", 4096},
		{"unaligned start", Image{Entry: 0x1800, Segments: []Segment{seg(0x1800, 0x1000)}}, "not aligned", 4096},
		{"unaligned size", Image{Entry: 0x1000, Segments: []Segment{seg(0x1000, 0x800)}}, "not aligned", 4096},
		{"16K pages", Image{Entry: 0x1000, Segments: []Segment{seg(0x1000, 0x1000)}}, "not aligned", 16384},
		{"overlap", Image{Entry: 0x1000, Segments: []Segment{seg(0x3000, 0x1000), seg(0x1000, 0x3000)}}, "overlap", 4096},
		{"outside RAM", Image{Entry: 0x1000, Segments: []Segment{seg(0x1000, 0x1000), seg(100<<20, 0x1000)}}, "not inside one range", 4096},
		{"across a hole", Image{Entry: 64<<20 - 0x1000, Segments: []Segment{seg(64<<20-0x1000, 0x2000)}}, "not inside one range", 4096},
		{"data larger than memory", Image{Entry: 0x1000, Segments: []Segment{{Buf: make([]byte, 0x1001), Mem: 0x1000, Memsz: 0x1000}}}, "do not fit", 4096},
		{"entry outside", Image{Entry: 0x9000, Segments: []Segment{seg(0x1000, 0x1000)}}, "entry", 4096},
		{"more than half the RAM", Image{Entry: 0, Segments: []Segment{seg(0, 32<<20), seg(128<<20, 64<<20)}}, "half", 4096},
		{"empty segment", Image{Entry: 0x1000, Segments: []Segment{seg(0x1000, 0x1000), {Mem: 0x2000}}}, "empty", 4096},
	}
	var many Image
	for i := range MaxSegments + 1 {
		many.Segments = append(many.Segments, seg(uint64(i)*0x1000, 0x1000))
	}
	tests = append(tests, struct {
		name  string
		img   Image
		want  string
		pageS uint64
	}{"17 segments", many, "at most 16", 4096})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.img.Check(ram, tc.pageS)
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("Check: %v, want %q", err, tc.want)
			}
		})
	}
}

func TestParseIOMem(t *testing.T) {
	const x86 = `00000000-00000fff : Reserved
00001000-0009fbff : System RAM
0009fc00-0009ffff : Reserved
000f0000-000fffff : System ROM
00100000-0ffdffff : System RAM
  01000000-01e02536 : Kernel code
  02200000-0278bfff : Kernel data
0ffe0000-0fffffff : Reserved
fd000000-fdffffff : 0000:00:01.0
`
	const malta = `00000000-00000fff : reserved
00001000-03ffffff : System RAM
  00100000-0087e2bf : Kernel code
10000000-17ffffff : GT-64120 PCI MEM
`
	tests := []struct {
		name, in string
		want     []Range
		err      string
	}{
		{"x86", x86, []Range{{0x1000, 0x9fc00}, {0x100000, 0xffe0000}}, ""},
		{"malta", malta, []Range{{0x1000, 0x4000000}}, ""},
		{"adjacent ranges merge", "00000000-00ffffff : System RAM\n01000000-01ffffff : System RAM\n", []Range{{0, 0x2000000}}, ""},
		{"not root", "00000000-00000000 : System RAM\n00000000-00000000 : Kernel code\n", nil, "root"},
		{"garbage", "xyz-0001 : System RAM\n", nil, "bad range"},
		{"none", "00000000-00000fff : reserved\n", nil, "no system RAM"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseIOMem(strings.NewReader(tc.in))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("ParseIOMem: %v %v, want error %q", got, err, tc.err)
				}
				return
			}
			if err != nil || len(got) != len(tc.want) {
				t.Fatalf("ParseIOMem: %v %v, want %v", got, err, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("ParseIOMem: %v, want %v", got, tc.want)
				}
			}
		})
	}
}

func TestParseMemmap(t *testing.T) {
	dir := t.TempDir()
	for i, e := range [][3]string{{"0x0", "0x9fbff", "System RAM"}, {"0x9fc00", "0x9ffff", "Reserved"}, {"0x100000", "0xffdffff", "System RAM"}} {
		d := dir + "/" + string(rune('0'+i))
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		for j, f := range []string{"start", "end", "type"} {
			if err := os.WriteFile(d+"/"+f, []byte(e[j]+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	got, err := ParseMemmap(dir)
	if err != nil || len(got) != 2 || got[0] != (Range{0, 0x9fc00}) || got[1] != (Range{0x100000, 0xffe0000}) {
		t.Fatalf("ParseMemmap: %v %v", got, err)
	}
}

// TestSystemRAM reads this machine's map: root sees real addresses.
func TestSystemRAM(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: /proc/iomem shows addresses to root only")
	}
	ram, err := SystemRAM()
	if err != nil {
		t.Fatal(err)
	}
	var total uint64
	for _, r := range ram {
		total += r.End - r.Start
	}
	t.Logf("system RAM: %v (%d MiB)", ram, total>>20)
	if total < 32<<20 {
		t.Fatalf("system RAM %v: less than 32 MiB", ram)
	}
}

func TestPlacer(t *testing.T) {
	p := &placer{ram: []Range{{0x1000, 0x10000}, {0x20000, 0x30000}}, pageSize: 0x1000}
	p.add([]byte{1}, 0x2f000, 1)
	if at, ok := p.highest(0x2000, 1<<32); !ok || at != 0x2d000 {
		t.Fatalf("highest: %#x %v, want 0x2d000", at, ok)
	}
	p.add(nil, 0x20000, 0xf000) // the rest of the upper bank
	if at, ok := p.highest(0x2000, 1<<32); !ok || at != 0xe000 {
		t.Fatalf("highest after filling the upper bank: %#x %v, want 0xe000", at, ok)
	}
	if at, ok := p.highest(0x2000, 0x8000); !ok || at != 0x6000 {
		t.Fatalf("highest below 0x8000: %#x %v, want 0x6000", at, ok)
	}
	p.add(nil, 0x3000, 0x1000)
	if at, ok := p.lowest(0x2000, 0, 1<<32); !ok || at != 0x1000 {
		t.Fatalf("lowest: %#x %v, want 0x1000", at, ok)
	}
	if at, ok := p.lowest(0x2000, 0x2000, 1<<32); !ok || at != 0x4000 {
		t.Fatalf("lowest from 0x2000: %#x %v, want 0x4000", at, ok)
	}
	if _, ok := p.lowest(0x20000, 0, 1<<32); ok {
		t.Fatal("lowest found room for more than a bank")
	}
}
