// Package isp plays the lab's ISP in its namespace: kea-dhcp4, kea-dhcp6
// with prefix delegation, and the router advertisements that give the
// router its IPv6 default route.
package isp

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// Kea is a kea server (kea-dhcp4 or kea-dhcp6) in a namespace, with its
// config, lease file and log in Dir (what it prints in Dir/log).
type Kea struct {
	Daemon
	Binary string
	Detach bool // outlive the process that started it (the lab)
}

// StartKea writes config (where %[1]s stands for dir) and starts binary in
// ns; it fails if kea exits at once.
func StartKea(dir, ns, binary, config string, detach bool) (*Kea, error) {
	k := &Kea{Daemon: Daemon{Name: binary, Dir: dir, NS: ns}, Binary: binary, Detach: detach}
	if err := k.Configure(config); err != nil {
		return nil, err
	}
	return k, k.Start()
}

// Configure writes config (where %[1]s stands for Dir) for the next Start:
// a test makes the ISP's server another one, or the same one restarted
// with other settings.
func (k *Kea) Configure(config string) error {
	return k.Write("kea.json", fmt.Sprintf(config, k.Dir))
}

// Start starts kea with the config in Dir.
func (k *Kea) Start() error {
	k.Name = k.Binary
	k.Args = []string{k.Binary, "-c", filepath.Join(k.Dir, "kea.json")}
	k.Env = []string{"KEA_PIDFILE_DIR=" + k.Dir, "KEA_LOCKFILE_DIR=" + k.Dir}
	if err := k.Daemon.Start(); err != nil {
		return err
	}
	if k.Detach {
		return os.WriteFile(filepath.Join(k.Dir, "pid"), []byte(fmt.Sprint(k.cmd.Process.Pid)), 0o644)
	}
	return nil
}

// Log is kea's log so far (not what it prints: kea logs to a file).
func (k *Kea) Log() string {
	b, _ := os.ReadFile(filepath.Join(k.Dir, "kea.log"))
	return string(b)
}

// Count is how often msg (a kea log code like DHCP4_LEASE_ALLOC) appears.
func (k *Kea) Count(msg string) int { return strings.Count(k.Log(), msg) }

// StopDetached stops a detached kea that an earlier process started in dir.
func StopDetached(dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, "pid"))
	if err != nil {
		return err
	}
	var pid int
	if _, err := fmt.Sscan(string(b), &pid); err != nil || pid <= 1 {
		return errors.New("bad pid file " + filepath.Join(dir, "pid"))
	}
	syscall.Kill(pid, syscall.SIGKILL)
	return os.Remove(filepath.Join(dir, "pid"))
}

// Times are a lease's timers, in seconds.
type Times struct{ Renew, Rebind, Preferred, Valid int }

// Short timers make tests see renewals and expiry in seconds; the lab's
// are an hour.
var (
	Short4 = Times{Renew: 4, Rebind: 8, Valid: 12}
	Short6 = Times{Renew: 4, Rebind: 8, Preferred: 30, Valid: 40}
	Lab    = Times{Renew: 1800, Rebind: 2880, Preferred: 3000, Valid: 3600}
)

// Kea4Config serves 192.0.2.0/24 on isp0 with the ISP as router and DNS.
func Kea4Config(t Times) string { return Kea4Server{Times: t}.Config() }

// Kea4Server is a kea-dhcp4 serving a /24 on isp0 with the ISP as router
// and DNS; the fields beyond Times let a test play a server that moved or
// renumbered.
type Kea4Server struct {
	Times Times
	// Address is the address of isp0 the server answers from, and so its
	// server identifier (where the client sends its renewals); empty:
	// isp0's first, 192.0.2.1. It must be on isp0 when the server starts.
	// kea's raw socket takes broadcasts and what is sent to that address
	// only: once the address is gone, renewals sent to it go unanswered.
	Address string
	// Net is the first three bytes of the /24 served (its .1 the router,
	// .100 to .150 the pool); empty: 192.0.2. kea picks the subnet of a
	// DISCOVER by isp0's first address, which must be in it.
	Net string
}

