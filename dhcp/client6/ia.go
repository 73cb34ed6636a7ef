package client6

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"
)

// What the client asks for and what it makes of the answers, packet by
// packet, without sockets: the unit tests and the fuzz target drive it
// with packets built in memory.

// asker is the client as the server knows it: its DUID, the IAID of its
// IA_NA and IA_PD (one of each), and the delegated prefix length it hints
// at (0: none). It always asks for both an address and a prefix: many
// ISPs delegate a prefix and give no address, some the other way round,
// and one that gives neither today may tomorrow.
type asker struct {
	duid      dhcpv6.DUID
	iaid      [4]byte
	prefixLen int
}

// message is a message of typ from the client: to server unless nil, with
// an IA_NA and an IA_PD holding what b holds (RFC 8415 18.2.4: the leases
// to renew, as hints in a Request). An IA b lacks goes in empty (the IA_PD
// with the length hint) when all is set, so that a Renew or Rebind asks
// again for what the server did not give (RFC 8415 18.2.4 lets it add
// leases); without all, only the IAs in b go (a Request for what an
// Advertise offered). T1, T2 and the lifetimes are 0: the server ignores
// them (RFC 8415 21.4, 21.6).
func (w asker) message(typ dhcpv6.MessageType, server dhcpv6.DUID, b *binding, all bool) (*dhcpv6.Message, error) {
	msg, err := dhcpv6.NewMessage()
	if err != nil {
		return nil, fmt.Errorf("dhcp6: new %s: %w", typ, err)
	}
	msg.MessageType = typ
	msg.AddOption(dhcpv6.OptClientID(w.duid))
	if server != nil {
		msg.AddOption(dhcpv6.OptServerID(server))
	}
	msg.AddOption(dhcpv6.OptElapsedTime(0))
	msg.AddOption(dhcpv6.OptRequestedOption(dhcpv6.OptionDNSRecursiveNameServer, dhcpv6.OptionDomainSearchList))
	var addrs []*dhcpv6.OptIAAddress
	var prefixes []*dhcpv6.OptIAPrefix
	if b != nil {
		addrs, prefixes = b.addrs(), b.prefixes()
	}
	if len(addrs) > 0 || all {
		na := &dhcpv6.OptIANA{IaId: w.iaid}
		for _, a := range addrs {
			na.Options.Add(&dhcpv6.OptIAAddress{IPv6Addr: a.IPv6Addr})
		}
		msg.AddOption(na)
	}
	if len(prefixes) > 0 || all {
		pd := &dhcpv6.OptIAPD{IaId: w.iaid}
		for _, p := range prefixes {
			pd.Options.Add(&dhcpv6.OptIAPrefix{Prefix: p.Prefix})
		}
		if len(prefixes) == 0 && w.prefixLen > 0 {
			pd.Options.Add(&dhcpv6.OptIAPrefix{Prefix: &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(w.prefixLen, 128)}})
		}
		msg.AddOption(pd)
	}
	return msg, nil
}

// answers says whether m is an answer of type typ to this client: its
// client ID ours and a server ID in it (RFC 8415 16.3, 16.10). Which
// exchange it answers, the transaction ID says (nclient6 checks it).
func (w asker) answers(typ dhcpv6.MessageType, m *dhcpv6.Message) bool {
	if m.MessageType != typ {
		return false
	}
	cid, sid := m.Options.ClientID(), m.Options.ServerID()
	return cid != nil && sid != nil && bytes.Equal(cid.ToBytes(), w.duid.ToBytes())
}

// iaState is what a server's message says of one of the client's IAs.
type iaState int

const (
	iaMissing   iaState = iota // not there, or not valid (T1 beyond T2): the server may not do that kind of IA
	iaGranted                  // leases with a valid lifetime
	iaNoBinding                // the server has no binding for it (it lost its leases)
	iaNone                     // NoAddrsAvail, NoPrefixAvail, another status, or no lease in it
	iaTakenBack                // every lease in it with a valid lifetime of 0 (RFC 8415 18.3.4)
)

