package boards

import (
	"strings"
	"testing"
)

// TestEmbedded: the data Go embeds (and Nix reads) is valid, and holds
// the boards the tests and the lab use.
func TestEmbedded(t *testing.T) {
	all, err := All()
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != len(Names()) {
		t.Fatalf("All: %d boards, Names: %d", len(all), len(Names()))
	}
	for _, tc := range []struct {
		name, goarch, gomips string
		ramMB                int
		kernel               bool
		wan                  string
		storage              *Storage
	}{
		{"lab", "amd64", "", 512, false, "wan", nil},
		{"qemu-x86_64", "amd64", "", 256, true, "eth0", &Storage{Device: "/dev/vda", FSType: "ext4"}},
		{"qemu-mipsel", "mipsle", "softfloat", 64, true, "eth0", nil},
	} {
		b, err := Lookup(tc.name)
		if err != nil {
			t.Fatal(err)
		}
		dev, _ := b.Device("wan")
		kernel := false
		for _, n := range b.Needs {
			kernel = kernel || n == PartKernel
		}
		if b.Name != tc.name || b.GOARCH != tc.goarch || b.GOMIPS != tc.gomips || b.RAMMB != tc.ramMB || kernel != tc.kernel || dev != tc.wan {
			t.Errorf("board %s: %+v", tc.name, b)
		}
		if (b.Storage == nil) != (tc.storage == nil) || b.Storage != nil && *b.Storage != *tc.storage {
			t.Errorf("board %s: storage %+v, want %+v", tc.name, b.Storage, tc.storage)
		}
	}
	if _, err := Lookup("nope"); err == nil || !strings.Contains(err.Error(), "known: lab, qemu-mipsel, qemu-x86_64") {
		t.Errorf("Lookup(nope): %v", err)
	}
}

// TestParseRefuses: board data that would build a wrong system is refused,
// naming the board and the field.
func TestParseRefuses(t *testing.T) {
	const good = `"name": "b", "description": "", "goarch": "amd64", "interfaces": {"wan": "eth0"}, "ramMB": 64,
		"upgrade": "kexec", "kexec": true, "watchdog": "", "cmdline": [], "needs": ["etc/roost/config.json"]`
	for _, tc := range []struct {
		name, data, want string
	}{
		{"good", `[{` + good + `}]`, ""},
		{"not JSON", `[{`, "boards.json: unexpected EOF"},
		{"unknown field", `[{` + good + `, "flash": 8}]`, `unknown field "flash"`},
		{"twice", `[{` + good + `}, {` + good + `}]`, `board "b" is defined twice`},
		{"goarch", `[{` + good + `, "goarch": "sparc"}]`, `goarch "sparc"`},
		{"gomips missing", `[{` + good + `, "goarch": "mipsle"}]`, `gomips ""`},
		{"gomips on amd64", `[{` + good + `, "gomips": "softfloat"}]`, `gomips "softfloat"`},
		{"goarm", `[{` + good + `, "goarch": "arm", "goarm": "8"}]`, `goarm "8"`},
		{"no interfaces", `[{` + strings.Replace(good, `"wan": "eth0"`, "", 1) + `}]`, "interfaces: none"},
		{"no RAM", `[{` + good + `, "ramMB": 0}]`, "ramMB 0"},
		{"upgrade", `[{` + good + `, "upgrade": "tftp"}]`, `upgrade "tftp"`},
		{"no config", `[{` + good + `, "needs": ["kernel"]}]`, "every system needs etc/roost/config.json"},
		{"unknown part", `[{` + good + `, "needs": ["etc/roost/config.json", "dtb"]}]`, `needs "dtb"`},
		{"cmdline without kernel", `[{` + good + `, "cmdline": ["console=ttyS0"]}]`, "cmdline: kernel parameters"},
		{"storage", `[{` + good + `, "needs": ["etc/roost/config.json", "kernel"], "storage": {"device": "/dev/vda", "fstype": "ext4"}}]`, ""},
		{"no storage", `[{` + good + `, "storage": null}]`, ""},
		{"storage not in /dev", `[{` + good + `, "needs": ["etc/roost/config.json", "kernel"], "storage": {"device": "vda", "fstype": "ext4"}}]`, `storage.device "vda"`},
		{"storage device unclean", `[{` + good + `, "needs": ["etc/roost/config.json", "kernel"], "storage": {"device": "/dev/../vda", "fstype": "ext4"}}]`, `storage.device "/dev/../vda"`},
		{"storage without fstype", `[{` + good + `, "needs": ["etc/roost/config.json", "kernel"], "storage": {"device": "/dev/vda"}}]`, `storage.fstype ""`},
		{"storage field unknown", `[{` + good + `, "storage": {"device": "/dev/vda", "fstype": "ext4", "size": 8}}]`, `unknown field "size"`},
		{"storage without kernel", `[{` + good + `, "storage": {"device": "/dev/vda", "fstype": "ext4"}}]`, "storage: persistent storage for a board whose systems have no kernel"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parse([]byte(tc.data))
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("parse: %v, want %q", err, tc.want)
			}
		})
	}
}
