package netconf

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/roostrouter/roost/agent/supervisor"
)

func TestAddrToRemove(t *testing.T) {
	p := netip.MustParsePrefix("192.168.1.1/24")
	lo := liveAddr{Index: 1, Prefix: netip.MustParsePrefix("127.0.0.1/8"), Proto: 1} // the kernel tags lo's (5.18+)
	for _, tc := range []struct {
		name  string
		live  []liveAddr
		want  int
		error string
	}{
		{"ours on one link", []liveAddr{lo, {Index: 3, Prefix: p, Proto: Proto}}, 3, ""},
		{"ours, and the same by hand on another link", []liveAddr{lo, {Index: 2, Prefix: p}, {Index: 3, Prefix: p, Proto: Proto}}, 3, ""},
		{"only by hand: not ours", []liveAddr{lo, {Index: 2, Prefix: p}}, 0, ""},
		{"another prefix length is another address", []liveAddr{lo, {Index: 3, Prefix: netip.MustParsePrefix("192.168.1.1/16"), Proto: Proto}}, 0, ""},
		{"gone", []liveAddr{lo}, 0, ""},
		{"ours on two links", []liveAddr{lo, {Index: 2, Prefix: p, Proto: Proto}, {Index: 3, Prefix: p, Proto: Proto}}, 0, "on 2 links"},
		{"a kernel without address protocols", []liveAddr{{Index: 1, Prefix: netip.MustParsePrefix("127.0.0.1/8")}, {Index: 3, Prefix: p}}, 0, "keeps no address protocols"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := addrToRemove(tc.live, p)
			if got != tc.want || (err == nil) != (tc.error == "") || err != nil && !strings.Contains(err.Error(), tc.error) {
				t.Fatalf("addrToRemove = %d, %v; want %d, an error with %q", got, err, tc.want, tc.error)
			}
		})
	}
}

