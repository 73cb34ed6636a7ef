package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestImageArguments: roost image refuses what it cannot build before it
// asks Nix for anything, saying what to give instead.
func TestImageArguments(t *testing.T) {
	sys := "/nix/store/00000000000000000000000000000000-system"
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no board", []string{"--system", sys, "-o", "x"}, "--board is required (one of belkin-rt3200, gl-ar750,"},
		{"no system", []string{"--board", "gl-ar750", "-o", "x"}, "--system is required"},
		{"no output", []string{"--board", "gl-ar750", "--system", sys}, "-o FILE is required"},
		{"an argument", []string{"--board", "gl-ar750", "--system", sys, "-o", "x", "extra"}, `roost image takes no arguments, got ["extra"]`},
		{"unknown board", []string{"--board", "wrt54g", "--system", sys, "-o", "x"}, `--board: unknown board "wrt54g"`},
		{"board without an image", []string{"--board", "lab", "--system", sys, "-o", "x"}, "board lab has no image to build"},
		{"size for a uImage", []string{"--board", "gl-ar750", "--system", sys, "-o", "x", "--size-mb", "64"}, "--size-mb is for ext4 images; board gl-ar750's is uimage"},
		{"device tree for a disk", []string{"--board", "qemu-x86_64", "--system", sys, "-o", "x", "--dtb", "x.dtb"}, "--dtb is for images U-Boot boots (uimage, fit); board qemu-x86_64's is ext4"},
		{"not a store path", []string{"--board", "gl-ar750", "--system", "/tmp", "-o", "x"}, "--system /tmp"},
		{"host is not a flag of image", []string{"--host", "r", "--board", "gl-ar750", "--system", sys, "-o", "x"}, "flag provided but not defined: -host"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, _, _ := testEnv(func(string) string { return "" })
			_, err := parseImageArgs(e, tc.args)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("roost image %v: %v, want %q", tc.args, err, tc.want)
			}
		})
	}
	e, _, _ := testEnv(func(string) string { return "" })
	a, err := parseImageArgs(e, []string{"--board", "qemu-x86_64", "--system", sys, "-o", "disk.img", "--size-mb", "64", "--json"})
	if err != nil || a.diskBytes != 64<<20 || a.file != "disk.img" || a.system.String() != sys || !a.json || a.plan.Kind != "ext4" {
		t.Errorf("parseImageArgs = %+v, %v", a, err)
	}
	a, err = parseImageArgs(e, []string{"--board", "openwrt-one", "--system", sys, "-o", "one.itb", "--dtb", "one.dtb"})
	if err != nil || a.dtb != "one.dtb" || a.plan.Kind != "fit" {
		t.Errorf("parseImageArgs = %+v, %v", a, err)
	}
}

// TestSystemBoard: a system that names another board is refused.
func TestSystemBoard(t *testing.T) {
	root := t.TempDir()
	sys := "00000000000000000000000000000000-system"
	dir := filepath.Join(root, "nix/store", sys)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p, err := systemPath("/nix/store/" + sys)
	if err != nil {
		t.Fatal(err)
	}
	if err := checkSystemBoard(root, p, "gl-ar750"); err != nil {
		t.Errorf("a system without a board file: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "board"), []byte("qemu-x86_64\n"), 0o444); err != nil {
		t.Fatal(err)
	}
	if err := checkSystemBoard(root, p, "gl-ar750"); err == nil || !strings.Contains(err.Error(), "is a system for board qemu-x86_64, not gl-ar750") {
		t.Errorf("a qemu-x86_64 system as gl-ar750's: %v", err)
	}
	if err := checkSystemBoard(root, p, "qemu-x86_64"); err != nil {
		t.Errorf("its own board: %v", err)
	}
}
