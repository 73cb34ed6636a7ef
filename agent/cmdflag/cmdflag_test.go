package cmdflag

import (
	"flag"
	"io"
	"reflect"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		args     []string
		wantPos  []string
		wantRoot string
	}{
		{[]string{"a", "--root", "/r", "b"}, []string{"a", "b"}, "/r"},
		{[]string{"--root=/r", "a"}, []string{"a"}, "/r"},
		{[]string{"a", "b"}, []string{"a", "b"}, "/"},
		{[]string{"a", "--", "--root"}, []string{"a", "--root"}, "/"},
	} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		root := fs.String("root", "/", "")
		pos, err := Parse(fs, tc.args)
		if err != nil || !reflect.DeepEqual(pos, tc.wantPos) || *root != tc.wantRoot {
			t.Errorf("Parse(%q) = %q, root %q, %v; want %q, %q", tc.args, pos, *root, err, tc.wantPos, tc.wantRoot)
		}
	}
}
