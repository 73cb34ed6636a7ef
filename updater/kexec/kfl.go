//go:build amd64 || arm64 || arm

package kexec

import "golang.org/x/sys/unix"

func kexecFileLoad(kernelFd, initrdFd int, cmdline string, flags int) error {
	return unix.KexecFileLoad(kernelFd, initrdFd, cmdline, flags)
}
