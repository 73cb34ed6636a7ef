package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/roostrouter/roost/updater/nar"
	"github.com/roostrouter/roost/updater/nixexport"
	"github.com/roostrouter/roost/updater/storepath"
	"github.com/roostrouter/roost/updater/storetest"
)

// programs are the Go programs built into the benchmark's system, each for
// three architectures: a dozen packages of real binary contents.
var programs = []string{"./agent/cmd/roostd", "./hosttool/cmd/roost", "./itest/cmd/lab", "./itest/cmd/bench"}

// writeSystem writes an export stream of a system at version v: n small
// packages (the same in every version) and the programs built with
// main.version set to v, and returns the system's path.
func writeSystem(file, work, v string, n int, config string) (string, error) {
	f, err := os.Create(file)
	if err != nil {
		return "", err
	}
	defer f.Close()
	w := bufio.NewWriterSize(f, 1<<20)
	base := storetest.Closure("ota", n, 1, 4096)
	base = base[:len(base)-1] // the closure's own system: ours replaces it
	var refs []storepath.Path
	for _, p := range base[len(base)-10:] {
		refs = append(refs, p.Path)
	}
	if err := storetest.WriteExportPaths(w, base); err != nil {
		return "", err
	}
	for _, prog := range programs {
		for _, arch := range []string{"amd64", "arm64", "arm"} {
			name := filepath.Base(prog)
			out := filepath.Join(work, fmt.Sprintf("%s-%s-%s", name, arch, v))
			cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-X main.version=1."+v, "-o", out, prog)
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOARCH="+arch)
			if b, err := cmd.CombinedOutput(); err != nil {
				return "", fmt.Errorf("build %s for %s: %v: %s", prog, arch, err, b)
			}
			bin, err := os.ReadFile(out)
			if err != nil {
				return "", err
			}
			p := storetest.NewPath(fmt.Sprintf("%s-%s-1.%s", name, arch, v))
			refs = append(refs, p)
			nixexport.WriteNext(w, true)
			nw := nar.NewWriter(w)
			nw.StartDirectory()
			nw.Entry("bin")
			nw.StartDirectory()
			nw.Entry(name)
			nw.Regular(true, int64(len(bin)), bytes.NewReader(bin))
			nw.EndEntry()
			nw.EndDirectory()
			nw.EndEntry()
			nw.EndDirectory()
			if err := nw.Flush(); err != nil {
				return "", err
			}
			nixexport.WriteTrailer(w, nixexport.Trailer{Path: p})
		}
	}
	sys := storetest.Package{Path: storetest.NewPath("ota-system-1." + v), Refs: refs, Config: config}
	if err := storetest.WriteExport(w, []storetest.Package{sys}); err != nil {
		return "", err
	}
	return sys.Path.String(), w.Flush()
}
