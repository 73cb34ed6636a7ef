package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestConfigCheck: roostd config check validates a config as the agent
// would load it, on the board it is built for, and lists every problem
// with its JSON path; what the Nix library runs at build time.
func TestConfigCheck(t *testing.T) {
	const wan = `"wan": {"kind": "link", "interface": "wan"}`
	for _, tc := range []struct {
		name   string
		config string
		board  string
		want   []string // problems; none: valid
	}{
		{"lab by default", `{"services": {` + wan + `}}`, "", nil},
		{"board supplied", `{"services": {` + wan + `}}`, "qemu-x86_64", nil},
		{"board supplied to an empty object", ` {  } `, "qemu-mipsel", nil},
		{"board matches", `{"board": "qemu-x86_64", "services": {` + wan + `}}`, "qemu-x86_64", nil},
		{"board differs", `{"board": "lab"}`, "qemu-x86_64", []string{`board: the config is for board "lab", but it is checked (and built) for qemu-x86_64`}},
		{"unknown --board", `{}`, "wrt54g", []string{`--board: unknown board "wrt54g" (known: belkin-rt3200, gl-ar750, gl-mt300n-v2, lab, openwrt-one, qemu-mipsel, qemu-x86_64, turris-omnia)`}},
		// A real board's interfaces: the checker names the interface, the
		// board and what the board has.
		{"gl-ar750: an interface it lacks", `{"services": {"wan": {"kind": "link", "interface": "eth7"}}}`, "gl-ar750",
			[]string{`services.wan.interface: board gl-ar750 has no interface "eth7" (it has lan0, wan)`}},
		{"gl-ar750: a kernel device, not the board's name", `{"services": {"wan": {"kind": "link", "interface": "eth1"}}}`, "gl-ar750",
			[]string{`services.wan.interface: board gl-ar750 has no interface "eth1" (it has lan0, wan)`}},
		{"gl-ar750: its interfaces", `{"services": {"wan": {"kind": "link", "interface": "wan"}, "lan": {"kind": "link", "interface": "lan0"}}}`, "gl-ar750", nil},
		{"gl-mt300n-v2: a VLAN device name", `{"services": {"wan": {"kind": "link", "interface": "eth0.2"}}}`, "gl-mt300n-v2",
			[]string{`board gl-mt300n-v2 has no interface "eth0.2" (it has lan0, wan)`}},
		{"belkin-rt3200: its DSA ports", `{"services": {"wan": {"kind": "link", "interface": "wan"}, "lan": {"kind": "link", "interface": "lan4"}}}`, "belkin-rt3200", nil},
		{"belkin-rt3200: a port of another board", `{"services": {"lan": {"kind": "link", "interface": "lan0"}}}`, "belkin-rt3200",
			[]string{`board belkin-rt3200 has no interface "lan0" (it has lan1, lan2, lan3, lan4, wan)`}},
		{"turris-omnia: every port", `{"board": "turris-omnia", "services": {"wan": {"kind": "link", "interface": "wan"}, "lan": {"kind": "link", "interface": "lan0"}, "lan4": {"kind": "link", "interface": "lan4"}}}`, "turris-omnia", nil},
		{"openwrt-one: a port it lacks", `{"board": "openwrt-one", "services": {"lan": {"kind": "link", "interface": "lan1"}}}`, "",
			[]string{`board openwrt-one has no interface "lan1" (it has lan0, wan)`}},
		{"interface the board lacks", `{"services": {"wan": {"kind": "link", "interface": "eth9"}}}`, "qemu-x86_64",
			[]string{`services.wan.interface: board qemu-x86_64 has no interface "eth9" (it has lan0, lan1, wan)`}},
		{"device name, not logical name", `{"board": "qemu-x86_64", "services": {"wan": {"kind": "link", "interface": "eth0"}}}`, "",
			[]string{`services.wan.interface: board qemu-x86_64 has no interface "eth0"`}},
		{"every problem", `{"colour": 1, "services": {"x": {"kind": "no-such-kind"}, "wan": {"kind": "link", "interface": "eth9"}}}`, "",
			[]string{"colour: unknown field", `services.x.kind: unknown kind "no-such-kind"`, `services.wan.interface: board lab has no interface "eth9"`}},
		{"not JSON", `{"services": `, "qemu-x86_64", []string{"invalid JSON"}},
		{"not an object", `[1]`, "qemu-x86_64", []string{"the config must be a JSON object"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "config.json")
			if err := os.WriteFile(file, []byte(tc.config), 0o644); err != nil {
				t.Fatal(err)
			}
			args := []string{"config", "check", file}
			if tc.board != "" {
				args = append(args, "--board", tc.board)
			}
			stdout, stderr, code := roostdRun(t, t.TempDir(), t.TempDir(), nil, args...)
			if (code == 0) != (len(tc.want) == 0) {
				t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr)
				}
			}
			if len(tc.want) == 0 && !strings.Contains(stdout, "valid for board") {
				t.Errorf("stdout: %q", stdout)
			}

			stdout, stderr, code = roostdRun(t, t.TempDir(), t.TempDir(), nil, append(args, "--json")...)
			var res configCheck
			if err := oneJSON(stdout, &res); err != nil {
				t.Fatalf("--json: %v\n%s%s", err, stdout, stderr)
			}
			if res.Valid != (code == 0) || len(res.Problems) < len(tc.want) || res.File != file {
				t.Errorf("--json: exit %d, %+v", code, res)
			}
			if len(tc.want) == 0 && tc.board != "" && res.Board != tc.board {
				t.Errorf("--json: board %q, want %q", res.Board, tc.board)
			}
		})
	}
	if _, stderr, code := roostdRun(t, t.TempDir(), t.TempDir(), nil, "config", "check", "/nonexistent/config.json"); code != 1 || !strings.Contains(stderr, "no such file") {
		t.Errorf("a missing file: exit %d, %s", code, stderr)
	}
	if _, stderr, code := roostdRun(t, t.TempDir(), t.TempDir(), nil, "config", "lint", "x"); code == 0 || !strings.Contains(stderr, "usage: roostd config check FILE") {
		t.Errorf("config lint: exit %d, %s", code, stderr)
	}
}

