package health

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

func TestCheck(t *testing.T) {
	now := time.Now()
	for _, tc := range []struct {
		name    string
		write   bool
		problem error
		age     time.Duration
		want    string // "" for healthy
	}{
		{name: "never written", want: "never said it runs"},
		{name: "ok", write: true},
		{name: "ok but stale", write: true, age: Stale + time.Second, want: "has not said it runs for 1m1s"},
		{name: "unhealthy", write: true, problem: errors.New("trial not confirmed\nby 10:00"), want: "trial not confirmed by 10:00"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			if tc.write {
				if err := Write(root, tc.problem); err != nil {
					t.Fatal(err)
				}
				if err := os.Chtimes(File(root), now.Add(-tc.age), now.Add(-tc.age)); err != nil {
					t.Fatal(err)
				}
			}
			err := Check(root, now)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Check: %v, want healthy", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Check: %v, want %q", err, tc.want)
			}
		})
	}
}
