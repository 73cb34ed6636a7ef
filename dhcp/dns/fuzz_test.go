package dns

import (
	"context"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// echoUpstream answers every question with an A record, without a network.
type echoUpstream struct{}

func (echoUpstream) Exchange(_ context.Context, q *dns.Msg) (*dns.Msg, error) {
	m := new(dns.Msg).SetReply(q)
	m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
		A: []byte{198, 51, 100, 80}}}
	return m, nil
}

func (echoUpstream) Down() bool { return false }

// FuzzAnswer: whatever a LAN host sends, the handler does not crash, and
// what it sends back parses, answers the query's ID, and fits the
// transport (512 bytes to a client without EDNS).
func FuzzAnswer(f *testing.F) {
	for _, q := range []*dns.Msg{
		query("www.isp.example", dns.TypeA),
		query("laptop.home.arpa", dns.TypeAAAA),
		query("100.1.168.192.in-addr.arpa", dns.TypePTR),
		query("localhost", dns.TypeANY),
		query("big.isp.example", dns.TypeTXT).SetEdns0(4096, true),
	} {
		b, _ := q.Pack()
		f.Add(b, false)
		f.Add(b, true)
	}
	f.Add([]byte{0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0xc0, 0x0c}, false) // a name pointing at itself
	r := NewResolver(Config{Zone: testZone(), Cache: NewCache(DefaultCacheSize, time.Hour), Upstream: echoUpstream{}, RateLimit: 1 << 30})
	f.Fuzz(func(t *testing.T, b []byte, tcp bool) {
		out := r.Answer(context.Background(), b, lanHost, tcp)
		if out == nil {
			return
		}
		m := new(dns.Msg)
		if err := m.Unpack(out); err != nil {
			t.Fatalf("the reply does not parse: %v", err)
		}
		if !m.Response || m.Id != uint16(b[0])<<8|uint16(b[1]) {
			t.Fatalf("reply id %d response %v to %x", m.Id, m.Response, b[:2])
		}
		if !tcp && len(out) > udpSize {
			t.Fatalf("a %d-byte reply over UDP", len(out))
		}
		if !tcp && m.IsEdns0() == nil && len(out) > dns.MinMsgSize {
			t.Fatalf("a %d-byte reply to a client without EDNS", len(out))
		}
	})
}
