//go:build !(amd64 || arm64 || arm)

package kexec

import "golang.org/x/sys/unix"

// kexec_file_load exists on neither MIPS nor most 32-bit architectures.
func kexecFileLoad(kernelFd, initrdFd int, cmdline string, flags int) error {
	return unix.ENOSYS
}
