package boards

import (
	"reflect"
	"strings"
	"testing"
	"time"
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
	x86, _ := Lookup("qemu-x86_64")
	want := Watchdog{Device: "/dev/watchdog", TimeoutSeconds: 45, GraceSeconds: 60, SurvivesKexec: true,
		ModuleParams: map[string]string{"watchdog": "stop_on_reboot=0", "i6300esb": "nowayout=1"}}
	if w := x86.Watchdog; w == nil || !reflect.DeepEqual(*w, want) || w.Timeout() != 45*time.Second || w.Grace() != 60*time.Second {
		t.Errorf("qemu-x86_64's watchdog: %+v, want %+v", w, want)
	}
	for _, name := range []string{"lab", "qemu-mipsel"} {
		if b, _ := Lookup(name); b.Watchdog != nil {
			t.Errorf("board %s: watchdog %+v, want none", name, b.Watchdog)
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
		"upgrade": "kexec", "kexec": true, "watchdog": null, "cmdline": [], "needs": ["etc/roost/config.json"]`
	const withKernel = `, "needs": ["etc/roost/config.json", "kernel"]`
	// wd is a watchdog object; later fields replace earlier ones.
	wd := func(more string) string {
		return `{"device": "/dev/watchdog", "timeoutSeconds": 20, "graceSeconds": 90, "survivesKexec": true,
			"moduleParams": {"watchdog": "stop_on_reboot=0", "i6300esb": "nowayout=1"}` + more + `}`
	}
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
		{"watchdog", `[{` + good + withKernel + `, "watchdog": ` + wd(``) + `}]`, ""},
		{"watchdog without module parameters", `[{` + good + withKernel + `, "watchdog": {"device": "/dev/watchdog0", "timeoutSeconds": 1, "graceSeconds": 1, "survivesKexec": false}}]`, ""},
		{"watchdog as a string", `[{` + good + withKernel + `, "watchdog": "/dev/watchdog"}]`, "cannot unmarshal string"},
		{"watchdog field unknown", `[{` + good + withKernel + `, "watchdog": ` + wd(`, "pretimeout": 5`) + `}]`, `unknown field "pretimeout"`},
		{"watchdog not in /dev", `[{` + good + withKernel + `, "watchdog": ` + wd(`, "device": "/sys/watchdog"`) + `}]`, `watchdog.device "/sys/watchdog"`},
		{"watchdog device unclean", `[{` + good + withKernel + `, "watchdog": ` + wd(`, "device": "/dev/../watchdog"`) + `}]`, `watchdog.device "/dev/../watchdog"`},
		{"watchdog without timeout", `[{` + good + withKernel + `, "watchdog": ` + wd(`, "timeoutSeconds": 0`) + `}]`, "watchdog.timeoutSeconds 0: want 1 to 3600"},
		{"watchdog timeout too long", `[{` + good + withKernel + `, "watchdog": ` + wd(`, "timeoutSeconds": 3601, "graceSeconds": 4000`) + `}]`, "watchdog.timeoutSeconds 3601"},
		{"watchdog grace shorter than the timeout", `[{` + good + withKernel + `, "watchdog": ` + wd(`, "graceSeconds": 19`) + `}]`, "watchdog.graceSeconds 19: want at least the timeout (20)"},
		{"watchdog module name", `[{` + good + withKernel + `, "watchdog": ` + wd(`, "moduleParams": {"i6300esb.ko": "nowayout=1"}`) + `}]`, `watchdog.moduleParams "i6300esb.ko"`},
		{"watchdog module parameters empty", `[{` + good + withKernel + `, "watchdog": ` + wd(`, "moduleParams": {"i6300esb": " "}`) + `}]`, `watchdog.moduleParams["i6300esb"] " "`},
		{"watchdog module parameters on two lines", `[{` + good + withKernel + `, "watchdog": ` + wd(`, "moduleParams": {"i6300esb": "nowayout=1\nheartbeat=5"}`) + `}]`, `watchdog.moduleParams["i6300esb"]`},
		{"watchdog without kernel", `[{` + good + `, "watchdog": ` + wd(``) + `}]`, "watchdog: a watchdog on a board whose systems have no kernel"},
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
	for name, want := range map[string]string{"lab": "reboot", "qemu-x86_64": "kexec", "qemu-mipsel": "reboot"} {
		b, _ := Lookup(name)
		if method, why := b.TrialMethod(); method != want {
			t.Errorf("board %s: trial method %s (%s), want %s", name, method, why, want)
		}
	}
}
