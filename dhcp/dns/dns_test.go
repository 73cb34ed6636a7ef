package dns

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// fakeUpstream is a DNS server on loopback, over UDP and TCP on one port,
// answering with answer and recording what it was asked.
type fakeUpstream struct {
	addr    netip.AddrPort
	queries atomic.Int32
	mu      sync.Mutex
	seen    []*dns.Msg
	answer  func(q *dns.Msg, tcp bool) *dns.Msg
	udp     *dns.Server
	tcp     *dns.Server
}

func startUpstream(t *testing.T, answer func(q *dns.Msg, tcp bool) *dns.Msg) *fakeUpstream {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	u := &fakeUpstream{addr: pc.LocalAddr().(*net.UDPAddr).AddrPort(), answer: answer}
	handler := func(tcp bool) dns.HandlerFunc {
		return func(w dns.ResponseWriter, q *dns.Msg) {
			u.queries.Add(1)
			u.mu.Lock()
			u.seen = append(u.seen, q.Copy())
			u.mu.Unlock()
			if m := u.answer(q, tcp); m != nil {
				w.WriteMsg(m)
			}
		}
	}
	started := make(chan struct{}, 2)
	notify := func() { started <- struct{}{} }
	u.udp = &dns.Server{PacketConn: pc, Handler: handler(false), NotifyStartedFunc: notify}
	u.tcp = &dns.Server{Listener: l, Handler: handler(true), NotifyStartedFunc: notify}
	go u.udp.ActivateAndServe()
	go u.tcp.ActivateAndServe()
	<-started
	<-started
	t.Cleanup(u.stop)
	return u
}

func (u *fakeUpstream) stop() {
	u.udp.Shutdown()
	u.tcp.Shutdown()
}

func (u *fakeUpstream) last() *dns.Msg {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.seen[len(u.seen)-1]
}

// answerA answers every question with an A record of ttl.
func answerA(ip string, ttl uint32) func(q *dns.Msg, tcp bool) *dns.Msg {
	return func(q *dns.Msg, tcp bool) *dns.Msg {
		m := new(dns.Msg).SetReply(q)
		if q.Question[0].Qtype == dns.TypeA {
			m.Answer = []dns.RR{rr(q.Question[0].Name + " " + strconv.Itoa(int(ttl)) + " IN A " + ip)}
		}
		return m
	}
}

func rr(s string) dns.RR {
	r, err := dns.NewRR(s)
	if err != nil {
		panic(err)
	}
	return r
}

// clock is a test's time.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

type testResolver struct {
	*Resolver
	fwd   *Forwarder
	clock *clock
	logs  *bytes.Buffer
}

func newTestResolver(t *testing.T, zone *Zone, ups ...*fakeUpstream) *testResolver {
	c := &clock{now: time.Unix(1_800_000_000, 0)}
	fwd := &Forwarder{Timeout: time.Second, now: c.Now}
	var addrs []netip.AddrPort
	for _, u := range ups {
		addrs = append(addrs, u.addr)
	}
	fwd.Set(addrs)
	logs := &bytes.Buffer{}
	r := NewResolver(Config{Zone: zone, Cache: NewCache(DefaultCacheSize, time.Hour), Upstream: fwd,
		Log: slog.New(slog.NewTextHandler(&syncWriter{w: logs}, nil)), Now: c.Now})
	return &testResolver{Resolver: r, fwd: fwd, clock: c, logs: logs}
}

type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(b)
}

var lanHost = netip.MustParseAddr("192.168.1.100")

// ask sends q as a LAN host would and returns the parsed reply.
func (r *testResolver) ask(t *testing.T, q *dns.Msg, tcp bool) *dns.Msg {
	t.Helper()
	b, err := q.Pack()
	if err != nil {
		t.Fatal(err)
	}
	out := r.Answer(context.Background(), b, lanHost, tcp)
	if out == nil {
		t.Fatalf("no reply to %s", q.Question[0].String())
	}
	m := new(dns.Msg)
	if err := m.Unpack(out); err != nil {
		t.Fatalf("reply does not parse: %v", err)
	}
	if m.Id != q.Id || !m.Response {
		t.Fatalf("reply id %d response %v, want id %d", m.Id, m.Response, q.Id)
	}
	return m
}

