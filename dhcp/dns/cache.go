package dns

import (
	"container/list"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// The cache's limits on what it keeps and for how long.
const (
	maxTTL    = 24 * 60 * 60 // an answer is kept at most a day
	maxNegTTL = 60 * 60      // a negative one at most an hour (RFC 2308 allows 3)
	staleTTL  = 30           // the TTL of a stale answer (RFC 8767)
	// entryOverhead is what an entry costs besides its message and name:
	// the map slot, the list element, the struct, rounded up.
	entryOverhead = 256
)

// cacheKey is what makes two questions the same answer: the name in lower
// case, type, class, and the DO and CD bits (a client that asks for
// DNSSEC records gets them, one that does not never does).
type cacheKey struct {
	name          string
	qtype, qclass uint16
	do, cd        bool
}

func keyOf(req *dns.Msg) cacheKey {
	q := req.Question[0]
	do := false
	if opt := req.IsEdns0(); opt != nil {
		do = opt.Do()
	}
	return cacheKey{name: strings.ToLower(q.Name), qtype: q.Qtype, qclass: q.Qclass, do: do, cd: req.CheckingDisabled}
}

type entry struct {
	key    cacheKey
	msg    []byte    // packed, without OPT: the smallest form to keep
	stored time.Time // TTLs in msg count from here
	ttl    time.Duration
	size   int
	elem   *list.Element
}

// Cache keeps upstream answers by their TTLs, positive and negative (RFC
// 2308), within a budget of bytes: the least recently used goes first. An
// answer past its TTL stays for staleFor more, to be served while every
// upstream is down (RFC 8767).
type Cache struct {
	mu       sync.Mutex
	max      int
	staleFor time.Duration
	used     int
	entries  map[cacheKey]*entry
	lru      list.List // front: most recently used
}

// NewCache keeps up to max bytes (messages and their bookkeeping).
func NewCache(max int, staleFor time.Duration) *Cache {
	return &Cache{max: max, staleFor: staleFor, entries: map[cacheKey]*entry{}}
}

// Get returns a copy of the answer for k with its TTLs counted down to
// now, and whether it is still fresh; a stale one has TTL staleTTL.
func (c *Cache) Get(k cacheKey, now time.Time) (m *dns.Msg, fresh bool) {
	c.mu.Lock()
	e := c.entries[k]
	if e == nil {
		c.mu.Unlock()
		return nil, false
	}
	age := now.Sub(e.stored)
	if age < 0 {
		age = 0 // the clock went back: count from now
	}
	if age >= e.ttl+c.staleFor {
		c.remove(e)
		c.mu.Unlock()
		return nil, false
	}
	c.lru.MoveToFront(e.elem)
	packed, ttl := e.msg, e.ttl
	c.mu.Unlock()
	m = new(dns.Msg)
	if m.Unpack(packed) != nil {
		return nil, false
	}
	fresh = age < ttl
	secs := uint32(age / time.Second)
	for _, sec := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range sec {
			h := rr.Header()
			switch {
			case !fresh:
				h.Ttl = staleTTL
			case h.Ttl > secs:
				h.Ttl -= secs
			default:
				h.Ttl = 0
			}
		}
	}
	return m, fresh
}

// Put keeps m, an upstream's answer to k, for as long as it may be kept:
// a positive answer by its smallest TTL, a negative one by its SOA (RFC
// 2308); not at all a failure, a truncated answer or one without TTL.
func (c *Cache) Put(k cacheKey, m *dns.Msg, now time.Time) {
	ttl, ok := cacheTTL(m)
	if !ok || c.max <= 0 {
		return
	}
	keep := m.Copy()
	keep.Id = 0
	keep.Extra = withoutOPT(keep.Extra)
	keep.Compress = true
	packed, err := keep.Pack()
	if err != nil {
		return
	}
	size := len(packed) + len(k.name) + entryOverhead
	if size > c.max/8 {
		return // one answer may not crowd out the rest
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if old := c.entries[k]; old != nil {
		c.remove(old)
	}
	e := &entry{key: k, msg: packed, stored: now, ttl: time.Duration(ttl) * time.Second, size: size}
	e.elem = c.lru.PushFront(e)
	c.entries[k] = e
	c.used += size
	for c.used > c.max {
		c.remove(c.lru.Back().Value.(*entry))
	}
}

func (c *Cache) remove(e *entry) {
	c.lru.Remove(e.elem)
	delete(c.entries, e.key)
	c.used -= e.size
}

// Len is the number of answers kept; Used their bytes.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

// Used is the bytes the answers take, as the budget counts them.
func (c *Cache) Used() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.used
}

// cacheTTL is how long m may be kept, in seconds.
func cacheTTL(m *dns.Msg) (uint32, bool) {
	if m.Truncated || len(m.Question) != 1 {
		return 0, false
	}
	negative := m.Rcode == dns.RcodeNameError || m.Rcode == dns.RcodeSuccess && len(m.Answer) == 0
	if negative {
		for _, rr := range m.Ns {
			if soa, ok := rr.(*dns.SOA); ok {
				ttl := min(soa.Hdr.Ttl, soa.Minttl, maxNegTTL)
				return ttl, ttl > 0
			}
		}
		return 0, false // no SOA: RFC 2308 says not to keep it
	}
	if m.Rcode != dns.RcodeSuccess {
		return 0, false
	}
	ttl := uint32(maxTTL)
	for _, sec := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range sec {
			if rr.Header().Rrtype != dns.TypeOPT {
				ttl = min(ttl, rr.Header().Ttl)
			}
		}
	}
	return ttl, ttl > 0
}

func withoutOPT(rrs []dns.RR) []dns.RR {
	out := rrs[:0]
	for _, rr := range rrs {
		if rr.Header().Rrtype != dns.TypeOPT {
			out = append(out, rr)
		}
	}
	return out
}