// Config is the server's kea.json, with %[1]s for its folder.
func (s Kea4Server) Config() string {
	iface, prefix := "isp0", "192.0.2"
	if s.Address != "" {
		iface += "/" + s.Address
	}
	if s.Net != "" {
		prefix = s.Net
	}
	return fmt.Sprintf(`{"Dhcp4": {
  "interfaces-config": {"interfaces": [%q], "dhcp-socket-type": "raw", "service-sockets-max-retries": 100, "service-sockets-retry-wait-time": 200},
  "lease-database": {"type": "memfile", "persist": true, "name": "%%[1]s/leases4.csv", "lfc-interval": 0},
  "valid-lifetime": %d, "renew-timer": %d, "rebind-timer": %d,
  "subnet4": [{"subnet": "%[5]s.0/24", "pools": [{"pool": "%[5]s.100 - %[5]s.150"}],
    "option-data": [{"name": "routers", "data": "%[5]s.1"}, {"name": "domain-name-servers", "data": "192.0.2.53"},
      {"name": "domain-name", "data": "isp.example"}]}],
  "loggers": [{"name": "kea-dhcp4", "output_options": [{"output": "%%[1]s/kea.log"}], "severity": "INFO"}]
}}`, iface, s.Times.Valid, s.Times.Renew, s.Times.Rebind, prefix)
}

// Kea6Config gives addresses on isp0's 2001:db8:0:1::/64 and delegates /56s
// out of the /48 at pd.
func Kea6Config(t Times, pd string) string { return Kea6Server{Times: t, PD: pd}.Config() }

// Kea6ConfigOn is Kea6Config on another interface, like the ISP's end of
// a PPPoE session.
func Kea6ConfigOn(iface string, t Times, pd string) string {
	return Kea6Server{Times: t, PD: pd, Interface: iface}.Config()
}

// Kea6Server is a kea-dhcp6 giving addresses in 2001:db8:0:1::/64 and
// delegating /56s out of the /48 at PD.
type Kea6Server struct {
	Times     Times
	PD        string
	Interface string // empty: isp0
	// ServerMAC is the link-layer address in the server's DUID (its server
	// ID); empty: 02:00:00:00:00:01. A server with another DUID is another
	// server to a client: it ignores the Renews meant for the first one,
	// and answers Rebinds.
	ServerMAC string
}

// Config is the server's kea.json, with %[1]s for its folder.
func (s Kea6Server) Config() string {
	iface, duid := s.Interface, strings.ReplaceAll(s.ServerMAC, ":", "")
	if iface == "" {
		iface = "isp0"
	}
	if duid == "" {
		duid = "020000000001"
	}
	return fmt.Sprintf(`{"Dhcp6": {
  "data-directory": "%%[1]s",
  "server-id": {"type": "LL", "htype": 1, "identifier": %q, "persist": false},
  "interfaces-config": {"interfaces": [%q], "service-sockets-max-retries": 100, "service-sockets-retry-wait-time": 200},
  "lease-database": {"type": "memfile", "persist": true, "name": "%%[1]s/leases6.csv", "lfc-interval": 0},
  "preferred-lifetime": %d, "valid-lifetime": %d, "renew-timer": %d, "rebind-timer": %d,
  "subnet6": [{"subnet": "2001:db8:0:1::/64", "interface": %q,
    "pools": [{"pool": "2001:db8:0:1::100-2001:db8:0:1::1ff"}],
    "pd-pools": [{"prefix": %q, "prefix-len": 48, "delegated-len": 56}],
    "option-data": [{"name": "dns-servers", "data": "2001:db8::53"}]}],
  "loggers": [{"name": "kea-dhcp6", "output_options": [{"output": "%%[1]s/kea.log"}], "severity": "INFO"}]
}}`, duid, iface, s.Times.Preferred, s.Times.Valid, s.Times.Renew, s.Times.Rebind, iface, s.PD)
}