func query(name string, qtype uint16) *dns.Msg {
	return new(dns.Msg).SetQuestion(dns.Fqdn(name), qtype)
}

func TestForwardAndCache(t *testing.T) {
	up := startUpstream(t, answerA("198.51.100.80", 300))
	r := newTestResolver(t, nil, up)
	m := r.ask(t, query("www.isp.example", dns.TypeA), false)
	if len(m.Answer) != 1 || m.Answer[0].(*dns.A).A.String() != "198.51.100.80" || m.Authoritative || !m.RecursionAvailable {
		t.Fatalf("answer:\n%s", m)
	}
	r.clock.Add(100 * time.Second)
	m = r.ask(t, query("WWW.isp.example", dns.TypeA), false)
	if up.queries.Load() != 1 {
		t.Fatalf("the upstream was asked %d times, want once (the second answer is cached)", up.queries.Load())
	}
	if m.Answer[0].Header().Ttl != 200 || m.Question[0].Name != "WWW.isp.example." {
		t.Fatalf("cached answer: TTL %d (want 200), question %s (want the client's case)", m.Answer[0].Header().Ttl, m.Question[0].Name)
	}
	r.clock.Add(201 * time.Second)
	r.ask(t, query("www.isp.example", dns.TypeA), false)
	if up.queries.Load() != 2 {
		t.Fatalf("after the TTL the upstream was asked %d times in all, want 2", up.queries.Load())
	}
}

func TestNegativeCache(t *testing.T) {
	up := startUpstream(t, func(q *dns.Msg, tcp bool) *dns.Msg {
		m := new(dns.Msg).SetRcode(q, dns.RcodeNameError)
		m.Ns = []dns.RR{rr("isp.example. 3600 IN SOA ns.isp.example. h.isp.example. 1 7200 900 1209600 120")}
		return m
	})
	r := newTestResolver(t, nil, up)
	for i := 0; i < 3; i++ {
		if m := r.ask(t, query("nothing.isp.example", dns.TypeA), false); m.Rcode != dns.RcodeNameError {
			t.Fatalf("rcode %s", dns.RcodeToString[m.Rcode])
		}
	}
	if up.queries.Load() != 1 {
		t.Fatalf("asked upstream %d times, want once (NXDOMAIN cached)", up.queries.Load())
	}
	r.clock.Add(121 * time.Second) // the SOA's minimum, not its TTL
	r.ask(t, query("nothing.isp.example", dns.TypeA), false)
	if up.queries.Load() != 2 {
		t.Fatalf("asked upstream %d times, want twice (the negative TTL is the SOA minimum)", up.queries.Load())
	}
}

// TestServeStale: with every upstream down, an expired answer is served
// with TTL 30 (RFC 8767) until the stale window ends; then SERVFAIL.
func TestServeStale(t *testing.T) {
	up := startUpstream(t, answerA("198.51.100.80", 10))
	r := newTestResolver(t, nil, up)
	r.ask(t, query("www.isp.example", dns.TypeA), false)
	up.stop()
	r.clock.Add(20 * time.Second)
	start := time.Now()
	m := r.ask(t, query("www.isp.example", dns.TypeA), false)
	if len(m.Answer) != 1 || m.Answer[0].Header().Ttl != staleTTL || m.Rcode != dns.RcodeSuccess {
		t.Fatalf("stale answer:\n%s", m)
	}
	if time.Since(start) > clientWait+500*time.Millisecond {
		t.Fatalf("the stale answer took %s", time.Since(start))
	}
	// Now every upstream is known down: the next stale answer comes at once.
	start = time.Now()
	r.ask(t, query("www.isp.example", dns.TypeA), false)
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Fatalf("with the upstreams known down a stale answer took %s", d)
	}
	r.clock.Add(2 * time.Hour) // past the window
	if m := r.ask(t, query("www.isp.example", dns.TypeA), false); m.Rcode != dns.RcodeServerFailure {
		t.Fatalf("past the stale window: %s, want SERVFAIL", dns.RcodeToString[m.Rcode])
	}
}

