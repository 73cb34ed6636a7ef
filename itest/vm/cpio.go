package vm

import (
	"bytes"
	"fmt"
)

// cpioWriter builds a cpio archive in the "newc" format the kernel
// unpacks as an initramfs.
type cpioWriter struct {
	buf   bytes.Buffer
	inode int
}

func (w *cpioWriter) entry(name string, mode uint32, data []byte) { w.entryDev(name, mode, 0, 0, data) }

// entryDev writes an entry; rdev is a device node's major and minor.
func (w *cpioWriter) entryDev(name string, mode, major, minor uint32, data []byte) {
	w.inode++
	fmt.Fprintf(&w.buf, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		w.inode, mode, 0, 0, 1, 0, len(data), 0, 0, major, minor, len(name)+1, 0)
	w.buf.WriteString(name)
	w.buf.WriteByte(0)
	w.pad()
	w.buf.Write(data)
	w.pad()
}

// pad aligns to 4 bytes, as newc requires after headers and data.
func (w *cpioWriter) pad() {
	for w.buf.Len()%4 != 0 {
		w.buf.WriteByte(0)
	}
}

func (w *cpioWriter) dir(name string) { w.entry(name, 0o040755, nil) }

func (w *cpioWriter) file(name string, data []byte, perm uint32) { w.entry(name, 0o100000|perm, data) }

// charDev is a character device node, which the kernel makes as it
// unpacks (a process without privileges cannot make one in a folder).
func (w *cpioWriter) charDev(name string, perm, major, minor uint32) {
	w.entryDev(name, 0o020000|perm, major, minor, nil)
}

// close ends the archive and returns it.
func (w *cpioWriter) close() []byte {
	w.entry("TRAILER!!!", 0, nil)
	return w.buf.Bytes()
}
