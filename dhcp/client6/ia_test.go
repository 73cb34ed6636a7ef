package client6

import (
	"net"
	"slices"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"
)

var (
	testIAID   = [4]byte{0, 0, 0, 2}
	clientDUID = &dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: net.HardwareAddr{2, 0, 0, 0, 0, 2}}
	serverDUID = &dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: net.HardwareAddr{2, 0, 0, 0, 0, 1}}
	testAsker  = asker{duid: clientDUID, iaid: testIAID, prefixLen: 56}
	t0         = time.Unix(1_800_000_000, 0)
)

// Pieces of a server's messages, as insomniacslk builds them.

func status(code iana.StatusCode) *dhcpv6.OptStatusCode {
	return &dhcpv6.OptStatusCode{StatusCode: code, StatusMessage: code.String() + " says the server"}
}

func addr(ip string, pref, valid int) *dhcpv6.OptIAAddress {
	return &dhcpv6.OptIAAddress{IPv6Addr: net.ParseIP(ip), PreferredLifetime: time.Duration(pref) * time.Second, ValidLifetime: time.Duration(valid) * time.Second}
}

func prefix(cidr string, pref, valid int) *dhcpv6.OptIAPrefix {
	ip, n, err := net.ParseCIDR(cidr)
	if err != nil {
		panic(err)
	}
	return &dhcpv6.OptIAPrefix{Prefix: &net.IPNet{IP: ip, Mask: n.Mask}, PreferredLifetime: time.Duration(pref) * time.Second, ValidLifetime: time.Duration(valid) * time.Second}
}

func na(t1, t2 int, opts ...dhcpv6.Option) *dhcpv6.OptIANA {
	return &dhcpv6.OptIANA{IaId: testIAID, T1: time.Duration(t1) * time.Second, T2: time.Duration(t2) * time.Second, Options: dhcpv6.IdentityOptions{Options: opts}}
}

func pd(t1, t2 int, opts ...dhcpv6.Option) *dhcpv6.OptIAPD {
	return &dhcpv6.OptIAPD{IaId: testIAID, T1: time.Duration(t1) * time.Second, T2: time.Duration(t2) * time.Second, Options: dhcpv6.PDOptions{Options: opts}}
}

// serverMsg is a message of typ from the server to the test's client.
func serverMsg(t testing.TB, typ dhcpv6.MessageType, opts ...dhcpv6.Option) *dhcpv6.Message {
	m, err := dhcpv6.NewMessage()
	if err != nil {
		t.Fatal(err)
	}
	m.MessageType = typ
	m.AddOption(dhcpv6.OptClientID(clientDUID))
	m.AddOption(dhcpv6.OptServerID(serverDUID))
	for _, o := range opts {
		m.AddOption(o)
	}
	// What goes over the wire, and what the client parses.
	back, err := dhcpv6.MessageFromBytes(m.ToBytes())
	if err != nil {
		t.Fatal(err)
	}
	return back
}

// held is the binding the client has when a Renew's Reply comes: an
// address and a /56, granted at t0.
func held(t testing.TB) *binding {
	a, err := testAsker.take(nil, serverMsg(t, dhcpv6.MessageTypeReply,
		na(40, 64, addr("2001:db8:0:1::100", 80, 100)),
		pd(40, 64, prefix("2001:db8:100::/56", 80, 100))), t0)
	if err != nil || a.b == nil {
		t.Fatalf("the held binding: %v %+v", err, a)
	}
	return a.b
}

func addrsOf(b *binding) []string {
	var out []string
	if b != nil {
		for _, a := range b.addrs() {
			out = append(out, a.IPv6Addr.String()+"/"+a.ValidLifetime.String())
		}
	}
	return out
}

func prefixesOf(b *binding) []string {
	var out []string
	if b != nil {
		for _, p := range b.prefixes() {
			out = append(out, p.Prefix.String()+"/"+p.ValidLifetime.String())
		}
	}
	return out
}