// TestFailover: a server that refuses (nothing listens) is passed over at
// once; one that says nothing, after the hedge; the answer comes from the
// next, and the dead ones are tried last afterwards.
func TestFailover(t *testing.T) {
	closed := startUpstream(t, answerA("0.0.0.1", 60))
	closed.stop()
	silent := startUpstream(t, func(*dns.Msg, bool) *dns.Msg { return nil })
	servfail := startUpstream(t, func(q *dns.Msg, _ bool) *dns.Msg { return new(dns.Msg).SetRcode(q, dns.RcodeServerFailure) })
	good := startUpstream(t, answerA("198.51.100.80", 60))
	r := newTestResolver(t, nil, closed, silent, servfail, good)
	start := time.Now()
	m := r.ask(t, query("a.isp.example", dns.TypeA), false)
	if len(m.Answer) != 1 || m.Rcode != dns.RcodeSuccess {
		t.Fatalf("answer:\n%s", m)
	}
	if d := time.Since(start); d > 900*time.Millisecond {
		t.Fatalf("failover took %s", d)
	}
	// The good one is first now.
	before := good.queries.Load()
	start = time.Now()
	r.ask(t, query("b.isp.example", dns.TypeA), false)
	if d := time.Since(start); d > 100*time.Millisecond || good.queries.Load() != before+1 {
		t.Fatalf("second query took %s; the good server was asked %d more times", d, good.queries.Load()-before)
	}
}

// TestTruncation: an answer too big for UDP comes truncated from the
// upstream; the forwarder asks again over TCP, and hands a UDP client a
// truncated answer (TC) and a TCP client all of it.
func TestTruncation(t *testing.T) {
	var txt []dns.RR
	for i := 0; i < 40; i++ {
		txt = append(txt, rr("big.isp.example. 300 IN TXT \""+strings.Repeat("x", 60)+strconv.Itoa(i)+"\""))
	}
	up := startUpstream(t, func(q *dns.Msg, tcp bool) *dns.Msg {
		m := new(dns.Msg).SetReply(q)
		m.Answer = txt
		if !tcp {
			m.Truncate(udpSize)
		}
		return m
	})
	r := newTestResolver(t, nil, up)
	q := query("big.isp.example", dns.TypeTXT)
	q.SetEdns0(1232, false)
	m := r.ask(t, q, false)
	if !m.Truncated || len(m.Answer) == len(txt) {
		t.Fatalf("over UDP: TC %v with %d records, want TC and fewer than %d", m.Truncated, len(m.Answer), len(txt))
	}
	m = r.ask(t, q, true)
	if m.Truncated || len(m.Answer) != len(txt) {
		t.Fatalf("over TCP: TC %v with %d records, want all %d", m.Truncated, len(m.Answer), len(txt))
	}
	// Without EDNS a UDP client gets at most 512 bytes.
	b, _ := query("big.isp.example", dns.TypeTXT).Pack()
	if out := r.Answer(context.Background(), b, lanHost, false); len(out) > 512 {
		t.Fatalf("a %d-byte answer to a client without EDNS", len(out))
	}
}

