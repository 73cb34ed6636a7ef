package image

import (
	"errors"
	"strings"
	"testing"
)

const meminfo = `MemTotal:          61212 kB
MemFree:           20000 kB
MemAvailable:      18432 kB
Buffers:               0 kB
`

func TestCheckMemory(t *testing.T) {
	const mb = 1 << 20
	for _, tc := range []struct {
		name                   string
		meminfo                string
		image, closure, margin uint64
		want                   string
	}{
		{name: "fits", meminfo: meminfo, image: 8 * mb, closure: 8 * mb, margin: 2 * mb},
		{name: "exactly", meminfo: meminfo, image: 10 * mb, closure: 6 * mb, margin: 2 * mb},
		{name: "too little", meminfo: meminfo, image: 9*mb + 100<<10, closure: 12*mb + 300<<10, margin: 2 * mb,
			want: "need 23.4 MiB (image 9.1 + roostd's closure 12.3 + margin 2.0), have 18.0 MiB available: pivot-to-maintenance refused before stopping anything"},
		{name: "one byte over", meminfo: meminfo, image: 18*mb + 1, want: "need 18.0 MiB (image 18.0 + roostd's closure 0.0 + margin 0.0), have 18.0 MiB available"},
		{name: "overflow", meminfo: meminfo, image: 1 << 63, closure: 1 << 63, margin: 1, want: "need 17592186044416.0 MiB"},
		{name: "no MemAvailable", meminfo: "MemTotal: 61212 kB\n", want: "no MemAvailable (a kernel before 3.14?)"},
		{name: "garbage", meminfo: "MemAvailable: lots\n", want: `MemAvailable "lots": want a number of kB`},
		{name: "huge", meminfo: "MemAvailable: 18446744073709551615 kB\n", want: "want a number of kB"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckMemory(strings.NewReader(tc.meminfo), tc.image, tc.closure, tc.margin)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
	err := CheckMemory(strings.NewReader(meminfo), 20<<20, 0, 0)
	var me *MemoryError
	if !errors.As(err, &me) || me.Available != 18432<<10 || me.Need != 20<<20 {
		t.Errorf("got %#v", err)
	}
}
