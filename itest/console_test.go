package itest

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// timedConsole is a VM's console as it comes, each line with when it came
// (from the VM's start).
type timedConsole struct {
	mu      sync.Mutex
	start   time.Time
	lines   []string
	at      []time.Duration
	partial string
	show    bool
	ended   bool // the VM is gone: nothing more will come
}

func newTimedConsole() *timedConsole {
	return &timedConsole{start: time.Now(), show: os.Getenv("ROOST_SHOW_CONSOLE") != ""}
}

func (c *timedConsole) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.partial + strings.ReplaceAll(string(p), "\r", "")
	for {
		line, rest, ok := strings.Cut(s, "\n")
		if !ok {
			break
		}
		if c.show {
			fmt.Printf("%7.2f %s\n", time.Since(c.start).Seconds(), line)
		}
		c.lines, c.at, s = append(c.lines, line), append(c.at, time.Since(c.start)), rest
	}
	c.partial = s
	return len(p), nil
}

func (c *timedConsole) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var b strings.Builder
	for i, l := range c.lines {
		fmt.Fprintf(&b, "%7.2f %s\n", c.at[i].Seconds(), l)
	}
	return b.String() + c.partial
}

// find is the n-th (from 0) line holding s, and when it came.
func (c *timedConsole) find(s string, n int) (string, time.Duration, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, l := range c.lines {
		if strings.Contains(l, s) {
			if n == 0 {
				return l, c.at[i], true
			}
			n--
		}
	}
	return "", 0, false
}

// waitFor waits up to d for the n-th line holding s.
func (c *timedConsole) waitFor(t *testing.T, s string, n int, d time.Duration) (string, time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if l, at, ok := c.find(s, n); ok {
			return l, at
		}
		c.mu.Lock()
		ended := c.ended
		c.mu.Unlock()
		if ended {
			if l, at, ok := c.find(s, n); ok {
				return l, at
			}
			t.Fatalf("the VM ended without its console saying %q (#%d)", s, n+1)
		}
	}
	t.Fatalf("the console never said %q (#%d) within %s", s, n+1, d)
	return "", 0
}
