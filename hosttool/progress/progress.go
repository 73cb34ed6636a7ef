// Package progress shows the progress of long work: a redrawn bar on a
// terminal, a plain line every few seconds otherwise.
package progress

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// Bar reports done/total work and bytes.
type Bar struct {
	W     io.Writer
	TTY   bool
	Label string
	Now   func() time.Time

	start, last time.Time
	drawn       bool
	finished    bool
}

// Update shows the state; it draws at most 10 times a second on a terminal
// and every 5 seconds otherwise.
func (b *Bar) Update(done, total int, bytes, totalBytes int64) {
	now := b.now()
	if b.start.IsZero() {
		b.start = now
	}
	every := 5 * time.Second
	if b.TTY {
		every = 100 * time.Millisecond
	}
	complete := done >= total
	if b.finished || !complete && now.Sub(b.last) < every {
		return
	}
	b.last, b.finished = now, complete
	line := b.line(done, total, bytes, totalBytes, now)
	if b.TTY {
		fmt.Fprintf(b.W, "\r\x1b[K%s", line)
		b.drawn = true
	} else {
		fmt.Fprintln(b.W, line)
	}
}

// Done ends the bar's line.
func (b *Bar) Done() {
	if b.TTY && b.drawn {
		fmt.Fprintln(b.W)
	}
}

func (b *Bar) now() time.Time {
	if b.Now != nil {
		return b.Now()
	}
	return time.Now()
}

func (b *Bar) line(done, total int, bytes, totalBytes int64, now time.Time) string {
	elapsed := now.Sub(b.start).Seconds()
	rate := 0.0
	if elapsed > 0 {
		rate = float64(bytes) / elapsed
	}
	eta := "--:--"
	if rate > 0 && totalBytes > bytes {
		s := int(float64(totalBytes-bytes) / rate)
		eta = fmt.Sprintf("%d:%02d", s/60, s%60)
	}
	frac := 1.0
	if totalBytes > 0 {
		// Clamped: a sender that counts more bytes than it announced
		// (a path sent again) must not break the bar.
		frac = min(max(float64(bytes)/float64(totalBytes), 0), 1)
	}
	const width = 24
	filled := int(frac * width)
	bar := strings.Repeat("=", filled) + strings.Repeat(" ", width-filled)
	return fmt.Sprintf("%s [%s] %d/%d paths  %s/%s  %s/s  ETA %s",
		b.Label, bar, done, total, MiB(bytes), MiB(totalBytes), MiB(int64(rate)), eta)
}

// MiB prints a byte count in MiB with one decimal.
func MiB(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
