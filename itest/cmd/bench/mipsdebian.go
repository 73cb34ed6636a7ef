package main

import (
	"bufio"
	"bytes"
	"debug/elf"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

// debianCache is where the Debian mipsel packages of the competitors are
// kept between runs (make vmdeps adds the mipsel architecture to apt).
const debianCache = "/var/cache/roost-vm/mipsel-bench"

// debianTools are the programs the MIPS table compares roostd with, from
// Debian 12's mipsel packages: dnsmasq (DHCP and DNS, what OpenWrt runs)
// and dropbear (SSH) idle beside roostd; zstd --patch-from decoding a
// delta; flashcp (mtd-utils) writing an MTD partition.
var debianTools = []struct{ pkg, file string }{
	{"dnsmasq-base", "usr/sbin/dnsmasq"},
	{"dropbear-bin", "usr/sbin/dropbear"},
	{"dropbear-bin", "usr/bin/dropbearkey"},
	{"zstd", "usr/bin/zstd"},
	{"mtd-utils", "usr/sbin/flashcp"},
}

// debianSet is the competitors unpacked: their programs and every shared
// library they load (by soname), with the versions.
type debianSet struct {
	Root     string            // the packages unpacked
	Bins     map[string]string // program name → file
	Libs     map[string]string // soname → file
	Versions map[string]string // package → version
}

// loadDebian downloads (once) the competitors' packages and the library
// packages they depend on, and unpacks them into debianCache.
func loadDebian() (*debianSet, error) {
	debs := filepath.Join(debianCache, "debs")
	have, err := fetchDebian(debs)
	if err != nil {
		return nil, err
	}
	set := &debianSet{Root: filepath.Join(debianCache, "root"), Bins: map[string]string{}, Libs: map[string]string{}, Versions: map[string]string{}}
	files, _ := filepath.Glob(filepath.Join(debs, "*_mipsel.deb"))
	for _, f := range files {
		name, rest, _ := strings.Cut(filepath.Base(f), "_")
		if !have[name] {
			continue
		}
		version, _, _ := strings.Cut(rest, "_")
		set.Versions[name] = strings.ReplaceAll(version, "%3a", ":")
		if out, err := exec.Command("dpkg-deb", "-x", f, set.Root).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("dpkg-deb -x %s: %v: %s", f, err, out)
		}
	}
	for _, t := range debianTools {
		set.Bins[filepath.Base(t.file)] = filepath.Join(set.Root, t.file)
	}
	err = filepath.WalkDir(set.Root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.Contains(d.Name(), ".so") {
			return err
		}
		if real, err := filepath.EvalSymlinks(p); err == nil {
			set.Libs[d.Name()] = real
		}
		return nil
	})
	return set, err
}

// fetchDebian downloads into debs the tools' packages and, as far as they
// are libraries, what they depend on (a package's dpkg or debconf is no
// part of a program), and returns the packages' names.
func fetchDebian(debs string) (map[string]bool, error) {
	if err := os.MkdirAll(debs, 0o755); err != nil {
		return nil, err
	}
	var want []string
	for _, t := range debianTools {
		if !slices.Contains(want, t.pkg) {
			want = append(want, t.pkg)
		}
	}
	have := map[string]bool{}
	for len(want) > 0 {
		var fetch []string
		for _, p := range want {
			if !have[p] {
				have[p] = true
				fetch = append(fetch, p)
			}
		}
		if len(fetch) == 0 {
			break
		}
		if err := aptDownload(debs, fetch); err != nil {
			return nil, err
		}
		deps, err := aptDepends(fetch)
		if err != nil {
			return nil, err
		}
		want = nil
		for _, d := range deps {
			if strings.HasPrefix(d, "lib") || strings.HasPrefix(d, "zlib") {
				want = append(want, d)
			}
		}
	}
	return have, nil
}

// aptDownload fetches the mipsel packages not yet in dir.
func aptDownload(dir string, pkgs []string) error {
	var args []string
	for _, p := range pkgs {
		if m, _ := filepath.Glob(filepath.Join(dir, p+"_*_mipsel.deb")); len(m) == 0 {
			args = append(args, p+":mipsel")
		}
	}
	if len(args) == 0 {
		return nil
	}
	cmd := exec.Command("apt-get", append([]string{"download", "-qq", "-o", "APT::Sandbox::User=root"}, args...)...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("apt-get download %s: %v: %s (make vmdeps adds the mipsel architecture to apt)", strings.Join(args, " "), err, out)
	}
	return nil
}

// aptDepends lists the packages pkgs depend on (the first of each set of
// alternatives).
func aptDepends(pkgs []string) ([]string, error) {
	args := []string{"depends", "--no-recommends", "--no-suggests", "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances"}
	for _, p := range pkgs {
		args = append(args, p+":mipsel")
	}
	out, err := exec.Command("apt-cache", args...).Output()
	if err != nil {
		return nil, fmt.Errorf("apt-cache depends: %w", err)
	}
	return parseDepends(out), nil
}

// parseDepends reads apt-cache depends's Depends lines: the first of each
// set of alternatives ("|Depends:" lines, then the last without "|"); the
// indented lines under a virtual package name its providers, not read.
func parseDepends(out []byte) []string {
	var deps []string
	alt := false
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		l := sc.Text()
		rest, ok := strings.CutPrefix(strings.TrimLeft(l, " |"), "Depends: ")
		if !ok || strings.HasPrefix(rest, "<") {
			alt = false
			continue
		}
		if !alt {
			deps = append(deps, strings.TrimSuffix(rest, ":mipsel"))
		}
		alt = strings.HasPrefix(strings.TrimLeft(l, " "), "|")
	}
	return deps
}

// closure is file and the shared libraries it loads, by soname, with
// theirs; glibc's are left out when noLibc (every Linux system has one).
func (s *debianSet) closure(file string, noLibc bool) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	var visit func(f string) error
	visit = func(f string) error {
		out = append(out, f)
		e, err := elf.Open(f)
		if err != nil {
			return err
		}
		needed, err := e.ImportedLibraries()
		e.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		for _, n := range needed {
			if seen[n] || noLibc && glibc(n) {
				continue
			}
			seen[n] = true
			lib, ok := s.Libs[n]
			if !ok {
				return fmt.Errorf("%s needs %s, which no unpacked package has", f, n)
			}
			if err := visit(lib); err != nil {
				return err
			}
		}
		return nil
	}
	return out, visit(file)
}

// glibc: the sonames of the C library's own files.
func glibc(soname string) bool {
	for _, p := range []string{"libc.so", "ld.so", "libm.so", "libpthread.so", "libdl.so", "librt.so", "libresolv.so"} {
		if strings.HasPrefix(soname, p) {
			return true
		}
	}
	return false
}
