package itest

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/roostrouter/roost/boards"
)

// The Nix library (nix/, flake.nix) built with the real nix-build from
// prebuilt inputs, as a router owner without nixpkgs would: roostd is the
// binary under test, the kernel Debian's when it is installed.

// nixLibExpr builds a system with roost.lib.mkSystem from --argstr values
// ("" for an input not given).
const nixLibExpr = `
{ repo, board, config, roostd, kernel ? "", initrd ? "", module ? "", moduleParams ? "", activate ? "", kernelParams ? "" }:
let
  roost = import (/. + repo + "/nix") { };
  opt = s: if s == "" then null else s;
in roost.mkSystem {
  inherit board roostd;
  config = builtins.fromJSON config;
  kernel = opt kernel;
  initrd = opt initrd;
  activate = opt activate;
  modules = if module == "" then [ ] else [ { file = module; params = moduleParams; } ];
  kernelParams = if kernelParams == "" then [ ] else [ kernelParams ];
}
`

// repoRoot is the checkout: the library imports boards/boards.json from it.
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// nixLibInputs are the prebuilt inputs of a qemu-x86_64 system: Debian's
// kernel and one of its modules if installed (else stand-ins: the build
// only links them), an initrd (a newc cpio made by busybox) and an
// activate script.
type nixLibInputs struct{ kernel, module, initrd, activate string }

func newNixLibInputs(t *testing.T) nixLibInputs {
	dir := t.TempDir()
	in := nixLibInputs{kernel: filepath.Join(dir, "bzImage"), module: filepath.Join(dir, "virtio_net.ko"),
		initrd: filepath.Join(dir, "initrd"), activate: filepath.Join(dir, "activate")}
	if images, _ := filepath.Glob("/boot/vmlinuz-*"); len(images) > 0 {
		in.kernel = images[len(images)-1]
		version := strings.TrimPrefix(filepath.Base(in.kernel), "vmlinuz-")
		if mods, _ := filepath.Glob("/lib/modules/" + version + "/kernel/drivers/net/virtio_net.ko*"); len(mods) > 0 {
			in.module = mods[0]
		}
	} else {
		t.Log("no kernel in /boot: the system links a stand-in")
	}
	for _, f := range []string{in.kernel, in.module} {
		if _, err := os.Stat(f); err != nil {
			os.WriteFile(f, []byte("stand-in\n"), 0o644)
		}
	}
	root := filepath.Join(dir, "initramfs")
	os.MkdirAll(root, 0o755)
	os.WriteFile(filepath.Join(root, "init"), []byte("#!/bin/sh\nexec /bin/roostd init\n"), 0o755)
	cmd := exec.Command("/bin/busybox", "sh", "-c", "echo init | /bin/busybox cpio -o -H newc > "+in.initrd)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("busybox cpio: %v: %s", err, out)
	}
	os.WriteFile(in.activate, []byte("#!/bin/sh\necho activated > \"$ROOST_STATE/activated\"\n"), 0o755)
	return in
}

