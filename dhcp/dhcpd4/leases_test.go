package dhcpd4

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func pool() Pool {
	return Pool{Start: netip.MustParseAddr("10.99.0.10"), End: netip.MustParseAddr("10.99.15.200"),
		Static: map[string]netip.Addr{"02:00:00:00:00:01": netip.MustParseAddr("10.99.0.5")}}
}

func TestConcurrentHostsGetDistinctAddresses(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	file := filepath.Join(t.TempDir(), "leases")
	db, err := OpenDB(file, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	got := map[netip.Addr]string{}
	var wg sync.WaitGroup
	for w := 0; w < 20; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				mac := fmt.Sprintf("02:aa:%02x:%02x:00:00", w, i)
				ip, err := db.Offer(mac, netip.Addr{}, pool())
				if err != nil {
					t.Error(err)
					return
				}
				l, err := db.Grant(mac, ip, "", time.Hour, pool())
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if other, dup := got[l.IP]; dup {
					t.Errorf("%s went to %s and %s", l.IP, other, mac)
				}
				got[l.IP] = mac
				mu.Unlock()
			}
		}(w)
	}
	wg.Wait()
	if len(got) != 1000 {
		t.Fatalf("%d distinct addresses for 1,000 hosts", len(got))
	}
	// Static leases stay with their host; another host cannot take them.
	if ip, _ := db.Offer("02:00:00:00:00:01", netip.Addr{}, pool()); ip != netip.MustParseAddr("10.99.0.5") {
		t.Fatalf("static host offered %s", ip)
	}
	if _, err := db.Grant("02:bb:00:00:00:00", netip.MustParseAddr("10.99.0.5"), "", time.Hour, pool()); err == nil {
		t.Fatal("a static address was granted to another host")
	}
	// A torn last line is ignored; everything granted survives a reopen.
	db.Close()
	f, _ := os.OpenFile(file, os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString(`{"mac":"02:cc:00:00:00:00","ip":"10.99.0.`)
	f.Close()
	db, err = OpenDB(file, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	if n := len(db.Leases()); n != 1000 {
		t.Fatalf("after a reopen %d leases, want 1000", n)
	}
	// Expired leases free their addresses.
	now = now.Add(2 * time.Hour)
	if n := len(db.Leases()); n != 0 {
		t.Fatalf("%d leases after they expired", n)
	}
}

func FuzzOpenDB(f *testing.F) {
	f.Add([]byte(`{"mac":"02:00:00:00:00:01","ip":"10.99.0.10","expires":"2099-01-01T00:00:00Z"}` + "\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		file := filepath.Join(t.TempDir(), "leases")
		os.WriteFile(file, data, 0o600)
		db, err := OpenDB(file, time.Now)
		if err != nil {
			return
		}
		defer db.Close()
		seen := map[netip.Addr]bool{}
		for _, l := range db.Leases() {
			if seen[l.IP] {
				t.Fatalf("%s is leased twice after loading", l.IP)
			}
			seen[l.IP] = true
		}
	})
}
