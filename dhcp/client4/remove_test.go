package client4

import (
	"net"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/roostrouter/roost/agent/supervisor"
)

func TestReleaseFor(t *testing.T) {
	a := ack(t, time.Hour)
	a.ClientHWAddr = net.HardwareAddr{2, 0, 0, 0, 0, 2}
	for _, tc := range []struct {
		name     string
		clientID string
	}{{"without a client ID", ""}, {"with a client ID", "rotuer-wan"}} {
		t.Run(tc.name, func(t *testing.T) {
			c := &Client{Hostname: "rotuer", ClientID: tc.clientID}
			m, err := c.releaseFor(&lease{ack: a})
			if err != nil {
				t.Fatal(err)
			}
			// What a server checks to free the lease.
			if m.MessageType() != dhcpv4.MessageTypeRelease || !m.ClientIPAddr.Equal(net.IPv4(192, 0, 2, 100)) ||
				!m.ServerIdentifier().Equal(net.IPv4(192, 0, 2, 1)) || m.ClientHWAddr.String() != "02:00:00:00:00:02" {
				t.Fatalf("release: %s", m.Summary())
			}
			if got := string(m.Options.Get(dhcpv4.OptionClientIdentifier)); got != tc.clientID {
				t.Errorf("client identifier %q, want %q", got, tc.clientID)
			}
			// RFC 2131 table 5: no other option, the host name included.
			for _, o := range []dhcpv4.OptionCode{dhcpv4.OptionHostName, dhcpv4.OptionRequestedIPAddress, dhcpv4.OptionIPAddressLeaseTime, dhcpv4.OptionParameterRequestList} {
				if m.Options.Has(o) {
					t.Errorf("the release carries option %v", o)
				}
			}
		})
	}
}

// A client that never ran has no link record: Remove touches nothing.
func TestRemoveNeverRan(t *testing.T) {
	c := &Client{StateDir: t.TempDir(), LinkRef: supervisor.Ref{Service: "wan", Key: "ifname"}}
	if err := c.Remove(t.Context()); err != nil {
		t.Fatal(err)
	}
}
