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
