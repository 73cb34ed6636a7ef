package nixlocal

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/roostrouter/roost/updater/nixhash"
	"github.com/roostrouter/roost/updater/nixsig"
	"github.com/roostrouter/roost/updater/registry"
	"github.com/roostrouter/roost/updater/storepath"
)

// The fixtures are one closure (a text file made by builtins.toFile, so
// content-addressed and without deriver; a library; a top path), built
// and signed with Nix 2.8 here (testdata/nix-2.8.json is its real
// output), then printed in the shape each other Nix prints, as read from
// NixOS/nix's and Lix's sources at the tags named. want.json is the same
// closure in roost's own registry form, written independently of the
// parser (hashes in nix32).
var fixtures = []struct {
	file string
	from string // what prints it, and where that is in the source
}{
	{"nix-2.3.json", "Nix 2.3.16 src/libstore/store-api.cc Store::pathInfoToJSON (array, sha256:<nix32>)"},
	{"nix-2.8.json", "Nix 2.8.0, the real output (array, SRI)"},
	{"nix-2.18.json", "Nix 2.18.0 src/libstore/store-api.cc Store::pathInfoToJSON (array, \"valid\": true)"},
	{"lix-2.93.json", "Lix lix/libstore/store-api.cc basicPathInfoToJSON (array, \"valid\": true)"},
	{"nix-2.19.json", "Nix 2.19.0 src/nix/path-info.cc, src/libstore/path-info.cc (object keyed by path)"},
	{"nix-2.24.json", "Nix 2.24.0 src/libstore/path-info.cc (object, absent fields null)"},
	{"nix-2.33-format1.json", "Nix 2.33.0 --json-format 1 (object, version and storeDir in each)"},
	{"nix-2.33-format2.json", "Nix 2.33.0 --json-format 2 ({version, storeDir, info}, base names, ca object)"},
	{"nix-2.35-format3.json", "Nix 2.35.0 --json-format 3 (signatures as {keyName, sig})"},
	{"nix-git-1ad13a1-format2.json", "Nix master at 1ad13a1423, unreleased (format 2 unwrapped, hashes as objects)"},
}

// The keys the fixtures' closure was signed with.
var fixtureKeys = []string{
	"rotuer-test-1:bpbCdBJRvEZJGQI43I1XIX6AHEpG7/KwjoC/kcWVEfY=",
	"laptop-2:yWvNQ+CH29MS2UHNRHEfw9inhIABEVpyeiueE3zzwWE=",
}

func readWant(t *testing.T) []registry.Info {
	t.Helper()
	b, err := os.ReadFile("testdata/want.json")
	if err != nil {
		t.Fatal(err)
	}
	var want []registry.Info
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatal(err)
	}
	return want
}

func publicKeys(t *testing.T, ss ...string) []nixsig.PublicKey {
	t.Helper()
	var keys []nixsig.PublicKey
	for _, s := range ss {
		k, err := nixsig.ParsePublicKey(s)
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}
	return keys
}

