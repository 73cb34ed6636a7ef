package boards

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestEmbedded: the data Go embeds (and Nix reads) is valid, and holds
// the boards the tests and the lab use and the routers owners have.
func TestEmbedded(t *testing.T) {
	all, err := All()
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != len(Names()) {
		t.Fatalf("All: %d boards, Names: %d", len(all), len(Names()))
	}
	for _, tc := range []struct {
		name, goarch, gomips, goarm string
		ramMB, maintenanceMB        int
		kernel                      bool
		wan                         string
		storage                     *Storage
		upgrade, imageWrite, kexec  string
		never                       []string
	}{
		{"lab", "amd64", "", "", 512, 0, false, "wan", nil, "store", "", "", nil},
		{"qemu-x86_64", "amd64", "", "", 256, 0, true, "eth0", &Storage{Device: "/dev/vda", FSType: "ext4"}, "store", "block", "kexec_file_load", nil},
		{"qemu-mipsel", "mipsle", "softfloat", "", 64, 32, true, "eth0", nil, "image", "mtd", "kexec_load", nil},
		{"gl-ar750", "mips", "softfloat", "", 128, 48, true, "eth1", nil, "image", "mtd", "kexec_load", []string{"u-boot", "u-boot-env", "art"}},
		{"gl-mt300n-v2", "mipsle", "softfloat", "", 128, 48, true, "eth0.2", nil, "image", "mtd", "kexec_load", []string{"u-boot", "u-boot-env", "factory"}},
		{"belkin-rt3200", "arm64", "", "", 512, 192, true, "wan", nil, "image", "ubi", "kexec_file_load",
			[]string{"bl2", "fip", "factory", "ubi", "ubootenv", "ubootenv2", "recovery", "boot_backup"}},
		{"turris-omnia", "arm", "", "7", 1024, 0, true, "eth2", &Storage{Device: "/dev/mmcblk0p1", FSType: "btrfs"}, "store", "block", "kexec_load",
			[]string{"U-Boot", "Rescue system"}},
		{"openwrt-one", "arm64", "", "", 1024, 256, true, "eth0", nil, "image", "ubi", "kexec_file_load",
			[]string{"bl2", "ubi", "fip", "ubootenv", "ubootenv2", "recovery", "bl2-nor", "factory", "fip-nor", "recovery"}},
	} {
		b, err := Lookup(tc.name)
		if err != nil {
			t.Fatal(err)
		}
		dev, _ := b.Device("wan")
		kernel := slices.Contains(b.Needs, PartKernel)
		if b.Name != tc.name || b.GOARCH != tc.goarch || b.GOMIPS != tc.gomips || b.GOARM != tc.goarm || b.RAMMB != tc.ramMB ||
			b.MaintenanceMB != tc.maintenanceMB || kernel != tc.kernel || dev != tc.wan {
			t.Errorf("board %s: %+v", tc.name, b)
		}
		if (b.Storage == nil) != (tc.storage == nil) || b.Storage != nil && *b.Storage != *tc.storage {
			t.Errorf("board %s: storage %+v, want %+v", tc.name, b.Storage, tc.storage)
		}
		if b.Upgrade != tc.upgrade || b.ImageWrite != tc.imageWrite || b.KexecMethod != tc.kexec || b.Kexec != (tc.kexec != "") {
			t.Errorf("board %s: upgrade %q, imageWrite %q, kexec %v by %q; want %q, %q, %q", tc.name, b.Upgrade, b.ImageWrite, b.Kexec, b.KexecMethod, tc.upgrade, tc.imageWrite, tc.kexec)
		}
		if got := b.Never(); !slices.Equal(got, tc.never) {
			t.Errorf("board %s: never written %q, want %q", tc.name, got, tc.never)
		}
		hasReal := slices.ContainsFunc(b.Flash, func(f Flash) bool { return f.Kind != FlashVirtio && f.Kind != FlashBlock2MTD })
		if hasReal && (len(b.Sources) == 0 || b.Watchdog == nil || b.Watchdog.Driver == "" || !b.Watchdog.BuiltIn) {
			t.Errorf("board %s: a real board wants its sources and its watchdog's built-in driver: %+v", tc.name, b)
		}
		if tc.upgrade == UpgradeImage && len(b.imageTargets(b.ImageWrite)) == 0 {
			t.Errorf("board %s: no partition for its image", tc.name)
		}
	}
	x86, _ := Lookup("qemu-x86_64")
	want := Watchdog{Device: "/dev/watchdog", TimeoutSeconds: 45, GraceSeconds: 60, SurvivesKexec: true,
		ModuleParams: map[string]string{"watchdog": "stop_on_reboot=0", "i6300esb": "nowayout=1"},
		Driver:       "i6300esb", MaxTimeoutSeconds: ptr(2046)}
	if w := x86.Watchdog; w == nil || !reflect.DeepEqual(*w, want) || w.Timeout() != 45*time.Second || w.Grace() != 60*time.Second {
		t.Errorf("qemu-x86_64's watchdog: %+v, want %+v", w, want)
	}
	if b, _ := Lookup("lab"); b.Watchdog != nil {
		t.Errorf("board lab: watchdog %+v, want none", b.Watchdog)
	}
	// The malta VM: softdog for a watchdog, and three block2mtd flashes,
	// which init makes MTD devices named as the partitions.
	mips, _ := Lookup("qemu-mipsel")
	if w := mips.Watchdog; w == nil || w.Driver != "softdog" || w.BuiltIn || w.SurvivesKexec {
		t.Errorf("qemu-mipsel's watchdog: %+v, want softdog, a module that does not survive kexec", w)
	}
	var params []string
	for _, f := range mips.Flash {
		params = append(params, f.Block2MTD())
	}
	if want := []string{"/dev/vda,65536,image-a", "/dev/vdb,65536,image-b", "/dev/vdc,65536,data"}; !slices.Equal(params, want) {
		t.Errorf("qemu-mipsel's block2mtd parameters: %q, want %q", params, want)
	}
	if got := len(mips.imageTargets(ImageMTD)); got != 2 {
		t.Errorf("qemu-mipsel: %d image slots, want 2", got)
	}
	if ar750, _ := Lookup("gl-ar750"); ar750.Watchdog.MaxTimeoutSeconds != nil || ar750.Watchdog.Driver != "ath79_wdt" {
		t.Errorf("gl-ar750's watchdog: %+v, want ath79_wdt with no known maximum", ar750.Watchdog)
	}
	if _, err := Lookup("nope"); err == nil || !strings.Contains(err.Error(), "known: belkin-rt3200, gl-ar750, gl-mt300n-v2, lab, openwrt-one, qemu-mipsel, qemu-x86_64, turris-omnia") {
		t.Errorf("Lookup(nope): %v", err)
	}
}

