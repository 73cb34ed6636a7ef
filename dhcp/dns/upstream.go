package dns

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// udpSize is the EDNS buffer size the forwarder offers, upstream and to
// the LAN: large enough for most answers, small enough not to fragment
// (DNS flag day 2020).
const udpSize = 1232

// Forwarder sends queries to the upstream servers: the fastest first,
// the next when it fails or is slow to answer (hedging), each server tried
// at most twice, over TCP when an answer comes truncated.
type Forwarder struct {
	// Timeout bounds a whole exchange; default 2 s.
	Timeout time.Duration
	now     func() time.Time

	mu  sync.Mutex
	ups []*upstream
}

type upstream struct {
	addr netip.AddrPort
	srtt time.Duration // smoothed round trip of its answers
	// fails counts failures in a row; while downUntil is ahead it is
	// tried after the others.
	fails     int
	downUntil time.Time
}

// ErrNoUpstream: no upstream server is known (the WAN is down, or none is
// configured).
var ErrNoUpstream = errors.New("no upstream DNS server")

// Set replaces the upstream servers, keeping what is known of those that
// stay.
func (f *Forwarder) Set(addrs []netip.AddrPort) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var next []*upstream
	for _, a := range addrs {
		u := &upstream{addr: a, srtt: 20 * time.Millisecond}
		for _, old := range f.ups {
			if old.addr == a {
				u = old
			}
		}
		next = append(next, u)
	}
	f.ups = next
}

// Addrs are the upstream servers, in the order given.
func (f *Forwarder) Addrs() []netip.AddrPort {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []netip.AddrPort
	for _, u := range f.ups {
		out = append(out, u.addr)
	}
	return out
}

// Down reports whether every upstream failed its last query and is not
// due for another try: a stale answer may be served at once.
func (f *Forwarder) Down() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.clock()
	for _, u := range f.ups {
		if u.fails == 0 || !now.Before(u.downUntil) {
			return false
		}
	}
	return true
}

func (f *Forwarder) clock() time.Time {
	if f.now != nil {
		return f.now()
	}
	return time.Now()
}

// plan is the order to try the servers in: those up by their round trip,
// then those down, each twice at most.
func (f *Forwarder) plan() []*upstream {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.clock()
	ups := slices.Clone(f.ups)
	slices.SortStableFunc(ups, func(a, b *upstream) int {
		da, db := now.Before(a.downUntil), now.Before(b.downUntil)
		if da != db {
			if da {
				return 1
			}
			return -1
		}
		return int(a.srtt - b.srtt)
	})
	return append(ups, ups...)
}

// hedge is how long to wait for u before asking the next server too.
func (f *Forwarder) hedge(u *upstream) time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return min(max(3*u.srtt, 150*time.Millisecond), 700*time.Millisecond)
}

func (f *Forwarder) report(u *upstream, rtt time.Duration, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err != nil {
		u.fails++
		u.downUntil = f.clock().Add(min(time.Second<<min(u.fails-1, 5), 30*time.Second))
		u.srtt = max(u.srtt, rtt)
		return
	}
	u.fails, u.downUntil = 0, time.Time{}
	u.srtt = (7*u.srtt + rtt) / 8
}

type result struct {
	m   *dns.Msg
	u   *upstream
	err error
}