func TestParsePathInfoFixtures(t *testing.T) {
	want := readWant(t)
	for _, fx := range fixtures {
		t.Run(fx.file, func(t *testing.T) {
			out, err := os.ReadFile(filepath.Join("testdata", fx.file))
			if err != nil {
				t.Fatal(err)
			}
			got, err := ParsePathInfo(out)
			if err != nil {
				t.Fatalf("%s: %v", fx.from, err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("%s:\ngot  %+v\nwant %+v", fx.from, got, want)
			}
			// What the router checks: every path carries a signature it can
			// verify with each key that signed it.
			for _, info := range got {
				for _, k := range publicKeys(t, fixtureKeys...) {
					signed := strings.Contains(fmt.Sprint(info.Signatures), k.Name+":")
					if signed && !nixsig.Verify(&info, []nixsig.PublicKey{k}) {
						t.Errorf("%s: %s's signature by %s does not verify", fx.from, info.Path, k.Name)
					}
				}
			}
		})
	}
}

func TestParsePathInfoRefusals(t *testing.T) {
	const p = "/nix/store/zlf25cclkiyx72df93sq2fg0v9jczyrw-leaf"
	const h = `"sha256-HDfQGvQL4ugGkd48w99EN3ppmvuxfGjwgJZLL9Bx/BM="`
	for _, tc := range []struct {
		name, out, want string
	}{
		{"empty", "", "printed nothing"},
		{"string", `"hello"`, `a JSON string ("hello")`},
		{"number", `42`, "a JSON number (42)"},
		{"array of numbers", `[1, 2]`, "a JSON number (1) is not a store object's info"},
		{"future object", `{"version": 4, "storeObjects": {}}`, `a JSON object with keys "storeObjects", "version" and version 4`},
		{"future wrapped", `{"version": 4, "info": [1]}`, `whose "info" is not an object`},
		{"invalid in array (2.18, Lix)", `[{"path": "` + p + `", "valid": false}]`, "is not valid in the laptop's Nix store"},
		{"invalid in object (2.19+)", `{"` + p + `": null}`, p + " is not valid in the laptop's Nix store"},
		{"no path in array entry", `[{"narHash": ` + h + `}]`, `has no "path"`},
		{"no narHash", `{"` + p + `": {"narSize": 1, "references": []}}`, "no narHash"},
		{"renamed references", `{"` + p + `": {"narHash": ` + h + `, "narSize": 1, "refs": []}}`, "references absent"},
		{"newer version, renamed field", `{"` + p + `": {"narHash": ` + h + `, "narSize": 1, "refs": [], "version": 9}}`, "its format is version 9"},
		{"sha512 string", `{"` + p + `": {"narHash": "sha512-AAAA", "narSize": 1, "references": []}}`, "only sha256"},
		{"sha512 object", `{"` + p + `": {"narHash": {"algorithm": "sha512", "format": "base16", "hash": "00"}, "narSize": 1, "references": []}}`, "only sha256"},
		{"hash format", `{"` + p + `": {"narHash": {"algorithm": "sha256", "format": "base58", "hash": "00"}, "narSize": 1, "references": []}}`, `unknown hash format "base58"`},
		{"bad signature object", `{"` + p + `": {"narHash": ` + h + `, "narSize": 1, "references": [], "signatures": [{"key": "x"}]}}`, "want \"name:base64\" or {keyName, sig}"},
		{"other store", `{"version": 2, "storeDir": "/gnu/store", "info": {}}`, "the laptop's Nix store is /gnu/store"},
		{"other store in entry (2.33)", `{"/gnu/store/zlf25cclkiyx72df93sq2fg0v9jczyrw-leaf": {"storeDir": "/gnu/store"}}`, "the laptop's Nix store is /gnu/store"},
		{"other store (2.19)", `{"/gnu/store/zlf25cclkiyx72df93sq2fg0v9jczyrw-leaf": {}}`, "not in /nix/store"},
		{"twice", `[{"path": "` + p + `", "narHash": ` + h + `, "narSize": 1, "references": []}, {"path": "` + p + `", "narHash": ` + h + `, "narSize": 1, "references": []}]`, "twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParsePathInfo([]byte(tc.out))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error with %q", err, tc.want)
			}
		})
	}
}

func TestNarHashNotations(t *testing.T) {
	want, err := nixhash.ParseSHA256("sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s")
	if err != nil {
		t.Fatal(err)
	}
	for _, raw := range []string{
		`"sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s"`,
		`"` + want.SRI() + `"`,
		`"sha256:` + want.Base16() + `"`,
		`{"algorithm": "sha256", "format": "base16", "hash": "` + want.Base16() + `"}`,
		`{"algorithm": "sha256", "format": "nix32", "hash": "1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s"}`,
		`{"algorithm": "sha256", "format": "base64", "hash": "` + strings.TrimPrefix(want.SRI(), "sha256-") + `"}`,
		`{"algorithm": "sha256", "format": "sri", "hash": "` + want.SRI() + `"}`,
	} {
		got, err := narHash(json.RawMessage(raw))
		if err != nil || got != want {
			t.Errorf("%s: got %v, %v; want %v", raw, got, err, want)
		}
	}
}