// TestDNSSECBits: DO and CD go upstream; the RRSIGs and the AD bit come
// back unchanged to a client that set DO; a client's EDNS options (its
// subnet) stay on the LAN; a client without DO or AD gets no AD.
func TestDNSSECBits(t *testing.T) {
	up := startUpstream(t, func(q *dns.Msg, tcp bool) *dns.Msg {
		m := new(dns.Msg).SetReply(q)
		m.AuthenticatedData = true
		m.Answer = []dns.RR{rr("signed.isp.example. 300 IN A 198.51.100.9")}
		if o := q.IsEdns0(); o != nil && o.Do() {
			m.Answer = append(m.Answer, rr("signed.isp.example. 300 IN RRSIG A 13 3 300 20300101000000 20200101000000 12345 isp.example. dGVzdA=="))
		}
		m.SetEdns0(1232, q.IsEdns0() != nil && q.IsEdns0().Do())
		return m
	})
	r := newTestResolver(t, nil, up)
	q := query("signed.isp.example", dns.TypeA)
	q.SetEdns0(4096, true)
	q.CheckingDisabled = true
	q.IsEdns0().Option = append(q.IsEdns0().Option, &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: 24, Address: net.IPv4(192, 168, 1, 0)})
	m := r.ask(t, q, false)
	sent := up.last()
	if o := sent.IsEdns0(); o == nil || !o.Do() || len(o.Option) != 0 || !sent.CheckingDisabled {
		t.Fatalf("sent upstream: %s", sent)
	}
	if !m.AuthenticatedData || len(m.Answer) != 2 || m.IsEdns0() == nil || !m.IsEdns0().Do() || !m.CheckingDisabled {
		t.Fatalf("a DO client's answer:\n%s", m)
	}
	plain := r.ask(t, query("signed.isp.example", dns.TypeA), false)
	if plain.AuthenticatedData || len(plain.Answer) != 1 || plain.IsEdns0() != nil {
		t.Fatalf("a plain client's answer:\n%s", plain)
	}
}

func TestMalformed(t *testing.T) {
	r := newTestResolver(t, nil)
	good, _ := query("x.isp.example", dns.TypeA).Pack()
	rcode := func(b []byte) int {
		out := r.Answer(context.Background(), b, lanHost, false)
		if out == nil {
			return -1
		}
		m := new(dns.Msg)
		if err := m.Unpack(out); err != nil {
			t.Fatalf("reply to %x does not parse: %v", b, err)
		}
		if m.Id != uint16(b[0])<<8|uint16(b[1]) {
			t.Fatalf("reply id %d to %x", m.Id, b[:2])
		}
		return m.Rcode
	}
	twoQ := query("a.example", dns.TypeA)
	twoQ.Question = append(twoQ.Question, twoQ.Question[0])
	b2, _ := twoQ.Pack()
	v1 := query("a.example", dns.TypeA)
	v1.SetEdns0(1232, false)
	v1.IsEdns0().SetVersion(1)
	bv1, _ := v1.Pack()
	update := query("a.example", dns.TypeA)
	update.Opcode = dns.OpcodeUpdate
	bu, _ := update.Pack()
	chaos := query("version.bind", dns.TypeTXT)
	chaos.Question[0].Qclass = dns.ClassCHAOS
	bc, _ := chaos.Pack()
	axfr, _ := query("isp.example", dns.TypeAXFR).Pack()
	resp := append([]byte(nil), good...)
	resp[2] |= 0x80
	for _, tc := range []struct {
		what string
		b    []byte
		want int
	}{
		{"short", []byte{1, 2, 3}, -1},
		{"a response", resp, -1},
		{"cut off", good[:len(good)-3], dns.RcodeFormatError},
		{"garbage", append(good[:12:12], 0xff, 0xff, 0xff), dns.RcodeFormatError},
		{"two questions", b2, dns.RcodeFormatError},
		{"no question", good[:12], dns.RcodeFormatError},
		{"EDNS version 1", bv1, dns.RcodeBadVers},
		{"an update", bu, dns.RcodeNotImplemented},
		{"class CHAOS", bc, dns.RcodeRefused},
		{"a zone transfer", axfr, dns.RcodeRefused},
	} {
		if got := rcode(tc.b); got != tc.want {
			t.Errorf("%s: rcode %d, want %d", tc.what, got, tc.want)
		}
	}
}

func testZone() *Zone {
	mac, _ := net.ParseMAC("02:00:00:00:00:64")
	return NewZone(Names{Domain: "home.arpa", Hostname: "rotuer",
		Router: []netip.Addr{netip.MustParseAddr("192.168.1.1"), netip.MustParseAddr("fd00:1::1")},
		Static: map[string][]netip.Addr{"nas": {netip.MustParseAddr("192.168.1.10")}},
		Leases: []Lease{
			{Name: "laptop", IP: netip.MustParseAddr("192.168.1.100"), MAC: mac},
			{Name: "nas", IP: netip.MustParseAddr("192.168.1.150")}, // the static name wins
		},
		Neighbours: map[string][]netip.Addr{mac.String(): {netip.MustParseAddr("fd00:1::100")}},
	})
}