func ptr[T any](v T) *T { return &v }

// TestGoEnv: the environment that builds roostd for a board.
func TestGoEnv(t *testing.T) {
	for name, want := range map[string]string{
		"lab": "GOARCH=amd64", "gl-ar750": "GOARCH=mips GOMIPS=softfloat", "gl-mt300n-v2": "GOARCH=mipsle GOMIPS=softfloat",
		"turris-omnia": "GOARCH=arm GOARM=7", "openwrt-one": "GOARCH=arm64",
	} {
		b, _ := Lookup(name)
		if got := strings.Join(b.GoEnv(), " "); got != want {
			t.Errorf("board %s: %q, want %q", name, got, want)
		}
	}
}

// good is a valid board that the cases below change: later fields replace
// earlier ones.
const good = `"name": "b", "description": "", "goarch": "amd64", "interfaces": {"wan": "eth0"}, "ramMB": 64, "maintenanceMB": 0,
	"upgrade": "store", "imageWrite": "", "kexec": true, "kexecMethod": "kexec_file_load", "watchdog": null, "cmdline": [],
	"flash": [], "needs": ["etc/roost/config.json"], "sources": [], "notes": []`

// TestParseRefuses: board data that would build a wrong system is refused,
// naming the board and the field.
func TestParseRefuses(t *testing.T) {
	const withKernel = `, "needs": ["etc/roost/config.json", "kernel"]`
	const disk = `, "flash": [{"name": "vda", "kind": "virtio", "sizeMB": 0, "partitions": []}]`
	// wd is a watchdog object; later fields replace earlier ones.
	wd := func(more string) string {
		return `{"device": "/dev/watchdog", "timeoutSeconds": 20, "graceSeconds": 90, "survivesKexec": true,
			"moduleParams": {"watchdog": "stop_on_reboot=0", "i6300esb": "nowayout=1"}, "driver": "i6300esb", "builtIn": false,
			"maxTimeoutSeconds": 2046` + more + `}`
	}
	for _, tc := range []struct {
		name, data, want string
	}{
		{"good", `[{` + good + `}]`, ""},
		{"not JSON", `[{`, "boards.json: unexpected EOF"},
		{"unknown field", `[{` + good + `, "flashMB": 8}]`, `unknown field "flashMB"`},
		{"twice", `[{` + good + `}, {` + good + `}]`, `board "b" is defined twice`},
		{"goarch", `[{` + good + `, "goarch": "sparc"}]`, `goarch "sparc"`},
		{"gomips missing", `[{` + good + `, "goarch": "mipsle", "kexecMethod": "kexec_load"}]`, `gomips ""`},
		{"gomips on amd64", `[{` + good + `, "gomips": "softfloat"}]`, `gomips "softfloat"`},
		{"goarm", `[{` + good + `, "goarch": "arm", "goarm": "8", "kexecMethod": "kexec_load"}]`, `goarm "8"`},
		{"no interfaces", `[{` + strings.Replace(good, `"wan": "eth0"`, "", 1) + `}]`, "interfaces: none"},
		{"interface name", `[{` + good + `, "interfaces": {"wan port": "eth0"}}]`, `interfaces "wan port": want a name`},
		{"interface device too long", `[{` + good + `, "interfaces": {"wan": "eth0.1234567890ab"}}]`, `interfaces["wan"] "eth0.1234567890ab": not a device name`},
		{"interface device twice", `[{` + good + `, "interfaces": {"wan": "eth0", "lan0": "eth0"}}]`, `interfaces["wan"] "eth0": also lan0's device`},
		{"no RAM", `[{` + good + `, "ramMB": 0}]`, "ramMB 0"},
		{"upgrade", `[{` + good + `, "upgrade": "tftp"}]`, `upgrade "tftp": want store or image`},
		{"upgrade as it was", `[{` + good + `, "upgrade": "kexec"}]`, `upgrade "kexec"`},
		{"kexec without method", `[{` + good + `, "kexecMethod": ""}]`, "kexecMethod: none, but kexec is true: want kexec_file_load"},
		{"kexec method without kexec", `[{` + good + `, "kexec": false}]`, `kexecMethod "kexec_file_load": kexec is false`},
		{"kexec method of another architecture", `[{` + good + `, "goarch": "mips", "gomips": "softfloat"}]`, `kexecMethod "kexec_file_load": roostd loads a kernel on mips by kexec_load`},
		{"no kexec", `[{` + good + `, "kexec": false, "kexecMethod": ""}]`, ""},
		{"no config", `[{` + good + `, "needs": ["kernel"]}]`, "every system needs etc/roost/config.json"},
		{"unknown part", `[{` + good + `, "needs": ["etc/roost/config.json", "dtb"]}]`, `needs "dtb"`},
		{"cmdline without kernel", `[{` + good + `, "cmdline": ["console=ttyS0"]}]`, "cmdline: kernel parameters"},
		{"storage", `[{` + good + withKernel + disk + `, "storage": {"device": "/dev/vda", "fstype": "ext4"}}]`, ""},
		{"no storage", `[{` + good + `, "storage": null}]`, ""},
		{"storage not on the flash", `[{` + good + withKernel + disk + `, "storage": {"device": "/dev/sda", "fstype": "ext4"}}]`, `storage.device "/dev/sda": not a disk of the board's flash`},
		{"storage not in /dev", `[{` + good + withKernel + disk + `, "storage": {"device": "vda", "fstype": "ext4"}}]`, `storage.device "vda"`},
		{"storage device unclean", `[{` + good + withKernel + disk + `, "storage": {"device": "/dev/../vda", "fstype": "ext4"}}]`, `storage.device "/dev/../vda"`},
		{"storage without fstype", `[{` + good + withKernel + disk + `, "storage": {"device": "/dev/vda"}}]`, `storage.fstype ""`},
		{"storage field unknown", `[{` + good + `, "storage": {"device": "/dev/vda", "fstype": "ext4", "size": 8}}]`, `unknown field "size"`},
		{"storage without kernel", `[{` + good + disk + `, "storage": {"device": "/dev/vda", "fstype": "ext4"}}]`, "storage: persistent storage for a board whose systems have no kernel"},
		{"watchdog", `[{` + good + withKernel + `, "watchdog": ` + wd(``) + `}]`, ""},
		{"watchdog without module parameters", `[{` + good + withKernel + `, "watchdog": {"device": "/dev/watchdog0", "timeoutSeconds": 1, "graceSeconds": 1, "survivesKexec": false, "driver": "mtk_wdt", "builtIn": true, "maxTimeoutSeconds": null}}]`, ""},
		{"watchdog as a string", `[{` + good + withKernel + `, "watchdog": "/dev/watchdog"}]`, "cannot unmarshal string"},
		{"watchdog field unknown", `[{` + good + withKernel + `, "watchdog": ` + wd(`, "pretimeout": 5`) + `}]`, `unknown field "pretimeout"`},
		{"watchdog not in /dev", `[{` + good + withKernel + `, "watchdog": ` + wd(`, "device": "/sys/watchdog"`) + `}]`, `watchdog.device "/sys/watchdog"`},
		{"watchdog device unclean", `[{` + good + withKernel + `, "watchdog": ` + wd(`, "device": "/dev/../watchdog"`) + `}]`, `watchdog.device "/dev/../watchdog"`},
		{"watchdog without timeout", `[{` + good + withKernel + `, "watchdog": ` + wd(`, "timeoutSeconds": 0`) + `}]`, "watchdog.timeoutSeconds 0: want 1 to 3600"},
		{"watchdog timeout too long", `[{` + good + withKernel + `, "watchdog": ` + wd(`, "timeoutSeconds": 3601, "graceSeconds": 4000`) + `}]`, "watchdog.timeoutSeconds 3601"},
		{"watchdog timeout past the hardware's", `[{` + good + withKernel + `, "watchdog": ` + wd(`, "maxTimeoutSeconds": 19`) + `}]`, "watchdog.timeoutSeconds 20: more than the hardware keeps (maxTimeoutSeconds 19)"},
		{"watchdog maximum zero", `[{` + good + withKernel + `, "watchdog": ` + wd(`, "maxTimeoutSeconds": 0`) + `}]`, "watchdog.maxTimeoutSeconds 0: want 1 to 65535, or null"},
		{"watchdog maximum unknown", `[{` + good + withKernel + `, "watchdog": ` + wd(`, "maxTimeoutSeconds": null`) + `}]`, ""},
		{"watchdog grace shorter than the timeout", `[{` + good + withKernel + `, "watchdog": ` + wd(`, "graceSeconds": 19`) + `}]`, "watchdog.graceSeconds 19: want at least the timeout (20)"},
		{"watchdog without driver", `[{` + good + withKernel + `, "watchdog": ` + wd(`, "driver": ""`) + `}]`, `watchdog.driver "": want the driver's module name`},
		{"watchdog built in, with module parameters", `[{` + good + withKernel + `, "watchdog": ` + wd(`, "builtIn": true`) + `}]`, `watchdog.moduleParams["i6300esb"]: the driver is built in`},
		{"watchdog module name", `[{` + good + withKernel + `, "watchdog": ` + wd(`, "moduleParams": {"i6300esb.ko": "nowayout=1"}`) + `}]`, `watchdog.moduleParams "i6300esb.ko"`},
		{"watchdog module parameters empty", `[{` + good + withKernel + `, "watchdog": ` + wd(`, "moduleParams": {"i6300esb": " "}`) + `}]`, `watchdog.moduleParams["i6300esb"] " "`},
		{"watchdog module parameters on two lines", `[{` + good + withKernel + `, "watchdog": ` + wd(`, "moduleParams": {"i6300esb": "nowayout=1\nheartbeat=5"}`) + `}]`, `watchdog.moduleParams["i6300esb"]`},
		{"watchdog without kernel", `[{` + good + `, "watchdog": ` + wd(``) + `}]`, "watchdog: a watchdog on a board whose systems have no kernel"},
		{"imageWrite", `[{` + good + `, "imageWrite": "tftp"}]`, `imageWrite "tftp": want mtd, ubi, block or nothing`},
		{"imageWrite without a flash for it", `[{` + good + `, "imageWrite": "block"}]`, `imageWrite "block": the board has no flash it fits (an emmc or virtio disk)`},
		{"imageWrite to a disk", `[{` + good + disk + `, "imageWrite": "block"}]`, ""},
		{"maintenance budget past RAM", `[{` + good + `, "maintenanceMB": 64}]`, "maintenanceMB 64: want less than the board's RAM (64 MiB)"},
		{"sources not links", `[{` + good + `, "sources": ["openwrt.org"]}]`, `sources "openwrt.org": want an https URL`},
		{"empty note", `[{` + good + `, "notes": [" "]}]`, "notes[0]: want a sentence on one line"},
	} {
		t.Run(tc.name, func(t *testing.T) { checkParse(t, tc.data, tc.want) })
	}
}

