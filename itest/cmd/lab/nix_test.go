package main

import (
	"encoding/json"
	"os/exec"
	"testing"
)

// TestNixString: what nixString quotes, Nix reads back as the same string
// (nix-instantiate --eval, when Nix is installed): paths in .lab/rotuer.nix
// may hold any character.
func TestNixString(t *testing.T) {
	for _, s := range []string{
		"/work/main/itest/bin/roostd",
		`/a "quoted" path`,
		`/back\slash`,
		"/dollar/${HOME}/$x/$${y}",
		"/new\nline\ttab\rreturn",
		"ssh-ed25519 AAAA lab-laptop",
	} {
		q := nixString(s)
		if _, err := exec.LookPath("nix-instantiate"); err != nil {
			t.Skipf("SKIPPED: no nix-instantiate to read %s back", q)
		}
		out, err := exec.Command("nix-instantiate", "--eval", "--json", "--store", t.TempDir(), "-E", q).Output()
		if err != nil {
			t.Fatalf("nix-instantiate --eval %s: %v", q, err)
		}
		var got string
		if err := json.Unmarshal(out, &got); err != nil || got != s {
			t.Errorf("nixString(%q) = %s, which Nix reads as %s (%v)", s, q, out, err)
		}
	}
}