// TestLocalNames: the router, leases (with their IPv6 neighbours) and
// static hosts answer both ways; the rest of home.arpa and the private
// reverse zones are answered here, never upstream.
func TestLocalNames(t *testing.T) {
	up := startUpstream(t, answerA("198.51.100.80", 60))
	r := newTestResolver(t, testZone(), up)
	for _, tc := range []struct {
		name  string
		qtype uint16
		rcode int
		want  []string // the answers' data
	}{
		{"rotuer.home.arpa", dns.TypeA, dns.RcodeSuccess, []string{"192.168.1.1"}},
		{"Rotuer.Home.Arpa", dns.TypeAAAA, dns.RcodeSuccess, []string{"fd00:1::1"}},
		{"laptop.home.arpa", dns.TypeA, dns.RcodeSuccess, []string{"192.168.1.100"}},
		{"laptop.home.arpa", dns.TypeAAAA, dns.RcodeSuccess, []string{"fd00:1::100"}},
		{"laptop.home.arpa", dns.TypeMX, dns.RcodeSuccess, nil},
		{"nas.home.arpa", dns.TypeA, dns.RcodeSuccess, []string{"192.168.1.10"}},
		{"100.1.168.192.in-addr.arpa", dns.TypePTR, dns.RcodeSuccess, []string{"laptop.home.arpa."}},
		{"1.1.168.192.in-addr.arpa", dns.TypePTR, dns.RcodeSuccess, []string{"rotuer.home.arpa."}},
		{"0.0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.0.0.0.0.d.f.ip6.arpa", dns.TypePTR, dns.RcodeSuccess, []string{"laptop.home.arpa."}},
		{"nobody.home.arpa", dns.TypeA, dns.RcodeNameError, nil},
		{"home.arpa", dns.TypeA, dns.RcodeSuccess, nil},
		{"home.arpa", dns.TypeSOA, dns.RcodeSuccess, []string{"rotuer.home.arpa."}},
		{"7.1.168.192.in-addr.arpa", dns.TypePTR, dns.RcodeNameError, nil},
		{"5.0.0.10.in-addr.arpa", dns.TypePTR, dns.RcodeNameError, nil},
		{"1.2.0.192.in-addr.arpa", dns.TypePTR, dns.RcodeNameError, nil},
		{"localhost", dns.TypeA, dns.RcodeSuccess, []string{"127.0.0.1"}},
		{"x.localhost", dns.TypeAAAA, dns.RcodeSuccess, []string{"::1"}},
		{"foo.invalid", dns.TypeA, dns.RcodeNameError, nil},
		{"foo.test", dns.TypeA, dns.RcodeNameError, nil},
		{"printer", dns.TypeA, dns.RcodeNameError, nil},
	} {
		m := r.ask(t, query(tc.name, tc.qtype), false)
		var got []string
		for _, a := range m.Answer {
			switch a := a.(type) {
			case *dns.A:
				got = append(got, a.A.String())
			case *dns.AAAA:
				got = append(got, a.AAAA.String())
			case *dns.PTR:
				got = append(got, a.Ptr)
			case *dns.SOA:
				got = append(got, a.Ns)
			}
		}
		bare := !strings.Contains(tc.name, ".")
		if m.Rcode != tc.rcode || strings.Join(got, " ") != strings.Join(tc.want, " ") || !m.Authoritative && !bare {
			t.Errorf("%s %s: %s %v (AA %v), want %s %v", tc.name, dns.TypeToString[tc.qtype], dns.RcodeToString[m.Rcode], got, m.Authoritative, dns.RcodeToString[tc.rcode], tc.want)
		}
		if (m.Rcode == dns.RcodeNameError || len(m.Answer) == 0) && !bare {
			if len(m.Ns) != 1 || m.Ns[0].Header().Rrtype != dns.TypeSOA {
				t.Errorf("%s: a negative answer without its SOA:\n%s", tc.name, m)
			}
		}
	}
	if n := up.queries.Load(); n != 0 {
		t.Fatalf("the upstream was asked %d times for local names", n)
	}
	// A public reverse name is asked upstream.
	r.ask(t, query("8.8.8.8.in-addr.arpa", dns.TypePTR), false)
	if up.queries.Load() != 1 {
		t.Fatal("a public reverse name was not forwarded")
	}
}

