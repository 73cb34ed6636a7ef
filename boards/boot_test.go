package boards

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestBootEmbedded: the boards whose U-Boot boots a uImage or a FIT image
// say so with OpenWrt's addresses; the others have no boot.
func TestBootEmbedded(t *testing.T) {
	for _, tc := range []struct {
		board string
		want  *Boot
	}{
		{"gl-ar750", &Boot{Format: BootUImage, Compression: CompressLZMA, LoadAddress: 0x80060000, EntryAddress: 0x80060000, DeviceTree: "qca/qca9531_glinet_gl-ar750.dtb", RootAlignBytes: 65536}},
		{"gl-mt300n-v2", &Boot{Format: BootUImage, Compression: CompressLZMA, LoadAddress: 0x80000000, EntryAddress: 0x80000000, DeviceTree: "ralink/mt7628an_glinet_gl-mt300n-v2.dtb", RootAlignBytes: 65536}},
		{"belkin-rt3200", &Boot{Format: BootFIT, Compression: CompressGzip, LoadAddress: 0x44000000, EntryAddress: 0x44000000, DeviceTree: "mediatek/mt7622-linksys-e8450-ubi.dtb", RootAlignBytes: 4096}},
		{"openwrt-one", &Boot{Format: BootFIT, Compression: CompressGzip, LoadAddress: 0x44000000, EntryAddress: 0x44000000, DeviceTree: "mediatek/mt7981b-openwrt-one.dtb", DeviceTreeAddress: 0x43f00000, RootAlignBytes: 4096}},
		{"turris-omnia", nil},
		{"qemu-mipsel", nil},
		{"qemu-x86_64", nil},
	} {
		b, err := Lookup(tc.board)
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := json.Marshal(b.Boot); string(got) != mustJSON(t, tc.want) {
			t.Errorf("%s: boot %s, want %s", tc.board, got, mustJSON(t, tc.want))
		}
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestAddressJSON: addresses round-trip as the hexadecimal strings the
// sources write; anything else is refused.
func TestAddressJSON(t *testing.T) {
	var a Address
	if err := json.Unmarshal([]byte(`"0x80060000"`), &a); err != nil || a != 0x80060000 {
		t.Fatalf("Unmarshal = %v, %v", a, err)
	}
	if b, _ := json.Marshal(a); string(b) != `"0x80060000"` {
		t.Errorf("Marshal = %s", b)
	}
	for _, bad := range []string{`2147876864`, `"80060000"`, `"0xzz"`, `"0x1ffffffffffffffff"`} {
		if err := json.Unmarshal([]byte(bad), &a); err == nil {
			t.Errorf("Unmarshal(%s) accepted", bad)
		}
	}
}

// TestParseRefusesBoot: a boot that does not match how the image is
// written, or could not be built, is refused, naming the field.
func TestParseRefusesBoot(t *testing.T) {
	const board = good + `, "goarch": "mips", "gomips": "softfloat", "kexecMethod": "kexec_load", "ramMB": 128,
		"upgrade": "image", "imageWrite": "mtd", "maintenanceMB": 48, "sources": ["https://example.org/board.dts"],
		"needs": ["etc/roost/config.json", "kernel"],
		"flash": [{"name": "nor", "kind": "nor", "sizeMB": 16, "partitions": [{"name": "firmware", "use": "image", "offset": 327680, "size": 16449536}]}]`
	boot := func(fields string) string {
		return board + `, "boot": {"format": "uimage", "compression": "lzma", "loadAddress": "0x80060000", "entryAddress": "0x80060000",
			"deviceTree": "qca/x.dtb", "rootAlignBytes": 65536` + fields + `}`
	}
	for _, tc := range []struct{ name, data, want string }{
		{"good", boot(""), ""},
		{"no device tree", boot(`, "deviceTree": ""`), ""},
		{"format", boot(`, "format": "zimage"`), `boot.format "zimage": want uimage or fit`},
		{"FIT on NOR", boot(`, "format": "fit"`), `boot.format "fit": written by ubi, but imageWrite is "mtd"`},
		{"compression", boot(`, "compression": "bzip2"`), `boot.compression "bzip2"`},
		{"no load address", boot(`, "loadAddress": "0x0"`), "boot.loadAddress 0x00000000: want an address of the board's mips RAM"},
		{"address past 32 bits", boot(`, "entryAddress": "0x180000000"`), "boot.entryAddress 0x180000000"},
		{"device tree outside dtbs", boot(`, "deviceTree": "../x.dtb"`), `boot.deviceTree "../x.dtb": want a .dtb path`},
		{"device tree not a dtb", boot(`, "deviceTree": "x.dts"`), `boot.deviceTree "x.dts"`},
		{"alignment", boot(`, "rootAlignBytes": 3000`), "boot.rootAlignBytes 3000: want a power of two"},
		{"partition off the alignment", boot(`, "rootAlignBytes": 131072`), "boot.rootAlignBytes 131072: image partition firmware is not whole units of it"},
		{"no kernel", strings.Replace(boot(""), `"needs": ["etc/roost/config.json", "kernel"]`, `"needs": ["etc/roost/config.json"]`, 1), "boot: the board boots a kernel from its image, so its systems need kernel"},
	} {
		t.Run(tc.name, func(t *testing.T) { checkParse(t, "[{"+tc.data+"}]", tc.want) })
	}
}