// TestTake: what the client makes of each kind of answer the servers
// give, from a Solicit's Advertise to a Renew's Reply 30 s into a
// binding.
func TestTake(t *testing.T) {
	for _, tc := range []struct {
		name             string
		held             bool
		typ              dhcpv6.MessageType
		opts             []dhcpv6.Option
		err              bool
		granted, request bool
		addrs, prefixes  []string
		na, pd           iaState
	}{{
		name: "a prefix and no IA_NA at all, NoAddrsAvail at the top (ISC dhcpd, PD only)",
		typ:  dhcpv6.MessageTypeAdvertise, opts: []dhcpv6.Option{status(iana.StatusNoAddrsAvail), pd(0, 0, prefix("2001:db8:100::/56", 80, 100))},
		granted: true, prefixes: []string{"2001:db8:100::/56/1m40s"}, na: iaMissing, pd: iaGranted,
	}, {
		name: "a prefix, and NoAddrsAvail inside the IA_NA",
		typ:  dhcpv6.MessageTypeAdvertise, opts: []dhcpv6.Option{na(0, 0, status(iana.StatusNoAddrsAvail)), pd(20, 32, prefix("2001:db8:100::/56", 40, 60))},
		granted: true, prefixes: []string{"2001:db8:100::/56/1m0s"}, na: iaNone, pd: iaGranted,
	}, {
		name: "an address and NoPrefixAvail inside the IA_PD (dnsmasq, kea without pd-pools)",
		typ:  dhcpv6.MessageTypeReply, opts: []dhcpv6.Option{na(60, 105, addr("2001:db8:0:1::100", 120, 120)), pd(0, 0, status(iana.StatusNoPrefixAvail))},
		granted: true, addrs: []string{"2001:db8:0:1::100/2m0s"}, na: iaGranted, pd: iaNone,
	}, {
		name: "NoAddrsAvail and nothing else: an Advertise to ignore",
		typ:  dhcpv6.MessageTypeAdvertise, opts: []dhcpv6.Option{status(iana.StatusNoAddrsAvail)},
		na: iaMissing, pd: iaMissing,
	}, {
		name: "UnspecFail at the top refuses it all",
		typ:  dhcpv6.MessageTypeReply, opts: []dhcpv6.Option{status(iana.StatusUnspecFail), pd(0, 0, prefix("2001:db8:100::/56", 80, 100))},
		err: true,
	}, {
		name: "renewed both",
		held: true, typ: dhcpv6.MessageTypeReply,
		opts:    []dhcpv6.Option{na(40, 64, addr("2001:db8:0:1::100", 80, 100)), pd(40, 64, prefix("2001:db8:100::/56", 80, 100))},
		granted: true, addrs: []string{"2001:db8:0:1::100/1m40s"}, prefixes: []string{"2001:db8:100::/56/1m40s"}, na: iaGranted, pd: iaGranted,
	}, {
		name: "NoBinding in the IA_NA: the prefix renewed, the address kept, a Request",
		held: true, typ: dhcpv6.MessageTypeReply,
		opts:    []dhcpv6.Option{na(0, 0, status(iana.StatusNoBinding)), pd(40, 64, prefix("2001:db8:100::/56", 80, 100))},
		granted: true, request: true, addrs: []string{"2001:db8:0:1::100/1m10s"}, prefixes: []string{"2001:db8:100::/56/1m40s"}, na: iaNoBinding, pd: iaGranted,
	}, {
		name: "NoBinding in both (a server restarted without its leases)",
		held: true, typ: dhcpv6.MessageTypeReply,
		opts:    []dhcpv6.Option{na(0, 0, status(iana.StatusNoBinding)), pd(0, 0, status(iana.StatusNoBinding))},
		request: true, addrs: []string{"2001:db8:0:1::100/1m10s"}, prefixes: []string{"2001:db8:100::/56/1m10s"}, na: iaNoBinding, pd: iaNoBinding,
	}, {
		name: "NoBinding at the top level, no IA",
		held: true, typ: dhcpv6.MessageTypeReply, opts: []dhcpv6.Option{status(iana.StatusNoBinding)},
		request: true, addrs: []string{"2001:db8:0:1::100/1m10s"}, prefixes: []string{"2001:db8:100::/56/1m10s"}, na: iaNoBinding, pd: iaNoBinding,
	}, {
		name: "NoPrefixAvail in the IA_PD leaves the address renewed and the prefix kept",
		held: true, typ: dhcpv6.MessageTypeReply,
		opts:    []dhcpv6.Option{na(40, 64, addr("2001:db8:0:1::100", 80, 100)), pd(0, 0, status(iana.StatusNoPrefixAvail))},
		granted: true, addrs: []string{"2001:db8:0:1::100/1m40s"}, prefixes: []string{"2001:db8:100::/56/1m10s"}, na: iaGranted, pd: iaNone,
	}, {
		name: "NoAddrsAvail in the IA_NA leaves the prefix renewed",
		held: true, typ: dhcpv6.MessageTypeReply,
		opts:    []dhcpv6.Option{na(0, 0, status(iana.StatusNoAddrsAvail)), pd(40, 64, prefix("2001:db8:100::/56", 80, 100))},
		granted: true, addrs: []string{"2001:db8:0:1::100/1m10s"}, prefixes: []string{"2001:db8:100::/56/1m40s"}, na: iaNone, pd: iaGranted,
	}, {
		name: "NoBinding for an IA the client holds nothing in (dhcp6s, every Renew): no Request",
		typ:  dhcpv6.MessageTypeReply, opts: []dhcpv6.Option{na(0, 0, status(iana.StatusNoBinding)), pd(40, 64, prefix("2001:db8:100::/56", 80, 100))},
		granted: true, prefixes: []string{"2001:db8:100::/56/1m40s"}, na: iaNoBinding, pd: iaGranted,
	}, {
		name: "the prefix taken back (valid lifetime 0), no other: it goes, and a Request",
		held: true, typ: dhcpv6.MessageTypeReply,
		opts:    []dhcpv6.Option{na(40, 64, addr("2001:db8:0:1::100", 80, 100)), pd(0, 0, prefix("2001:db8:100::/56", 0, 0))},
		granted: true, request: true, addrs: []string{"2001:db8:0:1::100/1m40s"}, na: iaGranted, pd: iaTakenBack,
	}, {
		name: "renumbered: the old prefix taken back, a new one in the same IA",
		held: true, typ: dhcpv6.MessageTypeReply,
		opts:    []dhcpv6.Option{na(40, 64, addr("2001:db8:0:1::100", 80, 100)), pd(40, 64, prefix("2001:db8:100::/56", 0, 0), prefix("2001:db8:200::/56", 80, 100))},
		granted: true, addrs: []string{"2001:db8:0:1::100/1m40s"}, prefixes: []string{"2001:db8:200::/56/1m40s"}, na: iaGranted, pd: iaGranted,
	}, {
		name: "a server that does not do IA_PD leaves it out of a Renew's Reply: the prefix kept",
		held: true, typ: dhcpv6.MessageTypeReply, opts: []dhcpv6.Option{na(40, 64, addr("2001:db8:0:1::100", 80, 100))},
		granted: true, addrs: []string{"2001:db8:0:1::100/1m40s"}, prefixes: []string{"2001:db8:100::/56/1m10s"}, na: iaGranted, pd: iaMissing,
	}, {
		name: "T1 beyond T2: the IA is ignored (RFC 8415 21.4)",
		typ:  dhcpv6.MessageTypeReply, opts: []dhcpv6.Option{na(50, 40, addr("2001:db8:0:1::100", 80, 100)), pd(40, 64, prefix("2001:db8:100::/56", 80, 100))},
		granted: true, prefixes: []string{"2001:db8:100::/56/1m40s"}, na: iaMissing, pd: iaGranted,
	}, {
		name: "another IAID is not the client's",
		typ:  dhcpv6.MessageTypeReply, opts: []dhcpv6.Option{&dhcpv6.OptIAPD{IaId: [4]byte{9}, Options: dhcpv6.PDOptions{Options: dhcpv6.Options{prefix("2001:db8:100::/56", 80, 100)}}}},
		na: iaMissing, pd: iaMissing,
	}, {
		name: "leases it cannot use: preferred beyond valid, link-local, a /0; host bits cleared",
		typ:  dhcpv6.MessageTypeReply,
		opts: []dhcpv6.Option{na(0, 0, addr("2001:db8:0:1::100", 200, 100), addr("fe80::1", 80, 100)),
			pd(0, 0, prefix("::/0", 80, 100), prefix("2001:db8:100:ff::1/56", 80, 100))},
		granted: true, prefixes: []string{"2001:db8:100::/56/1m40s"}, na: iaNone, pd: iaGranted,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			var h *binding
			now := t0
			if tc.held {
				h, now = held(t), t0.Add(30*time.Second)
			}
			a, err := testAsker.take(h, serverMsg(t, tc.typ, tc.opts...), now)
			if tc.err {
				if err == nil {
					t.Fatalf("accepted: %v", a)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if a.granted != tc.granted || a.request != tc.request || a.na.state != tc.na || a.pd.state != tc.pd {
				t.Errorf("granted %v request %v %s; want granted %v request %v IA_NA %s, IA_PD %s", a.granted, a.request, a, tc.granted, tc.request, tc.na, tc.pd)
			}
			if got := addrsOf(a.b); !slices.Equal(got, tc.addrs) {
				t.Errorf("addresses %v, want %v", got, tc.addrs)
			}
			if got := prefixesOf(a.b); !slices.Equal(got, tc.prefixes) {
				t.Errorf("prefixes %v, want %v", got, tc.prefixes)
			}
			if a.b != nil && !a.b.acquired.Equal(now) {
				t.Errorf("the binding counts from %v, want %v", a.b.acquired, now)
			}
		})
	}
}

// TestMessages: a Request asks for what the Advertise offered (no IA_NA
// when only a prefix was); a Renew and a Rebind ask for an address and a
// prefix whatever the binding holds, the held ones with lifetimes 0.
func TestMessages(t *testing.T) {
	adv := serverMsg(t, dhcpv6.MessageTypeAdvertise, status(iana.StatusNoAddrsAvail), pd(0, 0, prefix("2001:db8:100::/56", 80, 100)))
	offer, err := testAsker.take(nil, adv, t0)
	if err != nil {
		t.Fatal(err)
	}
	onlyPD, err := testAsker.take(nil, serverMsg(t, dhcpv6.MessageTypeReply, pd(20, 32, prefix("2001:db8:100::/56", 40, 60))), t0)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		typ      dhcpv6.MessageType
		server   dhcpv6.DUID
		b        *binding
		all      bool
		na       []string // nil: no IA_NA
		pd       []string // nil: no IA_PD
		noServer bool
	}{
		{name: "Solicit", typ: dhcpv6.MessageTypeSolicit, all: true, na: []string{}, pd: []string{"::/56"}, noServer: true},
		{name: "Request from a PD-only Advertise", typ: dhcpv6.MessageTypeRequest, server: adv.Options.ServerID(), b: offer.b, pd: []string{"2001:db8:100::/56"}},
		{name: "Renew of a prefix asks for an address too", typ: dhcpv6.MessageTypeRenew, server: serverDUID, b: onlyPD.b, all: true, na: []string{}, pd: []string{"2001:db8:100::/56"}},
		{name: "Rebind of both", typ: dhcpv6.MessageTypeRebind, b: held(t), all: true, na: []string{"2001:db8:0:1::100"}, pd: []string{"2001:db8:100::/56"}, noServer: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := testAsker.message(tc.typ, tc.server, tc.b, tc.all)
			if err != nil {
				t.Fatal(err)
			}
			m, err = dhcpv6.MessageFromBytes(m.ToBytes())
			if err != nil {
				t.Fatal(err)
			}
			if m.MessageType != tc.typ || m.Options.ClientID() == nil || (m.Options.ServerID() == nil) != tc.noServer {
				t.Fatalf("%s", m.Summary())
			}
			ianas, iapds := m.Options.IANA(), m.Options.IAPD()
			if (tc.na == nil) != (len(ianas) == 0) || (tc.pd == nil) != (len(iapds) == 0) || len(ianas) > 1 || len(iapds) > 1 {
				t.Fatalf("IAs: want IA_NA %v IA_PD %v:\n%s", tc.na, tc.pd, m.Summary())
			}
			if len(ianas) == 1 {
				var got []string
				for _, a := range ianas[0].Options.Addresses() {
					got = append(got, a.IPv6Addr.String())
					if a.PreferredLifetime != 0 || a.ValidLifetime != 0 {
						t.Errorf("lifetimes %v %v in the client's IA_NA", a.PreferredLifetime, a.ValidLifetime)
					}
				}
				if ianas[0].IaId != testIAID || ianas[0].T1 != 0 || ianas[0].T2 != 0 || !slices.Equal(got, tc.na) && len(got)+len(tc.na) > 0 {
					t.Errorf("IA_NA %s, want addresses %v", ianas[0], tc.na)
				}
			}
			if len(iapds) == 1 {
				var got []string
				for _, p := range iapds[0].Options.Prefixes() {
					got = append(got, p.Prefix.String())
					if p.PreferredLifetime != 0 || p.ValidLifetime != 0 {
						t.Errorf("lifetimes %v %v in the client's IA_PD", p.PreferredLifetime, p.ValidLifetime)
					}
				}
				if iapds[0].IaId != testIAID || iapds[0].T1 != 0 || iapds[0].T2 != 0 || !slices.Equal(got, tc.pd) {
					t.Errorf("IA_PD %s, want prefixes %v", iapds[0], tc.pd)
				}
			}
		})
	}
}