func checkParse(t *testing.T, data, want string) {
	t.Helper()
	_, err := parse([]byte(data))
	if want == "" {
		if err != nil {
			t.Fatal(err)
		}
		return
	}
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("parse: %v, want %q", err, want)
	}
}

// TestParseRefusesFlash: a flash layout that would let an image land on
// the bootloader or the calibration data, or not fit, is refused.
func TestParseRefusesFlash(t *testing.T) {
	const image = good + `, "goarch": "mips", "gomips": "softfloat", "kexecMethod": "kexec_load", "ramMB": 128,
		"upgrade": "image", "imageWrite": "mtd", "maintenanceMB": 48, "sources": ["https://example.org/board.dts"]`
	const boot = `{"name": "u-boot", "use": "bootloader", "offset": 0, "size": 262144, "never": true}`
	const art = `{"name": "art", "use": "calibration", "offset": 262144, "size": 65536, "never": true}`
	const firmware = `{"name": "firmware", "use": "image", "offset": 327680, "size": 16449536}`
	nor := func(parts ...string) string {
		return `, "flash": [{"name": "nor", "kind": "nor", "sizeMB": 16, "partitions": [` + strings.Join(parts, ", ") + `]}]`
	}
	const ubi = `{"name": "ubi", "use": "ubi", "offset": 1048576, "size": 15728640, "never": true}`
	nand := func(parts ...string) string {
		return `, "imageWrite": "ubi", "flash": [{"name": "nand", "kind": "spi-nand", "sizeMB": 16, "eraseBlockBytes": 131072, "pageBytes": 2048, "partitions": [` + strings.Join(parts, ", ") + `]}]`
	}
	const fit = `{"name": "fit", "use": "image", "volume": true}`
	// b2m is a block2mtd flash of its disk, size, erase size and one
	// partition's fields.
	b2m := func(disk string, sizeMB, erase int, part string) string {
		return fmt.Sprintf(`{"name": %q, "kind": "block2mtd", "sizeMB": %d, "eraseBlockBytes": %d, "partitions": [{"name": %s}]}`, disk, sizeMB, erase, part)
	}
	for _, tc := range []struct {
		name, data, want string
	}{
		{"good", image + nor(boot, art, firmware), ""},
		{"good UBI", image + nand(ubi, fit, `{"name": "ubootenv", "use": "bootloader-env", "size": 1048576, "volume": true, "never": true}`), ""},
		{"good disk", good + `, "imageWrite": "block", "flash": [{"name": "mmcblk0", "kind": "emmc", "sizeMB": 0, "partitions": [{"name": "mmcblk0p1", "use": "store"}]}], "sources": ["https://example.org/board.dts"]`, ""},
		{"no sources", image + nor(boot, art, firmware) + `, "sources": []`, "sources: none, for a board with real flash"},
		{"flash kind", image + `, "flash": [{"name": "x", "kind": "tape", "sizeMB": 0, "partitions": []}]`, `flash[0] (x): kind "tape"`},
		{"flash without size", image + `, "flash": [{"name": "nor", "kind": "nor", "sizeMB": 0, "partitions": [` + firmware + `]}]`, "flash[0] (nor): sizeMB 0: an MTD flash's partitions are fixed"},
		{"flash name twice", image + `, "flash": [{"name": "nor", "kind": "nor", "sizeMB": 16, "partitions": [` + firmware + `]}, {"name": "nor", "kind": "nor", "sizeMB": 16, "partitions": []}]`, "flash[1] (nor): want a name of its own"},
		{"partition name twice", image + nor(boot, firmware, `{"name": "u-boot", "use": "data", "offset": 16777216, "size": 1}`), `partitions[2] (u-boot): want a name of its own`},
		{"MTD name on two flashes", image + `, "flash": [{"name": "nor", "kind": "nor", "sizeMB": 16, "partitions": [` + firmware + `]}, {"name": "nor2", "kind": "nor", "sizeMB": 16, "partitions": [` + firmware + `]}]`, `MTD partition "firmware" is also on flash nor`},
		{"unknown use", image + nor(boot, firmware, `{"name": "x", "use": "cache", "offset": 262144, "size": 65536}`), `use "cache": want one of bootloader, bootloader-env`},
		{"bootloader written", image + nor(strings.Replace(boot, `, "never": true`, "", 1), art, firmware), "(u-boot): a bootloader partition must be never written: set never"},
		{"calibration written", image + nor(boot, strings.Replace(art, `, "never": true`, "", 1), firmware), "(art): a calibration partition must be never written"},
		{"image never written", image + nor(boot, art, strings.Replace(firmware, `}`, `, "never": true}`, 1)), "(firmware): never written, but it holds the image roost writes"},
		{"MTD partition without offset", image + nor(boot, `{"name": "firmware", "use": "image", "size": 65536}`), "(firmware): an MTD partition needs its offset and size"},
		{"size 0", image + nor(boot, `{"name": "firmware", "use": "image", "offset": 327680, "size": 0}`), "(firmware): size 0"},
		{"overlap", image + nor(boot, `{"name": "art", "use": "calibration", "offset": 196608, "size": 65536, "never": true}`, firmware), "partitions u-boot and art overlap (0x40000 > 0x30000)"},
		{"past the end", image + nor(boot, art, `{"name": "firmware", "use": "image", "offset": 327680, "size": 16777216}`), "partition firmware ends at 0x1050000, past the flash's end (0x1000000)"},
		{"no image partition", image + nor(boot, art), `flash: no partition for the image (use "image") that mtd writes`},
		{"image board without imageWrite", image + nor(boot, art, firmware) + `, "imageWrite": ""`, "imageWrite: none, but the upgrade writes an image"},
		{"image partition of another kind", image + nor(boot, art, firmware) + `, "imageWrite": "ubi"`, `flash: no partition for the image (use "image") that ubi writes (a UBI volume)`},
		{"no maintenance budget", image + nor(boot, art, firmware) + `, "maintenanceMB": 0`, "maintenanceMB 0: an image board needs RAM"},
		{"maintenance budget under the image", image + nor(boot, art, firmware) + `, "maintenanceMB": 8`, "maintenanceMB 8: less than image partition firmware (16 MiB)"},
		{"volume without UBI", image + nor(boot, art, firmware, `{"name": "data", "use": "data", "volume": true}`), `UBI volumes, but no partition with use "ubi"`},
		{"volume with offset", image + nand(ubi, `{"name": "fit", "use": "image", "volume": true, "offset": 0}`), "(fit): a UBI volume has no offset"},
		{"volume on a disk", good + `, "flash": [{"name": "vda", "kind": "virtio", "sizeMB": 0, "partitions": [{"name": "fit", "use": "data", "volume": true}]}]`, "(fit): a UBI volume must be inside the UBI partition of an MTD flash"},
		{"volumes past their partition", image + nand(ubi, fit, `{"name": "big", "use": "data", "volume": true, "size": 16777216}`), "the fixed-size volumes (16777216 bytes) do not fit UBI partition ubi (15728640 bytes)"},
		{"NAND without geometry", image + strings.Replace(nand(ubi, fit), `"eraseBlockBytes": 131072, `, "", 1), "flash[0] (nand): eraseBlockBytes 0, pageBytes 2048: a NAND flash needs both"},
		{"geometry on NOR", image + strings.Replace(nor(boot, art, firmware), `"sizeMB": 16,`, `"sizeMB": 16, "pageBytes": 256,`, 1), "flash[0] (nor): eraseBlockBytes and pageBytes are for spi-nand flash only"},
		{"good block2mtd", image + `, "sources": [], "flash": [` + b2m("vda", 16, 65536, `"image-a", "use": "image", "offset": 0, "size": 16777216`) + `]`, ""},
		{"block2mtd without erase size", image + `, "flash": [` + b2m("vda", 16, 0, `"image-a", "use": "image", "offset": 0, "size": 16777216`) + `]`, "flash[0] (vda): eraseBlockBytes 0, pageBytes 0: a block2mtd flash needs its erase size"},
		{"block2mtd erase size odd", image + `, "flash": [` + b2m("vda", 16, 3000, `"image-a", "use": "image", "offset": 0, "size": 16777216`) + `]`, "eraseBlockBytes 3000"},
		{"block2mtd partition not the whole", image + `, "flash": [` + b2m("vda", 16, 65536, `"image-a", "use": "image", "offset": 0, "size": 65536`) + `]`, "flash[0] (vda): a block2mtd flash has one partition, the whole device (offset 0, size 16777216)"},
		{"block2mtd label with a comma", image + `, "flash": [` + b2m("vda", 16, 65536, `"image,a", "use": "image", "offset": 0, "size": 16777216`) + `]`, "no commas or spaces"},
		{"two UBI partitions", image + nand(ubi, fit, `{"name": "ubi2", "use": "ubi", "offset": 0, "size": 1048576, "never": true}`), "(ubi2): a second UBI partition"},
	} {
		t.Run(tc.name, func(t *testing.T) { checkParse(t, `[{`+tc.data+`}]`, tc.want) })
	}
}

