package main

import (
	"fmt"
	"os"
	"path/filepath"
	"text/tabwriter"

	"github.com/roostrouter/roost/updater/storetest"
)

// benchStore prints import throughput and peak memory for a 200 MB closure
// and a 5,000-path closure (roostd store import beside nix-store --import of
// the same export stream into a throwaway Nix store), and gc time for a
// 10,000-path store (beside nix-store --gc doing the same work).
func benchStore(roostd string, scale int) error {
	work, err := os.MkdirTemp("", "storebench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "import\tpaths\tNAR MB\ttool\tseconds\tMB/s\tpeak RSS MB\t")
	for _, c := range []struct {
		name                   string
		paths, files, fileSize int
	}{
		{"200 MB closure", 50 / scale, 4, 1 << 20},
		{"5,000-path closure", 5000 / scale, 2, 1024},
	} {
		pkgs := storetest.Closure("bench", c.paths, c.files, c.fileSize)
		stream := filepath.Join(work, "export")
		size, err := writeExport(stream, pkgs)
		if err != nil {
			return err
		}
		mb := float64(size) / 1e6
		roostRoot := filepath.Join(work, "roost-"+fmt.Sprint(c.paths))
		nixRoot := filepath.Join(work, "nix-"+fmt.Sprint(c.paths))
		for _, tool := range []struct {
			name     string
			thenSync bool
			argv     []string
		}{
			{"roostd store import (durable)", false, []string{roostd, "store", "import", "--root", roostRoot}},
			{"nix-store --import (Nix 2.8, not fsynced)", false, append(append([]string{"nix-store"}, nixOpts(nixRoot)...), "--import")},
			{"nix-store --import, then sync", true, append(append([]string{"nix-store"}, nixOpts(nixRoot+"-synced")...), "--import")},
		} {
			m, err := timed(stream, tool.thenSync, tool.argv[0], tool.argv[1:]...)
			if err != nil {
				return err
			}
			fmt.Fprintf(tw, "%s\t%d\t%.1f\t%s\t%.2f\t%.1f\t%.1f\t\n", c.name, len(pkgs), mb, tool.name,
				m.wall.Seconds(), mb/m.wall.Seconds(), float64(m.maxRSS)/1e6)
		}
		os.RemoveAll(roostRoot)
		os.RemoveAll(nixRoot)
		os.RemoveAll(nixRoot + "-synced")
		os.Remove(stream)
	}
	tw.Flush()
	fmt.Println()
	return benchGC(roostd, work, scale)
}

// benchGC builds a store of 10,000 paths, half of them reachable from the
// current system, and times one collection of the other half.
func benchGC(roostd, work string, scale int) error {
	live := storetest.Closure("live", 5000/scale, 0, 0)
	dead := storetest.Closure("dead", 5000/scale, 0, 0)
	stream := filepath.Join(work, "gc-export")
	if _, err := writeExport(stream, append(append([]storetest.Package(nil), live...), dead...)); err != nil {
		return err
	}
	system := live[len(live)-1].Path.String()
	// The live closure: the system references the last ten packages, which
	// reach all the others through their references.
	roostRoot := filepath.Join(work, "gc-roost")
	nixRoot := filepath.Join(work, "gc-nix")
	for _, argv := range [][]string{
		{roostd, "store", "import", "--root", roostRoot},
		append(append([]string{"nix-store"}, nixOpts(nixRoot)...), "--import"),
	} {
		if _, err := timed(stream, false, argv[0], argv[1:]...); err != nil {
			return err
		}
	}
	if _, err := timed("", false, roostd, "generations", "set", system, "--root", roostRoot); err != nil {
		return err
	}
	// The imports' temp roots stand for transfers a day old: expired.
	os.RemoveAll(filepath.Join(roostRoot, "nix/var/roost/temproots"))
	os.MkdirAll(filepath.Join(roostRoot, "nix/var/roost/temproots"), 0o755)
	gcroots := filepath.Join(nixRoot, "nix/var/nix/gcroots")
	os.MkdirAll(gcroots, 0o755)
	if err := os.Symlink(system, filepath.Join(gcroots, "system")); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "gc\tstore paths\tdeleted\ttool\tseconds\tpeak RSS MB\t")
	for _, tool := range []struct {
		name string
		argv []string
	}{
		{"roostd gc", []string{roostd, "gc", "--root", roostRoot}},
		{"nix-store --gc (Nix 2.8)", append(append([]string{"nix-store"}, nixOpts(nixRoot)...), "--gc")},
	} {
		m, err := timed("", false, tool.argv[0], tool.argv[1:]...)
		if err != nil {
			return err
		}
		fmt.Fprintf(tw, "%d-path store\t%d\t%d\t%s\t%.2f\t%.1f\t\n", len(live)+len(dead), len(live)+len(dead), len(dead), tool.name, m.wall.Seconds(), float64(m.maxRSS)/1e6)
	}
	// Both must have kept the live closure and deleted the rest.
	entries, _ := os.ReadDir(filepath.Join(roostRoot, "nix/store"))
	if len(entries) != len(live) {
		return fmt.Errorf("roostd gc left %d paths, want %d", len(entries), len(live))
	}
	return tw.Flush()
}
