package kexec

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestFDTRoundTrip: Debian's device trees parse, write out and parse to
// the same tree; a changed /chosen reads back.
func TestFDTRoundTrip(t *testing.T) {
	dtbs, _ := filepath.Glob("/var/cache/roost-vm/armhf/usr/lib/linux-image-*-armmp/*.dtb")
	inputs := map[string][]byte{"synthetic": fakeDTB()}
	for _, d := range dtbs {
		if len(inputs) > 40 {
			break
		}
		b, err := os.ReadFile(d)
		if err != nil {
			t.Fatal(err)
		}
		inputs[filepath.Base(d)] = b
	}
	if len(dtbs) == 0 {
		t.Log("no Debian armmp device trees in /var/cache/roost-vm/armhf (make vmdeps): the synthetic one only")
	}
	for name, b := range inputs {
		f, err := ParseFDT(b)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		out := f.Bytes()
		g, err := ParseFDT(out)
		if err != nil {
			t.Fatalf("%s written back: %v", name, err)
		}
		if !reflect.DeepEqual(f, g) {
			t.Fatalf("%s: the tree written back differs", name)
		}
		g.SetChosen("bootargs", []byte("console=ttyS0 roost.trial=1\x00"))
		g.SetChosen("linux,initrd-start", nil)
		h, err := ParseFDT(g.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		if v, _ := h.Chosen("bootargs"); string(v) != "console=ttyS0 roost.trial=1\x00" {
			t.Fatalf("%s: bootargs %q after setting", name, v)
		}
		if _, ok := h.Chosen("linux,initrd-start"); ok {
			t.Fatalf("%s: initrd-start still there after removing", name)
		}
	}
	t.Logf("%d device trees round-tripped", len(inputs))
}

func TestParseFDTHostile(t *testing.T) {
	good := fakeDTB()
	put := func(off int, v uint32) func(b []byte) []byte {
		return func(b []byte) []byte { be.PutUint32(b[off:], v); return b }
	}
	tests := []struct {
		name string
		mod  func(b []byte) []byte
		err  string
	}{
		{"no magic", put(0, 0), "magic"},
		{"total size past the end", put(4, 1<<20), "total size"},
		{"version 15", put(20, 15), "version"},
		{"struct block outside", put(8, 0xffff), "outside"},
		{"strings block outside", put(32, 0xffff), "outside"},
		{"cut struct", put(36, 8), "cut short"},
		{"unknown token", func(b []byte) []byte { be.PutUint32(b[be.Uint32(b[8:]):], 7); return b }, "unknown token"},
		{"property name outside", func(b []byte) []byte {
			// the first property of the first node follows its name
			st := int(be.Uint32(b[8:]))
			off := bytes.Index(b[st:], be.AppendUint32(nil, tokProp))
			be.PutUint32(b[st+off+8:], 0xffffff)
			return b
		}, "property name"},
		{"endless reservation map", func(b []byte) []byte {
			for i := 48; i+16 <= int(be.Uint32(b[8:])); i++ {
				b[i] = 1
			}
			return b
		}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseFDT(tc.mod(append([]byte(nil), good...)))
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("ParseFDT: %v, want an error with %q", err, tc.err)
			}
		})
	}
}

func FuzzParseFDT(f *testing.F) {
	f.Add(fakeDTB())
	if dtbs, _ := filepath.Glob("/var/cache/roost-vm/armhf/usr/lib/linux-image-*-armmp/vexpress-v2p-ca9.dtb"); len(dtbs) > 0 {
		if b, err := os.ReadFile(dtbs[0]); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fdt, err := ParseFDT(b)
		if err != nil {
			return
		}
		fdt.SetChosen("bootargs", []byte("x\x00"))
		if _, err := ParseFDT(fdt.Bytes()); err != nil {
			t.Fatalf("a tree written back does not parse: %v", err)
		}
	})
}
