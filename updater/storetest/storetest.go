// Package storetest makes synthetic store paths, NARs and nix-store --export
// streams, for tests and benchmarks that need closures of a chosen shape
// faster than Nix can build them.
package storetest

import (
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"

	"github.com/roostrouter/roost/updater/nar"
	"github.com/roostrouter/roost/updater/nixexport"
	"github.com/roostrouter/roost/updater/nixhash"
	"github.com/roostrouter/roost/updater/storepath"
)

// NewPath returns a store path with a hash derived from name.
func NewPath(name string) storepath.Path {
	sum := sha256.Sum256([]byte(name))
	p, err := storepath.ParseBase(nixhash.EncodeNix32(sum[:20]) + "-" + name)
	if err != nil {
		panic(err)
	}
	return p
}

// Package describes a store path: a folder with an executable, Files data
// files of FileSize pseudo-random bytes, a symlink, and a file naming its
// references (so they are really referenced, as Nix would find them).
type Package struct {
	Path     storepath.Path
	Refs     []storepath.Path
	Files    int
	FileSize int
	Seed     uint64
	// Config, if set, makes the package a roost system: it is written as
	// etc/roost/config.json.
	Config string
}

// WriteNAR writes the package's NAR.
func WriteNAR(w io.Writer, pkg Package) error {
	nw := nar.NewWriter(w)
	nw.StartDirectory()
	nw.Entry("bin")
	nw.StartDirectory()
	script := "#!/bin/sh\necho " + pkg.Path.Name() + "\n"
	nw.Entry(pkg.Path.Name())
	nw.Regular(true, int64(len(script)), strings.NewReader(script))
	nw.EndEntry()
	nw.EndDirectory()
	nw.EndEntry()
	if pkg.Config != "" {
		nw.Entry("etc")
		nw.StartDirectory()
		nw.Entry("roost")
		nw.StartDirectory()
		nw.Entry("config.json")
		nw.Regular(false, int64(len(pkg.Config)), strings.NewReader(pkg.Config))
		nw.EndEntry()
		nw.EndDirectory()
		nw.EndEntry()
		nw.EndDirectory()
		nw.EndEntry()
	}
	var refs strings.Builder
	for _, r := range pkg.Refs {
		refs.WriteString(r.String() + "\n")
	}
	nw.Entry("refs")
	nw.Regular(false, int64(refs.Len()), strings.NewReader(refs.String()))
	nw.EndEntry()
	nw.Entry("self")
	nw.Symlink(pkg.Path.String() + "/bin")
	nw.EndEntry()
	if pkg.Files > 0 {
		nw.Entry("share")
		nw.StartDirectory()
		rng := rand.NewChaCha8([32]byte{byte(pkg.Seed), byte(pkg.Seed >> 8), byte(pkg.Seed >> 16), byte(pkg.Seed >> 24)})
		for i := 0; i < pkg.Files; i++ {
			nw.Entry(fmt.Sprintf("data-%06d", i))
			if err := nw.Regular(false, int64(pkg.FileSize), io.LimitReader(rng, int64(pkg.FileSize))); err != nil {
				return err
			}
			nw.EndEntry()
		}
		nw.EndDirectory()
		nw.EndEntry()
	}
	nw.EndDirectory()
	return nw.Flush()
}

// WriteExport writes pkgs, which must come references first, as a
// nix-store --export stream.
func WriteExport(w io.Writer, pkgs []Package) error {
	if err := WriteExportPaths(w, pkgs); err != nil {
		return err
	}
	return nixexport.WriteNext(w, false)
}

// WriteExportPaths writes pkgs as WriteExport does, without the end marker,
// so that more paths can follow.
func WriteExportPaths(w io.Writer, pkgs []Package) error {
	for _, pkg := range pkgs {
		if err := nixexport.WriteNext(w, true); err != nil {
			return err
		}
		if err := WriteNAR(w, pkg); err != nil {
			return err
		}
		if err := nixexport.WriteTrailer(w, nixexport.Trailer{Path: pkg.Path, References: pkg.Refs}); err != nil {
			return err
		}
	}
	return nil
}

// Closure returns n packages, references first, shaped like a system
// closure: each package references a few earlier ones, and the last is the
// "system" that references the ten before it. Names are unique per prefix.
func Closure(prefix string, n, files, fileSize int) []Package {
	pkgs := make([]Package, n)
	for i := range pkgs {
		pkgs[i] = Package{Path: NewPath(fmt.Sprintf("%s-pkg%d-1.0", prefix, i)), Files: files, FileSize: fileSize, Seed: uint64(i)}
		for _, back := range []int{1, 7, 31} {
			if i-back >= 0 {
				pkgs[i].Refs = append(pkgs[i].Refs, pkgs[i-back].Path)
			}
		}
	}
	if n > 0 {
		sys := &pkgs[n-1]
		sys.Path = NewPath(prefix + "-system")
		sys.Refs = nil
		for j := max(0, n-11); j < n-1; j++ {
			sys.Refs = append(sys.Refs, pkgs[j].Path)
		}
	}
	return pkgs
}