func TestRouteAdded(t *testing.T) {
	_, dst, _ := net.ParseCIDR("0.0.0.0/0")
	gw := net.ParseIP("192.0.2.1")
	fixed := &Route{Destination: dst, Gateway: gw}
	fromOutput := &Route{Destination: dst, GatewayRef: &supervisor.Ref{Service: "wan-dhcp", Key: "router"}}
	_, dst6, _ := net.ParseCIDR("::/0")
	v6 := &Route{Destination: dst6, Gateway: net.ParseIP("2001:db8::1")}
	for _, tc := range []struct {
		name string
		s    *Route
		r    netlink.Route
		want bool
	}{
		{"ours", fixed, netlink.Route{Protocol: Proto, Gw: gw}, true},
		{"by hand (proto boot)", fixed, netlink.Route{Protocol: 3, Gw: gw}, false},
		{"another gateway", fixed, netlink.Route{Protocol: Proto, Gw: net.ParseIP("192.0.2.9")}, false},
		{"another metric", fixed, netlink.Route{Protocol: Proto, Gw: gw, Priority: 10}, false},
		{"gateway from an output: whichever", fromOutput, netlink.Route{Protocol: Proto, Gw: net.ParseIP("192.0.2.9")}, true},
		{"IPv6 without a metric is the kernel's 1024", v6, netlink.Route{Protocol: Proto, Gw: v6.Gateway, Priority: 1024}, true},
		{"the ISP's router advertisement", v6, netlink.Route{Protocol: 9, Gw: v6.Gateway, Priority: 1024}, false},
	} {
		if got := tc.s.added(tc.r); got != tc.want {
			t.Errorf("%s: added = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// fakeProcSys makes a /proc/sys stand-in with the files named.
func fakeProcSys(t *testing.T, values map[string]string) string {
	dir := t.TempDir()
	for k, v := range values {
		f := filepath.Join(dir, k)
		os.MkdirAll(filepath.Dir(f), 0o755)
		if err := os.WriteFile(f, []byte(v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func readTrim(t *testing.T, f string) string {
	b, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func TestSysctlRestore(t *testing.T) {
	proc := fakeProcSys(t, map[string]string{"net/ipv4/ip_forward": "0", "net/ipv6/conf/all/forwarding": "1"})
	r := SysctlRestore{ProcSys: proc, Dir: filepath.Join(t.TempDir(), "sysctl")}
	if wrote, err := r.Set("net/ipv4/ip_forward", "1"); !wrote || err != nil {
		t.Fatalf("Set = %v, %v", wrote, err)
	}
	// A later roostd finds its own value and writes nothing; the record
	// still holds the value from before roostd.
	if wrote, err := r.Set("net/ipv4/ip_forward", "1"); wrote || err != nil {
		t.Fatalf("Set again = %v, %v", wrote, err)
	}
	// Changed behind roostd's back: written again, the first record kept.
	os.WriteFile(filepath.Join(proc, "net/ipv4/ip_forward"), []byte("0"), 0o644)
	if wrote, err := r.Set("net/ipv4/ip_forward", "1"); !wrote || err != nil {
		t.Fatalf("Set after a change by hand = %v, %v", wrote, err)
	}
	if got := readTrim(t, filepath.Join(r.Dir, "net.ipv4.ip_forward")); got != "0" {
		t.Fatalf("record = %q, want the value from before roostd, 0", got)
	}
	// Found as wanted: no write, no record, nothing to restore.
	if wrote, err := r.Set("net/ipv6/conf/all/forwarding", "1"); wrote || err != nil {
		t.Fatalf("Set of a value in place = %v, %v", wrote, err)
	}
	for _, k := range []string{"net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding"} {
		if err := r.Restore(k); err != nil {
			t.Fatal(err)
		}
	}
	if got := readTrim(t, filepath.Join(proc, "net/ipv4/ip_forward")); got != "0" {
		t.Errorf("ip_forward after Restore = %q, want 0", got)
	}
	if got := readTrim(t, filepath.Join(proc, "net/ipv6/conf/all/forwarding")); got != "1" {
		t.Errorf("all/forwarding, which roostd found at 1, = %q after Restore", got)
	}
	if entries, _ := os.ReadDir(r.Dir); len(entries) != 0 {
		t.Errorf("records left after Restore: %v", entries)
	}
	// A parameter whose link went: forgotten, no error.
	os.MkdirAll(r.Dir, 0o700)
	os.WriteFile(filepath.Join(r.Dir, "net.ipv6.conf.ppp0.accept_ra"), []byte("1\n"), 0o600)
	if err := r.Restore("net/ipv6/conf/ppp0/accept_ra"); err != nil {
		t.Fatalf("Restore of a parameter that is gone: %v", err)
	}
	// Without a folder for records, Set writes and Restore leaves it.
	none := SysctlRestore{ProcSys: proc}
	if wrote, err := none.Set("net/ipv4/ip_forward", "1"); !wrote || err != nil {
		t.Fatalf("Set without records = %v, %v", wrote, err)
	}
	if err := none.Restore("net/ipv4/ip_forward"); err != nil || readTrim(t, filepath.Join(proc, "net/ipv4/ip_forward")) != "1" {
		t.Fatalf("Restore without records changed the value or failed: %v", err)
	}
	if _, err := r.Set("net/ipv4/no_such_key", "1"); err == nil || !strings.Contains(err.Error(), "net/ipv4/no_such_key") {
		t.Fatalf("Set of a key the kernel lacks: %v", err)
	}
}

func TestSysctlRemoveRestoresWhatItSet(t *testing.T) {
	proc := fakeProcSys(t, map[string]string{"net/ipv4/ip_forward": "0", "net/ipv4/conf/all/forwarding": "0", "net/ipv4/conf/wan/rp_filter": "2"})
	s := &Sysctl{ProcSys: proc, StateDir: t.TempDir(), Values: map[string]string{
		"net.ipv4.conf.wan.rp_filter": "1", "net.ipv4.conf.all.forwarding": "1", "net.ipv4.ip_forward": "1"}}
	if got, want := s.keys(), []string{"net.ipv4.ip_forward", "net.ipv4.conf.all.forwarding", "net.ipv4.conf.wan.rp_filter"}; !slices.Equal(got, want) {
		t.Fatalf("keys in writing order = %v, want %v", got, want)
	}
	r := s.restore()
	for _, k := range s.keys() {
		if _, err := r.Set(sysctlPath(k), s.Values[k]); err != nil {
			t.Fatal(err)
		}
	}
	// A later roostd, a fresh instance: Remove puts every value back.
	again := &Sysctl{ProcSys: proc, StateDir: s.StateDir, Values: s.Values}
	if err := again.Remove(t.Context()); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"net/ipv4/ip_forward": "0", "net/ipv4/conf/all/forwarding": "0", "net/ipv4/conf/wan/rp_filter": "2"} {
		if got := readTrim(t, filepath.Join(proc, k)); got != want {
			t.Errorf("%s after Remove = %q, want %q", k, got, want)
		}
	}
}

func TestRememberLink(t *testing.T) {
	f := filepath.Join(t.TempDir(), "state", "dhcp4-link-wan")
	if got := RememberedLink(f); got != "" {
		t.Fatalf("nothing remembered yet, got %q", got)
	}
	if err := RememberLink(f, "eth0.7"); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(f)
	if err := RememberLink(f, "eth0.7"); err != nil {
		t.Fatal(err)
	}
	if st2, _ := os.Stat(f); !os.SameFile(st, st2) {
		t.Error("the same name was written again (flash wear)")
	}
	if got := RememberedLink(f); got != "eth0.7" {
		t.Fatalf("RememberedLink = %q", got)
	}
}

func TestPPPoERemove(t *testing.T) {
	state := t.TempDir()
	p := &PPPoE{Name: "wan-ppp", StateDir: state}
	other := filepath.Join(state, "pppoe-other")
	for _, f := range []string{filepath.Join(p.dir(), "options"), filepath.Join(p.dir(), "ip-up"), filepath.Join(other, "options")} {
		os.MkdirAll(filepath.Dir(f), 0o700)
		os.WriteFile(f, []byte("x"), 0o600)
	}
	if err := p.Remove(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p.dir()); !os.IsNotExist(err) {
		t.Errorf("%s is still there: %v", p.dir(), err)
	}
	if _, err := os.Stat(filepath.Join(other, "options")); err != nil {
		t.Errorf("another service's pppd files went: %v", err)
	}
	if err := (&PPPoE{Name: "wan-ppp"}).Remove(t.Context()); err != nil {
		t.Errorf("Remove without a state folder: %v", err)
	}
}

// A state folder that cannot be written does not keep the router from its
// sysctls: the value is set, and the error says it was not recorded.
func TestSysctlSetWithoutRecord(t *testing.T) {
	proc := t.TempDir()
	key := "net/ipv4/ip_forward"
	os.MkdirAll(filepath.Join(proc, "net/ipv4"), 0o755)
	os.WriteFile(filepath.Join(proc, key), []byte("0\n"), 0o644)
	notAFolder := filepath.Join(t.TempDir(), "state")
	os.WriteFile(notAFolder, nil, 0o600)
	r := SysctlRestore{ProcSys: proc, Dir: filepath.Join(notAFolder, "sysctl")}
	wrote, err := r.Set(key, "1")
	if !wrote || !errors.Is(err, ErrNotRecorded) {
		t.Fatalf("Set = %v, %v; want it written and ErrNotRecorded", wrote, err)
	}
	if b, _ := os.ReadFile(filepath.Join(proc, key)); strings.TrimSpace(string(b)) != "1" {
		t.Fatalf("ip_forward is %q, want 1", b)
	}
}
