package supervisor

import (
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// TestTypedOutputs: what a producer sets through an Output, a consumer
// reads back with its type; the file holds the text Liminix's scripts read;
// a value that does not parse is an error naming the service and key.
func TestTypedOutputs(t *testing.T) {
	router, lease, prefix := AddrOutput("router"), IntOutput("len").In("prefix/0"), PrefixOutput("delegated")
	h := newHarness(t, nil)
	got := make(chan []any, 1)
	h.run([]Spec{
		h.spec("dhcp", nil, "1", nil),
		h.spec("reader", []string{"dhcp"}, "1", nil),
	})
	h.waitState(Up, "dhcp", "reader")
	set := make(chan struct{})
	h.ctrl["dhcp"] <- func(e *Env) {
		router.Set(e, netip.MustParseAddr("192.0.2.1"))
		lease.Set(e, 56)
		prefix.Set(e, netip.MustParsePrefix("2001:db8:100::/56"))
		e.SetOutput("bad", "not a number")
		close(set)
	}
	<-set
	h.s.Status() // the loop has written what was set before it answers
	h.ctrl["reader"] <- func(e *Env) {
		r, err1 := router.Require(e, "dhcp")
		l, err2 := lease.Require(e, "dhcp")
		p, ok, err3 := prefix.Get(e, "dhcp")
		_, err4 := IntOutput("bad").Require(e, "dhcp")
		_, err5 := router.Require(e, "nobody")
		got <- []any{r, err1, l, err2, p, ok, err3, err4 != nil, err5 != nil}
	}
	v := <-got
	h.stop()
	want := []any{netip.MustParseAddr("192.0.2.1"), nil, 56, nil, netip.MustParsePrefix("2001:db8:100::/56"), true, nil, true, true}
	if !reflect.DeepEqual(v, want) {
		t.Fatalf("read back %v, want %v", v, want)
	}
	if lease.Key != "prefix/0/len" || router.Of("dhcp") != (Ref{"dhcp", "router"}) {
		t.Fatalf("keys: %q %+v", lease.Key, router.Of("dhcp"))
	}
}

// TestOutputFiles: the file layout is Liminix's (one value a file, tables
// as folders).
func TestOutputFiles(t *testing.T) {
	h := newHarness(t, nil)
	h.run([]Spec{h.spec("dhcp6", nil, "1", nil)})
	h.waitState(Up, "dhcp6")
	done := make(chan struct{})
	h.ctrl["dhcp6"] <- func(e *Env) { IntOutput("len").In("prefix/0").Set(e, 56); close(done) }
	<-done
	h.s.Status()
	b, err := os.ReadFile(filepath.Join(h.s.opts.OutputsDir, "dhcp6", "prefix", "0", "len"))
	h.stop()
	if err != nil || string(b) != "56" {
		t.Fatalf("prefix/0/len on disk: %q, %v", b, err)
	}
}

func TestCycles(t *testing.T) {
	for _, tc := range []struct {
		deps map[string][]string
		want [][]string
	}{
		{map[string][]string{"a": {"b"}, "b": {"c"}, "c": nil}, nil},
		{map[string][]string{"a": {"b"}, "b": {"a"}}, [][]string{{"a", "b", "a"}}},
		{map[string][]string{"a": {"a"}}, [][]string{{"a", "a"}}},
		{map[string][]string{"a": {"b", "ghost"}, "b": {"c"}, "c": {"a"}, "x": {"y"}, "y": {"x"}},
			[][]string{{"a", "b", "c", "a"}, {"x", "y", "x"}}},
	} {
		if got := Cycles(tc.deps); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Cycles(%v) = %v, want %v", tc.deps, got, tc.want)
		}
	}
}
