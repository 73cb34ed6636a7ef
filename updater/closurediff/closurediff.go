// Package closurediff compares two closures package by package, as
// `nix store diff-closures` does: which packages were added, removed, or
// changed version (or were rebuilt at the same version).
package closurediff

import (
	"sort"
	"strings"

	"github.com/roostrouter/roost/updater/storepath"
)

// Change is one package that differs.
type Change struct {
	Name string   `json:"name"`
	Old  []string `json:"old,omitempty"` // versions before ("" for none)
	New  []string `json:"new,omitempty"` // versions after
}

// String prints the change as diff-closures does: "name: 1.0 → 2.0", or
// "name: added (1.0)", "name: removed (1.0)".
func (c Change) String() string {
	show := func(vs []string) string {
		if len(vs) == 0 {
			return "∅"
		}
		out := make([]string, len(vs))
		for i, v := range vs {
			out[i] = v
			if v == "" {
				out[i] = "ε"
			}
		}
		return strings.Join(out, ", ")
	}
	switch {
	case len(c.Old) == 0 && len(c.New) == 1 && c.New[0] == "":
		return c.Name + ": added"
	case len(c.Old) == 0:
		return c.Name + ": added (" + show(c.New) + ")"
	case len(c.New) == 0:
		return c.Name + ": removed (" + show(c.Old) + ")"
	}
	return c.Name + ": " + show(c.Old) + " → " + show(c.New)
}

// SplitName splits a store path's name into package name and version the
// way Nix does: the version starts after the first dash that is followed by
// something other than a letter.
func SplitName(name string) (pkg, version string) {
	for i := 0; i+1 < len(name); i++ {
		if name[i] == '-' && !isLetter(name[i+1]) {
			return name[:i], name[i+1:]
		}
	}
	return name, ""
}

func isLetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

// Diff compares the closures old and new.
func Diff(old, new []storepath.Path) []Change {
	type side struct{ versions, hashes map[string]bool }
	collect := func(paths []storepath.Path) map[string]*side {
		m := map[string]*side{}
		for _, p := range paths {
			if strings.HasSuffix(p.Name(), ".drv") {
				continue
			}
			name, version := SplitName(p.Name())
			s := m[name]
			if s == nil {
				s = &side{versions: map[string]bool{}, hashes: map[string]bool{}}
				m[name] = s
			}
			s.versions[version] = true
			s.hashes[p.Base()] = true
		}
		return m
	}
	before, after := collect(old), collect(new)
	names := map[string]bool{}
	for n := range before {
		names[n] = true
	}
	for n := range after {
		names[n] = true
	}
	var changes []Change
	for name := range names {
		b, a := before[name], after[name]
		c := Change{Name: name}
		if b != nil {
			c.Old = keys(b.versions)
		}
		if a != nil {
			c.New = keys(a.versions)
		}
		if b != nil && a != nil && sameSet(b.hashes, a.hashes) {
			continue
		}
		changes = append(changes, c)
	}
	sort.Slice(changes, func(i, j int) bool { return changes[i].Name < changes[j].Name })
	return changes
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func sameSet(a, b map[string]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}
