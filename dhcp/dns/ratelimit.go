package dns

import (
	"log/slog"
	"net/netip"
	"sync"
	"time"
)

// The rate limiter's bounds.
const (
	maxClients    = 1024             // clients tracked; more share one bucket
	relogAfter    = 10 * time.Minute // a client limited again within this is not logged again
	defaultRate   = 250              // queries a second per client
	burstFraction = 2                // a client may burst to twice its rate
)

// limiter holds each LAN client (an IPv4 address, an IPv6 /64: one host's
// addresses) to a rate of queries, with a burst, and logs one line when a
// client is first limited, not one per query dropped.
type limiter struct {
	rate, burst float64
	log         *slog.Logger
	now         func() time.Time

	mu       sync.Mutex
	clients  map[netip.Prefix]*bucket
	overflow bucket // every client beyond maxClients
}

type bucket struct {
	tokens   float64
	last     time.Time
	limited  bool // in an episode of being limited
	loggedAt time.Time
}

func newLimiter(rate int, log *slog.Logger, now func() time.Time) *limiter {
	if rate <= 0 {
		rate = defaultRate
	}
	return &limiter{rate: float64(rate), burst: float64(rate * burstFraction), log: log, now: now,
		clients: map[netip.Prefix]*bucket{}}
}

func clientKey(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	if a.Is4() {
		return netip.PrefixFrom(a, 32)
	}
	p, _ := a.Prefix(64)
	return p
}

// allow reports whether client may have an answer now.
func (l *limiter) allow(client netip.Addr) bool {
	now := l.now()
	k := clientKey(client)
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.clients[k]
	if b == nil {
		if len(l.clients) >= maxClients {
			l.sweep(now)
		}
		if len(l.clients) >= maxClients {
			b = &l.overflow
		} else {
			b = &bucket{tokens: l.burst, last: now}
			l.clients[k] = b
		}
	}
	b.tokens = min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		if b.limited && b.tokens >= l.burst/2 {
			b.limited = false // calm again: the episode is over
		}
		return true
	}
	if !b.limited {
		b.limited = true
		if b.loggedAt.IsZero() || now.Sub(b.loggedAt) >= relogAfter {
			b.loggedAt = now
			l.log.Warn("dns: a LAN client asks too fast; dropping its queries over the limit", "client", client.Unmap(),
				"limit", int(l.rate), "burst", int(l.burst))
		}
	}
	return false
}

// sweep forgets clients that have been quiet long enough to be full again
// and are not being limited.
func (l *limiter) sweep(now time.Time) {
	full := time.Duration(l.burst / l.rate * float64(time.Second))
	for k, b := range l.clients {
		if now.Sub(b.last) > full && (b.loggedAt.IsZero() || now.Sub(b.loggedAt) > relogAfter) {
			delete(l.clients, k)
		}
	}
}
