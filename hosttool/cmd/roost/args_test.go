package main

import (
	"errors"
	"strings"
	"testing"

	"github.com/roostrouter/roost/agent/sshd"
	"github.com/roostrouter/roost/updater/activate"
	"github.com/roostrouter/roost/updater/closurediff"
	"github.com/roostrouter/roost/updater/storepath"
)

// TestRun: no command or an unknown one prints the usage on stderr and
// exits 2, as CLIs do; help prints it on stdout.
func TestRun(t *testing.T) {
	for _, tc := range []struct {
		name                   string
		args                   []string
		wantCode               int // 0: no error
		wantStdout, wantErrout string
	}{
		{"nothing", nil, 2, "", "usage: roost <command>"},
		{"unknown", []string{"upgrade"}, 2, "", `roost: unknown command "upgrade"`},
		{"help", []string{"help"}, 0, "usage: roost <command>", ""},
		{"--help", []string{"--help"}, 0, "usage: roost <command>", ""},
		{"version", []string{"version"}, 0, "roost " + version + "\n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, out, errb := testEnv(func(string) string { return "" })
			err := run(e, tc.args)
			var code exitCode
			if tc.wantCode == 0 && err != nil || tc.wantCode != 0 && (!errors.As(err, &code) || int(code) != tc.wantCode) {
				t.Fatalf("run: %v, want exit status %d", err, tc.wantCode)
			}
			if !strings.Contains(out.String(), tc.wantStdout) || tc.wantStdout == "" && out.Len() != 0 {
				t.Errorf("stdout %q, want %q", out.String(), tc.wantStdout)
			}
			if !strings.Contains(errb.String(), tc.wantErrout) || tc.wantErrout == "" && errb.Len() != 0 {
				t.Errorf("stderr %q, want %q", errb.String(), tc.wantErrout)
			}
		})
	}
}

// TestRefusedArguments: what cannot be done is refused before any
// connection, saying what to write instead.
func TestRefusedArguments(t *testing.T) {
	sys := "/nix/store/00000000000000000000000000000000-system"
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"rebuild without a host", []string{"rebuild", "--system", sys}, "--host is required"},
		{"rebuild with a flag it lacks", []string{"rebuild", "--host", "r", "--force"}, "flag provided but not defined: -force"},
		{"rebuild with two modes", []string{"rebuild", "--host", "r", "switch", "boot"}, "one mode at most"},
		{"rebuild with an unknown mode", []string{"rebuild", "--host", "r", "swtich", "--system", sys}, `unknown mode "swtich"`},
		{"rebuild with --kexec and --reboot", []string{"rebuild", "--host", "r", "--kexec", "--reboot", "--system", sys}, "give --kexec or --reboot, not both"},
		{"rebuild boot with --reboot", []string{"rebuild", "--host", "r", "boot", "--reboot", "--system", sys}, "--kexec and --reboot say how a switch boots a changed kernel"},
		{"rebuild of nothing", []string{"rebuild", "--host", "r", "test"}, "say what to activate: --system"},
		{"rebuild of two things", []string{"rebuild", "--host", "r", "--system", sys, "-f", "router.nix"}, "give --system or -f, not both"},
		{"rebuild of a file that is not a system", []string{"rebuild", "--host", "r", "--system", "/etc/passwd"}, "neither a store path nor a link to one"},
		{"copy of nothing", []string{"copy", "--host", "r"}, "usage: roost copy --host HOST PATH"},
		{"copy of a path outside the store", []string{"copy", "--host", "r", "/etc/passwd"}, "not in /nix/store"},
		{"copy without a host", []string{"copy", sys}, "--host is required"},
		{"gc without a host", []string{"gc", "--keep", "3"}, "--host is required"},
		{"gc with a bad number", []string{"gc", "--host", "r", "--keep", "three"}, `invalid value "three" for flag -keep`},
		{"status with an argument it lacks", []string{"status", "--host", "r", "--all"}, "flag provided but not defined: -all"},
		{"reboot without a host", []string{"reboot"}, "--host is required"},
		{"reboot of something", []string{"reboot", "--host", "r", "now"}, "usage: roost reboot --host HOST"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// No home: a dial would fail on the missing ~/.ssh, not
			// with the error the test wants.
			e, out, errb := testEnv(func(string) string { return "" })
			t.Setenv("HOME", t.TempDir())
			err := run(e, tc.args)
			if err == nil || !strings.Contains(err.Error(), tc.want) && !strings.Contains(errb.String(), tc.want) {
				t.Fatalf("run %q: %v (stderr %q), want %q", tc.args, err, errb.String(), tc.want)
			}
			if out.Len() != 0 {
				t.Errorf("printed %q on stdout", out.String())
			}
		})
	}
}