// TestNixLibSystems builds a qemu-x86_64 and a lab system with the library
// and checks what is in them; configs with errors fail the build with
// roostd's message, naming the JSON path.
func TestNixLibSystems(t *testing.T) {
	n := newNixStore(t)
	repo := repoRoot(t)
	in := newNixLibInputs(t)
	config := `{"hostname": "rotuer", "services": {"wan": {"kind": "link", "interface": "wan"}, "lan0": {"kind": "link", "interface": "lan0"}}}`

	sys := n.build(nixLibExpr, "repo", repo, "board", "qemu-x86_64", "config", config, "roostd", roostd,
		"kernel", in.kernel, "initrd", in.initrd, "module", in.module, "moduleParams", "napi_tx=1",
		"activate", in.activate, "kernelParams", "quiet")
	dir := n.physical(sys)

	// bin/roostd is a link into roostd's own store path, and it runs.
	target, err := os.Readlink(filepath.Join(dir, "bin/roostd"))
	if err != nil || !strings.HasPrefix(target, "/nix/store/") {
		t.Fatalf("bin/roostd: %q, %v; want a link into the store", target, err)
	}
	if out := mustRun(t, nil, n.physical(target), "boards"); !strings.Contains(out, "qemu-x86_64") {
		t.Errorf("bin/roostd boards:\n%s", out)
	}
	// The config is the one Nix wrote, with the board filled in.
	var got, want any
	json.Unmarshal(must(os.ReadFile(filepath.Join(dir, "etc/roost/config.json"))), &got)
	json.Unmarshal([]byte(config), &want)
	want.(map[string]any)["board"] = "qemu-x86_64"
	if !reflect.DeepEqual(got, want) {
		t.Errorf("config.json: %v, want %v", got, want)
	}
	b, _ := boards.Lookup("qemu-x86_64")
	for file, want := range map[string]string{
		"board":   "qemu-x86_64\n",
		"cmdline": strings.Join(append(b.Cmdline, "quiet"), " ") + "\n",
	} {
		if got := string(must(os.ReadFile(filepath.Join(dir, file)))); got != want {
			t.Errorf("%s: %q, want %q", file, got, want)
		}
	}
	// modules: the list roostd init loads, a store path and its
	// parameters a line.
	line := strings.TrimSuffix(string(must(os.ReadFile(filepath.Join(dir, "modules")))), "\n")
	module, params, _ := strings.Cut(line, " ")
	if params != "napi_tx=1" || !strings.HasSuffix(module, "-"+filepath.Base(in.module)) ||
		!bytes.Equal(must(os.ReadFile(n.physical(module))), must(os.ReadFile(in.module))) {
		t.Errorf("modules: %q; want the store path of %s and its parameters", line, in.module)
	}
	for link, want := range map[string]string{"kernel": in.kernel, "initrd": in.initrd} {
		target, err := os.Readlink(filepath.Join(dir, link))
		if err != nil {
			t.Errorf("%s: %v", link, err)
			continue
		}
		if !bytes.Equal(must(os.ReadFile(n.physical(target))), must(os.ReadFile(want))) {
			t.Errorf("%s → %s differs from %s", link, target, want)
		}
	}
	if fi, err := os.Lstat(filepath.Join(dir, "activate")); err != nil || fi.Mode()&0o111 == 0 || !fi.Mode().IsRegular() {
		t.Errorf("activate: %v, %v; want an executable file", fi, err)
	}
	closure := n.closure(sys)
	for _, part := range []string{"-roostd", "-kernel", "-initrd", "-" + filepath.Base(in.module)} {
		if !slices.ContainsFunc(closure, func(p string) bool { return strings.HasSuffix(p, part) }) {
			t.Errorf("the closure lacks %s: %v", part, closure)
		}
	}

	// A lab system: the config and roostd, no kernel.
	lab := n.physical(n.build(nixLibExpr, "repo", repo, "board", "lab", "config", `{"hostname": "lab"}`, "roostd", roostd))
	for _, f := range []string{"etc/roost/config.json", "bin/roostd", "board"} {
		if _, err := os.Lstat(filepath.Join(lab, f)); err != nil {
			t.Errorf("lab system: %v", err)
		}
	}
	for _, f := range []string{"kernel", "initrd", "cmdline", "modules", "activate"} {
		if _, err := os.Lstat(filepath.Join(lab, f)); err == nil {
			t.Errorf("lab system has %s", f)
		}
	}

	// Configs with errors fail the build with roostd's message.
	for _, tc := range []struct {
		name, board, config string
		want                []string
	}{
		{"interface the board lacks", "qemu-x86_64", `{"services": {"wan": {"kind": "link", "interface": "eth9"}}}`,
			[]string{`services.wan.interface: board qemu-x86_64 has no interface "eth9" (it has lan0, lan1, wan)`}},
		{"unknown kind", "lab", `{"services": {"x": {"kind": "no-such-kind"}}}`,
			[]string{`services.x.kind: unknown kind "no-such-kind"`}},
		{"other board in the config", "qemu-x86_64", `{"board": "lab"}`,
			[]string{`board: the config is for board "lab", but it is checked (and built) for qemu-x86_64`}},
		{"every problem", "lab", `{"colour": "red", "ssh": {"listen": ["nowhere"]}}`,
			[]string{"2 problem(s)", "colour: unknown field", `ssh.listen[0]: "nowhere" is not host:port`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := n.tryBuild(nixLibExpr, "repo", repo, "board", tc.board, "config", tc.config, "roostd", roostd,
				"kernel", in.kernel, "initrd", in.initrd)
			if r.code == 0 {
				t.Fatalf("built %s", r.stdout)
			}
			for _, w := range tc.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("nix-build's output lacks %q:\n%s", w, r.stderr)
				}
			}
		})
	}
	// Inputs the board needs are checked when Nix evaluates.
	r := n.tryBuild(nixLibExpr, "repo", repo, "board", "qemu-x86_64", "config", "{}", "roostd", roostd, "initrd", in.initrd)
	if r.code == 0 || !strings.Contains(r.stderr, "board qemu-x86_64 needs kernel: pass kernel = <path to the kernel image>") {
		t.Errorf("a system without a kernel: exit %d\n%s", r.code, r.stderr)
	}
	r = n.tryBuild(nixLibExpr, "repo", repo, "board", "qemu-mipsel", "config", "{}", "roostd", roostd, "kernel", in.kernel, "initrd", in.initrd)
	if r.code == 0 || !strings.Contains(r.stderr, "cannot run on") || !strings.Contains(r.stderr, "pass checker =") {
		t.Errorf("a mipsel system checked by its own roostd: exit %d\n%s", r.code, r.stderr)
	}
}

