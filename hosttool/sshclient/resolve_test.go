package sshclient

import "testing"

// TestResolveFirstValueWins: as ssh(1) does, the first value a host
// obtains for a key is kept, whichever block it comes from; a Host line
// may hold several patterns and negations; keywords are case-blind.
func TestResolveFirstValueWins(t *testing.T) {
	h := newHome(t)
	h.write("config", `
Host * !bastion
    User early

Host rotuer lab?
    HostName 192.0.2.1
    User late
    Port 2222

host UPPER
    hostname 192.0.2.9
    PORT 2200

Host *
    Port 2022
    User fallback
`)
	for _, tc := range []struct {
		host               string
		hostName, port, us string
	}{
		{"rotuer", "192.0.2.1", "2222", "early"},
		{"lab1", "192.0.2.1", "2222", "early"},
		{"lab10", "lab10", "2022", "early"}, // ? is one character
		{"bastion", "bastion", "2022", "fallback"},
		{"UPPER", "192.0.2.9", "2200", "early"},
		{"admin@rotuer", "192.0.2.1", "2222", "admin"},
	} {
		t.Run(tc.host, func(t *testing.T) {
			got, err := Resolve(h.opts(), tc.host)
			if err != nil {
				t.Fatal(err)
			}
			if got.HostName != tc.hostName || got.Port != tc.port || got.User != tc.us {
				t.Errorf("%s resolves to %s@%s, want %s@%s", tc.host, got.User, got.Addr(), tc.us, tc.hostName+":"+tc.port)
			}
		})
	}
}