// TestTrialMethod: a trial boots by kexec only where the watchdog stays
// armed across it; the reason says which fact decided.
func TestTrialMethod(t *testing.T) {
	survives := &Watchdog{SurvivesKexec: true}
	for _, tc := range []struct {
		name        string
		b           Board
		method, why string
	}{
		{"kexec and a watchdog that survives it", Board{Kexec: true, Watchdog: survives}, "kexec", "the board can kexec and its watchdog stays armed across it"},
		{"no kexec", Board{Watchdog: survives}, "reboot", "the board cannot kexec"},
		{"no watchdog", Board{Kexec: true}, "reboot", "the board has no watchdog to reset a kexec trial that hangs"},
		{"a watchdog that kexec stops", Board{Kexec: true, Watchdog: &Watchdog{}}, "reboot", "the board's watchdog would not survive kexec"},
	} {
		if method, why := tc.b.TrialMethod(); method != tc.method || why != tc.why {
			t.Errorf("%s: %s (%s), want %s (%s)", tc.name, method, why, tc.method, tc.why)
		}
	}
	// The real boards' watchdogs stop on shutdown or are not known to
	// survive kexec: their trials boot by a reboot.
	for name, want := range map[string]string{"lab": "reboot", "qemu-x86_64": "kexec", "qemu-mipsel": "reboot",
		"gl-ar750": "reboot", "gl-mt300n-v2": "reboot", "belkin-rt3200": "reboot", "turris-omnia": "reboot", "openwrt-one": "reboot"} {
		b, _ := Lookup(name)
		if method, why := b.TrialMethod(); method != want {
			t.Errorf("board %s: trial method %s (%s), want %s", name, method, why, want)
		}
	}
}
