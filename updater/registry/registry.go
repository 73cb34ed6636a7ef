// Package registry keeps the store's validity registry: which store paths are
// valid, with their NAR hash and size, references, deriver and signatures.
//
// It is an append-only log, one checksummed JSON record a line. A change is
// committed by one write of all its records followed by fsync: that fsync is
// the commit point. A crash can only tear the last line, which loading
// ignores, and records are ordered so that every prefix of a commit is itself
// consistent: a path's references are added before it, and a path's
// referrers are deleted before it. Compact rewrites the log through a
// temporary file and a rename, its own commit point.
package registry

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"

	"github.com/roostrouter/roost/updater/atomicfile"
	"github.com/roostrouter/roost/updater/nixhash"
	"github.com/roostrouter/roost/updater/storepath"
)

// Info is what the registry knows of a valid path.
type Info struct {
	Path             storepath.Path   `json:"path"`
	NarHash          nixhash.SHA256   `json:"narHash"`
	NarSize          uint64           `json:"narSize"`
	References       []storepath.Path `json:"references,omitempty"`
	Deriver          storepath.Path   `json:"deriver,omitempty"`
	Signatures       []string         `json:"signatures,omitempty"`
	RegistrationTime int64            `json:"registrationTime"`
}

type record struct {
	Add    *Info          `json:"add,omitempty"`
	Delete storepath.Path `json:"delete,omitempty"`
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Registry is the set of valid paths, loaded from a log file.
type Registry struct {
	file    string
	paths   map[storepath.Path]*Info
	records int
	f       *os.File // for appending; nil if read-only
	size    int64    // bytes of committed records in the file
	broken  error
}

// Load reads the registry for reading only. A torn last record, possibly
// being written by a writer right now, is ignored. A missing file is an
// empty registry.
func Load(file string) (*Registry, error) {
	data, err := os.ReadFile(file)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read registry: %w", err)
	}
	r := &Registry{file: file}
	if r.paths, r.size, r.records, err = Parse(data); err != nil {
		return nil, fmt.Errorf("registry %s: %w", file, err)
	}
	return r, nil
}

