package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// runDelayProxy forwards TCP connections over a modelled link: a fixed
// one-way delay in each direction and, if --rate is set, a bandwidth that
// paces the bytes (each direction on its own, as on a full-duplex link),
// and appends each connection's byte counts to a file. It stands in for tc
// netem, which this kernel lacks: every tool measured crosses the same
// proxy, so the comparison holds.
func runDelayProxy(args []string) error {
	fs := flag.NewFlagSet("delay-proxy", flag.ContinueOnError)
	listen := fs.String("listen", "", "address to listen on")
	to := fs.String("to", "", "address to forward to")
	delay := fs.Duration("delay", 10*time.Millisecond, "one-way delay")
	rate := fs.Int64("rate", 0, "bandwidth in bits per second each way (0: no limit)")
	stats := fs.String("stats", "", "file to append byte counts to")
	if err := fs.Parse(args); err != nil {
		return err
	}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	fmt.Println("ready")
	lk := link{delay: *delay, rate: *rate}
	for {
		c, err := l.Accept()
		if err != nil {
			return err
		}
		go proxyConn(c, *to, lk, *stats)
	}
}

// link is one direction's model: bytes leave at rate bits per second (no
// limit if 0) and arrive delay later.
type link struct {
	delay time.Duration
	rate  int64
}

// chunkSize is what the proxy reads at a time: small on a paced link, so
// that bytes arrive smoothly rather than in bursts.
func (l link) chunkSize() int {
	if l.rate > 0 {
		return 16 << 10
	}
	return 64 << 10
}

// queueChunks bounds the bytes read but not yet delivered, as a real link
// holds only what is in flight plus its router's queue; beyond it the
// proxy stops reading and TCP pushes back on the sender. On a paced link:
// the bytes of one delay at full rate, plus 256 KiB of queue.
func (l link) queueChunks() int {
	if l.rate == 0 {
		return 4096
	}
	bytes := l.rate/8*int64(l.delay)/int64(time.Second) + 256<<10
	return max(4, int(bytes)/l.chunkSize())
}

func proxyConn(c net.Conn, to string, lk link, stats string) {
	defer c.Close()
	up, err := net.Dial("tcp", to)
	if err != nil {
		return
	}
	defer up.Close()
	var sent, received atomic.Int64
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); linkCopy(up, c, lk, &sent) }()
	go func() { defer wg.Done(); linkCopy(c, up, lk, &received) }()
	wg.Wait()
	if f, err := os.OpenFile(stats, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644); err == nil {
		fmt.Fprintf(f, "%d %d\n", sent.Load(), received.Load())
		f.Close()
	}
}

// linkCopy delivers what it reads from src to dst as the link would: each
// chunk leaves once the link has sent the chunks before it (at its rate)
// and arrives the delay after it left, in order.
func linkCopy(dst, src net.Conn, lk link, n *atomic.Int64) {
	type chunk struct {
		b  []byte
		at time.Time
	}
	ch := make(chan chunk, lk.queueChunks())
	go func() {
		defer close(ch)
		var free time.Time // when the link has sent what it was given
		for {
			buf := make([]byte, lk.chunkSize())
			k, err := src.Read(buf)
			if k > 0 {
				now := time.Now()
				leave := now
				if lk.rate > 0 {
					if free.After(now) {
						leave = free
					}
					leave = leave.Add(time.Duration(int64(k) * 8 * int64(time.Second) / lk.rate))
					free = leave
				}
				ch <- chunk{buf[:k], leave.Add(lk.delay)}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range ch {
		time.Sleep(time.Until(c.at))
		if _, err := dst.Write(c.b); err != nil {
			io.Copy(io.Discard, src)
			return
		}
		n.Add(int64(len(c.b)))
	}
	if tc, ok := dst.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
}
