package main

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"sort"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"github.com/roostrouter/roost/firewall"
)

// runFirewall prints the live ruleset of this network namespace.
func runFirewall(e *env, args []string) error {
	f := newFlags(e, "firewall")
	pos, err := f.parse(args)
	if err != nil {
		return err
	}
	if len(pos) != 1 || pos[0] != "show" {
		return fmt.Errorf("usage: roostd firewall show [--json]")
	}
	c, err := firewall.NewConn()
	if err != nil {
		return err
	}
	if !*f.json {
		return firewall.Show(c, e.stdout)
	}
	out, err := liveFirewall(c)
	if err != nil {
		return err
	}
	printJSON(e.stdout, out)
	return nil
}

// firewallJSON is what `roostd firewall show --json` prints: roost's
// table as the kernel has it, as data (its chains with their rules, its
// sets with their members, its named counters), and as the text firewall
// show prints. nft's own JSON (nft -j) describes each rule expression by
// expression, which says less to a script than the rules as roost wrote
// them.
type firewallJSON struct {
	Table    string        `json:"table"`
	Chains   []chainJSON   `json:"chains"`
	Sets     []setJSON     `json:"sets"`
	Counters []counterJSON `json:"counters"`
	Ruleset  string        `json:"ruleset"`
}

type chainJSON struct {
	Name     string   `json:"name"`
	Type     string   `json:"type,omitempty"` // filter, nat, route
	Hook     string   `json:"hook,omitempty"` // prerouting, input, forward, output, postrouting
	Priority *int32   `json:"priority,omitempty"`
	Policy   string   `json:"policy,omitempty"` // accept or drop
	Rules    []string `json:"rules"`            // as roost wrote them, in order
}

type setJSON struct {
	Name     string   `json:"name"`
	Elements []string `json:"elements"`
}

type counterJSON struct {
	Name    string `json:"name"`
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

// ruleMark starts the fingerprint that firewall.Apply appends to each
// rule's comment (firewall's fingerprintMark): bookkeeping, not the rule.
const ruleMark = " # roost:"

// liveFirewall reads roost's table back from the kernel.
func liveFirewall(c *nftables.Conn) (firewallJSON, error) {
	var text bytes.Buffer
	if err := firewall.Show(c, &text); err != nil {
		return firewallJSON{}, err
	}
	out := firewallJSON{Table: "inet " + firewall.TableName, Ruleset: text.String(),
		Chains: []chainJSON{}, Sets: []setJSON{}, Counters: []counterJSON{}}
	t := &nftables.Table{Family: nftables.TableFamilyINet, Name: firewall.TableName}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return out, fmt.Errorf("list the chains of table inet %s: %w", firewall.TableName, err)
	}
	for _, ch := range chains {
		if ch.Table == nil || ch.Table.Name != firewall.TableName {
			continue
		}
		cj := chainJSON{Name: ch.Name, Type: string(ch.Type), Rules: []string{}}
		if ch.Hooknum != nil {
			cj.Hook = hookName(*ch.Hooknum)
		}
		if ch.Priority != nil {
			p := int32(*ch.Priority)
			cj.Priority = &p
		}
		if ch.Policy != nil {
			cj.Policy = map[nftables.ChainPolicy]string{nftables.ChainPolicyAccept: "accept", nftables.ChainPolicyDrop: "drop"}[*ch.Policy]
		}
		rules, err := c.GetRules(t, ch)
		if err != nil {
			return out, fmt.Errorf("list the rules of chain %s: %w", ch.Name, err)
		}
		for _, r := range rules {
			comment, _ := userdata.GetString(r.UserData, userdata.TypeComment)
			comment, _, _ = strings.Cut(comment, ruleMark)
			if comment == "" {
				comment = "# a rule roost did not write"
			}
			cj.Rules = append(cj.Rules, comment)
		}
		out.Chains = append(out.Chains, cj)
	}
	sets, err := c.GetSets(t)
	if err != nil {
		return out, fmt.Errorf("list the sets of table inet %s: %w", firewall.TableName, err)
	}
	for _, s := range sets {
		if s.Anonymous {
			continue
		}
		elems, err := c.GetSetElements(s)
		if err != nil {
			return out, fmt.Errorf("list the members of set %s: %w", s.Name, err)
		}
		sj := setJSON{Name: s.Name, Elements: []string{}}
		for _, el := range elems {
			if s.KeyType == nftables.TypeIFName {
				sj.Elements = append(sj.Elements, string(bytes.TrimRight(el.Key, "\x00")))
			} else {
				sj.Elements = append(sj.Elements, hex.EncodeToString(el.Key))
			}
		}
		sort.Strings(sj.Elements)
		out.Sets = append(out.Sets, sj)
	}
	objs, err := c.GetNamedObjects(t)
	if err != nil {
		return out, fmt.Errorf("list the counters of table inet %s: %w", firewall.TableName, err)
	}
	for _, o := range objs {
		if no, ok := o.(*nftables.NamedObj); ok {
			if ctr, ok := no.Obj.(*expr.Counter); ok {
				out.Counters = append(out.Counters, counterJSON{Name: no.Name, Packets: ctr.Packets, Bytes: ctr.Bytes})
			}
		}
	}
	return out, nil
}

// hookName names a hook of the inet family as nft does.
func hookName(h nftables.ChainHook) string {
	switch h {
	case unix.NF_INET_PRE_ROUTING:
		return "prerouting"
	case unix.NF_INET_LOCAL_IN:
		return "input"
	case unix.NF_INET_FORWARD:
		return "forward"
	case unix.NF_INET_LOCAL_OUT:
		return "output"
	case unix.NF_INET_POST_ROUTING:
		return "postrouting"
	}
	return fmt.Sprint(uint32(h))
}