// OpenWritable loads the registry for a writer, which must hold the store
// lock, and cuts a torn last record off the file.
func OpenWritable(file string) (*Registry, error) {
	f, err := os.OpenFile(file, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open registry: %w", err)
	}
	data, err := io.ReadAll(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("read registry %s: %w", file, err)
	}
	r := &Registry{file: file, f: f}
	if r.paths, r.size, r.records, err = Parse(data); err != nil {
		f.Close()
		return nil, fmt.Errorf("registry %s: %w", file, err)
	}
	if r.size != int64(len(data)) {
		if err := f.Truncate(r.size); err != nil {
			f.Close()
			return nil, fmt.Errorf("cut torn record off registry %s: %w", file, err)
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return nil, fmt.Errorf("sync registry %s: %w", file, err)
		}
	}
	if _, err := f.Seek(r.size, io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	return r, nil
}

// Parse reads a log. It returns the valid paths, how many bytes of data are
// whole records (a torn last line is not), and the number of records.
func Parse(data []byte) (map[storepath.Path]*Info, int64, int, error) {
	paths := make(map[storepath.Path]*Info)
	var off int64
	records := 0
	for len(data) > 0 {
		nl := bytes.IndexByte(data, '\n')
		if nl < 0 {
			break // torn: the last line never got its newline
		}
		line := data[:nl]
		rec, err := parseLine(line)
		last := nl == len(data)-1
		if err != nil {
			if last {
				break // torn: a crash left a partly written last line
			}
			return nil, 0, 0, fmt.Errorf("record %d (byte %d): %w", records+1, off, err)
		}
		if err := apply(paths, rec); err != nil {
			return nil, 0, 0, fmt.Errorf("record %d (byte %d): %w", records+1, off, err)
		}
		records++
		off += int64(nl + 1)
		data = data[nl+1:]
	}
	return paths, off, records, nil
}

func parseLine(line []byte) (record, error) {
	var rec record
	if len(line) < 10 || line[8] != ' ' {
		return rec, errors.New("malformed record")
	}
	want, err := strconv.ParseUint(string(line[:8]), 16, 32)
	if err != nil {
		return rec, errors.New("malformed checksum")
	}
	body := line[9:]
	if crc32.Checksum(body, castagnoli) != uint32(want) {
		return rec, errors.New("checksum mismatch (the file is damaged)")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rec); err != nil {
		return rec, fmt.Errorf("decode: %w", err)
	}
	if (rec.Add == nil) == (rec.Delete == "") {
		return rec, errors.New("record is neither an add nor a delete")
	}
	return rec, nil
}

// apply enforces the invariants on every record, so a log that breaks them
// is reported rather than trusted.
func apply(paths map[storepath.Path]*Info, rec record) error {
	if rec.Add != nil {
		info := rec.Add
		if _, ok := paths[info.Path]; ok {
			return fmt.Errorf("adds %s, which is already valid", info.Path)
		}
		for _, ref := range info.References {
			if _, ok := paths[ref]; !ok && ref != info.Path {
				return fmt.Errorf("adds %s before its reference %s", info.Path, ref)
			}
		}
		paths[info.Path] = info
		return nil
	}
	if _, ok := paths[rec.Delete]; !ok {
		return fmt.Errorf("deletes %s, which is not valid", rec.Delete)
	}
	delete(paths, rec.Delete)
	return nil
}

func encodeLine(buf *bytes.Buffer, rec record) error {
	body, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	fmt.Fprintf(buf, "%08x %s\n", crc32.Checksum(body, castagnoli), body)
	return nil
}

// Get returns the info of a valid path.
func (r *Registry) Get(p storepath.Path) (*Info, bool) {
	info, ok := r.paths[p]
	return info, ok
}

// Len is the number of valid paths.
func (r *Registry) Len() int { return len(r.paths) }

// Paths returns the valid paths in byte order.
func (r *Registry) Paths() []storepath.Path {
	out := make([]storepath.Path, 0, len(r.paths))
	for p := range r.paths {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// Commit adds and deletes paths atomically: after a crash either all of the
// change is in the registry, or a prefix that keeps every invariant. Adds
// must come references first; Commit orders deletes itself.
func (r *Registry) Commit(adds []*Info, deletes []storepath.Path) error {
	if r.f == nil {
		return errors.New("registry is open for reading only")
	}
	if r.broken != nil {
		return fmt.Errorf("registry unusable after an earlier failed write: %w", r.broken)
	}
	next := make(map[storepath.Path]*Info, len(r.paths))
	for k, v := range r.paths {
		next[k] = v
	}
	var buf bytes.Buffer
	for _, rec := range r.deleteRecords(deletes) {
		if err := apply(next, rec); err != nil {
			return err
		}
		encodeLine(&buf, rec)
	}
	for _, info := range adds {
		rec := record{Add: info}
		if err := apply(next, rec); err != nil {
			return err
		}
		if err := encodeLine(&buf, rec); err != nil {
			return err
		}
	}
	if err := checkNoDanglingReferrers(next, deletes); err != nil {
		return err
	}
	if _, err := r.f.Write(buf.Bytes()); err != nil {
		return r.undo(fmt.Errorf("append to registry %s: %w", r.file, err))
	}
	if err := r.f.Sync(); err != nil {
		return r.undo(fmt.Errorf("sync registry %s: %w", r.file, err))
	}
	// Committed.
	r.paths = next
	r.size += int64(buf.Len())
	r.records += len(adds) + len(deletes)
	return nil
}

// undo cuts a failed append off, so later commits do not follow garbage.
func (r *Registry) undo(err error) error {
	if terr := r.f.Truncate(r.size); terr != nil {
		r.broken = err
	} else if _, serr := r.f.Seek(r.size, io.SeekStart); serr != nil {
		r.broken = err
	}
	return err
}

// deleteRecords orders deletions referrers first, so any prefix of them
// leaves no valid path whose reference is gone.
func (r *Registry) deleteRecords(deletes []storepath.Path) []record {
	order := TopoSort(r.paths, deletes)
	recs := make([]record, 0, len(order))
	for i := len(order) - 1; i >= 0; i-- {
		recs = append(recs, record{Delete: order[i]})
	}
	return recs
}

func checkNoDanglingReferrers(paths map[storepath.Path]*Info, deleted []storepath.Path) error {
	if len(deleted) == 0 {
		return nil
	}
	gone := make(map[storepath.Path]bool, len(deleted))
	for _, p := range deleted {
		gone[p] = true
	}
	for _, info := range paths {
		for _, ref := range info.References {
			if gone[ref] {
				return fmt.Errorf("cannot delete %s: %s still references it", ref, info.Path)
			}
		}
	}
	return nil
}

// TopoSort returns the given paths ordered references first. References
// outside the given set, or not in info, are ignored.
func TopoSort(info map[storepath.Path]*Info, paths []storepath.Path) []storepath.Path {
	want := make(map[storepath.Path]bool, len(paths))
	for _, p := range paths {
		want[p] = true
	}
	sorted := append([]storepath.Path(nil), paths...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	done := make(map[storepath.Path]bool, len(paths))
	out := make([]storepath.Path, 0, len(paths))
	// Iterative depth-first search: closures can be deep enough that
	// recursion is a risk on small stacks.
	type frame struct {
		p    storepath.Path
		next int
	}
	for _, start := range sorted {
		if done[start] {
			continue
		}
		done[start] = true
		stack := []frame{{p: start}}
		for len(stack) > 0 {
			top := &stack[len(stack)-1]
			var refs []storepath.Path
			if i, ok := info[top.p]; ok {
				refs = i.References
			}
			if top.next < len(refs) {
				ref := refs[top.next]
				top.next++
				if want[ref] && !done[ref] {
					done[ref] = true
					stack = append(stack, frame{p: ref})
				}
				continue
			}
			out = append(out, top.p)
			stack = stack[:len(stack)-1]
		}
	}
	return out
}

// NeedsCompaction reports whether the log holds many more records than
// valid paths.
func (r *Registry) NeedsCompaction() bool {
	return r.records > 2*len(r.paths)+1024
}

// Compact rewrites the log with one add record per valid path. The rename
// of the new log over the old one is the commit point.
func (r *Registry) Compact() error {
	if r.f == nil {
		return errors.New("registry is open for reading only")
	}
	var buf bytes.Buffer
	all := r.Paths()
	for _, p := range TopoSort(r.paths, all) {
		if err := encodeLine(&buf, record{Add: r.paths[p]}); err != nil {
			return err
		}
	}
	if err := atomicfile.WriteFile(r.file, buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("compact registry: %w", err)
	}
	f, err := os.OpenFile(r.file, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("reopen registry: %w", err)
	}
	if _, err := f.Seek(0, io.SeekEnd); err != nil {
		f.Close()
		return err
	}
	r.f.Close()
	r.f = f
	r.size = int64(buf.Len())
	r.records = len(all)
	return nil
}

// Close releases the file.
func (r *Registry) Close() error {
	if r.f == nil {
		return nil
	}
	err := r.f.Close()
	r.f = nil
	return err
}

// Dir returns the folder the log lives in.
func (r *Registry) Dir() string { return filepath.Dir(r.file) }
