// Package screen drops packets that do not parse before a DHCP library
// reads them, and says so in the log, at most once a period per socket so
// that a flood cannot flood the log too.
package screen

import (
	"log/slog"
	"net"
	"sync"
	"time"
)

// Conn is a PacketConn whose ReadFrom returns only packets Parse accepts.
type Conn struct {
	net.PacketConn
	Parse func([]byte) error
	Log   *Limited
}

// ReadFrom reads the next packet that parses.
func (c *Conn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, from, err := c.PacketConn.ReadFrom(b)
		if err != nil {
			return n, from, err
		}
		if perr := c.Parse(b[:n]); perr != nil {
			c.Log.Drop(from, n, perr)
			continue
		}
		return n, from, nil
	}
}

// Limited logs dropped packets: the first at once, then one line a period
// with the number dropped since.
type Limited struct {
	Log    *slog.Logger
	What   string        // what was read: "dhcp4 request", "router solicitation"
	Period time.Duration // default a minute
	Now    func() time.Time

	mu      sync.Mutex
	last    time.Time
	skipped int
}

// Drop records a dropped packet of n bytes from a peer.
func (l *Limited) Drop(from net.Addr, n int, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if l.Now != nil {
		now = l.Now()
	}
	period := l.Period
	if period == 0 {
		period = time.Minute
	}
	if !l.last.IsZero() && now.Sub(l.last) < period {
		l.skipped++
		return
	}
	l.Log.Warn("dropped a malformed "+l.What, "from", from, "bytes", n, "err", err, "droppedSinceLastLine", l.skipped)
	l.last, l.skipped = now, 0
}
