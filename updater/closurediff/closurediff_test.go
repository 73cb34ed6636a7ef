package closurediff

import (
	"reflect"
	"testing"

	"github.com/roostrouter/roost/updater/storepath"
	"github.com/roostrouter/roost/updater/storetest"
)

func TestSplitName(t *testing.T) {
	for in, want := range map[string][2]string{
		"libfoo-1.2":       {"libfoo", "1.2"},
		"many-refs":        {"many-refs", ""},
		"app-2.0-bin":      {"app", "2.0-bin"},
		"system":           {"system", ""},
		"openssl-3.0.13-x": {"openssl", "3.0.13-x"},
	} {
		if p, v := SplitName(in); p != want[0] || v != want[1] {
			t.Errorf("SplitName(%q) = %q, %q; want %q, %q", in, p, v, want[0], want[1])
		}
	}
}

func TestDiff(t *testing.T) {
	p := storetest.NewPath
	old := []storepath.Path{p("libfoo-1.2"), p("app-1.0"), p("gone-3"), p("system"), p("x.drv")}
	new := []storepath.Path{p("libfoo-1.2"), p("app-2.0"), p("added-1"), storetest.NewPath("system" + "")}
	// The system is rebuilt (another hash) at the same version.
	new[3] = storepath.Path(string(storetest.NewPath("sys-other"))[:33] + "system")
	var got []string
	for _, c := range Diff(old, new) {
		got = append(got, c.String())
	}
	want := []string{"added: added (1)", "app: 1.0 → 2.0", "gone: removed (3)", "system: ε → ε"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Diff = %q, want %q", got, want)
	}
}
