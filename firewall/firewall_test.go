package firewall

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/google/nftables"
)

// netns makes a network namespace for the test and returns an nftables
// connection into it and the namespace's name.
func netns(t *testing.T) (*nftables.Conn, string) {
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
	c, err := nftables.New(nftables.WithNetNSFd(int(f.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	return c, name
}

func exampleRuleset() Ruleset {
	return Ruleset{
		Zones:    map[string][]string{"wan": {"wan", "ppp0"}, "lan": {"br-lan"}},
		Open:     []Port{{Zone: "wan", Proto: "tcp", Port: 443}},
		Forwards: []Forward{{Proto: "tcp", Port: 8080, To: netip.MustParseAddr("192.168.1.100"), ToPort: 80}},
		Allow6:   []Allow6{{To: netip.MustParsePrefix("fd00:1::100/128"), Proto: "tcp", Port: 80}},
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
	for i, r := range render(tb, rs, zones) {
		c.FlushRuleset()
		c.Flush()
		single := func() error {
			c.AddTable(tb)
			for _, cs := range chainSpecs() {
				p := cs.policy
				c.AddChain(&nftables.Chain{Name: cs.name, Table: tb, Type: cs.typ, Hooknum: cs.hook, Priority: cs.priority, Policy: &p})
			}
			for _, z := range rs.zoneList() {
				if err := c.AddSet(zones[z], nil); err != nil {
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
			linkZones(r, zones)
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
