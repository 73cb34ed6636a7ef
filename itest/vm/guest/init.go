package guest

import (
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Console makes /dev/console the process's stdin, stdout and stderr: a
// test's initramfs has no device nodes, so the kernel could not open one
// for its init. /dev must be mounted (devtmpfs).
func Console() error {
	f, err := os.OpenFile("/dev/console", os.O_RDWR, 0)
	if err != nil {
		return err
	}
	for fd := range 3 {
		if err := unix.Dup2(int(f.Fd()), fd); err != nil {
			return err
		}
	}
	return nil
}

// Uptime is seconds since the kernel booted (/proc must be mounted).
func Uptime() float64 {
	b, _ := os.ReadFile("/proc/uptime")
	f, _ := strconv.ParseFloat(strings.Fields(string(b) + " 0")[0], 64)
	return f
}
