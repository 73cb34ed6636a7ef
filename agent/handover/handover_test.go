package handover

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// envOf turns an environment list into a getenv.
func envOf(environ []string) func(string) string {
	return func(k string) string {
		for _, kv := range environ {
			if v, ok := strings.CutPrefix(kv, k+"="); ok {
				return v
			}
		}
		return ""
	}
}

// TestHoldAndTake passes a TCP and a Unix listener through the environment
// within one process, as an exec would: the sockets outlive their
// listeners' Close (the Unix socket's file too), and the listeners taken
// back accept connections made while nobody accepted.
func TestHoldAndTake(t *testing.T) {
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "control.sock")
	ul, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	since := time.Now().Add(-time.Second)
	held, err := Hold([]Socket{{"tcp", "[::]:22", tl}, {"unix", path, ul}}, since)
	if err != nil {
		t.Fatal(err)
	}
	addr := tl.Addr().String()
	tl.Close()
	ul.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the Unix socket's file went with its listener: %v", err)
	}
	// Callers during the hand-over wait in the backlog.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial during the hand-over: %v", err)
	}
	defer c.Close()

	environ := held.Env([]string{"PATH=/bin", EnvFDs + "=99=tcp:stale", EnvSince + "=1"})
	if n := strings.Count(strings.Join(environ, "\x00"), EnvFDs+"="); n != 1 {
		t.Fatalf("environment %q: %d %s, want the new one only", environ, n, EnvFDs)
	}
	in, err := FromEnv(envOf(environ))
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := in.Since(); !ok || !got.Equal(time.Unix(0, since.UnixNano())) {
		t.Errorf("Since = %v, %v; want %v", got, ok, since)
	}
	if _, ok := in.Take("tcp", "[::]:23"); ok {
		t.Error("took a listener for an address that was not passed")
	}
	l, ok := in.Take("tcp", "[::]:22")
	if !ok {
		t.Fatal("the TCP listener was not taken over")
	}
	defer l.Close()
	if _, ok := in.Take("tcp", "[::]:22"); ok {
		t.Error("a listener was taken twice")
	}
	l.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
	if s, err := l.Accept(); err != nil {
		t.Fatalf("accept the connection made during the hand-over: %v", err)
	} else {
		s.Close()
	}
	if closed := in.CloseRest("unix"); len(closed) != 1 || closed[0] != "unix:"+path {
		t.Errorf("CloseRest closed %v, want the Unix socket", closed)
	}
	held.Close()
}