// TestNixLibActivation: the router activates a system the library built;
// the activation check accepts a complete qemu-x86_64 system and refuses
// one without a kernel, naming it.
func TestNixLibActivation(t *testing.T) {
	l := newLaptop(t)
	r := startRouter(t, l)
	l.sshConfig(r.port)
	repo := repoRoot(t)
	in := newNixLibInputs(t)
	config := fmt.Sprintf(`{"hostname": "rotuer", "ssh": {"listen": ["127.0.0.1:%s"], "authorizedKeys": [%q]}}`, r.port, l.key)

	lab := l.nix.build(nixLibExpr, "repo", repo, "board", "lab", "config", config, "roostd", roostd, "activate", in.activate)
	if res := l.rebuild("--system", lab, "--accept-new-host-key"); !res.Confirmed || res.System != lab {
		t.Fatalf("rebuild to the library's lab system: %+v", res)
	}
	if mark, _ := os.ReadFile(filepath.Join(r.state, "activated")); string(mark) != "activated\n" {
		t.Errorf("the system's activate script did not run: %q", mark)
	}

	qemu := l.nix.build(nixLibExpr, "repo", repo, "board", "qemu-x86_64", "config", config, "roostd", roostd,
		"kernel", in.kernel, "initrd", in.initrd)
	out := l.mustRoost("rebuild", "--host", "rotuer", "dry-activate", "--system", qemu)
	t.Logf("roost rebuild dry-activate of the qemu-x86_64 system:\n%s", out)

	// A system made by hand, with a board file but no kernel.
	bare := l.nix.build(`{ config }:
let
`+nixMk+`in mk "bare-qemu-system" [ ] ''
  ${bb} mkdir -p $out/etc/roost $out/bin
  ${bb} cp ${builtins.toFile "config.json" config} $out/etc/roost/config.json
  echo qemu-x86_64 > $out/board
''
`, "config", strings.Replace(config, `"hostname"`, `"board": "qemu-x86_64", "hostname"`, 1))
	res := l.roost("rebuild", "--host", "rotuer", "dry-activate", "--system", bare)
	if res.code == 0 || !strings.Contains(res.stderr, "system "+bare+": no bin/roostd, which board qemu-x86_64 needs: build it with roost.lib.mkSystem") {
		t.Fatalf("dry-activate of a system without its parts: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	if st := r.status(); st.Current != lab {
		t.Fatalf("the router runs %s, want %s", st.Current, lab)
	}
}

// nixEval evaluates expr (strict, as JSON) with the library at repo.
func nixEval(t *testing.T, n *nixStore, expr string) any {
	t.Helper()
	out := mustRun(t, nil, "nix-instantiate", append(n.opts(), "--read-write-mode", "--eval", "--strict", "--json", "-E", expr)...)
	var v any
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("nix-instantiate %s: %v: %s", expr, err, out)
	}
	return v
}