// standIn puts a program called nix first in PATH: a shell script that
// logs its arguments and answers as script says. It stands in for the
// versions of Nix that cannot be installed here.
func standIn(t *testing.T, script string) (log string) {
	t.Helper()
	dir := t.TempDir()
	log = filepath.Join(dir, "calls")
	body := "#!/bin/sh\necho \"$*\" >> " + log + "\n" + script + "\n"
	if err := os.WriteFile(filepath.Join(dir, "nix"), []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	return log
}

func calls(t *testing.T, log string) []string {
	t.Helper()
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

func TestClosureFlags(t *testing.T) {
	want := readWant(t)
	top := want[1].Path
	abs := func(f string) string { a, _ := filepath.Abs(filepath.Join("testdata", f)); return a }
	const (
		rejectFormat = `case "$*" in *--json-format*) echo "error: unrecognised flag '--json-format'" >&2; echo "Try 'nix --help' for more information." >&2; exit 1;; esac`
		rejectXP     = `case "$*" in *--extra-experimental-features*) echo "error: unrecognised flag '--extra-experimental-features'" >&2; exit 1;; esac`
	)
	for _, tc := range []struct {
		name   string
		script string
		calls  []string // the flags of each run, in order
	}{
		{"nix 2.35", `case "$*" in *"--json-format 2"*) cat ` + abs("nix-2.33-format2.json") + `;; *) echo "warning: '--json' without '--json-format' is deprecated" >&2; cat ` + abs("nix-2.33-format1.json") + `;; esac`,
			[]string{"--extra-experimental-features nix-command path-info --json --json-format 2 --recursive"}},
		{"lix", rejectFormat + "\ncat " + abs("lix-2.93.json"),
			[]string{
				"--extra-experimental-features nix-command path-info --json --json-format 2 --recursive",
				"--extra-experimental-features nix-command path-info --json --recursive",
			}},
		{"nix 2.3", rejectXP + "\n" + rejectFormat + "\ncat " + abs("nix-2.3.json"),
			[]string{
				"--extra-experimental-features nix-command path-info --json --json-format 2 --recursive",
				"path-info --json --json-format 2 --recursive",
				"path-info --json --recursive",
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			log := standIn(t, tc.script)
			n := &Nix{}
			for range 2 {
				got, err := n.Closure(context.Background(), top)
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(got, want) {
					t.Fatalf("got %+v\nwant %+v", got, want)
				}
			}
			// The second Closure goes straight to the flags that worked.
			wantCalls := append(tc.calls, tc.calls[len(tc.calls)-1])
			for i := range wantCalls {
				wantCalls[i] += " " + top.String()
			}
			if got := calls(t, log); !reflect.DeepEqual(got, wantCalls) {
				t.Fatalf("nix was run as\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(wantCalls, "\n"))
			}
		})
	}
}

func TestClosureErrors(t *testing.T) {
	want := readWant(t)
	top := want[1].Path
	for _, tc := range []struct {
		name, script, want string
	}{
		// Nix's own error, with the command roost ran.
		{"not valid", `echo "error: path '` + top.String() + `' is not valid" >&2; exit 1`,
			"nix --extra-experimental-features nix-command path-info --json --json-format 2 --recursive " + top.String() + ": exit status 1: error: path '" + top.String() + "' is not valid"},
		// A flag that stays unrecognised after it is dropped does not loop.
		{"stubborn", `echo "error: unrecognised flag '--json-format'" >&2; exit 1`, "unrecognised flag '--json-format'"},
		{"unknown flag of roost's", `echo "error: unrecognised flag '--recursive'" >&2; exit 1`, "unrecognised flag '--recursive'"},
		{"unknown shape", `echo '{"version": 7, "objects": []}'`, `a JSON object with keys "objects", "version" and version 7`},
		{"incomplete", `echo '[{"path": "` + top.String() + `", "narHash": "sha256-d4qGwgnIUaaL+ocCA8jO1jvXGH2VImH+CMYqjOUwdHk=", "narSize": 328, "references": ["` + want[0].Path.String() + `"]}]'`,
			"references " + want[0].Path.String() + ", which is not in it"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			standIn(t, tc.script)
			_, err := (&Nix{}).Closure(context.Background(), top)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v\nwant an error with %q", err, tc.want)
			}
		})
	}
	t.Run("no nix", func(t *testing.T) {
		t.Setenv("PATH", t.TempDir())
		_, err := (&Nix{}).Closure(context.Background(), top)
		if err == nil || !strings.Contains(err.Error(), "finds no nix command in PATH: install Nix") {
			t.Fatalf("got %v", err)
		}
	})
}

// needNix skips (fails in CI) unless the real Nix can build into a
// chroot store here.
func needNix(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"nix", "nix-build", "nix-store", "/bin/busybox"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s is not installed; .ci/run must install it", tool)
			}
			t.Skipf("SKIPPED: %s is not installed (make deps installs it)", tool)
		}
	}
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("the real-Nix tests must run as root in CI (a chroot store)")
		}
		t.Skip("SKIPPED: building into a chroot store needs root")
	}
}