// TestAnswers: only a message of the type waited for, to this client's
// DUID, with a server ID, is an answer.
func TestAnswers(t *testing.T) {
	good := serverMsg(t, dhcpv6.MessageTypeReply)
	other := serverMsg(t, dhcpv6.MessageTypeReply)
	other.UpdateOption(dhcpv6.OptClientID(serverDUID))
	noServer := serverMsg(t, dhcpv6.MessageTypeReply)
	noServer.Options.Del(dhcpv6.OptionServerID)
	for _, tc := range []struct {
		name string
		m    *dhcpv6.Message
		typ  dhcpv6.MessageType
		want bool
	}{
		{"a Reply to the client", good, dhcpv6.MessageTypeReply, true},
		{"a Reply while an Advertise is awaited", good, dhcpv6.MessageTypeAdvertise, false},
		{"another client's", other, dhcpv6.MessageTypeReply, false},
		{"no server ID", noServer, dhcpv6.MessageTypeReply, false},
	} {
		if got := testAsker.answers(tc.typ, tc.m); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestTimes: T1 and T2 are the server's, the earliest of the IAs'; where
// it says 0, 0.5 and 0.8 of the shortest preferred lifetime (RFC 8415
// 18.2.4), not of the valid one.
func TestTimes(t *testing.T) {
	for _, tc := range []struct {
		name        string
		opts        []dhcpv6.Option
		t1, t2, end int
	}{
		{"the server's, earliest of the IAs", []dhcpv6.Option{na(40, 60, addr("2001:db8:0:1::100", 80, 100)), pd(30, 50, prefix("2001:db8:100::/56", 90, 120))}, 30, 50, 120},
		{"0: from the shortest preferred lifetime", []dhcpv6.Option{pd(0, 0, prefix("2001:db8:100::/56", 100, 1000), prefix("2001:db8:200::/56", 80, 1000))}, 40, 64, 1000},
		{"0 for one IA only", []dhcpv6.Option{na(0, 0, addr("2001:db8:0:1::100", 20, 100)), pd(30, 50, prefix("2001:db8:100::/56", 90, 120))}, 10, 16, 120},
		{"T2 0 alone, not before T1", []dhcpv6.Option{pd(60, 0, prefix("2001:db8:100::/56", 50, 100))}, 60, 60, 100},
		{"all deprecated: from the valid lifetime", []dhcpv6.Option{na(0, 0, addr("2001:db8:0:1::100", 0, 100))}, 50, 80, 100},
		{"at least a second", []dhcpv6.Option{na(0, 0, addr("2001:db8:0:1::100", 1, 1))}, 1, 1, 1},
	} {
		a, err := testAsker.take(nil, serverMsg(t, dhcpv6.MessageTypeReply, tc.opts...), t0)
		if err != nil || a.b == nil {
			t.Fatalf("%s: %v %v", tc.name, err, a)
		}
		t1, t2, end := a.b.times()
		if t1 != time.Duration(tc.t1)*time.Second || t2 != time.Duration(tc.t2)*time.Second || end != time.Duration(tc.end)*time.Second {
			t.Errorf("%s: T1 %v T2 %v end %v, want %d %d %d s", tc.name, t1, t2, end, tc.t1, tc.t2, tc.end)
		}
	}
}

// TestKeptIARidesAlong: an IA the server would not extend is kept with
// T1 and T2 left to the client, so it is asked for again at the renewed
// IA's T1 or before its own preferred lifetime runs out, and it is gone
// once its valid lifetime ends.
func TestKeptIARidesAlong(t *testing.T) {
	h := held(t) // T1 40, T2 64; lifetimes 80 and 100
	at := t0.Add(30 * time.Second)
	a, err := testAsker.take(h, serverMsg(t, dhcpv6.MessageTypeReply, na(40, 64, addr("2001:db8:0:1::100", 80, 100)), pd(0, 0, status(iana.StatusNoPrefixAvail))), at)
	if err != nil {
		t.Fatal(err)
	}
	// The prefix has 50 s of preferred lifetime left: 25 s to T1.
	if t1, t2, _ := a.b.times(); t1 != 25*time.Second || t2 != 40*time.Second {
		t.Errorf("T1 %v T2 %v, want 25 s and 40 s", t1, t2)
	}
	// 80 s later the prefix's 70 s left have run out.
	later, err := testAsker.take(a.b, serverMsg(t, dhcpv6.MessageTypeReply, na(40, 64, addr("2001:db8:0:1::100", 80, 100)), pd(0, 0, status(iana.StatusNoPrefixAvail))), at.Add(80*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if got := prefixesOf(later.b); len(got) != 0 || len(later.b.addrs()) != 1 {
		t.Errorf("prefixes %v, addresses %v after the prefix's end", got, addrsOf(later.b))
	}
}

// FuzzTake: whatever a server sends in answer to a Renew, the binding the
// client makes of it holds only its own IAs and usable leases, has sane
// times, and survives the state file.
func FuzzTake(f *testing.F) {
	f.Add(serverMsg(f, dhcpv6.MessageTypeReply, na(40, 64, addr("2001:db8:0:1::100", 80, 100)), pd(0, 0, status(iana.StatusNoPrefixAvail))).ToBytes())
	f.Add(serverMsg(f, dhcpv6.MessageTypeReply, status(iana.StatusNoBinding)).ToBytes())
	f.Add(serverMsg(f, dhcpv6.MessageTypeReply, na(0, 0, status(iana.StatusNoBinding)), pd(40, 64, prefix("2001:db8:100::/56", 0, 0), prefix("2001:db8:200::/48", 80, 100))).ToBytes())
	h := held(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := dhcpv6.MessageFromBytes(data)
		if err != nil {
			return
		}
		a, err := testAsker.take(h, m, t0.Add(30*time.Second))
		if err != nil || a.b == nil {
			return
		}
		for _, ia := range a.b.reply.Options.IANA() {
			if ia.IaId != testIAID {
				t.Fatalf("an IA_NA of another IAID: %s", ia)
			}
		}
		for _, ia := range a.b.reply.Options.IAPD() {
			if ia.IaId != testIAID {
				t.Fatalf("an IA_PD of another IAID: %s", ia)
			}
		}
		for _, x := range a.b.addrs() {
			if x.PreferredLifetime > x.ValidLifetime || !usableAddr(x.IPv6Addr) {
				t.Fatalf("address %s", x)
			}
		}
		for _, p := range a.b.prefixes() {
			if ones, bits := p.Prefix.Mask.Size(); p.PreferredLifetime > p.ValidLifetime || bits != 128 || ones == 0 || !p.Prefix.IP.Equal(p.Prefix.IP.Mask(p.Prefix.Mask)) {
				t.Fatalf("prefix %s", p)
			}
		}
		if t1, t2, end := a.b.times(); t1 < time.Second || t2 < t1 || end <= 0 {
			t.Fatalf("times %v %v %v", t1, t2, end)
		}
		kept, err := dhcpv6.MessageFromBytes(a.b.reply.ToBytes())
		if err != nil {
			t.Fatalf("the binding does not parse back: %v", err)
		}
		if _, err := checkReply(kept); err != nil {
			t.Fatalf("the kept binding is refused: %v", err)
		}
		if _, err := testAsker.message(dhcpv6.MessageTypeRenew, kept.Options.ServerID(), a.b, true); err != nil {
			t.Fatal(err)
		}
	})
}