var iaStateNames = [...]string{iaMissing: "missing", iaGranted: "granted", iaNoBinding: "NoBinding", iaNone: "none", iaTakenBack: "taken back"}

func (s iaState) String() string { return iaStateNames[s] }

// iaAnswer is one IA of a server's message: its state, the server's status
// message if any, and when granted the leases to use.
type iaAnswer struct {
	state  iaState
	status string
}

func (a iaAnswer) String() string {
	if a.status == "" {
		return a.state.String()
	}
	return a.state.String() + " (" + a.status + ")"
}

// classify is an IA's state from its status code and its leases.
func classify(st *dhcpv6.OptStatusCode, live, zero bool) iaAnswer {
	if st != nil && st.StatusCode != iana.StatusSuccess {
		a := iaAnswer{state: iaNone, status: statusText(st)}
		if st.StatusCode == iana.StatusNoBinding {
			a.state = iaNoBinding
		}
		return a
	}
	switch {
	case live:
		return iaAnswer{state: iaGranted}
	case zero:
		return iaAnswer{state: iaTakenBack}
	}
	return iaAnswer{state: iaNone, status: "no lease in it"}
}

// missing is the state of an IA the message does not hold. An old server
// that says NoBinding at the top level rather than in the IA (RFC 3315's
// servers sometimes did) means it for every IA.
func missing(msg *dhcpv6.Message) iaAnswer {
	if st := msg.Options.Status(); st != nil && st.StatusCode == iana.StatusNoBinding {
		return iaAnswer{state: iaNoBinding, status: statusText(st) + ", at the top level"}
	}
	return iaAnswer{state: iaMissing}
}

func statusText(st *dhcpv6.OptStatusCode) string {
	if st.StatusMessage == "" {
		return st.StatusCode.String()
	}
	// A server's words, in the log: printable and short.
	msg := strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, st.StatusMessage)
	if len(msg) > 80 {
		msg = msg[:80] + "…"
	}
	return st.StatusCode.String() + ": " + msg
}

// readNA is the client's IA_NA in msg, with only the addresses it can use:
// a valid lifetime, a preferred one no longer than that (RFC 8415 21.6),
// a global unicast address.
func (w asker) readNA(msg *dhcpv6.Message) (*dhcpv6.OptIANA, iaAnswer) {
	var ia *dhcpv6.OptIANA
	for _, o := range msg.Options.IANA() {
		if o.IaId == w.iaid {
			ia = o
			break
		}
	}
	if ia == nil || (ia.T1 > 0 && ia.T2 > 0 && ia.T1 > ia.T2) { // RFC 8415 21.4: ignore it
		return nil, missing(msg)
	}
	out := &dhcpv6.OptIANA{IaId: ia.IaId, T1: ia.T1, T2: ia.T2}
	zero := false
	for _, a := range ia.Options.Addresses() {
		switch {
		case a.ValidLifetime == 0:
			zero = true
		case a.PreferredLifetime > a.ValidLifetime, !usableAddr(a.IPv6Addr):
		default:
			out.Options.Add(&dhcpv6.OptIAAddress{IPv6Addr: a.IPv6Addr, PreferredLifetime: a.PreferredLifetime, ValidLifetime: a.ValidLifetime})
		}
	}
	return out, classify(ia.Options.Status(), len(out.Options.Options) > 0, zero)
}

// readPD is readNA for the IA_PD: prefixes from /1 to /128, their host
// bits cleared.
func (w asker) readPD(msg *dhcpv6.Message) (*dhcpv6.OptIAPD, iaAnswer) {
	var ia *dhcpv6.OptIAPD
	for _, o := range msg.Options.IAPD() {
		if o.IaId == w.iaid {
			ia = o
			break
		}
	}
	if ia == nil || (ia.T1 > 0 && ia.T2 > 0 && ia.T1 > ia.T2) {
		return nil, missing(msg)
	}
	out := &dhcpv6.OptIAPD{IaId: ia.IaId, T1: ia.T1, T2: ia.T2}
	zero := false
	for _, p := range ia.Options.Prefixes() {
		ones, bits := 0, 0
		if p.Prefix != nil {
			ones, bits = p.Prefix.Mask.Size()
		}
		switch {
		case p.ValidLifetime == 0:
			zero = true
		case p.PreferredLifetime > p.ValidLifetime, bits != 128, ones == 0, !usableAddr(p.Prefix.IP):
		default:
			out.Options.Add(&dhcpv6.OptIAPrefix{PreferredLifetime: p.PreferredLifetime, ValidLifetime: p.ValidLifetime,
				Prefix: &net.IPNet{IP: p.Prefix.IP.Mask(p.Prefix.Mask), Mask: p.Prefix.Mask}})
		}
	}
	return out, classify(ia.Options.Status(), len(out.Options.Options) > 0, zero)
}

