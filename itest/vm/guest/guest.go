// Package guest is what a test asks of a VM that runs roostd as its own
// init (the MIPS malta tier: the host's root cannot be shared with another
// architecture), and what that init reports back on the console.
package guest

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// SpecFile is where the initramfs holds the Spec.
const SpecFile = "/etc/roost-vm.json"

// The markers around the report and roostd's log on the console. The
// report is one line of JSON, so that a kernel message cannot split it
// unseen.
const (
	ReportBegin = "ROOST-VM-REPORT-BEGIN"
	ReportEnd   = "ROOST-VM-REPORT-END"
	LogBegin    = "ROOST-VM-ROOSTD-LOG-BEGIN"
	LogEnd      = "ROOST-VM-ROOSTD-LOG-END"
)

// Spec is what the init does: it writes Config to /etc/roost.json, starts
// `roostd run --root / --state /persist/roost --config /etc/roost.json`,
// and polls `roostd status --json` until every service in Wait is in its
// state there, or WaitSeconds pass. It loads no kernel module.
type Spec struct {
	Config json.RawMessage `json:"config"`
	// ReadOnlyState makes /persist/roost a read-only tmpfs: roostd cannot
	// write its SSH host key there.
	ReadOnlyState bool              `json:"readOnlyState,omitempty"`
	Wait          map[string]string `json:"wait"` // service name or kind → state ("up", "failed")
	WaitSeconds   int               `json:"waitSeconds"`
	Read          []string          `json:"read,omitempty"` // files whose contents the report carries
}

// Report is what the init saw. Times are seconds since the kernel booted
// (/proc/uptime), so they include the boot.
type Report struct {
	Status      json.RawMessage   `json:"status"`          // the last answer of roostd status --json
	Waited      bool              `json:"waited"`          // every Wait state was seen
	Error       string            `json:"error,omitempty"` // what went wrong in the guest
	StartedAt   float64           `json:"startedAt"`       // roostd started
	AnsweredAt  float64           `json:"answeredAt"`      // status first answered with the agent running
	WaitedAt    float64           `json:"waitedAt"`        // every Wait state was seen
	VmRSSKiB    int               `json:"vmRSSKiB"`        // roostd's resident set then
	Files       map[string]string `json:"files,omitempty"` // Spec.Read
	StopStatus  string            `json:"stopStatus"`      // how roostd ended on SIGTERM
	MemTotalKiB int               `json:"memTotalKiB"`     // the kernel's MemTotal
}

// Parse finds the report and roostd's log in the console output.
func Parse(console string) (Report, string, error) {
	console = strings.ReplaceAll(console, "\r\n", "\n")
	var r Report
	body, ok := between(console, ReportBegin, ReportEnd)
	if !ok {
		return r, "", errors.New("no report on the console")
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(body)), &r); err != nil {
		return r, "", fmt.Errorf("the report on the console: %w", err)
	}
	log, _ := between(console, LogBegin, LogEnd)
	return r, strings.Trim(log, "\n"), nil
}

func between(s, begin, end string) (string, bool) {
	_, rest, ok := strings.Cut(s, begin+"\n")
	if !ok {
		return "", false
	}
	body, _, ok := strings.Cut(rest, end+"\n")
	return body, ok
}