const closureExpr = `
let
  bb = "/bin/busybox";
  mk = name: deps: script: derivation {
    inherit name deps;
    system = builtins.currentSystem;
    builder = bb;
    args = [ "sh" "-c" script ];
  };
  leaf = builtins.toFile "leaf" "hello\n";
  lib = mk "lib" [ leaf ] "${bb} mkdir $out; echo ${leaf} > $out/f";
in mk "top" [ lib ] "${bb} mkdir $out; echo ${lib} > $out/f; ${bb} ln -s $out/f $out/self"
`

// TestClosureRealNix builds a closure with the real Nix installed here
// (2.8 on the development machines) into a throwaway chroot store, signs
// it, and checks what roost reads against nix-store's own answers.
func TestClosureRealNix(t *testing.T) {
	needNix(t)
	dir := t.TempDir()
	n := &Nix{Env: []string{
		"NIX_REMOTE=" + filepath.Join(dir, "store"),
		// Nix's sandbox with only a static busybox, and no substituter:
		// nothing leaves the machine.
		"NIX_CONFIG=sandbox-paths = /bin/busybox\nbuild-users-group =\nsubstituters =\n",
	}}
	run := func(stdin []byte, name string, args ...string) string {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Env = append(os.Environ(), n.Env...)
		cmd.Stdin = bytes.NewReader(stdin)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
		}
		return string(out)
	}
	file := filepath.Join(dir, "default.nix")
	if err := os.WriteFile(file, []byte(closureExpr), 0o644); err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	n.Stderr = &log
	ctx := context.Background()
	top, err := n.Build(ctx, file, "")
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	secret, public := filepath.Join(dir, "key.sec"), filepath.Join(dir, "key.pub")
	run(nil, "nix-store", "--generate-binary-cache-key", "roost-test-1", secret, public)
	run(nil, "nix", "--extra-experimental-features", "nix-command", "store", "sign", "--key-file", secret, "-r", top.String())

	infos, err := n.Closure(ctx, top)
	if err != nil {
		t.Fatal(err)
	}

	// The same paths as nix-store -qR, with the hashes, sizes, derivers and
	// references nix-store --dump-db prints (a format every Nix shares).
	closure := strings.Fields(run(nil, "nix-store", "-qR", top.String()))
	if len(infos) != len(closure) || len(closure) != 3 {
		t.Fatalf("roost read %d paths, nix-store -qR says %v", len(infos), closure)
	}
	db := parseDumpDB(t, run(nil, "nix-store", append([]string{"--dump-db"}, closure...)...))
	pub, err := os.ReadFile(public)
	if err != nil {
		t.Fatal(err)
	}
	keys := publicKeys(t, string(pub))
	for _, info := range infos {
		want, ok := db[info.Path]
		if !ok {
			t.Fatalf("%s is not in nix-store --dump-db", info.Path)
		}
		got := info
		got.Signatures, got.RegistrationTime = nil, 0
		if !reflect.DeepEqual(got, want) {
			t.Errorf("roost read\n%+v\nnix-store --dump-db says\n%+v", got, want)
		}
		if !nixsig.Verify(&info, keys) {
			t.Errorf("%s: no valid signature by roost-test-1 among %v", info.Path, info.Signatures)
		}
		if info.RegistrationTime == 0 {
			t.Errorf("%s: no registration time", info.Path)
		}
		// DumpNAR reads the chroot store as Nix does.
		var nar bytes.Buffer
		if err := n.DumpNAR(info.Path, &nar); err != nil {
			t.Fatal(err)
		}
		if nar.String() != run(nil, "nix", "--extra-experimental-features", "nix-command", "store", "dump-path", info.Path.String()) {
			t.Errorf("%s: DumpNAR differs from nix store dump-path", info.Path)
		}
	}
	// Nix 2.8 has no --json-format: roost asked, and remembered.
	if v, err := nixVersion(t); err == nil && v < 233 && !n.rejected["--json-format"] {
		t.Errorf("Nix %d.%d took --json-format", v/100, v%100)
	}
}

