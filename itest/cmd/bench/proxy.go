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

// runDelayProxy forwards TCP connections with a fixed one-way delay in each
// direction and appends each connection's byte counts to a file. It stands
// in for tc netem, which this kernel lacks: both tools measured cross the
// same proxy, so the comparison holds.
func runDelayProxy(args []string) error {
	fs := flag.NewFlagSet("delay-proxy", flag.ContinueOnError)
	listen := fs.String("listen", "", "address to listen on")
	to := fs.String("to", "", "address to forward to")
	delay := fs.Duration("delay", 10*time.Millisecond, "one-way delay")
	stats := fs.String("stats", "", "file to append byte counts to")
	if err := fs.Parse(args); err != nil {
		return err
	}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	fmt.Println("ready")
	for {
		c, err := l.Accept()
		if err != nil {
			return err
		}
		go proxyConn(c, *to, *delay, *stats)
	}
}

func proxyConn(c net.Conn, to string, delay time.Duration, stats string) {
	defer c.Close()
	up, err := net.Dial("tcp", to)
	if err != nil {
		return
	}
	defer up.Close()
	var sent, received atomic.Int64
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); delayedCopy(up, c, delay, &sent) }()
	go func() { defer wg.Done(); delayedCopy(c, up, delay, &received) }()
	wg.Wait()
	if f, err := os.OpenFile(stats, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644); err == nil {
		fmt.Fprintf(f, "%d %d\n", sent.Load(), received.Load())
		f.Close()
	}
}

// delayedCopy delivers each chunk read from src to dst delay after it was
// read, in order.
func delayedCopy(dst, src net.Conn, delay time.Duration, n *atomic.Int64) {
	type chunk struct {
		b  []byte
		at time.Time
	}
	ch := make(chan chunk, 4096)
	go func() {
		defer close(ch)
		for {
			buf := make([]byte, 64<<10)
			k, err := src.Read(buf)
			if k > 0 {
				ch <- chunk{buf[:k], time.Now().Add(delay)}
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