// nixpkgsStub is nixpkgs as far as the library uses it, for evaluation
// only: nixpkgs cannot be fetched here, so buildGoModule returns its
// arguments, which the test reads.
const nixpkgsStub = `{
  buildPlatform.system = "x86_64-linux";
  pkgsStatic.busybox = "/nix/store/00000000000000000000000000000000-busybox";
  buildGoModule = args: { type = "derivation"; outPath = "/nix/store/00000000000000000000000000000000-${args.pname}"; inherit args; };
}`

// TestNixLibGoEnv evaluates the nixpkgs path as far as it goes without
// nixpkgs: each board's GOARCH, GOMIPS and GOARM come from the same data
// roostd embeds, and reach buildGoModule's build; the checker is built for
// the build machine.
func TestNixLibGoEnv(t *testing.T) {
	n := newNixStore(t)
	lib := fmt.Sprintf("(import %s/nix { })", repoRoot(t))
	all, err := boards.All()
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range all {
		want := map[string]any{"GOOS": "linux", "GOARCH": b.GOARCH, "CGO_ENABLED": "0"}
		if b.GOMIPS != "" {
			want["GOMIPS"] = b.GOMIPS
		}
		if b.GOARM != "" {
			want["GOARM"] = b.GOARM
		}
		if got := nixEval(t, n, fmt.Sprintf("%s.goEnv %q", lib, b.Name)); !reflect.DeepEqual(got, want) {
			t.Errorf("goEnv %s: %v, want %v", b.Name, got, want)
		}
		var exports []string
		for _, k := range []string{"CGO_ENABLED", "GOARCH", "GOARM", "GOMIPS", "GOOS"} {
			if v, ok := want[k]; ok {
				exports = append(exports, k+"="+v.(string))
			}
		}
		got := nixEval(t, n, fmt.Sprintf(`let s = %s.mkSystem { pkgs = %s; board = %q; config = { }; kernel = "/k"; initrd = "/i"; };
			in { roostd = s.drvAttrs.roostd.args; checker = s.drvAttrs.checker.args.preBuild; }`, lib, nixpkgsStub, b.Name)).(map[string]any)
		args := got["roostd"].(map[string]any)
		if pre := args["preBuild"]; pre != "export "+strings.Join(exports, " ") {
			t.Errorf("board %s: buildGoModule's preBuild %q, want the exports of %v", b.Name, pre, want)
		}
		if !reflect.DeepEqual(args["subPackages"], []any{"agent/cmd/roostd"}) || args["pname"] != "roostd-"+b.Name {
			t.Errorf("board %s: buildGoModule %v", b.Name, args)
		}
		if pre := got["checker"].(string); !strings.Contains(pre, "GOARCH=$(go env GOHOSTARCH)") {
			t.Errorf("board %s: the checker is built with %q, not for the build machine", b.Name, pre)
		}
	}
	r := run(t, nil, nil, "nix-instantiate", append(n.opts(), "--eval", "-E", "("+lib+`.mkSystem { board = "nope"; config = { }; }).drvPath`)...)
	if r.code == 0 || !strings.Contains(r.stderr, `roost: unknown board "nope" (known: belkin-rt3200, gl-ar750, gl-mt300n-v2, lab, openwrt-one, qemu-mipsel, qemu-x86_64, turris-omnia)`) {
		t.Errorf("an unknown board: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// TestNixLibVendorHash: the vendorHash the library gives buildGoModule is
// the hash of `go mod vendor` on the source it gives it (computed here
// with go and nix-hash: nixpkgs is not needed).
func TestNixLibVendorHash(t *testing.T) {
	n := newNixStore(t)
	lib := fmt.Sprintf("(import %s/nix { })", repoRoot(t))
	src := nixEval(t, n, `"${`+lib+`.source}"`).(string)
	want := nixEval(t, n, lib+".vendorHash").(string)
	dir := filepath.Join(t.TempDir(), "src")
	mustRun(t, nil, "cp", "-r", n.physical(src), dir)
	mustRun(t, nil, "chmod", "-R", "u+w", dir)
	for _, f := range []string{"go.mod", "go.sum", "boards/boards.json", "agent/cmd/roostd/main.go"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("the source lacks %s", f)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "docs")); err == nil {
		t.Errorf("the source holds docs/: a doc edit would rebuild roostd")
	}
	vendor := exec.Command("go", "mod", "vendor")
	vendor.Dir = dir
	vendor.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOTOOLCHAIN=local")
	if out, err := vendor.CombinedOutput(); err != nil {
		t.Fatalf("go mod vendor: %v\n%s", err, out)
	}
	sum, err := hex.DecodeString(strings.TrimSpace(mustRun(t, nil, "nix-hash", "--type", "sha256", filepath.Join(dir, "vendor"))))
	if err != nil {
		t.Fatal(err)
	}
	if got := "sha256-" + base64.StdEncoding.EncodeToString(sum); got != want {
		t.Fatalf("nix/roostd.nix has vendorHash = %q, but go mod vendor of its source hashes to %q: go.mod or go.sum changed; put the new value there", want, got)
	}
}

// TestNixLibFlake: flake.nix works offline with Nix 2.8's experimental
// flakes (no inputs, so no registry): nix flake show and eval, and a
// system built through it. It runs on a copy of the flake's files, so
// that no flake.lock is written into the checkout.
func TestNixLibFlake(t *testing.T) {
	n := newNixStore(t)
	repo := repoRoot(t)
	flake := t.TempDir()
	mustRun(t, nil, "cp", "-r", filepath.Join(repo, "flake.nix"), filepath.Join(repo, "nix"), flake)
	os.MkdirAll(filepath.Join(flake, "boards"), 0o755)
	mustRun(t, nil, "cp", filepath.Join(repo, "boards/boards.json"), filepath.Join(flake, "boards"))
	nix := func(args ...string) string {
		t.Helper()
		args = append(append(n.opts(), "--extra-experimental-features", "nix-command flakes"), append(args, "--no-write-lock-file")...)
		return mustRun(t, nil, "nix", args...)
	}
	if out := nix("flake", "show", "path:"+flake); !strings.Contains(out, "lib") {
		t.Errorf("nix flake show:\n%s", out)
	}
	if out := nix("eval", "--raw", "path:"+flake+"#lib.boards.qemu-mipsel.gomips"); out != "softfloat" {
		t.Errorf("nix eval …#lib.boards.qemu-mipsel.gomips: %q", out)
	}
	out := nix("build", "--no-link", "--json", "--impure", "--expr",
		fmt.Sprintf(`(builtins.getFlake "path:%s").lib.mkSystem { board = "lab"; config = { hostname = "flake"; }; roostd = %s; }`, flake, roostd))
	var built []struct{ Outputs map[string]string }
	if err := json.Unmarshal([]byte(out), &built); err != nil || len(built) != 1 {
		t.Fatalf("nix build: %v: %s", err, out)
	}
	cfg := must(os.ReadFile(n.physical(filepath.Join(built[0].Outputs["out"], "etc/roost/config.json"))))
	if string(cfg) != `{"board":"lab","hostname":"flake"}` {
		t.Errorf("config.json of the flake's system: %s", cfg)
	}
}