// TestRateLimit: a client past its burst is dropped (UDP) or refused
// (TCP) and logged once; another client is not held back.
func TestRateLimit(t *testing.T) {
	r := newTestResolver(t, testZone())
	b, _ := query("rotuer.home.arpa", dns.TypeA).Pack()
	flooder := netip.MustParseAddr("192.168.1.66")
	answered := 0
	for i := 0; i < 3*defaultRate; i++ {
		if r.Answer(context.Background(), b, flooder, false) != nil {
			answered++
		}
	}
	if answered != burstFraction*defaultRate {
		t.Fatalf("%d answered, want the burst, %d", answered, burstFraction*defaultRate)
	}
	if out := r.Answer(context.Background(), b, flooder, true); out == nil || out[3]&0xf != dns.RcodeRefused {
		t.Fatalf("over TCP past the limit: %x, want REFUSED", out)
	}
	if r.Answer(context.Background(), b, lanHost, false) == nil {
		t.Fatal("another client was held back")
	}
	// Calm for a while, then at it again: no second line.
	r.clock.Add(10 * time.Second)
	for i := 0; i < 3*defaultRate; i++ {
		r.Answer(context.Background(), b, flooder, false)
	}
	if n := strings.Count(r.logs.String(), "asks too fast"); n != 1 {
		t.Fatalf("%d log lines for one abusive client, want 1:\n%s", n, r.logs)
	}
	r.clock.Add(relogAfter + 10*time.Second)
	for i := 0; i < 3*defaultRate; i++ {
		r.Answer(context.Background(), b, flooder, false)
	}
	if n := strings.Count(r.logs.String(), "asks too fast"); n != 2 {
		t.Fatalf("%d log lines after %s, want 2", n, relogAfter)
	}
}

// TestCacheBound: the cache keeps within its bytes, dropping the least
// recently used.
func TestCacheBound(t *testing.T) {
	c := NewCache(64<<10, time.Hour)
	now := time.Unix(1_800_000_000, 0)
	for i := 0; i < 5000; i++ {
		q := query("host"+strconv.Itoa(i)+".isp.example", dns.TypeA)
		m := new(dns.Msg).SetReply(q)
		m.Answer = []dns.RR{rr(q.Question[0].Name + " 300 IN A 198.51.100.1")}
		c.Put(keyOf(q), m, now)
		if i == 0 {
			continue
		}
		c.Get(keyOf(query("host0.isp.example", dns.TypeA)), now) // keep host0 in use
	}
	if c.Used() > 64<<10 || c.Len() < 100 {
		t.Fatalf("%d answers in %d bytes, budget %d", c.Len(), c.Used(), 64<<10)
	}
	if m, _ := c.Get(keyOf(query("host0.isp.example", dns.TypeA)), now); m == nil {
		t.Fatal("the most used answer went")
	}
	if m, _ := c.Get(keyOf(query("host1.isp.example", dns.TypeA)), now); m != nil {
		t.Fatal("the oldest unused answer stayed")
	}
}

// BenchmarkAnswerCached is the cost of a cached answer, from the query's
// bytes to the reply's.
func BenchmarkAnswerCached(b *testing.B) {
	r := NewResolver(Config{Zone: testZone(), Cache: NewCache(DefaultCacheSize, time.Hour), Upstream: echoUpstream{}, RateLimit: 1 << 30})
	q, _ := query("www.isp.example", dns.TypeA).Pack()
	r.Answer(context.Background(), q, lanHost, false)
	b.ReportAllocs()
	for b.Loop() {
		if r.Answer(context.Background(), q, lanHost, false) == nil {
			b.Fatal("no answer")
		}
	}
}