// TestShellQuote: what roost quotes, roostd's endpoint (and any POSIX
// shell) splits back to the same word.
func TestShellQuote(t *testing.T) {
	for _, s := range []string{"30d", "", "it's", "a b", "'", `\`, "$(reboot)", "x;y", "line\nbreak", `"`} {
		words, err := sshd.SplitCommand("roostd gc --older-than " + shellQuote(s))
		if err != nil || len(words) != 4 || words[3] != s {
			t.Errorf("shellQuote(%q) = %s, which splits to %q, %v", s, shellQuote(s), words, err)
		}
	}
}

func TestOneJSON(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want bool
	}{
		{`{}`, true},
		{"{\"a\": 1}\n", true},
		{`[1, 2]`, true},
		{`"text"`, true},
		{"", false},
		{"{}\n{}", false},
		{"{} trailing", false},
		{"rolled back to generation 1", false},
		{`{"a": `, false},
	} {
		if got := oneJSON([]byte(tc.in)); got != tc.want {
			t.Errorf("oneJSON(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

// TestPrintRebuild: what rebuild tells a user after each mode.
func TestPrintRebuild(t *testing.T) {
	sys := storepath.Path("/nix/store/00000000000000000000000000000000-system")
	cp := copyResult{ClosurePaths: 120, SentPaths: 3, Deltas: 1, SentNARBytes: 3 << 20, WireBytes: 1 << 20, ClosureNARBytes: 200 << 20, Seconds: 2.5}
	for _, tc := range []struct {
		mode activate.Mode
		gen  int
		want string
	}{
		{activate.Switch, 7, "generation 7 is running and confirmed: " + sys.String()},
		{activate.Test, 0, "running " + sys.String() + " (test: not the boot default), confirmed"},
		{activate.Boot, 7, "generation 7 is the default for the next boot: " + sys.String()},
		{activate.DryActivate, 0, "would activate " + sys.String()},
	} {
		t.Run(string(tc.mode), func(t *testing.T) {
			e, out, _ := testEnv(func(string) string { return "" })
			e.printRebuild(rebuildResult{copyResult: cp, Mode: tc.mode, System: sys, Generation: tc.gen,
				Changes: []closurediff.Change{{Name: "dnsmasq", Old: []string{"2.89"}, New: []string{"2.90"}}}})
			lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
			if len(lines) != 3 {
				t.Fatalf("printed %q, want the copy, the change and the outcome", out.String())
			}
			if want := "sent 3 of 120 paths (1 as deltas): 3.0 MiB of NAR (1.0 MiB on the wire) of the closure's 200.0 MiB, in 2.5s"; lines[0] != want {
				t.Errorf("copy line %q, want %q", lines[0], want)
			}
			if !strings.Contains(lines[1], "dnsmasq") || !strings.HasPrefix(lines[1], "  ") {
				t.Errorf("change line %q", lines[1])
			}
			if lines[2] != tc.want {
				t.Errorf("outcome %q, want %q", lines[2], tc.want)
			}
		})
	}
}

// TestLimitedBuffer: a remote command's stderr is kept up to 64 KiB, and
// writing more never fails the command.
func TestLimitedBuffer(t *testing.T) {
	var b limitedBuffer
	chunk := strings.Repeat("e", 40<<10)
	for i := range 3 {
		if n, err := b.Write([]byte(chunk)); n != len(chunk) || err != nil {
			t.Fatalf("write %d: %d, %v", i, n, err)
		}
	}
	if len(b.String()) != 64<<10 {
		t.Fatalf("kept %d bytes, want %d", len(b.String()), 64<<10)
	}
}
