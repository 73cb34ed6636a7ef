package netconf

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/roostrouter/roost/updater/atomicfile"
)

// The supervisor calls Remove on a fresh instance of a service, perhaps in
// a later roostd that never ran it, and with no outputs to read: what
// Remove must undo is found from the declaration, the kernel, and the small
// records below, written before the change they describe.

// RememberLink records in file the name of the link a service's link
// reference resolved to, so that its Remove finds the link. It writes only
// when the name changed (the state folder is on flash). Its errors wrap
// ErrNotRecorded: a service goes on without the record.
func RememberLink(file, ifname string) error {
	if b, err := os.ReadFile(file); err == nil && strings.TrimSpace(string(b)) == ifname {
		return nil
	}
	err := os.MkdirAll(filepath.Dir(file), 0o700)
	if err == nil {
		err = atomicfile.WriteFile(file, []byte(ifname+"\n"), 0o600)
	}
	if err != nil {
		return fmt.Errorf("link %s: %w: %v", ifname, ErrNotRecorded, err)
	}
	return nil
}

// RememberedLink is the link name RememberLink recorded in file, or "".
func RememberedLink(file string) string {
	b, err := os.ReadFile(file)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// ErrNotRecorded is wrapped by SysctlRestore.Set when the old value could
// not be kept (a state folder that cannot be written): the new value is in
// force all the same, since the router must come up, but dropping the
// service will not put the old one back.
var ErrNotRecorded = errors.New("not recorded in the state folder, so dropping the service will not undo it")

// SysctlRestore keeps, for each kernel parameter roostd changes, the value
// it had before roostd first changed it, so that the service that changed
// it puts it back when the config drops it, even a later roostd. The
// record is written and synced before the parameter is, so a crash in
// between restores a value that is still in force: no harm.
type SysctlRestore struct {
	ProcSys string // /proc/sys
	Dir     string // the records, one file a parameter; "" keeps none
}

func (r SysctlRestore) record(key string) string {
	return filepath.Join(r.Dir, strings.ReplaceAll(key, "/", "."))
}

// Set writes value to key (a path below ProcSys: net/ipv4/ip_forward)
// unless it has it, first recording the value it had, unless a record is
// already there: that one holds the value from before roostd's first
// write. It reports whether it wrote.
func (r SysctlRestore) Set(key, value string) (bool, error) {
	file := filepath.Join(r.ProcSys, key)
	cur, err := os.ReadFile(file)
	if err != nil {
		return false, fmt.Errorf("read sysctl %s: %w", key, err)
	}
	old := strings.TrimSpace(string(cur))
	if old == value {
		return false, nil
	}
	var notRecorded error
	if r.Dir != "" {
		if _, err := os.Stat(r.record(key)); err != nil { // none yet, or none to be had
			err := os.MkdirAll(r.Dir, 0o700)
			if err == nil {
				err = atomicfile.WriteFile(r.record(key), []byte(old+"\n"), 0o600)
			}
			if err != nil {
				notRecorded = fmt.Errorf("sysctl %s: %w: %v", key, ErrNotRecorded, err)
			}
		}
	}
	if err := os.WriteFile(file, []byte(value), 0o644); err != nil {
		return false, fmt.Errorf("set sysctl %s to %s: %w", key, value, err)
	}
	return true, notRecorded
}

// Restore writes back the value recorded for key and forgets it. Without
// a record (roostd found the value as it wanted it, or keeps no records)
// the parameter is left as it is; one whose file is gone (its link went)
// is forgotten.
func (r SysctlRestore) Restore(key string) error {
	if r.Dir == "" {
		return nil
	}
	b, err := os.ReadFile(r.record(key))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read the kept value of sysctl %s: %w", key, err)
	}
	old := strings.TrimSpace(string(b))
	if err := os.WriteFile(filepath.Join(r.ProcSys, key), []byte(old), 0o644); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("restore sysctl %s to %s: %w", key, old, err)
	}
	if err := os.Remove(r.record(key)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("forget the kept value of sysctl %s: %w", key, err)
	}
	return nil
}
