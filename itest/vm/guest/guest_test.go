package guest

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	console := "[    0.000000] Linux version 6.1.0\r\n" +
		LogBegin + "\r\nline one\r\nline two\r\n" + LogEnd + "\r\n" +
		ReportBegin + "\r\n" + `{"status":{"agent":"roostd dev"},"waited":true,"vmRSSKiB":9396}` + "\r\n" + ReportEnd + "\r\n" +
		"[    4.7] reboot: Power down\r\n"
	tests := []struct {
		name, console, wantErr, wantLog string
		wantRSS                         int
	}{
		{name: "report and log", console: console, wantLog: "line one\nline two", wantRSS: 9396},
		{name: "no report", console: "[    0.8] Kernel panic - not syncing\n", wantErr: "no report"},
		{name: "report cut short", console: ReportBegin + "\n{\"waited\":tr", wantErr: "no report"},
		{name: "report split by a kernel line", console: ReportBegin + "\n{\"waited\":\n[ 1.0] oops\ntrue}\n" + ReportEnd + "\n", wantErr: "the report"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, log, err := Parse(tc.console)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want one with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if log != tc.wantLog || r.VmRSSKiB != tc.wantRSS || !r.Waited || !strings.Contains(string(r.Status), "roostd dev") {
				t.Errorf("report %+v, log %q", r, log)
			}
		})
	}
}