// Exchange asks the upstream servers q and returns the first good answer
// (not SERVFAIL, REFUSED or NOTIMP); failing that, the last bad one (a
// validating upstream's SERVFAIL is an answer); failing that, an error.
func (f *Forwarder) Exchange(ctx context.Context, q *dns.Msg) (*dns.Msg, error) {
	timeout := f.Timeout
	if timeout == 0 {
		timeout = 2 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	plan := f.plan()
	if len(plan) == 0 {
		return nil, ErrNoUpstream
	}
	packed, err := q.Pack() // once: packing writes to q
	if err != nil {
		return nil, err
	}
	results := make(chan result, len(plan))
	// Once Exchange returns, the queries still out are cut short: that
	// says nothing about their servers. A timeout does.
	var returned atomic.Bool
	defer returned.Store(true)
	next, running := 0, 0
	start := func() time.Duration {
		u := plan[next]
		next++
		running++
		go func() {
			t0 := time.Now()
			m, err := exchange(ctx, u.addr, q, packed)
			if err == nil && !good(m) {
				err = fmt.Errorf("%s answered %s", u.addr, dns.RcodeToString[m.Rcode])
			}
			if !returned.Load() {
				f.report(u, time.Since(t0), err)
			}
			results <- result{m, u, err}
		}()
		return f.hedge(u)
	}
	timer := time.NewTimer(start())
	defer timer.Stop()
	var bad *dns.Msg
	var lastErr error
	for running > 0 {
		select {
		case r := <-results:
			running--
			if r.err == nil {
				return r.m, nil
			}
			if r.m != nil {
				bad = r.m
			}
			lastErr = r.err
			if next < len(plan) && ctx.Err() == nil {
				timer.Reset(start()) // fail over at once
			}
		case <-timer.C:
			if next < len(plan) {
				timer.Reset(start())
			}
		}
	}
	if bad != nil {
		return bad, nil
	}
	return nil, fmt.Errorf("every upstream failed: %w", lastErr)
}

func good(m *dns.Msg) bool {
	switch m.Rcode {
	case dns.RcodeServerFailure, dns.RcodeRefused, dns.RcodeNotImplemented, dns.RcodeFormatError:
		return false
	}
	return true
}

// exchange asks one server over UDP from a fresh socket (a random port),
// and again over TCP if the answer comes truncated.
func exchange(ctx context.Context, server netip.AddrPort, q *dns.Msg, packed []byte) (*dns.Msg, error) {
	m, err := exchangeUDP(ctx, server, q, packed)
	if err != nil || !m.Truncated {
		return m, err
	}
	return exchangeTCP(ctx, server, q, packed)
}

func exchangeUDP(ctx context.Context, server netip.AddrPort, q *dns.Msg, packed []byte) (*dns.Msg, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "udp", server.String())
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	if _, err := conn.Write(packed); err != nil {
		return nil, err
	}
	buf := make([]byte, udpSize+512)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, err // ECONNREFUSED: nothing listens there
		}
		if m := reply(q, buf[:n]); m != nil {
			return m, nil
		}
		// Not the answer to q: a late answer to an earlier query on a
		// recycled port, or forged. Wait on.
	}
}

func exchangeTCP(ctx context.Context, server netip.AddrPort, q *dns.Msg, packed []byte) (*dns.Msg, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", server.String())
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	frame := binary.BigEndian.AppendUint16(nil, uint16(len(packed)))
	if _, err := conn.Write(append(frame, packed...)); err != nil {
		return nil, err
	}
	var n [2]byte
	if _, err := io.ReadFull(conn, n[:]); err != nil {
		return nil, fmt.Errorf("%s over TCP: %w", server, err)
	}
	buf := make([]byte, binary.BigEndian.Uint16(n[:]))
	if _, err := io.ReadFull(conn, buf); err != nil {
		return nil, fmt.Errorf("%s over TCP: %w", server, err)
	}
	m := reply(q, buf)
	if m == nil {
		return nil, fmt.Errorf("%s over TCP answered another question", server)
	}
	return m, nil
}

// reply is b if it parses as the answer to q (its ID and question), else
// nil.
func reply(q *dns.Msg, b []byte) *dns.Msg {
	m := new(dns.Msg)
	if m.Unpack(b) != nil || !m.Response || m.Id != q.Id || len(m.Question) != 1 {
		return nil
	}
	a, w := m.Question[0], q.Question[0]
	if a.Qtype != w.Qtype || a.Qclass != w.Qclass || !strings.EqualFold(a.Name, w.Name) {
		return nil
	}
	return m
}