// nixVersion is the installed Nix's version as major*100+minor.
func nixVersion(t *testing.T) (int, error) {
	out, err := exec.Command("nix", "--version").Output()
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(out))
	parts := strings.Split(f[len(f)-1], ".")
	if len(parts) < 2 {
		return 0, fmt.Errorf("nix --version: %q", out)
	}
	major, err1 := strconv.Atoi(parts[0])
	minor, err2 := strconv.Atoi(parts[1])
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("nix --version: %q", out)
	}
	return major*100 + minor, nil
}

// parseDumpDB reads nix-store --dump-db: for each path, its path, base16
// NAR hash, NAR size, deriver (or an empty line), the number of
// references and the references.
func parseDumpDB(t *testing.T, out string) map[storepath.Path]registry.Info {
	t.Helper()
	lines := strings.Split(out, "\n")
	db := map[storepath.Path]registry.Info{}
	for i := 0; i+4 < len(lines); {
		var info registry.Info
		var err error
		if info.Path, err = storepath.Parse(lines[i]); err != nil {
			t.Fatal(err)
		}
		if info.NarHash, err = nixhash.ParseSHA256(lines[i+1]); err != nil {
			t.Fatal(err)
		}
		if info.NarSize, err = strconv.ParseUint(lines[i+2], 10, 64); err != nil {
			t.Fatal(err)
		}
		if lines[i+3] != "" {
			if info.Deriver, err = storepath.Parse(lines[i+3]); err != nil {
				t.Fatal(err)
			}
		}
		nrefs, err := strconv.Atoi(lines[i+4])
		if err != nil {
			t.Fatal(err)
		}
		i += 5
		for j := 0; j < nrefs; j++ {
			r, err := storepath.Parse(lines[i+j])
			if err != nil {
				t.Fatal(err)
			}
			info.References = append(info.References, r)
		}
		i += nrefs
		db[info.Path] = info
	}
	return db
}

func FuzzParsePathInfo(f *testing.F) {
	for _, fx := range fixtures {
		b, err := os.ReadFile(filepath.Join("testdata", fx.file))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, out []byte) {
		infos, err := ParsePathInfo(out)
		if err != nil {
			return
		}
		for i := range infos {
			if infos[i].Path == "" || (i > 0 && infos[i].Path <= infos[i-1].Path) {
				t.Fatalf("paths not sorted and unique: %v", infos)
			}
		}
	})
}
