package main

import (
	"maps"
	"slices"
	"testing"
)

func TestParseMIPS(t *testing.T) {
	console := "[    1.2] random kernel line\r\n" +
		"BENCH mips boot uptime=1.7 memtotal=49492 memavail=32796\r\n" +
		"mipsinit: running /init delta\r\n" +
		`BENCH mips delta-roost refused="need 49.9 MiB (image 34.9), have 27.8 MiB available: refused"` + "\r\n" +
		`BENCH mips write-roost seconds=3.87 peak=4764 error="signal: killed: \"x\"\nmore" after=1` + "\n" +
		"BENCH mips done uptime=9.6\n"
	got := parseMIPS(console)
	want := map[string]map[string]string{
		"boot":        {"uptime": "1.7", "memtotal": "49492", "memavail": "32796"},
		"delta-roost": {"refused": "need 49.9 MiB (image 34.9), have 27.8 MiB available: refused"},
		"write-roost": {"seconds": "3.87", "peak": "4764", "error": "signal: killed: \"x\"\nmore", "after": "1"},
		"done":        {"uptime": "9.6"},
	}
	if len(got) != len(want) {
		t.Errorf("cases %v, want %v", slices.Collect(maps.Keys(got)), slices.Collect(maps.Keys(want)))
	}
	for name, w := range want {
		if !maps.Equal(got[name], w) {
			t.Errorf("%s: %q, want %q", name, got[name], w)
		}
	}
}

func TestParseKV(t *testing.T) {
	tests := []struct {
		in   string
		want map[string]string
	}{
		{"", map[string]string{}},
		{"a=1 b=2", map[string]string{"a": "1", "b": "2"}},
		{"  a=1   b=  ", map[string]string{"a": "1", "b": ""}},
		{`check=match  copy=0.16`, map[string]string{"check": "match", "copy": "0.16"}},
		{`e="a b" f=3`, map[string]string{"e": "a b", "f": "3"}},
		{`e="unterminated f=3`, map[string]string{"e": `"unterminated`, "f": "3"}},
		{"novalue", map[string]string{}},
	}
	for _, tc := range tests {
		if got := parseKV(tc.in); !maps.Equal(got, tc.want) {
			t.Errorf("parseKV(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestParseDepends(t *testing.T) {
	out := "libdbus-1-3:mipsel\n" +
		"  Depends: libc6:mipsel\n" +
		"  Depends: libsystemd0:mipsel\n" +
		"    libelogind0:mipsel\n" +
		"dnsmasq-base:mipsel\n" +
		" |Depends: libnftables1:mipsel\n" +
		"  Depends: libnftables0:mipsel\n" +
		"  Depends: <debconf-2.0:mipsel>\n" +
		"    cdebconf:mipsel\n" +
		"  Depends: libgmp10:mipsel\n"
	want := []string{"libc6", "libsystemd0", "libnftables1", "libgmp10"}
	if got := parseDepends([]byte(out)); !slices.Equal(got, want) {
		t.Errorf("parseDepends = %q, want %q", got, want)
	}
}
