// Package retry times the DHCP clients' exchanges: waits that end early
// when the service stops, and a wait that doubles after each failure.
package retry

import (
	"context"
	"time"
)

// Sleep waits for d; it reports false if ctx ended first.
func Sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Backoff is the wait before the next attempt: First (1 s if zero) after
// a failure, doubling up to a minute; Reset after a success.
type Backoff struct {
	First time.Duration
	cur   time.Duration
}

// Next returns the wait to use now and doubles the next one.
func (b *Backoff) Next() time.Duration {
	if b.cur == 0 {
		b.cur = b.First
		if b.cur == 0 {
			b.cur = time.Second
		}
	}
	d := b.cur
	b.cur = min(b.cur*2, time.Minute)
	return d
}

// Reset starts over from First.
func (b *Backoff) Reset() { b.cur = 0 }

// Until calls try until it succeeds, waiting b's next wait after each
// failure, which it first reports to failed; after a success b starts
// over. It reports false, and gives up, when ctx ends.
func Until[T any](ctx context.Context, b *Backoff, try func() (T, error), failed func(err error, wait time.Duration)) (T, bool) {
	for {
		v, err := try()
		if err == nil {
			b.Reset()
			return v, true
		}
		if ctx.Err() != nil {
			return v, false
		}
		wait := b.Next()
		failed(err, wait)
		if !Sleep(ctx, wait) {
			return v, false
		}
	}
}

// Lease times a held lease's renewal and rebinding (RFC 2131 4.4.5, RFC
// 8415 18.2.4 and 18.2.5): renewing until T2, rebinding until the end.
// The libraries' own retransmissions (2+4+8 s for DHCPv4, 1+2+4 s for
// DHCPv6) would otherwise carry a renewal past T2, and with a short lease
// past its end.
type Lease struct {
	T2, End time.Time
}

// Deadline is when an exchange started at start gives up: T2 for a
// renewal (the rebind starts there at once), the end for a rebind.
func (l Lease) Deadline(start time.Time) time.Time {
	if start.Before(l.T2) {
		return l.T2
	}
	return l.End
}

// RetryAt is when to ask again after an exchange started at start got no
// answer by now: half the time left to its deadline, at least 2 s on (RFC
// 2131 says 60 s, too long for a short lease), but never past the
// deadline.
func (l Lease) RetryAt(start, now time.Time) time.Time {
	limit := l.Deadline(start)
	if at := now.Add(max(limit.Sub(now)/2, 2*time.Second)); at.Before(limit) {
		return at
	}
	return limit
}
