package storepath

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	const h = "vcvqfhdlvpdwwj3ikxriym5ij6hqi9n7"
	for _, tc := range []struct {
		in      string
		wantErr string
	}{
		{"/nix/store/" + h + "-a-1.0", ""},
		{"/nix/store/" + h + "-x+y_z?=.A", ""},
		{"/nix/store/" + h + "-" + strings.Repeat("a", 211), ""},
		{"/nix/store/" + h + "-" + strings.Repeat("a", 212), "at most 211"},
		{"/nix/store/" + h + "-", "want <32-character hash>"},
		{"/nix/store/" + h, "want <32-character hash>"},
		{"/nix/store/" + h + "-.hidden", "starts with a period"},
		{"/nix/store/" + h + "-a/b", "invalid character '/'"},
		{"/nix/store/" + h + "-a b", "invalid character ' '"},
		{"/nix/store/" + strings.Replace(h, "v", "e", 1) + "-a", "hash has invalid character 'e'"},
		{"/gnu/store/" + h + "-a", "is not in /nix/store"},
		{"/nix/store/../" + h + "-a", "want <32-character hash>"},
	} {
		p, err := Parse(tc.in)
		if tc.wantErr == "" {
			if err != nil || p.String() != tc.in {
				t.Errorf("Parse(%q) = %q, %v", tc.in, p, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("Parse(%q) error = %v, want it to contain %q", tc.in, err, tc.wantErr)
		}
	}
}

func TestFromLink(t *testing.T) {
	const base = "vcvqfhdlvpdwwj3ikxriym5ij6hqi9n7-a-1.0"
	p, err := FromLink("/nix/store/" + base + "/bin/sh")
	if err != nil || p.Base() != base || p.Name() != "a-1.0" || p.HashPart() != base[:32] {
		t.Fatalf("FromLink = %q, %v", p, err)
	}
}

func FuzzParseBase(f *testing.F) {
	f.Add("vcvqfhdlvpdwwj3ikxriym5ij6hqi9n7-a-1.0")
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseBase(s)
		if err != nil {
			return
		}
		if strings.ContainsAny(string(p), "/\x00") || p.Name() == "" {
			t.Fatalf("ParseBase accepted %q", s)
		}
	})
}
