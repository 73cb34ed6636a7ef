package isp

import (
	"fmt"
	"path/filepath"
)

// NewUdhcpd is busybox 1.35's udhcpd (busybox-static) in the foreground.
// It sends no T1 or T2 (clients take half and 7/8 of the lease; V4's Renew
// and Rebind are not used), and writes its leases only every auto_time
// (here each second).
func NewUdhcpd(dir, ns string) *Server4 {
	leases := filepath.Join(dir, "udhcpd.leases")
	conf := filepath.Join(dir, "udhcpd.conf")
	return &Server4{
		// -a: a 100 ms ARP probe of an address before offering it, not 2 s.
		Daemon:    &Daemon{Name: "udhcpd", Dir: dir, NS: ns, Args: []string{"/bin/busybox", "udhcpd", "-f", "-a", "100", conf}},
		LeaseFile: leases,
		config: func(v V4) string {
			return fmt.Sprintf(`interface isp0
start %[1]s.100
end %[1]s.150
max_leases 51
auto_time 1
lease_file %[2]s
pidfile %[3]s
opt subnet 255.255.255.0
opt router %[1]s.1
opt dns 192.0.2.53
opt domain isp.example
opt lease %[4]d
`, v.net(), leases, filepath.Join(dir, "udhcpd.pid"), v.Times.Valid)
		},
	}
}