// usableAddr: a global unicast IPv6 address (not link-local, loopback,
// multicast or an IPv4 one).
func usableAddr(ip net.IP) bool {
	return len(ip) == net.IPv6len && ip.To4() == nil && ip.IsGlobalUnicast()
}

// answer is what a server's Advertise or Reply makes of the client's
// binding.
type answer struct {
	b      *binding // the binding after it; nil when nothing is left
	top    string   // a status at the top level, if not Success
	na, pd iaAnswer
	// granted: the message gave or extended at least one IA.
	granted bool
	// request: send a Request for all IAs at once (RFC 8415 18.2.10.1):
	// the server has no binding for leases the client holds (it lost its
	// leases, or restarted without them), or took leases back. NoBinding
	// for an IA the client holds nothing in is not one: a server that
	// delegates only prefixes (dhcp6s) says it of the empty IA_NA in
	// every Renew, and a Request each time would double every renewal;
	// the IA is asked for again at the next one.
	request bool
}

func (a answer) String() string {
	s := "IA_NA " + a.na.String() + ", IA_PD " + a.pd.String()
	if a.top != "" {
		s = a.top + " at the top level, " + s
	}
	return s
}

// refusal is a top-level status that refuses the whole message. The
// others are about IAs: RFC 3315 servers put NoAddrsAvail there when they
// give no address, and may still delegate a prefix.
func refusal(msg *dhcpv6.Message) error {
	st := msg.Options.Status()
	if st == nil {
		return nil
	}
	switch st.StatusCode {
	case iana.StatusSuccess, iana.StatusNoAddrsAvail, iana.StatusNoPrefixAvail, iana.StatusNoBinding:
		return nil
	}
	return fmt.Errorf("the server says %s", statusText(st))
}

// take is held (nil: nothing yet) updated by msg, an Advertise or a Reply
// received at now. Each IA msg grants replaces held's; one it takes back
// goes; any other IA of held stays as it was, and lasts until its lifetimes
// end (RFC 8415 18.2.10.1: "the client continues to use other bindings").
// The new binding counts its lifetimes from now: what stays of held is
// counted down to now, with T1 and T2 left to the client (riding along
// with the IA renewed). An error is a message refused as a whole.
func (w asker) take(held *binding, msg *dhcpv6.Message, now time.Time) (answer, error) {
	if err := refusal(msg); err != nil {
		return answer{}, err
	}
	if msg.Options.ServerID() == nil {
		return answer{}, errors.New("the server's message has no server ID")
	}
	out, err := dhcpv6.NewMessage()
	if err != nil {
		return answer{}, fmt.Errorf("dhcp6: new binding: %w", err)
	}
	out.MessageType = dhcpv6.MessageTypeReply
	out.AddOption(dhcpv6.OptClientID(w.duid))
	out.AddOption(dhcpv6.OptServerID(msg.Options.ServerID()))
	if dns := msg.Options.GetOne(dhcpv6.OptionDNSRecursiveNameServer); dns != nil {
		out.AddOption(dns)
	} else if held != nil {
		if dns := held.reply.Options.GetOne(dhcpv6.OptionDNSRecursiveNameServer); dns != nil {
			out.AddOption(dns)
		}
	}
	var elapsed time.Duration
	if held != nil {
		elapsed = max(now.Sub(held.acquired), 0)
	}
	var a answer
	if st := msg.Options.Status(); st != nil && st.StatusCode != iana.StatusSuccess {
		a.top = statusText(st)
	}
	na, naAns := w.readNA(msg)
	pd, pdAns := w.readPD(msg)
	a.na, a.pd = naAns, pdAns
	var keptNA, keptPD dhcpv6.Option
	if held != nil {
		keptNA, keptPD = countDownNA(held.iana(), elapsed), countDownPD(held.iapd(), elapsed)
	}
	a.settle(out, naAns, na, keptNA, held != nil && len(held.addrs()) > 0)
	a.settle(out, pdAns, pd, keptPD, held != nil && len(held.prefixes()) > 0)
	if nb := (&binding{reply: out, acquired: now}); len(nb.addrs())+len(nb.prefixes()) > 0 {
		a.b = nb
	}
	return a, nil
}

