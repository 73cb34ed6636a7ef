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
