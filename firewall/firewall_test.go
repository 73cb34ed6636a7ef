package firewall

import (
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/google/nftables"

	"github.com/roostrouter/roost/agent/supervisor"
	"github.com/roostrouter/roost/netconf"
)

var update = flag.Bool("update", false, "write the golden files")

// netns makes a network namespace for the test and returns an nftables
// connection into it and the namespace's name.
func netns(t testing.TB) (*nftables.Conn, string) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("firewall tests must run as root in CI")
		}
		t.Skip("SKIPPED: firewall tests need root for a network namespace")
	}
	name := fmt.Sprintf("fwtest%d", os.Getpid()%100000)
	exec.Command("ip", "netns", "del", name).Run()
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	f, err := os.Open("/run/netns/" + name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	c, err := NewConn(nftables.WithNetNSFd(int(f.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	return c, name
}

func prefix(s string) *netip.Prefix {
	p := netip.MustParsePrefix(s)
	return &p
}

func exampleRuleset() Ruleset {
	return Ruleset{
		Rules: []Rule{
			{Chain: "input", From: "lan", Proto: "udp", Port: 123, Verdict: "accept"},
			{Chain: "input", From: "wan", Source: prefix("198.51.100.0/24"), Proto: "tcp", Port: 22, Verdict: "accept"},
			{Chain: "forward", From: "lan", To: "lan", Verdict: "accept"},
			{Chain: "forward", From: "lan", Dest: prefix("2001:db8::/32"), Proto: "icmpv6", Verdict: "drop"},
		},
		Zones:    map[string][]string{"wan": {"wan", "ppp0"}, "lan": {"br-lan"}},
		Open:     []Port{{Zone: "wan", Proto: "tcp", Port: 443}},
		Forwards: []Forward{{Proto: "tcp", Port: 8080, To: netip.MustParseAddr("192.168.1.100"), ToPort: 80}},
		Allow6: []Allow6{
			{To: netip.MustParsePrefix("fd00:1::100/128"), Proto: "tcp", Port: 80},
			{RA: "lan-ra", Host: netip.MustParseAddr("::1234:5678:9abc:def0"), Proto: "tcp", Port: 443},
			{RA: "guest-ra", Host: netip.MustParseAddr("::10"), Proto: "udp", Port: 5060}, // no prefix yet: absent
		},
		LANPrefixes: map[string]netip.Prefix{"lan-ra": netip.MustParsePrefix("2001:db8:100:1::/64")},
	}
}

// TestEachRuleLoads applies the rules one by one, to name a rule the
// kernel refuses.
func TestEachRuleLoads(t *testing.T) {
	c, _ := netns(t)
	rs := exampleRuleset()
	tb := table()
	zones := map[string]*nftables.Set{}
	for _, z := range rs.zoneList() {
		zones[z] = zoneSet(tb, z)
	}
	named := namedSets(tb, rs, zones)
	byName := map[string]*nftables.Set{}
	for _, n := range named {
		byName[n.set.Name] = n.set
	}
	for i, r := range render(tb, rs, zones) {
		c.FlushRuleset()
		c.Flush()
		single := func() error {
			c.AddTable(tb)
			for _, cs := range chainSpecs() {
				p := cs.policy
				c.AddChain(&nftables.Chain{Name: cs.name, Table: tb, Type: cs.typ, Hooknum: cs.hook, Priority: cs.priority, Policy: &p})
			}
			for _, n := range named {
				if err := c.AddSet(n.set, n.elems); err != nil {
					return err
				}
			}
			for _, n := range counterNames {
				c.AddObj(&nftables.NamedObj{Table: tb, Name: n, Type: nftables.ObjTypeCounter, Obj: counterExpr()})
			}
			for _, a := range r.anon {
				if err := c.AddSet(a.set, a.elems); err != nil {
					return err
				}
				linkAnon(r, a.set)
			}
			linkSets(r, byName)
			c.AddRule(&nftables.Rule{Table: tb, Chain: &nftables.Chain{Name: r.chain, Table: tb}, Exprs: r.exprs, UserData: r.userData(i == 0, "0123456789abcdef")})
			return c.Flush()
		}
		if err := single(); err != nil {
			t.Errorf("rule %d (%s: %s): %v", i, r.chain, r.text, err)
		}
	}
}

func TestCommentsFit(t *testing.T) {
	tb := table()
	rs := exampleRuleset()
	zones := map[string]*nftables.Set{}
	for _, z := range rs.zoneList() {
		zones[z] = zoneSet(tb, z)
	}
	for i, r := range render(tb, rs, zones) {
		if n := len(r.userData(i == 0, strings.Repeat("f", 16))); n > maxComment {
			t.Errorf("rule %q has a %d-byte comment; the kernel keeps %d", r.text, n, maxComment)
		}
	}
}

func TestCheck(t *testing.T) {
	rs := exampleRuleset()
	rs.Open = append(rs.Open, Port{Zone: "dmz", Proto: "sctp", Port: 0})
	rs.Forwards = append(rs.Forwards, Forward{Proto: "tcp", Port: 8080, To: netip.MustParseAddr("192.168.1.7")},
		Forward{Proto: "udp", Port: 70000, To: netip.MustParseAddr("fd00::7")})
	host := netip.MustParseAddr("::1234")
	rs.Allow6 = append(rs.Allow6, Allow6{To: netip.MustParsePrefix("10.0.0.1/32"), Proto: "tcp", Port: 22},
		Allow6{To: netip.MustParsePrefix("2001:db8::1/128"), RA: "lan-ra", Host: host, Proto: "tcp", Port: 22},
		Allow6{Host: host, Proto: "tcp", Port: 22},
		Allow6{RA: "lan-ra", Proto: "tcp", Port: 22},
		Allow6{RA: "lan-ra", Host: netip.MustParseAddr("2001:db8::1234"), Proto: "tcp", Port: 22},
		Allow6{RA: "lan-ra", Host: netip.MustParseAddr("::"), Proto: "tcp", Port: 22},
		Allow6{Proto: "tcp", Port: 22})
	rs.Rules = append(rs.Rules, Rule{Chain: "output", Verdict: "reject"}, Rule{Chain: "input", To: "lan", Proto: "icmp", Port: 5, Verdict: "accept"},
		Rule{Chain: "forward", Source: prefix("10.0.0.0/8"), Dest: prefix("fd00::/8"), Verdict: "drop"})
	got := strings.Join(rs.Check(), "\n")
	for _, want := range []string{
		`open[1]: unknown zone "dmz" (zones: lan, wan)`,
		`open[1]: protocol "sctp": want tcp or udp`,
		"open[1]: port 0: want 1 to 65535",
		"forwards[1]: tcp port 8080 is already forwarded by forwards[0]",
		"forwards[2]: port 70000",
		`forwards[2]: to "fd00::7": want a LAN host's IPv4 address`,
		`allow6[3]: to "10.0.0.1/32": want an IPv6 host or prefix`,
		`allow6[4]: to "2001:db8::1/128" and ra/host: want either a fixed to, or ra and host`,
		"allow6[5].ra: host ::1234 needs the ra service whose prefix it is in",
		`allow6[6].host: ra "lan-ra" needs the host's interface identifier`,
		`allow6[7].host: "2001:db8::1234": want an interface identifier, the host's last 64 bits`,
		`allow6[8].host: "::": want an interface identifier`,
		"allow6[9]: want to (an IPv6 host or prefix), or ra and host",
		`rules[4]: chain "output": want input or forward`,
		`rules[4]: verdict "reject": want accept or drop`,
		"rules[5].to: input rules have no outgoing zone",
		"rules[5]: a port needs proto tcp or udp",
		"rules[6]: source and dest are of different families",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("Check does not report %q:\n%s", want, got)
		}
	}
	if errs := exampleRuleset().Check(); len(errs) > 0 {
		t.Errorf("the example ruleset has problems: %v", errs)
	}
}

func handles(t *testing.T, c *nftables.Conn) string {
	t.Helper()
	tb := table()
	var out []string
	for _, cs := range chainSpecs() {
		rules, err := c.GetRules(tb, &nftables.Chain{Name: cs.name, Table: tb})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rules {
			out = append(out, fmt.Sprint(r.Handle))
		}
	}
	return strings.Join(out, ",")
}

func TestApplyTwiceAndZoneUpdates(t *testing.T) {
	c, ns := netns(t)
	rs := exampleRuleset()
	res, err := Apply(c, rs)
	if err != nil || !res.Rules {
		t.Fatalf("first Apply: %+v, %v", res, err)
	}
	first := handles(t, c)
	// Traffic would bump this; here the test bumps it by hand through nft
	// to see that it survives.
	if out, err := exec.Command("ip", "netns", "exec", ns, "nft", "reset", "counter", "inet", "roost", "input_drop").CombinedOutput(); err != nil {
		t.Logf("nft reset counter: %v %s", err, out)
	}

	if res, err := Apply(c, rs); err != nil || res.Rules || res.Sets {
		t.Fatalf("second Apply changed something: %+v, %v", res, err)
	}
	// A new WAN interface: only the set changes; rules keep their handles.
	rs.Zones["wan"] = append(rs.Zones["wan"], "wwan0")
	if res, err := Apply(c, rs); err != nil || res.Rules || !res.Sets {
		t.Fatalf("zone change: %+v, %v", res, err)
	}
	if got := handles(t, c); got != first {
		t.Fatalf("a zone change rewrote rules: handles %s, were %s", got, first)
	}
	s, _ := c.GetSetByName(table(), "zone_wan")
	elems, _ := c.GetSetElements(s)
	if len(elems) != 3 {
		t.Fatalf("zone_wan has %d members, want wan, ppp0, wwan0", len(elems))
	}
	// Port forwards added, changed and removed: only the maps change; the
	// rules keep their handles.
	rs.Forwards = append(rs.Forwards, Forward{Proto: "udp", Port: 51820, To: netip.MustParseAddr("192.168.1.9")})
	rs.Forwards[0].To = netip.MustParseAddr("192.168.1.101")
	if res, err := Apply(c, rs); err != nil || res.Rules || !res.Sets {
		t.Fatalf("forward change: %+v, %v", res, err)
	}
	rs.Forwards = rs.Forwards[1:]
	if res, err := Apply(c, rs); err != nil || res.Rules || !res.Sets {
		t.Fatalf("forward removed: %+v, %v", res, err)
	}
	if got := handles(t, c); got != first {
		t.Fatalf("a forward change rewrote rules: handles %s, were %s", got, first)
	}
	var forwards strings.Builder
	Show(c, &forwards)
	if s := forwards.String(); !strings.Contains(s, "51820 : 192.168.1.9 . 51820") || strings.Contains(s, "8080 :") {
		t.Fatalf("after the forward changes, Show says:\n%s", s)
	}
	// A rule change rewrites the rules in one batch; named counters stay.
	rs.Open = append(rs.Open, Port{Zone: "lan", Proto: "tcp", Port: 8443})
	if res, err := Apply(c, rs); err != nil || !res.Rules {
		t.Fatalf("rule change: %+v, %v", res, err)
	}
	var show strings.Builder
	if err := Show(c, &show); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"iifname @zone_lan tcp dport 8443 accept", "counter input_drop {", `"wwan0"`} {
		if !strings.Contains(show.String(), want) {
			t.Errorf("Show lacks %q:\n%s", want, show.String())
		}
	}
	if err := Remove(c); err != nil {
		t.Fatal(err)
	}
	if err := Show(c, &show); err == nil {
		t.Fatal("the table is still there after Remove")
	}
}

// TestScriptMatchesNft: nft itself accepts the script, and lists the same
// rules as Apply writes: the model's text and its expressions agree.
func TestScriptMatchesNft(t *testing.T) {
	c, ns := netns(t)
	rs := exampleRuleset()
	script := filepath.Join(t.TempDir(), "roost.nft")
	os.WriteFile(script, []byte(Script(rs)), 0o644)
	nft := func(args ...string) string {
		out, err := exec.Command("ip", append([]string{"netns", "exec", ns, "nft"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("nft %v: %v: %s", args, err, out)
		}
		return string(out)
	}
	nft("-f", script)
	fromScript := nft("list", "table", "inet", TableName)
	nft("delete", "table", "inet", TableName)
	if _, err := Apply(c, rs); err != nil {
		t.Fatal(err)
	}
	fromApply := regexp.MustCompile(` comment ".*"`).ReplaceAllString(nft("list", "table", "inet", TableName), "")
	if fromApply != fromScript {
		t.Errorf("nft lists Apply's rules differently from the script's:\n--- apply\n%s\n--- script\n%s", fromApply, fromScript)
	}
}

// TestLargeRuleset: thousands of forwards go in one batch, which is what
// keeps an update atomic; the netlink socket must hold it and its acks.
func TestLargeRuleset(t *testing.T) {
	c, _ := netns(t)
	rs := exampleRuleset()
	rs.Forwards = nil
	for i := 0; i < 2000; i++ {
		rs.Forwards = append(rs.Forwards, Forward{Proto: "udp", Port: 20000 + i, To: netip.AddrFrom4([4]byte{192, 168, 1, byte(2 + i%250)})})
	}
	if _, err := Apply(c, rs); err != nil {
		t.Fatal(err)
	}
	elems, err := c.GetSetElements(forwardMap(table(), "udp"))
	if err != nil || len(elems) != 2000 {
		t.Fatalf("forward_udp has %d elements, want 2000 (%v)", len(elems), err)
	}
}

// TestAllow6FollowsPrefix: a pinhole named by interface identifier opens
// the host's address in the prefix its ra service announces now, moves
// with it, and is absent, not wider, while there is none.
func TestAllow6FollowsPrefix(t *testing.T) {
	svc := &Service{
		Zones: map[string]Zone{"wan": {Interfaces: []string{"wan"}}, "lan": {Interfaces: []string{"br-lan"}}},
		Allow6: []Allow6{
			{RA: "lan-ra", Host: netip.MustParseAddr("::1234:5678:9abc:def0"), Proto: "tcp", Port: 443},
			{RA: "lan-ra", Host: netip.MustParseAddr("::a"), Proto: "udp", Port: 51820},
			{RA: "ghost", Host: netip.MustParseAddr("::b"), Proto: "tcp", Port: 22}, // no such service: never a prefix
		},
	}
	want := []supervisor.Ref{{Service: "lan-ra", Key: "prefix"}, {Service: "ghost", Key: "prefix"}}
	if got := svc.Reads(); !slices.Equal(got, want) {
		t.Errorf("Reads = %v, want %v: a renumbering must re-run the firewall", got, want)
	}
	if got := fmt.Sprint(svc.RARefs()); got != "[{allow6[0].ra lan-ra} {allow6[1].ra lan-ra} {allow6[2].ra ghost}]" {
		t.Errorf("RARefs = %s", got)
	}
	pinholes := func(prefix string) string {
		rs := svc.Ruleset(func(r supervisor.Ref) (string, bool) {
			if r.Service != "lan-ra" || r.Key != "prefix" || prefix == "" {
				return "", false
			}
			return prefix, true
		})
		if errs := rs.Check(); len(errs) > 0 {
			t.Fatalf("Check: %v", errs)
		}
		var out []string
		for _, r := range render(table(), rs, map[string]*nftables.Set{"wan": {Name: "zone_wan"}, "lan": {Name: "zone_lan"}}) {
			if strings.Contains(r.text, "ip6 daddr") {
				out = append(out, r.text)
			}
		}
		return strings.Join(out, "\n")
	}
	for _, tc := range []struct{ prefix, want string }{
		{"2001:db8:100:1::/64", "iifname @zone_wan ip6 daddr 2001:db8:100:1:1234:5678:9abc:def0 tcp dport 443 accept\n" +
			"iifname @zone_wan ip6 daddr 2001:db8:100:1::a udp dport 51820 accept"},
		{"2001:db8:200:1::/64", "iifname @zone_wan ip6 daddr 2001:db8:200:1:1234:5678:9abc:def0 tcp dport 443 accept\n" +
			"iifname @zone_wan ip6 daddr 2001:db8:200:1::a udp dport 51820 accept"},
		{"", ""},
		{"not a prefix", ""},
		{"192.168.1.0/24", ""},
	} {
		if got := pinholes(tc.prefix); got != tc.want {
			t.Errorf("with lan-ra announcing %q, the pinholes are\n%s\nwant\n%s", tc.prefix, got, tc.want)
		}
	}
}

// TestScriptGolden: the whole ruleset, as nft text, for the example; go
// test ./firewall -run TestScriptGolden -update writes it.
func TestScriptGolden(t *testing.T) {
	got := Script(exampleRuleset())
	golden := filepath.Join("testdata", "example.nft")
	if *update {
		os.MkdirAll("testdata", 0o755)
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (go test ./firewall -run TestScriptGolden -update writes it)", err)
	}
	if got != string(want) {
		t.Errorf("Script differs from %s:\n%s", golden, got)
	}
}

// TestZoneSettling: a zone service that has not named its interface yet
// (roostd starting, or a new roostd taking over) leaves its zone's live
// members in place; one that named it and then lost it takes it out.
func TestZoneSettling(t *testing.T) {
	c, _ := netns(t)
	svc := &Service{Zones: map[string]Zone{"wan": {Services: []string{"wan"}, Interfaces: []string{"ppp0"}}, "lan": {Services: []string{"lan"}}},
		Joined: &Joined{}}
	outputs := map[supervisor.Ref]string{}
	input := func(r supervisor.Ref) (string, bool) { v, ok := outputs[r]; return v, ok }
	members := func() map[string]string {
		out := map[string]string{}
		for _, z := range []string{"wan", "lan"} {
			elems, err := c.GetSetElements(zoneSet(table(), z))
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, e := range elems {
				names = append(names, strings.TrimRight(string(e.Key), "\x00"))
			}
			sort.Strings(names)
			out[z] = strings.Join(names, ",")
		}
		return out
	}
	apply := func(step string, want map[string]string) {
		t.Helper()
		if _, err := Apply(c, svc.Ruleset(input)); err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		if got := members(); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: zones %v, want %v", step, got, want)
		}
	}
	// The last roostd left the table with both links in their zones.
	if _, err := Apply(c, Ruleset{Zones: map[string][]string{"wan": {"ppp0", "wan"}, "lan": {"br-lan"}}}); err != nil {
		t.Fatal(err)
	}
	apply("starting, no link named yet", map[string]string{"wan": "ppp0,wan", "lan": "br-lan"})
	outputs[netconf.IfName.Of("wan")] = "wan"
	apply("the WAN named", map[string]string{"wan": "ppp0,wan", "lan": "br-lan"})
	outputs[netconf.IfName.Of("lan")] = "br-lan2"
	apply("the LAN named, renamed since", map[string]string{"wan": "ppp0,wan", "lan": "br-lan2"})
	delete(outputs, netconf.IfName.Of("wan"))
	apply("the WAN went away", map[string]string{"wan": "ppp0", "lan": "br-lan2"})
}
