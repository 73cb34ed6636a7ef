package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/roostrouter/roost/agent/handover"
	"github.com/roostrouter/roost/updater/storetest"
)

// roostdRun runs a roostd command in-process on a router whose file system
// is root, as a user would from a shell on it.
func roostdRun(t *testing.T, root, state string, stdin []byte, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	e := &env{ctx: context.Background(), stdin: bytes.NewReader(stdin), stdout: &out, stderr: &errb,
		getenv: func(string) string { return "" }, log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		defaultRoot: root, defaultState: state}
	code = exitStatus(run(e, args), &errb)
	return out.String(), errb.String(), code
}

// oneJSON decodes out, which must be one JSON document and nothing else.
func oneJSON(out string, v any) error {
	dec := json.NewDecoder(strings.NewReader(out))
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("more than one JSON document")
	}
	return nil
}

// TestJSON runs every roostd command that runs without the agent, root or
// a network with --json, on a router in a temporary folder, and checks
// that what it prints is one JSON document that says what happened.
func TestJSON(t *testing.T) {
	root, state := t.TempDir(), t.TempDir()
	one := storetest.Closure("one", 4, 1, 64)
	two := storetest.Closure("two", 4, 1, 64)
	sys1, sys2 := one[len(one)-1].Path.String(), two[len(two)-1].Path.String()
	var export1, export2 bytes.Buffer
	if err := storetest.WriteExport(&export1, one); err != nil {
		t.Fatal(err)
	}
	if err := storetest.WriteExport(&export2, two); err != nil {
		t.Fatal(err)
	}
	missing := storetest.NewPath("not-here").String()

	type list = []any
	type object = map[string]any
	for _, tc := range []struct {
		args  []string
		stdin []byte
		code  int
		check func(t *testing.T, v any) // v is the decoded document
	}{
		{[]string{"store", "import"}, export1.Bytes(), 0, nil},
		{[]string{"store", "import"}, export2.Bytes(), 0, func(t *testing.T, v any) {
			if added := v.(object)["added"].(list); len(added) != len(two) {
				t.Errorf("added %v, want the %d paths of the stream", added, len(two))
			}
		}},
		{[]string{"store", "query-valid", sys1, missing}, nil, 1, func(t *testing.T, v any) {
			o := v.(object)
			if valid, invalid := o["valid"].(list), o["invalid"].(list); len(valid) != 1 || valid[0] != sys1 || len(invalid) != 1 || invalid[0] != missing {
				t.Errorf("valid %v, invalid %v; want %s valid and %s not", valid, invalid, sys1, missing)
			}
		}},
		{[]string{"store", "dump-db"}, nil, 0, func(t *testing.T, v any) {
			if n := len(v.(list)); n != len(one)+len(two) {
				t.Errorf("dump-db lists %d paths, want %d", n, len(one)+len(two))
			}
		}},
		{[]string{"store", "dump-db", sys1}, nil, 0, func(t *testing.T, v any) {
			info := v.(list)[0].(object)
			if info["path"] != sys1 || !strings.HasPrefix(info["narHash"].(string), "sha256:") || len(info["references"].(list)) == 0 {
				t.Errorf("dump-db %s: %v", sys1, info)
			}
		}},
		{[]string{"store", "verify"}, nil, 0, func(t *testing.T, v any) {
			if o := v.(object); o["checked"] != float64(len(one)+len(two)) || len(o["problems"].(list)) != 0 {
				t.Errorf("verify: %v", o)
			}
		}},
		{[]string{"generations", "set", sys1}, nil, 0, nil},
		{[]string{"generations", "set", sys2}, nil, 0, nil},
		{[]string{"generations"}, nil, 0, func(t *testing.T, v any) {
			if n := len(v.(list)); n != 2 {
				t.Errorf("%d generations, want 2", n)
			}
		}},
		{[]string{"rollback"}, nil, 0, nil},
		{[]string{"status"}, nil, 0, nil},
		{[]string{"version"}, nil, 0, func(t *testing.T, v any) {
			if o := v.(object); o["version"] != version || o["handover"] != float64(handover.Protocol) {
				t.Errorf("version: %v", o)
			}
		}},
		{[]string{"gc", "--dry-run"}, nil, 0, nil},
		{[]string{"gc", "--keep", "1"}, nil, 0, nil},
	} {
		args := append(tc.args, "--json")
		name := strings.Join(args, " ")
		stdout, stderr, code := roostdRun(t, root, state, tc.stdin, args...)
		if code != tc.code {
			t.Errorf("roostd %s: exit %d, want %d\n%s", name, code, tc.code, stderr)
			continue
		}
		var v any
		if err := oneJSON(stdout, &v); err != nil {
			t.Errorf("roostd %s printed no single JSON document (%v):\n%s", name, err, stdout)
			continue
		}
		if tc.check != nil {
			tc.check(t, v)
		}
	}

	// A NAR stream has no JSON form: asked for one, dump says so and
	// prints no NAR.
	stdout, stderr, code := roostdRun(t, root, state, nil, "store", "dump", sys1, "--json")
	if code == 0 || stdout != "" || !strings.Contains(stderr, "--json does not apply") {
		t.Errorf("store dump --json: exit %d, %d bytes, %q; want a refusal", code, len(stdout), stderr)
	}
}

// TestJSONCoversUsage: every command in roostd's usage is run with --json
// by a test, or says in its usage line why it has no JSON. A command added
// without either fails here.
func TestJSONCoversUsage(t *testing.T) {
	tested := map[string]string{
		"status": "TestJSON", "gc": "TestJSON", "generations": "TestJSON", "generations set": "TestJSON",
		"rollback": "TestJSON", "store import": "TestJSON", "store dump-db": "TestJSON",
		"store query-valid": "TestJSON", "store verify": "TestJSON", "version": "TestJSON",
		"config check": "TestConfigCheck", "boards": "TestBoards",
		"reboot": "TestPowerAsksInit",
		// These need the running agent or root: itest.
		"activate": "itest TestRoostJSON (roost rebuild)", "confirm": "itest TestRoostJSON",
		"firewall show": "itest TestRoostdJSONInAgent", "hook ppp": "itest TestRoostdJSONInAgent",
		"image plan": "itest TestImageUpgradeInMIPSVM", "image write": "itest TestImageUpgradeInMIPSVM (roost rebuild)",
	}
	// Commands whose output is a stream or a log: their usage line must
	// say there is no --json.
	stream := []string{"run", "receive", "store dump", "init", "maintain"}
	for _, line := range strings.Split(usage, "\n") {
		if !strings.HasPrefix(line, "  ") || line[2] < 'a' || line[2] > 'z' {
			continue
		}
		text := strings.TrimSpace(line)
		cmd := ""
		for _, c := range append(append([]string{}, stream...), keys(tested)...) {
			if (text == c || strings.HasPrefix(text, c+" ")) && len(c) > len(cmd) {
				cmd = c
			}
		}
		switch {
		case cmd == "":
			t.Errorf("usage line %q: a command no test runs with --json", text)
		case contains(stream, cmd):
			if !strings.Contains(text, "no --json") {
				t.Errorf("usage line %q: say that %s has no --json, and why", text, cmd)
			}
		case !strings.Contains(text, "--json"):
			t.Errorf("usage line %q: %s takes --json (%s): say so", text, cmd, tested[cmd])
		}
	}
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
