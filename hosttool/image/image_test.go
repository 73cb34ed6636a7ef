package image

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/roostrouter/roost/boards"
	"github.com/roostrouter/roost/updater/registry"
	"github.com/roostrouter/roost/updater/storepath"
)

func TestPlanFor(t *testing.T) {
	for _, tc := range []struct {
		board string
		want  Plan
		err   string
	}{
		{"gl-ar750", Plan{Board: "gl-ar750", Kind: KindUImage, Partition: "firmware", PartitionBytes: 16384000, Arch: "mips",
			Boot: boards.Boot{Format: "uimage", Compression: "lzma", LoadAddress: 0x80060000, EntryAddress: 0x80060000, DeviceTree: "qca/qca9531_glinet_gl-ar750.dtb", RootAlignBytes: 64 << 10}}, ""},
		{"gl-mt300n-v2", Plan{Board: "gl-mt300n-v2", Kind: KindUImage, Partition: "firmware", PartitionBytes: 16449536, Arch: "mips",
			Boot: boards.Boot{Format: "uimage", Compression: "lzma", LoadAddress: 0x80000000, EntryAddress: 0x80000000, DeviceTree: "ralink/mt7628an_glinet_gl-mt300n-v2.dtb", RootAlignBytes: 64 << 10}}, ""},
		{"belkin-rt3200", Plan{Board: "belkin-rt3200", Kind: KindFIT, Partition: "fit", PartitionBytes: 131072000, EraseBlockBytes: 128 << 10, PageBytes: 2048, Arch: "arm64",
			Boot: boards.Boot{Format: "fit", Compression: "gzip", LoadAddress: 0x44000000, EntryAddress: 0x44000000, DeviceTree: "mediatek/mt7622-linksys-e8450-ubi.dtb", RootAlignBytes: 4096}}, ""},
		{"openwrt-one", Plan{Board: "openwrt-one", Kind: KindFIT, Partition: "fit", PartitionBytes: 267386880, EraseBlockBytes: 128 << 10, PageBytes: 2048, Arch: "arm64",
			Boot: boards.Boot{Format: "fit", Compression: "gzip", LoadAddress: 0x44000000, EntryAddress: 0x44000000, DeviceTree: "mediatek/mt7981b-openwrt-one.dtb", DeviceTreeAddress: 0x43f00000, RootAlignBytes: 4096}}, ""},
		{"turris-omnia", Plan{Board: "turris-omnia", Kind: KindExt4, Partition: "mmcblk0p1"}, ""},
		{"qemu-x86_64", Plan{Board: "qemu-x86_64", Kind: KindExt4, Partition: "vda"}, ""},
		{"lab", Plan{}, `board lab has no image to build: it writes none (imageWrite "")`},
		{"qemu-mipsel", Plan{Board: "qemu-mipsel", Kind: KindSquashfs, Partition: "image-a", PartitionBytes: 16 << 20}, ""},
	} {
		t.Run(tc.board, func(t *testing.T) {
			b, err := boards.Lookup(tc.board)
			if err != nil {
				t.Fatal(err)
			}
			got, err := PlanFor(b)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("PlanFor(%s) = %+v, %v; want error %q", tc.board, got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("PlanFor(%s) = %+v, %v; want %+v", tc.board, got, err, tc.want)
			}
		})
	}
}

// TestFits: an image larger than its partition is refused with both sizes,
// by a fake size rather than a huge system.
func TestFits(t *testing.T) {
	nor := Plan{Board: "gl-ar750", Kind: KindSquashfs, Partition: "firmware", PartitionBytes: 16384000}
	ubi := Plan{Board: "belkin-rt3200", Kind: KindUBI, Partition: "fit", PartitionBytes: 131072000}
	for _, tc := range []struct {
		name string
		plan Plan
		size uint64
		want string
	}{
		{"fits", nor, 4 << 20, ""},
		{"exactly", nor, 16384000, ""},
		{"a byte over", nor, 16384001, "the squashfs image is 16384001 bytes (15.6 MiB), more than partition firmware of board gl-ar750 holds: 16384000 bytes (15.6 MiB); make the system smaller"},
		{"UBI over", ubi, 200 << 20, "the ubi image is 209715200 bytes (200.0 MiB), more than the UBI partition holding volume fit of board belkin-rt3200 holds: 131072000 bytes (125.0 MiB); make the system smaller"},
		{"FIT over", Plan{Board: "openwrt-one", Kind: KindFIT, Partition: "fit", PartitionBytes: 267386880}, 300 << 20,
			"the fit image is 314572800 bytes (300.0 MiB), more than the UBI partition holding volume fit of board openwrt-one holds: 267386880 bytes (255.0 MiB); make the system smaller"},
		{"disk of any size", Plan{Kind: KindExt4, Partition: "vda"}, 1 << 40, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.plan.Fits(tc.size)
			if got := errString(err); got != tc.want {
				t.Errorf("Fits(%d) = %q, want %q", tc.size, got, tc.want)
			}
		})
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// TestMakeRefusesTooBig makes a real squashfs for a partition made too
// small for it: refused, and nothing left at the destination.
func TestMakeRefusesTooBig(t *testing.T) {
	needTools(t, "mksquashfs")
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "img")
	plan := Plan{Board: "b", Kind: KindSquashfs, Partition: "firmware", PartitionBytes: 100}
	size, err := Make(context.Background(), plan, root, out, 0, func(string) {})
	if err == nil || !strings.Contains(err.Error(), "more than partition firmware of board b holds: 100 bytes") {
		t.Fatalf("Make = %d, %v; want a refusal", size, err)
	}
	if left, _ := os.ReadDir(filepath.Dir(out)); len(left) != 0 {
		t.Errorf("a refused image left %v", left)
	}
	plan.PartitionBytes = 1 << 20
	if size, err = Make(context.Background(), plan, root, out, 0, func(string) {}); err != nil || size == 0 {
		t.Fatalf("Make = %d, %v", size, err)
	}
	if fi, err := os.Stat(out); err != nil || uint64(fi.Size()) != size {
		t.Errorf("%s: %v, %v; want %d bytes", out, fi, err, size)
	}
}

func TestMissingTool(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	for tool, pkg := range map[string]string{"ubinize": "mtd-utils", "mksquashfs": "squashfs-tools", "mke2fs": "e2fsprogs",
		"mkimage": "u-boot-tools", "dumpimage": "u-boot-tools", "lzma_alone": "lzma-alone", "fdtput": "device-tree-compiler"} {
		_, err := lookPath(tool, []string{t.TempDir()})
		if want := "install Debian's " + pkg; err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("lookPath(%s) = %v, want %q", tool, err, want)
		}
	}
}

// TestOrdered: references come before their referrers, whatever the
// order given; self-references do not loop.
func TestOrdered(t *testing.T) {
	p := func(name string) storepath.Path { return storepath.Path(strings.Repeat("a", 32) + "-" + name) }
	a, b, c := p("a"), p("b"), p("c")
	in := []registry.Info{
		{Path: a, References: []storepath.Path{a, b, c}},
		{Path: b, References: []storepath.Path{c}},
		{Path: c},
	}
	var got []storepath.Path
	for _, i := range ordered(in) {
		got = append(got, i.Path)
	}
	if want := []storepath.Path{c, b, a}; strings.Join(names(got), " ") != strings.Join(names(want), " ") {
		t.Errorf("ordered = %v, want %v", got, want)
	}
}

func names(ps []storepath.Path) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Name())
	}
	return out
}
