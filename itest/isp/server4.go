package isp

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// V4 is what the ISP's DHCPv4 server serves, whichever implementation
// runs it: a /24 on isp0 (its .1 the router, .100 to .150 the pool) with
// 192.0.2.53 for DNS and isp.example for the domain.
type V4 struct {
	// Times: Valid is the lease time; Renew and Rebind, if not 0, are sent
	// as T1 and T2 (options 58 and 59) where the server can, and
	// otherwise left to the client (half and 7/8 of the lease).
	Times Times
	// Net is the first three bytes of the /24 served; empty: 192.0.2.
	// isp0's first address must be its .1 (a server picks the subnet of a
	// broadcast by it, and names itself by it).
	Net string
	// Authoritative: the server says NAK to a request for an address it
	// has no record of, or that is not on its network (dnsmasq only: the
	// others are left as their defaults).
	Authoritative bool
}

func (v V4) net() string {
	if v.Net == "" {
		return "192.0.2"
	}
	return v.Net
}

// Server4 is a DHCPv4 server other than kea (dnsmasq, ISC dhcpd, busybox
// udhcpd) at the ISP, a Daemon with its config (Name.conf) and lease
// database in Dir. Stop and Start again is a server restart; ForgetLeases
// between them, one that lost its leases.
type Server4 struct {
	*Daemon
	LeaseFile string
	config    func(v V4) string
	// emptyLeases: the server wants its lease file to exist (dhcpd).
	emptyLeases bool
}

// StartServer4 configures s (made by NewDnsmasq4, NewDhcpd4 or
// NewUdhcpd) for v and starts it.
func StartServer4(s *Server4, v V4) (*Server4, error) {
	if err := s.Configure(v); err != nil {
		return nil, err
	}
	return s, s.Start()
}

// Configure writes the config for v, for the next Start.
func (s *Server4) Configure(v V4) error {
	return s.Write(s.Name+".conf", s.config(v))
}

// Start runs the server with the config in Dir.
func (s *Server4) Start() error {
	if s.emptyLeases {
		f, err := os.OpenFile(s.LeaseFile, os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			return fmt.Errorf("create %s's lease file: %w", s.Name, err)
		}
		f.Close()
	}
	return s.Daemon.Start()
}

// ForgetLeases empties the stopped server's lease database.
func (s *Server4) ForgetLeases() error {
	if err := os.Remove(s.LeaseFile); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// LogSinceStart is what the server printed since it last started (Daemon
// marks each start with a "=== start" line).
func (s *Server4) LogSinceStart() string {
	l := s.Log()
	if i := strings.LastIndex(l, "=== start "); i >= 0 {
		return l[i:]
	}
	return l
}
