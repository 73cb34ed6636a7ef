// Package dhcpd4 is the LAN's DHCPv4 server: a pool, static leases by MAC
// address, router, DNS and domain options, and a lease database that is
// written and fsynced before an address is acknowledged, so that no crash
// can make it hand the same address to two hosts.
package dhcpd4

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/roostrouter/roost/updater/atomicfile"
)

// Lease is one host's address.
type Lease struct {
	MAC      string     `json:"mac"`
	IP       netip.Addr `json:"ip"`
	Expires  time.Time  `json:"expires"`
	Hostname string     `json:"hostname,omitempty"`
	Released bool       `json:"released,omitempty"`
}

// DB is the lease database: an append-only log of JSON lines, one per
// granted or released lease; the fsync after a line is the commit point.
// A torn last line (a crash mid-write) is ignored; Open rewrites the log
// with the live leases through a rename.
type DB struct {
	mu      sync.Mutex
	file    string
	f       *os.File
	now     func() time.Time
	byMAC   map[string]Lease
	byIP    map[netip.Addr]string
	offered map[netip.Addr]offer // held for a host between OFFER and REQUEST
}

type offer struct {
	mac   string
	until time.Time
}

// OpenDB loads the database in file (missing: empty).
func OpenDB(file string, now func() time.Time) (*DB, error) {
	db := &DB{file: file, now: now, byMAC: map[string]Lease{}, byIP: map[netip.Addr]string{}, offered: map[netip.Addr]offer{}}
	data, err := os.ReadFile(file)
	if err != nil && !os.IsNotExist(err) {
		return nil, fmt.Errorf("read leases: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var l Lease
		if json.Unmarshal(sc.Bytes(), &l) != nil || !l.IP.Is4() {
			continue // a torn or damaged line: it was never acknowledged
		}
		db.set(l)
	}
	// Rewrite with the live leases only.
	var buf bytes.Buffer
	for _, l := range db.Leases() {
		b, _ := json.Marshal(l)
		buf.Write(append(b, '\n'))
	}
	if err := atomicfile.WriteFile(file, buf.Bytes(), 0o600); err != nil {
		return nil, err
	}
	if db.f, err = os.OpenFile(file, os.O_WRONLY|os.O_APPEND, 0o600); err != nil {
		return nil, err
	}
	return db, nil
}

func (db *DB) set(l Lease) {
	if old, ok := db.byMAC[l.MAC]; ok {
		delete(db.byIP, old.IP)
	}
	if l.Released || !l.Expires.After(db.now()) {
		delete(db.byMAC, l.MAC)
		return
	}
	if other, ok := db.byIP[l.IP]; ok && other != l.MAC {
		delete(db.byMAC, other)
	}
	db.byMAC[l.MAC] = l
	db.byIP[l.IP] = l.MAC
}

// Close closes the log.
func (db *DB) Close() error { return db.f.Close() }

// Leases lists the live leases by address.
func (db *DB) Leases() []Lease {
	var out []Lease
	for _, l := range db.byMAC {
		if l.Expires.After(db.now()) {
			out = append(out, l)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].IP.Less(out[j].IP) })
	return out
}

// Pool is the dynamic range, and the addresses reserved by MAC.
type Pool struct {
	Start, End netip.Addr
	Static     map[string]netip.Addr // MAC → address
}

func (p Pool) contains(ip netip.Addr) bool {
	return p.Start.Compare(ip) <= 0 && ip.Compare(p.End) <= 0
}

func (p Pool) reserved(ip netip.Addr, mac string) bool {
	for m, a := range p.Static {
		if a == ip && m != mac {
			return true
		}
	}
	return false
}

// free reports whether ip may go to mac now.
func (db *DB) free(ip netip.Addr, mac string, p Pool) bool {
	if p.reserved(ip, mac) {
		return false
	}
	if other, ok := db.byIP[ip]; ok && other != mac && db.byMAC[other].Expires.After(db.now()) {
		return false
	}
	if o, ok := db.offered[ip]; ok && o.mac != mac && o.until.After(db.now()) {
		return false
	}
	return true
}

// ErrPoolFull means every address is taken.
var ErrPoolFull = errors.New("no free address in the pool")

// Offer picks an address for mac: its static one, its current lease, the
// one it asks for if free, or the lowest free one. It is held for mac for
// a little while, so that concurrent hosts are offered different ones.
func (db *DB) Offer(mac string, requested netip.Addr, p Pool) (netip.Addr, error) {
	db.mu.Lock()
	defer db.mu.Unlock()
	ip, err := db.pick(mac, requested, p)
	if err != nil {
		return ip, err
	}
	db.offered[ip] = offer{mac: mac, until: db.now().Add(30 * time.Second)}
	return ip, nil
}

func (db *DB) pick(mac string, requested netip.Addr, p Pool) (netip.Addr, error) {
	if ip, ok := p.Static[mac]; ok {
		return ip, nil
	}
	if l, ok := db.byMAC[mac]; ok && l.Expires.After(db.now()) && p.contains(l.IP) {
		return l.IP, nil
	}
	if requested.IsValid() && p.contains(requested) && db.free(requested, mac, p) {
		return requested, nil
	}
	for ip := p.Start; ip.Compare(p.End) <= 0; ip = ip.Next() {
		if db.free(ip, mac, p) {
			return ip, nil
		}
	}
	return netip.Addr{}, ErrPoolFull
}

// Grant commits ip to mac until expires: written and fsynced before the
// caller acknowledges it. It refuses an address another host holds.
func (db *DB) Grant(mac string, ip netip.Addr, hostname string, d time.Duration, p Pool) (Lease, error) {
	db.mu.Lock()
	defer db.mu.Unlock()
	if !(p.contains(ip) || p.Static[mac] == ip) || !db.free(ip, mac, p) {
		return Lease{}, fmt.Errorf("%s is not available to %s", ip, mac)
	}
	if old, ok := db.byMAC[mac]; ok && old.IP == ip && hostname == "" {
		hostname = old.Hostname // a renewal need not name the host again
	}
	l := Lease{MAC: mac, IP: ip, Expires: db.now().Add(d), Hostname: hostname}
	if err := db.append(l); err != nil {
		return Lease{}, err
	}
	delete(db.offered, ip)
	db.set(l)
	return l, nil
}

// Release gives mac's address back.
func (db *DB) Release(mac string, ip netip.Addr) error {
	db.mu.Lock()
	defer db.mu.Unlock()
	l, ok := db.byMAC[mac]
	if !ok || l.IP != ip {
		// Not this host's lease: a stale or forged release changes nothing.
		return fmt.Errorf("%s holds no lease on %s", mac, ip)
	}
	l.Released = true
	if err := db.append(l); err != nil {
		return err
	}
	db.set(l)
	return nil
}

func (db *DB) append(l Lease) error {
	b, _ := json.Marshal(l)
	if _, err := db.f.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("write lease: %w", err)
	}
	if err := db.f.Sync(); err != nil {
		return fmt.Errorf("sync leases: %w", err)
	}
	return nil
}
