package sshd

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

var splitCases = []struct {
	in       string
	want     []string // nil: refused
	errHas   string
	notForSh bool // sh cannot check it spliced into a script (a trailing backslash)
}{
	{in: "roostd status", want: []string{"roostd", "status"}},
	{in: "  roostd\tstatus  --json ", want: []string{"roostd", "status", "--json"}},
	{in: "roostd gc --older-than '30d'", want: []string{"roostd", "gc", "--older-than", "30d"}},
	{in: `'it'\''s'`, want: []string{"it's"}},
	{in: `a'b c'd`, want: []string{"ab cd"}},
	{in: `'' x`, want: []string{"", "x"}},
	{in: `""`, want: []string{""}},
	{in: `"a b" c`, want: []string{"a b", "c"}},
	{in: `"a\b"`, want: []string{`a\b`}},
	{in: `"a\\b"`, want: []string{`a\b`}},
	{in: `"a\"b"`, want: []string{`a"b`}},
	{in: `"\$x"`, want: []string{"$x"}},
	{in: "\"a\\`b\"", want: []string{"a`b"}},
	{in: "\"line\none\"", want: []string{"line\none"}},
	{in: "\"joined\\\nhere\"", want: []string{"joinedhere"}},
	{in: `a\ b`, want: []string{"a b"}},
	{in: `a\;b`, want: []string{"a;b"}},
	{in: "a\\\nb", want: []string{"ab"}},
	{in: `a\`, want: []string{`a\`}, notForSh: true},
	{in: "roostd status # what runs", want: []string{"roostd", "status"}},
	{in: "a#b", want: []string{"a#b"}},
	{in: "''#b", want: []string{"#b"}},
	{in: "roostd status\n", want: []string{"roostd", "status"}},
	{in: "roostd status # a comment\n\n", want: []string{"roostd", "status"}},
	{in: "'x;y' \"a|b\" 'c$(d)'", want: []string{"x;y", "a|b", "c$(d)"}},
	{in: "nix-store --serve --write", want: []string{"nix-store", "--serve", "--write"}},
	{in: "/nix/store/abc-foo?bar=1", want: []string{"/nix/store/abc-foo?bar=1"}},

	{in: "roostd status; reboot", errHas: "needs a shell"},
	{in: "roostd status && reboot", errHas: "needs a shell"},
	{in: "roostd status | nc x 1", errHas: "needs a shell"},
	{in: "roostd status > /etc/passwd", errHas: "needs a shell"},
	{in: "roostd status < /dev/zero", errHas: "needs a shell"},
	{in: "echo $(reboot)", errHas: "needs a shell"},
	{in: "echo `reboot`", errHas: "needs a shell"},
	{in: "echo $HOME", errHas: "needs a shell"},
	{in: `echo "$(reboot)"`, errHas: "needs a shell"},
	{in: "echo \"`reboot`\"", errHas: "needs a shell"},
	{in: "(reboot)", errHas: "needs a shell"},
	{in: "{ reboot; }", errHas: "needs a shell"},
	{in: "roostd status\nreboot", errHas: "needs a shell"},
	{in: "roostd status # c\nreboot", errHas: "needs a shell"},
	{in: "'unterminated", errHas: "unterminated '"},
	{in: `"unterminated`, errHas: `unterminated "`},
	{in: `"ends in a backslash\`, errHas: `unterminated "`},
	{in: "", errHas: "empty command"},
	{in: " \t ", errHas: "empty command"},
	{in: "# only a comment", errHas: "empty command"},
}

func TestSplitCommand(t *testing.T) {
	for _, tc := range splitCases {
		got, err := SplitCommand(tc.in)
		switch {
		case tc.want == nil && err == nil:
			t.Errorf("SplitCommand(%q) = %q, want a refusal with %q", tc.in, got, tc.errHas)
		case tc.want == nil && !strings.Contains(err.Error(), tc.errHas):
			t.Errorf("SplitCommand(%q): %v, want it to say %q", tc.in, err, tc.errHas)
		case tc.want != nil && (err != nil || !slices.Equal(got, tc.want)):
			t.Errorf("SplitCommand(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

// TestSplitCommandAsSh: the words are the ones a POSIX shell (Debian's
// dash) makes of the same line, so a command means the same through
// roostd's endpoint as under any sshd.
func TestSplitCommandAsSh(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Fatalf("no sh to compare with: %v", err)
	}
	for _, tc := range splitCases {
		if tc.want == nil || tc.notForSh || strings.TrimSpace(tc.in) == "" {
			continue
		}
		out, err := exec.Command(sh, "-c", "set -- "+tc.in+"\nprintf '%s\\0' \"$@\"").Output()
		if err != nil {
			t.Errorf("sh on %q: %v", tc.in, err)
			continue
		}
		words := strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
		if !slices.Equal(words, tc.want) {
			t.Errorf("sh makes %q of %q; the table says %q", words, tc.in, tc.want)
		}
	}
}

// quote is what roost and OpenSSH users write: each word in '…'.
func quote(words []string) string {
	q := make([]string, len(words))
	for i, w := range words {
		q[i] = "'" + strings.ReplaceAll(w, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}

// FuzzSplitCommand: no input panics; whatever is accepted is words that,
// quoted again, split back to themselves; and any words, quoted, split
// back to themselves.
func FuzzSplitCommand(f *testing.F) {
	for _, tc := range splitCases {
		f.Add(tc.in)
	}
	f.Fuzz(func(t *testing.T, s string) {
		words, err := SplitCommand(s)
		if err == nil {
			if len(words) == 0 {
				t.Fatalf("SplitCommand(%q) accepted no words", s)
			}
			again, err := SplitCommand(quote(words))
			if err != nil || !slices.Equal(again, words) {
				t.Fatalf("SplitCommand(%q) = %q, which quoted splits to %q, %v", s, words, again, err)
			}
		}
		raw := strings.Split(s, "\x00")
		got, err := SplitCommand(quote(raw))
		if err != nil || !slices.Equal(got, raw) {
			t.Fatalf("the quoted words %q split to %q, %v", raw, got, err)
		}
	})
}