// TestBoards: roostd boards prints the embedded board data; --json is the
// same data as boards.json; --targets lists each Go target once.
func TestBoards(t *testing.T) {
	stdout, stderr, code := roostdRun(t, t.TempDir(), t.TempDir(), nil, "boards")
	if code != 0 {
		t.Fatalf("boards: exit %d\n%s%s", code, stdout, stderr)
	}
	for _, want := range []string{
		"qemu-mipsel    mipsle (softfloat)  64 MB",
		"gl-ar750       mips (softfloat)    128 MB   image by mtd             kexec_load       reboot      /dev/watchdog (15s, grace 2m0s)",
		"turris-omnia   arm (v7)            1024 MB  store (images by block)",
		"lan0=eth0 wan=eth1",
		"  RAM:         128 MB, of which an image upgrade may use 48 MB",
		"  trial boot:  the board's watchdog would not survive kexec",
		"  watchdog:    /dev/watchdog, driver ath79_wdt (built in), timeout 15s (hardware maximum not known), grace 2m0s",
		"  watchdog:    /dev/watchdog, driver i6300esb (module), timeout 45s (hardware maximum 2046s), grace 1m0s, i6300esb nowayout=1, watchdog stop_on_reboot=0",
		"  flash:       nor (nor, 16 MiB)",
		"    0x00050000  0x00010000  art         calibration     never written",
		"    0x00060000  0x00fa0000  firmware    image\n",
		"    UBI volume  0x00800000  boot_backup  backup          never written",
		"    UBI volume  -           fit          image\n",
		"  flash:       mmcblk0 (emmc, size read from the disk)",
		"    partition table  -  mmcblk0p1  store",
		"  source:      https://github.com/openwrt/openwrt/blob/",
		"  note:        wan and lan0 are VLANs 2 and 1",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("boards lacks %q:\n%s", want, stdout)
		}
	}

	stdout, stderr, code = roostdRun(t, t.TempDir(), t.TempDir(), nil, "boards", "--json")
	var got []map[string]any
	if err := oneJSON(stdout, &got); code != 0 || err != nil {
		t.Fatalf("boards --json: exit %d, %v\n%s%s", code, err, stdout, stderr)
	}
	b, err := os.ReadFile("../../../boards/boards.json")
	if err != nil {
		t.Fatal(err)
	}
	var want []map[string]any
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatal(err)
	}
	byName := map[string]map[string]any{}
	for _, w := range want {
		byName[w["name"].(string)] = w
	}
	if len(got) != len(want) {
		t.Fatalf("boards --json lists %d boards, boards.json %d", len(got), len(want))
	}
	for _, g := range got {
		gj, _ := json.Marshal(g)
		wj, _ := json.Marshal(byName[g["name"].(string)])
		if string(gj) != string(wj) {
			t.Errorf("boards --json:\n%s\nboards.json:\n%s", gj, wj)
		}
	}

	stdout, stderr, code = roostdRun(t, t.TempDir(), t.TempDir(), nil, "boards", "--targets")
	wantTargets := "GOARCH=arm64\tbelkin-rt3200 openwrt-one\n" +
		"GOARCH=mips GOMIPS=softfloat\tgl-ar750\n" +
		"GOARCH=mipsle GOMIPS=softfloat\tgl-mt300n-v2 qemu-mipsel\n" +
		"GOARCH=amd64\tlab qemu-x86_64\n" +
		"GOARCH=arm GOARM=7\tturris-omnia\n"
	if code != 0 || stdout != wantTargets {
		t.Errorf("boards --targets: exit %d\n%s%s\nwant\n%s", code, stdout, stderr, wantTargets)
	}
	if _, stderr, code := roostdRun(t, t.TempDir(), t.TempDir(), nil, "boards", "gl-ar750"); code == 0 || !strings.Contains(stderr, "usage: roostd boards [--json | --targets]") {
		t.Errorf("boards gl-ar750: exit %d, %s", code, stderr)
	}
}
