package retry

import (
	"context"
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	var b Backoff
	var got []time.Duration
	for i := 0; i < 8; i++ {
		got = append(got, b.Next())
	}
	want := []time.Duration{1, 2, 4, 8, 16, 32, 60, 60}
	for i := range want {
		if got[i] != want[i]*time.Second {
			t.Fatalf("waits %v", got)
		}
	}
	b.Reset()
	if b.Next() != time.Second {
		t.Fatal("Reset did not start over")
	}
}

func TestSleepEndsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if Sleep(ctx, time.Hour) {
		t.Fatal("Sleep ignored a cancelled context")
	}
	if !Sleep(context.Background(), time.Millisecond) {
		t.Fatal("Sleep failed without a cancellation")
	}
}

func TestUntil(t *testing.T) {
	b := Backoff{First: time.Millisecond}
	tries := 0
	var waits []time.Duration
	v, ok := Until(context.Background(), &b, func() (int, error) {
		if tries++; tries < 3 {
			return 0, context.DeadlineExceeded
		}
		return 42, nil
	}, func(_ error, wait time.Duration) { waits = append(waits, wait) })
	if !ok || v != 42 || len(waits) != 2 || waits[0] != time.Millisecond || waits[1] != 2*time.Millisecond {
		t.Fatalf("Until = %d, %v after waits %v", v, ok, waits)
	}
	if b.Next() != time.Millisecond {
		t.Fatal("a success did not start the backoff over")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, ok := Until(ctx, &b, func() (int, error) { return 0, context.Canceled }, func(error, time.Duration) {}); ok {
		t.Fatal("Until went on after its context ended")
	}
}

// TestLease: a renewal gives up at T2 and the rebind starts there at once;
// a rebind gives up when the lease ends; a retry waits half the time left,
// at least 2 s, never past T2 or the end.
func TestLease(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	l := Lease{T2: at(87.5), End: at(100)}
	for _, tc := range []struct {
		name              string
		start, now        float64 // the exchange's start, and when it ended unanswered
		deadline, retryAt float64
	}{
		{"renewing at T1", 50, 54, 87.5, 70.75},
		{"renewing, 2 s at least", 80, 84, 87.5, 86},
		{"renewing, the 2 s end at T2", 86, 86.5, 87.5, 87.5},
		{"a renewal cut at T2 rebinds at once", 86, 87.5, 87.5, 87.5},
		{"rebinding at T2", 87.5, 91.5, 100, 95.75},
		{"rebinding, 2 s at least", 95, 96.5, 100, 98.5},
		{"rebinding, no later than the end", 98, 99, 100, 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := l.Deadline(at(tc.start)); !got.Equal(at(tc.deadline)) {
				t.Errorf("deadline of an exchange at %v s: %v s, want %v s", tc.start, got.Sub(t0).Seconds(), tc.deadline)
			}
			if got := l.RetryAt(at(tc.start), at(tc.now)); !got.Equal(at(tc.retryAt)) {
				t.Errorf("retry after an exchange from %v s to %v s: at %v s, want %v s", tc.start, tc.now, got.Sub(t0).Seconds(), tc.retryAt)
			}
		})
	}
}
