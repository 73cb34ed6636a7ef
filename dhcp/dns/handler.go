package dns

import (
	"context"
	"encoding/binary"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// The handler's bounds.
const (
	// maxFlights bounds the distinct questions out upstream at once;
	// past it a question gets SERVFAIL at once rather than memory.
	maxFlights = 256
	// clientWait is how long a client waits for the upstreams before a
	// stale answer, if there is one, is served (RFC 8767's client response
	// timer); the upstream query goes on and refreshes the cache.
	clientWait = 1800 * time.Millisecond
)

// exchanger asks upstream; the Forwarder, or a test's.
type exchanger interface {
	Exchange(ctx context.Context, q *dns.Msg) (*dns.Msg, error)
	Down() bool
}

// Resolver answers the LAN's queries: its own names, then the cache, then
// the upstreams, with a stale answer when they fail.
type Resolver struct {
	zone  atomic.Pointer[Zone]
	cache *Cache
	up    exchanger
	limit *limiter
	log   *slog.Logger
	now   func() time.Time

	mu      sync.Mutex
	flights map[cacheKey]*flight
}

type flight struct {
	done chan struct{}
	m    *dns.Msg
	err  error
}

// Config is what a Resolver is made of.
type Config struct {
	Zone      *Zone
	Cache     *Cache
	Upstream  exchanger
	RateLimit int // queries a second per client; 0: the default
	Log       *slog.Logger
	Now       func() time.Time
}

// NewResolver makes a resolver.
func NewResolver(c Config) *Resolver {
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	r := &Resolver{cache: c.Cache, up: c.Upstream, log: c.Log, now: c.Now, flights: map[cacheKey]*flight{},
		limit: newLimiter(c.RateLimit, c.Log, c.Now)}
	if c.Zone == nil {
		c.Zone = NewZone(Names{})
	}
	r.zone.Store(c.Zone)
	return r
}

// SetZone replaces the LAN's names.
func (r *Resolver) SetZone(z *Zone) { r.zone.Store(z) }

// Answer answers the query in b from client, over TCP or UDP, and returns
// the packed reply; nil means no reply (a client over its rate on UDP, or
// bytes that are no query at all). Malformed queries get FORMERR.
func (r *Resolver) Answer(ctx context.Context, b []byte, client netip.Addr, tcp bool) []byte {
	if len(b) < 12 || b[2]&0x80 != 0 {
		return nil // not even a header, or a response: never answer those
	}
	if !r.limit.allow(client) {
		if tcp {
			return errorReply(b, dns.RcodeRefused)
		}
		return nil // on UDP the source may be forged: say nothing
	}
	req := new(dns.Msg)
	if err := req.Unpack(b); err != nil || len(req.Question) != 1 {
		return errorReply(b, dns.RcodeFormatError)
	}
	opt := req.IsEdns0()
	if countOPT(req.Extra) > 1 {
		return errorReply(b, dns.RcodeFormatError) // RFC 6891 6.1.1
	}
	if opt != nil && opt.Version() != 0 {
		m := new(dns.Msg)
		m.SetRcode(req, dns.RcodeBadVers)
		return r.finish(req, m, tcp)
	}
	if req.Opcode != dns.OpcodeQuery {
		return r.finish(req, new(dns.Msg).SetRcode(req, dns.RcodeNotImplemented), tcp)
	}
	q := req.Question[0]
	switch {
	case q.Qclass != dns.ClassINET && q.Qclass != dns.ClassANY:
		return r.finish(req, new(dns.Msg).SetRcode(req, dns.RcodeRefused), tcp)
	case q.Qtype == dns.TypeOPT:
		return r.finish(req, new(dns.Msg).SetRcode(req, dns.RcodeFormatError), tcp)
	case q.Qtype == dns.TypeAXFR || q.Qtype == dns.TypeIXFR:
		return r.finish(req, new(dns.Msg).SetRcode(req, dns.RcodeRefused), tcp)
	}
	if m := r.zone.Load().Answer(q); m != nil {
		return r.finish(req, m, tcp)
	}
	if singleLabel(q.Name) && (q.Qtype == dns.TypeA || q.Qtype == dns.TypeAAAA) {
		// A bare name that is no LAN host is nobody's: never ask the
		// internet for it (dnsmasq's domain-needed).
		return r.finish(req, new(dns.Msg).SetRcode(req, dns.RcodeNameError), tcp)
	}
	m := r.resolve(ctx, req)
	if m != nil {
		m.Authoritative = false // the upstream's, or kept: not ours
	}
	return r.finish(req, m, tcp)
}

// resolve answers from the cache or upstream.
func (r *Resolver) resolve(ctx context.Context, req *dns.Msg) *dns.Msg {
	k := keyOf(req)
	cached, fresh := r.cache.Get(k, r.now())
	if fresh {
		return cached
	}
	if cached != nil && r.up.Down() {
		r.ask(k, req) // in the background: the answer refreshes the cache
		return cached
	}
	f := r.ask(k, req)
	if f == nil {
		if cached != nil {
			return cached
		}
		return new(dns.Msg).SetRcode(req, dns.RcodeServerFailure)
	}
	var wait <-chan time.Time
	if cached != nil {
		t := time.NewTimer(clientWait)
		defer t.Stop()
		wait = t.C
	}
	select {
	case <-f.done:
	case <-wait:
		return cached
	case <-ctx.Done():
		return nil
	}
	if f.err != nil || f.m.Rcode == dns.RcodeServerFailure {
		if cached != nil {
			return cached
		}
		if f.err != nil {
			return new(dns.Msg).SetRcode(req, dns.RcodeServerFailure)
		}
	}
	return f.m.Copy()
}

// ask sends req upstream unless the same question is out already, and
// returns its flight; nil if too many are out.
func (r *Resolver) ask(k cacheKey, req *dns.Msg) *flight {
	r.mu.Lock()
	if f := r.flights[k]; f != nil {
		r.mu.Unlock()
		return f
	}
	if len(r.flights) >= maxFlights {
		r.mu.Unlock()
		return nil
	}
	f := &flight{done: make(chan struct{})}
	r.flights[k] = f
	r.mu.Unlock()
	q := upstreamQuery(req, k.do)
	go func() {
		// Not the client's context: a client that gave up does not cut
		// short an answer the cache will keep.
		f.m, f.err = r.up.Exchange(context.Background(), q)
		if f.err == nil {
			r.cache.Put(k, f.m, r.now())
		}
		r.mu.Lock()
		delete(r.flights, k)
		r.mu.Unlock()
		close(f.done)
	}()
	return f
}

// upstreamQuery is the question to send upstream for req: recursion
// desired, the client's CD and AD bits, EDNS with our buffer size and its
// DO bit, and none of its EDNS options (its subnet stays on the LAN).
func upstreamQuery(req *dns.Msg, do bool) *dns.Msg {
	q := new(dns.Msg)
	q.Id = dns.Id()
	q.RecursionDesired = true
	q.CheckingDisabled = req.CheckingDisabled
	q.AuthenticatedData = req.AuthenticatedData
	q.Question = []dns.Question{req.Question[0]}
	q.SetEdns0(udpSize, do)
	return q
}

// finish makes m the reply to req and packs it: the client's ID and
// question, EDNS if it sent EDNS, the AD bit only for a client that
// understands it (RFC 6840 5.8), cut to what the client can take over UDP
// (TC set: it asks again over TCP).
func (r *Resolver) finish(req, m *dns.Msg, tcp bool) []byte {
	if m == nil {
		return nil
	}
	m.Id = req.Id
	m.Response = true
	m.Opcode = req.Opcode
	m.RecursionDesired = req.RecursionDesired
	m.RecursionAvailable = true
	m.CheckingDisabled = req.CheckingDisabled
	m.Question = req.Question
	m.Extra = withoutOPT(m.Extra)
	size := dns.MinMsgSize
	clientOPT := req.IsEdns0()
	do := clientOPT != nil && clientOPT.Do()
	m.AuthenticatedData = m.AuthenticatedData && (do || req.AuthenticatedData)
	if clientOPT != nil {
		m.SetEdns0(udpSize, do)
		size = min(max(int(clientOPT.UDPSize()), dns.MinMsgSize), udpSize)
	} else {
		m.Rcode &= 0xf // no OPT to carry an extended rcode
	}
	if tcp {
		size = dns.MaxMsgSize
	}
	m.Compress = true
	m.Truncate(size)
	b, err := m.Pack()
	if err != nil {
		r.log.Warn("dns: cannot pack an answer", "question", req.Question[0].String(), "err", err)
		return errorReply(mustPack(req), dns.RcodeServerFailure)
	}
	return b
}

func mustPack(m *dns.Msg) []byte {
	b, _ := m.Pack()
	return b
}

// errorReply is a bare reply with rcode to the query in b, which need not
// parse: its ID, opcode and RD bit, no sections (RFC 1035 4.1.1: the
// question may be left out when it cannot be read).
func errorReply(b []byte, rcode int) []byte {
	if len(b) < 12 {
		return nil
	}
	out := make([]byte, 12)
	copy(out, b[:2])
	out[2] = 0x80 | b[2]&0x79 // QR, the opcode, RD
	out[3] = 0x80 | byte(rcode&0xf)
	binary.BigEndian.PutUint16(out[4:], 0)
	return out
}

func countOPT(rrs []dns.RR) int {
	n := 0
	for _, rr := range rrs {
		if rr.Header().Rrtype == dns.TypeOPT {
			n++
		}
	}
	return n
}

func singleLabel(name string) bool {
	n := dns.CountLabel(name)
	return n == 1
}