// settle adds to out what one IA comes to: the IA the message granted,
// or what is left of the one held (kept; nil when nothing is), and notes
// when a Request must follow. holding: the client holds leases in it.
func (a *answer) settle(out *dhcpv6.Message, ans iaAnswer, granted, kept dhcpv6.Option, holding bool) {
	switch ans.state {
	case iaGranted:
		out.AddOption(granted)
		a.granted = true
	case iaTakenBack:
		a.request = true
	default:
		a.request = a.request || ans.state == iaNoBinding && holding
		if kept != nil {
			out.AddOption(kept)
		}
	}
}

// countDown is a lifetime d after elapsed, in whole seconds (what the
// state file keeps), rounded down; 0 when it is over.
func countDown(d, elapsed time.Duration) time.Duration {
	if d <= elapsed {
		return 0
	}
	return (d - elapsed).Truncate(time.Second)
}

// countDownNA is ia's live addresses elapsed later, T1 and T2 0; nil if
// there is no IA or none is left.
func countDownNA(ia *dhcpv6.OptIANA, elapsed time.Duration) dhcpv6.Option {
	if ia == nil {
		return nil
	}
	out := &dhcpv6.OptIANA{IaId: ia.IaId}
	for _, a := range ia.Options.Addresses() {
		if v := countDown(a.ValidLifetime, elapsed); v > 0 {
			out.Options.Add(&dhcpv6.OptIAAddress{IPv6Addr: a.IPv6Addr, PreferredLifetime: countDown(a.PreferredLifetime, elapsed), ValidLifetime: v})
		}
	}
	if len(out.Options.Options) == 0 {
		return nil
	}
	return out
}

// countDownPD is countDownNA for an IA_PD.
func countDownPD(ia *dhcpv6.OptIAPD, elapsed time.Duration) dhcpv6.Option {
	if ia == nil {
		return nil
	}
	out := &dhcpv6.OptIAPD{IaId: ia.IaId}
	for _, p := range ia.Options.Prefixes() {
		if v := countDown(p.ValidLifetime, elapsed); v > 0 {
			out.Options.Add(&dhcpv6.OptIAPrefix{Prefix: p.Prefix, PreferredLifetime: countDown(p.PreferredLifetime, elapsed), ValidLifetime: v})
		}
	}
	if len(out.Options.Options) == 0 {
		return nil
	}
	return out
}

// iaTimes are an IA's T1 and T2: the server's, or where it says 0 (the
// client's choice, RFC 8415 21.4), 0.5 and 0.8 of the shortest preferred
// lifetime of its leases (RFC 8415 18.2.4); of the shortest valid one if
// they are all deprecated.
func iaTimes(t1, t2 time.Duration, preferred, valid []time.Duration) (time.Duration, time.Duration) {
	if t1 > 0 && t2 > 0 {
		return t1, t2
	}
	var short time.Duration
	for _, p := range preferred {
		if p > 0 && (short == 0 || p < short) {
			short = p
		}
	}
	if short == 0 {
		for _, v := range valid {
			if short == 0 || v < short {
				short = v
			}
		}
	}
	if t1 == 0 {
		t1 = short / 2
	}
	if t2 == 0 {
		t2 = max(short*4/5, t1)
	}
	return t1, t2
}
