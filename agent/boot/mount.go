package boot

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// Mounter mounts and unmounts: mount(2) and umount2(2) as PID 1, a fake in
// unit tests.
type Mounter interface {
	Mount(source, target, fstype string, flags uintptr, data string) error
	Unmount(target string, flags int) error
}

// mount is one mount init makes. Paths are below the root, as the router
// sees them.
type mount struct {
	source, target, fstype string
	flags                  uintptr
	data                   string
	// virtual file systems hold nothing to lose: a busy one is detached
	// at shutdown rather than remounted read-only.
	virtual bool
}

// Where the persistent storage goes: the whole disk at StorageDir, its nix
// and persist folders bound on /nix and /persist.
const (
	StorageDir = "/storage"
	stateDir   = "/persist/roost"
)

// earlyMounts are the kernel's file systems, before anything else.
var earlyMounts = []mount{
	{source: "proc", target: "/proc", fstype: "proc", flags: unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, virtual: true},
	{source: "sysfs", target: "/sys", fstype: "sysfs", flags: unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, virtual: true},
	{source: "devtmpfs", target: "/dev", fstype: "devtmpfs", flags: unix.MS_NOSUID, data: "mode=0755", virtual: true},
	{source: "tmpfs", target: "/run", fstype: "tmpfs", flags: unix.MS_NOSUID | unix.MS_NODEV, data: "mode=0755", virtual: true},
}

// storageMounts mounts disk (a file system of type fstype) and binds its
// store and state folders where the router looks for them.
func storageMounts(disk, fstype string) []mount {
	return []mount{
		{source: disk, target: StorageDir, fstype: fstype, flags: unix.MS_NOATIME},
		{source: StorageDir + "/nix", target: "/nix", flags: unix.MS_BIND},
		{source: StorageDir + "/persist", target: "/persist", flags: unix.MS_BIND},
	}
}

// mountAll mounts ms in order, recording each so that shutdown undoes it.
func (in *Init) mountAll(ms []mount) error {
	for _, m := range ms {
		target := in.path(m.target)
		if err := os.MkdirAll(target, 0o755); err != nil {
			return fmt.Errorf("mount %s: %w", m.target, err)
		}
		source := m.source
		if m.flags&unix.MS_BIND != 0 {
			source = in.path(m.source)
			if err := os.MkdirAll(source, 0o755); err != nil {
				return fmt.Errorf("bind %s on %s: %w", m.source, m.target, err)
			}
		}
		if err := in.opts.Mounter.Mount(source, target, m.fstype, m.flags, m.data); err != nil {
			return fmt.Errorf("mount %s (%s) on %s: %w", m.source, m.fstype, m.target, err)
		}
		in.mounted = append(in.mounted, m)
	}
	return nil
}

// unmountAll undoes mountAll, last first. A busy file system is remounted
// read-only instead (a process that would not die holds it), so that
// what was written is on the disk and its journal clean before reboot(2).
func (in *Init) unmountAll() {
	for i := len(in.mounted) - 1; i >= 0; i-- {
		m := in.mounted[i]
		target := in.path(m.target)
		err := in.opts.Mounter.Unmount(target, 0)
		switch {
		case err == nil:
			in.log.Info("unmounted", "path", m.target)
		case m.virtual:
			in.opts.Mounter.Unmount(target, unix.MNT_DETACH)
		default:
			rerr := in.opts.Mounter.Mount("", target, "", unix.MS_REMOUNT|unix.MS_RDONLY, "")
			in.log.Warn("busy: remounted read-only", "path", m.target, "unmount", err, "remount", errOrOK(rerr))
		}
	}
	in.mounted = nil
}

func errOrOK(err error) string {
	if err != nil {
		return err.Error()
	}
	return "ok"
}

// waitDevice waits for the storage's device node: devtmpfs makes it once
// the driver (a module just loaded) has probed the disk.
func (in *Init) waitDevice(dev string, d time.Duration) error {
	deadline := in.opts.Clock.Now().Add(d)
	for {
		_, err := os.Stat(in.path(dev))
		if err == nil {
			return nil
		}
		if !errors.Is(err, os.ErrNotExist) || !in.opts.Clock.Now().Before(deadline) {
			return fmt.Errorf("no storage device %s after %s: is the disk attached, its driver in the initrd's modules, or roost.disk= right? (%w)", dev, d, err)
		}
		<-in.opts.Clock.After(100 * time.Millisecond)
	}
}

// path is where p, as the router sees it, is below the root.
func (in *Init) path(p string) string { return filepath.Join(in.opts.Root, p) }
