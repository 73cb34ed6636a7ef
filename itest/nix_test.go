package itest

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// nixStore is a throwaway Nix store: a chroot store below a temporary
// folder, so tests build real closures with the real nix-build without
// touching the machine's /nix. Builds run in Nix's sandbox with only a
// static busybox inside, and no substituter, so nothing leaves the machine.
type nixStore struct {
	t   *testing.T
	dir string
}

func newNixStore(t *testing.T) *nixStore {
	need(t, "nix-build", "nix-store", "/bin/busybox")
	return &nixStore{t: t, dir: t.TempDir()}
}

func (n *nixStore) opts() []string {
	return []string{"--store", n.dir,
		"--option", "sandbox-paths", "/bin/busybox",
		"--option", "build-users-group", "",
		"--option", "substituters", "",
		"--option", "experimental-features", "nix-command"}
}

// build evaluates a Nix file with the given --argstr pairs and returns the
// output path.
func (n *nixStore) build(expr string, argstr ...string) string {
	n.t.Helper()
	r := n.tryBuild(expr, argstr...)
	if r.code != 0 || r.killed {
		n.t.Fatalf("nix-build: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	return strings.TrimSpace(r.stdout)
}

// tryBuild runs nix-build on expr like build, for builds that may fail.
func (n *nixStore) tryBuild(expr string, argstr ...string) result {
	n.t.Helper()
	file := filepath.Join(n.t.TempDir(), "default.nix")
	if err := os.WriteFile(file, []byte(expr), 0o644); err != nil {
		n.t.Fatal(err)
	}
	args := append(n.opts(), "--no-out-link", file)
	for i := 0; i+1 < len(argstr); i += 2 {
		args = append(args, "--argstr", argstr[i], argstr[i+1])
	}
	return run(n.t, nil, nil, "nix-build", args...)
}

// closure returns the paths p references, directly or not, and p.
func (n *nixStore) closure(p ...string) []string {
	n.t.Helper()
	out := mustRun(n.t, nil, "nix-store", append(append(n.opts(), "-qR"), p...)...)
	return strings.Fields(out)
}

func (n *nixStore) export(paths []string) []byte {
	n.t.Helper()
	return []byte(mustRun(n.t, nil, "nix-store", append(append(n.opts(), "--export"), paths...)...))
}

// physical is where a store path of this store is on disk.
func (n *nixStore) physical(p string) string { return filepath.Join(n.dir, p) }

// nixMk is the let-bindings the test expressions build with: bb, the
// static busybox (the only thing in Nix's sandbox), and mk, a derivation
// from a shell script with dependencies.
const nixMk = `  bb = "/bin/busybox";
  mk = name: deps: script: derivation {
    inherit name deps;
    system = builtins.currentSystem;
    builder = bb;
    args = [ "sh" "-c" script ];
  };
`

// systemExpr builds a small system closure with every kind of file a NAR can
// hold: files, an executable, relative and absolute symlinks, an empty file,
// empty and nested folders, a self-reference, a path with 60 references
// (leaf files made by builtins.toFile), and a package whose version is an
// argument, so a second build changes exactly that package and its
// referrers.
const systemExpr = `
{ version ? "1.0", extra ? "" }:
let
` + nixMk + `  leaves = builtins.genList (i: builtins.toFile "leaf-${toString i}" "leaf ${toString i}\n") 60;
  lib = mk "libfoo-1.2" [] ''
    B=${bb}
    $B mkdir -p $out/lib/nested/deeper $out/empty-dir $out/bin
    echo library > $out/lib/libfoo.so
    : > $out/empty-file
    printf '#!/bin/sh\necho hi\n' > $out/bin/foo
    $B chmod +x $out/bin/foo
    $B ln -s ../lib/libfoo.so $out/bin/rel-link
    $B ln -s $out/lib/libfoo.so $out/abs-self-link
    echo $out > $out/lib/nested/deeper/self-ref
  '';
  many = mk "many-refs" leaves ''
    ${bb} mkdir $out
    for l in $deps; do echo $l; done > $out/list
  '';
  app = mk "app-${version}" [ lib ] ''
    ${bb} mkdir -p $out/bin
    printf '#!/bin/sh\nexec ${lib}/bin/foo ${version}\n' > $out/bin/app
    ${bb} chmod 555 $out/bin/app
  '';
in mk "system" [ lib many app ] ''
  ${bb} mkdir -p $out/etc/roost $out/bin
  echo '{"hostname": "test"}' > $out/etc/roost/config.json
  echo '${lib} ${many} ${app} ${extra}' > $out/etc/packages
  ${bb} ln -s ${app}/bin/app $out/bin/app
''
`

func sortedCopy(s []string) []string {
	out := append([]string(nil), s...)
	sort.Strings(out)
	return out
}