// TestFromEnvRefuses: entries that are not a listening socket of their
// network are refused and not taken; no variables, no hand-over.
func TestFromEnvRefuses(t *testing.T) {
	if in, err := FromEnv(envOf(nil)); in != nil || err != nil {
		t.Fatalf("without the variables: %v, %v; want nil, nil", in, err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	conn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	lf, _ := conn.(*net.TCPListener).File()
	defer lf.Close()
	for _, tc := range []struct{ entry, want string }{
		{"x=tcp:a", "not fd=tcp:address"},
		{"1=tcp:a", "not fd=tcp:address"},                    // stdout is never passed
		{"5=udp:a", "not fd=tcp:address"},                    // no such network
		{itoa(r.Fd()) + "=tcp:a", "not a socket"},            // a pipe
		{itoa(lf.Fd()) + "=unix:/x", "is not unix"},          // a TCP socket said to be Unix
		{"987=tcp:a", "not a socket"},                        // not open
		{itoa(lf.Fd()) + "=tcp:[::]:22\n\n", "the good one"}, // empty entries are skipped
	} {
		in, err := FromEnv(envOf([]string{EnvFDs + "=" + tc.entry}))
		if tc.want == "the good one" {
			if err != nil {
				t.Errorf("%q: %v", tc.entry, err)
			} else if l, ok := in.Take("tcp", "[::]:22"); !ok {
				t.Errorf("%q: not taken", tc.entry)
			} else {
				l.Close()
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want one saying %q", tc.entry, err, tc.want)
		}
		if in != nil && len(in.files) != 0 {
			t.Errorf("%q: taken anyway", tc.entry)
		}
	}
}

func itoa(fd uintptr) string { return strconv.Itoa(int(fd)) }

// TestResolve follows a system's links below the router's root: absolute
// targets are read below it, relative ones from the link's folder.
func TestResolve(t *testing.T) {
	root := t.TempDir()
	mk := func(p string) string {
		p = filepath.Join(root, p)
		os.MkdirAll(filepath.Dir(p), 0o755)
		return p
	}
	os.WriteFile(mk("nix/store/aaa-roostd/bin/roostd"), []byte("elf"), 0o555)
	os.Symlink("/nix/store/aaa-roostd/bin/roostd", mk("nix/store/sys1/bin/roostd"))
	os.Symlink("../../aaa-roostd/bin/roostd", mk("nix/store/sys2/bin/roostd"))
	os.Symlink("/nix/store/aaa-roostd", mk("nix/store/sys3/pkg"))
	os.Symlink("/nix/store/loop/x", mk("nix/store/loop/x"))
	want := filepath.Join(root, "nix/store/aaa-roostd/bin/roostd")
	for _, tc := range []struct{ file, want, err string }{
		{"/nix/store/sys1/bin/roostd", want, ""},
		{"/nix/store/sys2/bin/roostd", want, ""},
		{"/nix/store/sys3/pkg/bin/roostd", want, ""},
		{"/nix/store/sys3/pkg/../aaa-roostd/bin/roostd", want, ""},
		{"/nix/store/missing/bin/roostd", "", "no such file"},
		{"/nix/store/loop/x", "", "too many levels of links"},
	} {
		got, err := Resolve(root, tc.file)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("Resolve(%s) = %s, %v; want an error saying %q", tc.file, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("Resolve(%s) = %s, %v; want %s", tc.file, got, err, tc.want)
		}
	}
}

func TestSame(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(content), 0o555)
		return p
	}
	big := strings.Repeat("x", 200<<10)
	a := write("a", big+"v1")
	link := filepath.Join(dir, "link")
	os.Symlink(a, link)
	for _, tc := range []struct {
		name string
		b    string
		same bool
	}{
		{"the same file", link, true},
		{"the same bytes", write("copy", big+"v1"), true},
		{"same size, other bytes", write("v2", big+"v2"), false},
		{"another size", write("short", "v1"), false},
	} {
		if same, err := Same(a, tc.b); err != nil || same != tc.same {
			t.Errorf("%s: Same = %v, %v; want %v", tc.name, same, err, tc.same)
		}
	}
	if _, err := Same(a, filepath.Join(dir, "missing")); err == nil {
		t.Error("Same with a missing file: no error")
	}
}

// TestProbe: a roostd that prints its version and hand-over protocol is
// fine; one that fails, is no program, prints something else, speaks no
// hand-over or hangs is refused with the reason.
func TestProbe(t *testing.T) {
	dir := t.TempDir()
	script := func(name, body string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755)
		return p
	}
	garbage := filepath.Join(dir, "garbage")
	os.WriteFile(garbage, []byte{0x7f, 'E', 'L', 'F', 1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 0o755)
	for _, tc := range []struct {
		name, bin, want string
	}{
		{"good", script("good", `[ "$1 $2" = "version --json" ] && echo '{"version": "v2", "handover": 1}'`), ""},
		{"exits 1", script("fails", `echo "boom" >&2; exit 1`), "exit status 1: boom"},
		{"another architecture", garbage, "exec format error"},
		{"not roostd", script("other", `echo hello`), `printed "hello\n", not roostd's version`},
		{"too old", script("old", `echo '{"version": "v0"}'`), "cannot take over"},
		{"hangs", script("hangs", `exec sleep 60`), "did not finish"},
		{"missing", filepath.Join(dir, "missing"), "no such file"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		v, err := Probe(ctx, tc.bin)
		cancel()
		if tc.want == "" {
			if err != nil || v.Version != "v2" {
				t.Errorf("%s: %+v, %v; want v2", tc.name, v, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v; want one saying %q", tc.name, err, tc.want)
		}
	}
}
