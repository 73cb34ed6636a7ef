package firewall

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestKernelError: what a failed first request says, for a kernel without
// nfnetlink (no NETLINK_NETFILTER socket), one with nfnetlink but without
// nf_tables, and other failures, which are not about modules.
func TestKernelError(t *testing.T) {
	tests := []struct {
		name   string
		err    error
		noNFT  bool
		inText []string
	}{
		{"no nfnetlink", fmt.Errorf("socket: %w", unix.EPROTONOSUPPORT), true, []string{"nf_tables is not in this kernel", "modprobe -a nfnetlink nf_tables", "nft_fib_inet"}},
		{"no nf_tables", fmt.Errorf("receive: %w", unix.EINVAL), true, []string{"nf_tables is not in this kernel", "modprobe -a"}},
		{"no nf_tables, in a batch", unix.EOPNOTSUPP, true, []string{"nf_tables is not in this kernel"}},
		{"not root", unix.EPERM, false, []string{"list nftables tables", "operation not permitted"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := kernelError(tc.err)
			if errors.Is(err, ErrNoNFTables) != tc.noNFT || !errors.Is(err, tc.err) {
				t.Errorf("%v: ErrNoNFTables %v, want %v (and the cause wrapped)", err, errors.Is(err, ErrNoNFTables), tc.noNFT)
			}
			for _, want := range tc.inText {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("%q lacks %q", err, want)
				}
			}
		})
	}
}
