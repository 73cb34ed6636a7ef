package progress

import (
	"strings"
	"testing"
	"time"
)

// clock is a test's time, moved by hand.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

type step struct {
	after             time.Duration // since the step before
	done, total       int
	bytes, totalBytes int64
}

func TestBar(t *testing.T) {
	const mib = 1 << 20
	steps := []step{
		{0, 0, 4, 0, 20 * mib},
		{50 * time.Millisecond, 1, 4, 1 * mib, 20 * mib},    // too soon for a terminal
		{100 * time.Millisecond, 1, 4, 2 * mib, 20 * mib},   // terminal redraws
		{4 * time.Second, 2, 4, 6 * mib, 20 * mib},          // under 5 s: no plain line yet
		{1 * time.Second, 3, 4, 10 * mib, 20 * mib},         // 5.15 s: a plain line
		{4850 * time.Millisecond, 4, 4, 20 * mib, 20 * mib}, // complete: always shown
		{time.Second, 4, 4, 20 * mib, 20 * mib},             // after the end: nothing
	}
	for _, tc := range []struct {
		name string
		tty  bool
		want string
	}{
		{"terminal", true,
			"\r\x1b[Kcopying [                        ] 0/4 paths  0.0 MiB/20.0 MiB  0.0 MiB/s  ETA --:--" +
				"\r\x1b[Kcopying [==                      ] 1/4 paths  2.0 MiB/20.0 MiB  13.3 MiB/s  ETA 0:01" +
				"\r\x1b[Kcopying [=======                 ] 2/4 paths  6.0 MiB/20.0 MiB  1.4 MiB/s  ETA 0:09" +
				"\r\x1b[Kcopying [============            ] 3/4 paths  10.0 MiB/20.0 MiB  1.9 MiB/s  ETA 0:05" +
				"\r\x1b[Kcopying [========================] 4/4 paths  20.0 MiB/20.0 MiB  2.0 MiB/s  ETA --:--" +
				"\n"},
		{"plain", false,
			"copying [                        ] 0/4 paths  0.0 MiB/20.0 MiB  0.0 MiB/s  ETA --:--\n" +
				"copying [============            ] 3/4 paths  10.0 MiB/20.0 MiB  1.9 MiB/s  ETA 0:05\n" +
				"copying [========================] 4/4 paths  20.0 MiB/20.0 MiB  2.0 MiB/s  ETA --:--\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out strings.Builder
			c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
			b := &Bar{W: &out, TTY: tc.tty, Label: "copying", Now: c.now}
			for _, s := range steps {
				c.advance(s.after)
				b.Update(s.done, s.total, s.bytes, s.totalBytes)
			}
			b.Done()
			if out.String() != tc.want {
				t.Fatalf("got\n%q\nwant\n%q", out.String(), tc.want)
			}
		})
	}
}

func TestBarEdges(t *testing.T) {
	for _, tc := range []struct {
		name              string
		done, total       int
		bytes, totalBytes int64
		want              string
	}{
		{"nothing to send", 0, 0, 0, 0, "x [========================] 0/0 paths  0.0 MiB/0.0 MiB  0.0 MiB/s  ETA --:--\n"},
		{"more bytes than announced", 1, 2, 3 << 20, 2 << 20, "x [========================] 1/2 paths  3.0 MiB/2.0 MiB  0.0 MiB/s  ETA --:--\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out strings.Builder
			b := &Bar{W: &out, Label: "x"}
			b.Update(tc.done, tc.total, tc.bytes, tc.totalBytes)
			b.Done()
			if out.String() != tc.want {
				t.Fatalf("got %q, want %q", out.String(), tc.want)
			}
		})
	}
	// Done on a terminal that drew nothing leaves no empty line.
	var out strings.Builder
	(&Bar{W: &out, TTY: true}).Done()
	if out.Len() != 0 {
		t.Fatalf("Done without a bar wrote %q", out.String())
	}
}

func TestMiB(t *testing.T) {
	for n, want := range map[int64]string{0: "0.0 MiB", 1 << 20: "1.0 MiB", 1536 << 10: "1.5 MiB", 5 << 30: "5120.0 MiB"} {
		if got := MiB(n); got != want {
			t.Errorf("MiB(%d) = %q, want %q", n, got, want)
		}
	}
}
