package main

import (
	"maps"
	"os"
	"path/filepath"
	"testing"
)

func TestSplitHWM(t *testing.T) {
	tests := []struct {
		out, rest string
		hwm       int64
	}{
		{"hwm=29260 base=0.83 decode=2.89", "base=0.83 decode=2.89", 29260},
		{"a warning\nhwm=4764 erase=1.40", "a warning\nerase=1.40", 4764},
		{"hwm=12", "", 12},
		{"", "", 0},
		{"flashcp: error", "flashcp: error", 0},
		{"hwm=x erase=1", "hwm=x erase=1", 0},
	}
	for _, tc := range tests {
		hwm, rest := splitHWM(tc.out)
		if hwm != tc.hwm || rest != tc.rest {
			t.Errorf("splitHWM(%q) = %d, %q; want %d, %q", tc.out, hwm, rest, tc.hwm, tc.rest)
		}
	}
}

func TestKibFields(t *testing.T) {
	f := filepath.Join(t.TempDir(), "status")
	status := "Name:\tinit\nVmHWM:\t    4764 kB\nVmRSS:\t    4000 kB\nThreads:\t5\nMemTotal:       49492 kB\n"
	if err := os.WriteFile(f, []byte(status), 0o644); err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{"VmHWM": 4764, "VmRSS": 4000, "MemTotal": 49492}
	if got := kibFields(f); !maps.Equal(got, want) {
		t.Errorf("kibFields = %v, want %v", got, want)
	}
	if got := kibFields(filepath.Join(t.TempDir(), "missing")); len(got) != 0 {
		t.Errorf("a missing file: %v, want nothing", got)
	}
}
