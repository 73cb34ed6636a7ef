package supervisor

import (
	"fmt"
	"sort"
	"strings"
)

// Cycles are the dependency cycles of deps (a service → the services it
// depends on), each found once, as the path around it: a → b → a.
// Dependencies that are not keys of deps are left out.
func Cycles(deps map[string][]string) [][]string {
	var cycles [][]string
	mark := map[string]int{} // 1 on the path, 2 done
	var path []string
	var visit func(n string)
	visit = func(n string) {
		mark[n] = 1
		path = append(path, n)
		ds := append([]string(nil), deps[n]...)
		sort.Strings(ds)
		for _, d := range ds {
			if _, ok := deps[d]; !ok {
				continue
			}
			switch mark[d] {
			case 0:
				visit(d)
			case 1:
				i := len(path) - 1
				for path[i] != d {
					i--
				}
				cycles = append(cycles, append(append([]string(nil), path[i:]...), d))
			}
		}
		path = path[:len(path)-1]
		mark[n] = 2
	}
	for _, n := range sortedNames(deps) {
		if mark[n] == 0 {
			visit(n)
		}
	}
	return cycles
}

// order sorts specs dependencies first, refusing unknown names and cycles.
func order(specs []Spec) ([]string, error) {
	deps := map[string][]string{}
	for _, sp := range specs {
		if _, dup := deps[sp.Name]; dup {
			return nil, fmt.Errorf("service %q is declared twice", sp.Name)
		}
		deps[sp.Name] = sp.Deps
	}
	names := sortedNames(deps)
	for _, n := range names {
		for _, d := range deps[n] {
			if _, ok := deps[d]; !ok {
				return nil, fmt.Errorf("service %q depends on %q, which is not declared", n, d)
			}
		}
	}
	if c := Cycles(deps); len(c) > 0 {
		return nil, fmt.Errorf("dependency cycle: %s", strings.Join(c[0], " → "))
	}
	var out []string
	done := map[string]bool{}
	var visit func(n string)
	visit = func(n string) {
		if done[n] {
			return
		}
		done[n] = true
		ds := append([]string(nil), deps[n]...)
		sort.Strings(ds)
		for _, d := range ds {
			visit(d)
		}
		out = append(out, n)
	}
	for _, n := range names {
		visit(n)
	}
	return out, nil
}

func sortedNames(deps map[string][]string) []string {
	names := make([]string, 0, len(deps))
	for n := range deps {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
