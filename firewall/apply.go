package firewall

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"sort"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

const fingerprintMark = " # roost:"

// KernelModules are the modules the ruleset needs, for kernels that have
// them as modules. The kernel loads a missing one on first use, but it
// does so by aborting the whole batch, running modprobe and replaying it,
// once per module: a board's init should load them at boot.
var KernelModules = []string{"nf_tables", "nft_ct", "nft_nat", "nft_masq", "nft_chain_nat", "nft_limit", "nft_fib_inet", "nft_objref"}

// Result says what Apply changed.
type Result struct {
	Rules bool // the rules were (re)written
	Sets  bool // only zone members changed
}

func table() *nftables.Table {
	return &nftables.Table{Family: nftables.TableFamilyINet, Name: TableName}
}

func (r Ruleset) zoneList() []string {
	var zs []string
	for z := range r.Zones {
		zs = append(zs, z)
	}
	sort.Strings(zs)
	return zs
}

// Apply makes the live table match rs, in one netlink batch, so the kernel
// switches from the old ruleset to the new one at once and never runs with
// half of either. Unchanged rules are not rewritten (counters and
// connections stay); if only zone members changed, only the sets are
// updated; if nothing changed, nothing is sent.
func Apply(c *nftables.Conn, rs Ruleset) (Result, error) {
	var res Result
	if errs := rs.Check(); len(errs) > 0 {
		return res, fmt.Errorf("firewall: %s", strings.Join(errs, "; "))
	}
	t := table()
	zones := map[string]*nftables.Set{}
	for _, z := range rs.zoneList() {
		zones[z] = zoneSet(t, z)
	}
	named := namedSets(t, rs, zones)
	rules := render(t, rs, zones)
	fp := fingerprint(rules, rs.zoneList())

	// The fingerprint is read first: when it matches (the common case, a
	// zone member or a forward changed) the table exists, and the rules
	// are not looked at again.
	if liveFingerprint(c, t) == fp {
		changed, err := syncSets(c, named, rs.keeps)
		if err != nil {
			return res, err
		}
		res.Sets = changed
		return res, nil
	}
	live, err := c.ListTableOfFamily(TableName, nftables.TableFamilyINet)
	exists := err == nil && live != nil

	// One batch: table, sets, counters, chains (flushed if they exist),
	// rules. Flush sends it as one transaction.
	c.AddTable(t)
	var liveSets map[string]*nftables.Set
	var liveObjs map[string]bool
	if exists {
		liveSets, liveObjs = map[string]*nftables.Set{}, map[string]bool{}
		sets, _ := c.GetSets(t)
		for _, s := range sets {
			liveSets[s.Name] = s
		}
		objs, _ := c.GetNamedObjects(t)
		for _, o := range objs {
			if no, ok := o.(*nftables.NamedObj); ok {
				liveObjs[no.Name] = true
			}
		}
	}
	chains := map[string]*nftables.Chain{}
	for _, cs := range chainSpecs() {
		policy := cs.policy
		ch := &nftables.Chain{Name: cs.name, Table: t, Type: cs.typ, Hooknum: cs.hook, Priority: cs.priority, Policy: &policy}
		chains[cs.name] = c.AddChain(ch)
		if exists {
			c.FlushChain(ch)
		}
	}
	byName := map[string]*nftables.Set{}
	for _, n := range named {
		byName[n.set.Name] = n.set
	}
	for name, s := range liveSets {
		if _, keep := byName[name]; !keep && !s.Anonymous {
			c.DelSet(s)
		}
	}
	for _, n := range named {
		if _, ok := liveSets[n.set.Name]; ok {
			if !rs.keeps(n.set.Name) {
				c.FlushSet(n.set)
			}
			if len(n.elems) > 0 {
				if err := c.SetAddElements(n.set, n.elems); err != nil {
					return res, err
				}
			}
		} else if err := c.AddSet(n.set, n.elems); err != nil {
			return res, fmt.Errorf("firewall: set %s: %w", n.set.Name, err)
		}
	}
	for _, name := range counterNames {
		if !liveObjs[name] {
			c.AddObj(&nftables.NamedObj{Table: t, Name: name, Type: nftables.ObjTypeCounter, Obj: counterExpr()})
		}
	}
	for i, r := range rules {
		for _, a := range r.anon {
			if err := c.AddSet(a.set, a.elems); err != nil {
				return res, fmt.Errorf("firewall: %w", err)
			}
			linkAnon(r, a.set)
		}
		linkSets(r, byName)
		c.AddRule(&nftables.Rule{Table: t, Chain: chains[r.chain], Exprs: r.exprs, UserData: r.userData(i == 0, fp)})
	}
	if err := c.Flush(); err != nil {
		return res, fmt.Errorf("firewall: apply the ruleset: %w", err)
	}
	res.Rules = true
	return res, nil
}

// liveFingerprint reads the fingerprint from the first input rule.
func liveFingerprint(c *nftables.Conn, t *nftables.Table) string {
	rules, err := c.GetRules(t, &nftables.Chain{Name: "input", Table: t})
	if err != nil || len(rules) == 0 {
		return ""
	}
	comment, _ := userdata.GetString(rules[0].UserData, userdata.TypeComment)
	_, fp, ok := strings.Cut(comment, fingerprintMark)
	if !ok {
		return ""
	}
	return fp
}

// namedSet is one of the table's named sets or maps, with the elements
// it should hold: a zone's members, a protocol's port forwards. Their
// contents change in place; the rules only name them.
type namedSet struct {
	set   *nftables.Set
	elems []nftables.SetElement
}

// namedSets are rs's named sets, zones first, each in a fixed order.
func namedSets(t *nftables.Table, rs Ruleset, zones map[string]*nftables.Set) []namedSet {
	var out []namedSet
	for _, z := range rs.zoneList() {
		n := namedSet{set: zones[z]}
		for _, ifn := range rs.Zones[z] {
			n.elems = append(n.elems, nftables.SetElement{Key: ifnameKey(ifn)})
		}
		out = append(out, n)
	}
	for _, proto := range forwardProtos {
		out = append(out, namedSet{set: forwardMap(t, proto), elems: rs.forwardElems(proto)})
	}
	return out
}

// elemKey identifies an element by its key and value as the kernel
// returns them, which may lack the padding they were written with.
func elemKey(e nftables.SetElement) string {
	return string(bytes.TrimRight(e.Key, "\x00")) + "=" + string(bytes.TrimRight(e.Val, "\x00"))
}

// keeps reports whether the named set's live elements are kept: it is a
// zone that is settling.
func (r Ruleset) keeps(set string) bool {
	z, ok := strings.CutPrefix(set, "zone_")
	return ok && r.Settling[z]
}

// syncSets updates the named sets' elements in place, removing none from
// a set that keep says to keep; it reports whether anything changed.
func syncSets(c *nftables.Conn, named []namedSet, keep func(set string) bool) (bool, error) {
	changed := false
	for _, n := range named {
		live, err := c.GetSetElements(n.set)
		if err != nil {
			return false, fmt.Errorf("firewall: set %s: %w", n.set.Name, err)
		}
		have := map[string]bool{}
		for _, e := range live {
			have[elemKey(e)] = true
		}
		want := map[string]bool{}
		var add, del []nftables.SetElement
		for _, e := range n.elems {
			want[elemKey(e)] = true
			if !have[elemKey(e)] {
				add = append(add, e)
			}
		}
		for _, e := range live {
			if !want[elemKey(e)] && !keep(n.set.Name) {
				del = append(del, e)
			}
		}
		// Deleted first: a forward whose host changed keeps its key.
		if len(del) > 0 {
			if err := c.SetDeleteElements(n.set, del); err != nil {
				return false, err
			}
		}
		if len(add) > 0 {
			if err := c.SetAddElements(n.set, add); err != nil {
				return false, err
			}
		}
		changed = changed || len(add)+len(del) > 0
	}
	if !changed {
		return false, nil
	}
	return true, c.Flush()
}

// Remove deletes roost's table, when the config no longer has a firewall.
func Remove(c *nftables.Conn) error {
	if _, err := c.ListTableOfFamily(TableName, nftables.TableFamilyINet); err != nil {
		return nil
	}
	c.DelTable(table())
	return c.Flush()
}

// Show writes the live table as nft text: chains with their hooks and
// policies, sets with their members, named counters with their values, and
// each rule as it was written.
func Show(c *nftables.Conn, w io.Writer) error {
	t, err := c.ListTableOfFamily(TableName, nftables.TableFamilyINet)
	if err != nil || t == nil {
		return errors.New("there is no roost firewall table (inet roost) in this network namespace")
	}
	fmt.Fprintf(w, "table inet %s {\n", TableName)
	sets, err := c.GetSets(t)
	if err != nil {
		return err
	}
	for _, s := range sets {
		if s.Anonymous {
			continue
		}
		elems, _ := c.GetSetElements(s)
		var texts []string
		for _, e := range elems {
			texts = append(texts, elemText(s, e))
		}
		sort.Strings(texts)
		writeSet(w, s, texts)
		fmt.Fprintln(w)
	}
	objs, _ := c.GetNamedObjects(t)
	for _, o := range objs {
		if no, ok := o.(*nftables.NamedObj); ok {
			if ctr, ok := no.Obj.(*expr.Counter); ok {
				fmt.Fprintf(w, "\tcounter %s {\n\t\tpackets %d bytes %d\n\t}\n\n", no.Name, ctr.Packets, ctr.Bytes)
			}
		}
	}
	for i, cs := range chainSpecs() {
		ch := &nftables.Chain{Name: cs.name, Table: t}
		rules, err := c.GetRules(t, ch)
		if err != nil {
			continue
		}
		if i > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintf(w, "\tchain %s {\n\t\t%s\n", cs.name, cs.text)
		for _, r := range rules {
			text, _ := userdata.GetString(r.UserData, userdata.TypeComment)
			text, _, _ = strings.Cut(text, fingerprintMark)
			if text == "" {
				text = "# a rule roost did not write"
			}
			fmt.Fprintf(w, "\t\t%s\n", text)
		}
		fmt.Fprintf(w, "\t}\n")
	}
	fmt.Fprintln(w, "}")
	return nil
}

func counterExpr() *expr.Counter { return &expr.Counter{} }

// writeSet writes a named set or map as nft declares it.
func writeSet(w io.Writer, s *nftables.Set, elems []string) {
	kind, typ := "set", "ifname"
	if s.IsMap {
		kind, typ = "map", s.KeyType.Name+" : "+s.DataType.Name
	}
	fmt.Fprintf(w, "\t%s %s {\n\t\ttype %s\n", kind, s.Name, typ)
	if len(elems) > 0 {
		fmt.Fprintf(w, "\t\telements = { %s }\n", strings.Join(elems, ", "))
	}
	fmt.Fprintf(w, "\t}\n")
}

// elemText is a live element as nft writes it: an interface name, or a
// forwarded port with its host and port.
func elemText(s *nftables.Set, e nftables.SetElement) string {
	if !s.IsMap {
		return fmt.Sprintf("%q", string(bytes.TrimRight(e.Key, "\x00")))
	}
	if len(e.Key) < 2 || len(e.Val) < 6 {
		return fmt.Sprintf("%x : %x", e.Key, e.Val)
	}
	addr := netip.AddrFrom4([4]byte(e.Val[:4]))
	return fmt.Sprintf("%d : %s . %d", binary.BigEndian.Uint16(e.Key), addr, binary.BigEndian.Uint16(e.Val[4:6]))
}

// linkAnon points the rule's first unresolved lookup at its anonymous set,
// which exists only once added to the batch.
func linkAnon(r rule, set *nftables.Set) {
	for _, e := range r.exprs {
		if l, ok := e.(*expr.Lookup); ok && l.SetName == "" {
			l.SetName, l.SetID = set.Name, set.ID
			return
		}
	}
}

// linkSets gives the rule's lookups of named sets their batch ids.
func linkSets(r rule, byName map[string]*nftables.Set) {
	for _, e := range r.exprs {
		if l, ok := e.(*expr.Lookup); ok && byName[l.SetName] != nil {
			l.SetID = byName[l.SetName].ID
		}
	}
}

// userData is the rule's comment: its text, and on the first rule the
// ruleset's fingerprint.
func (r rule) userData(first bool, fp string) []byte {
	comment := r.text
	if first {
		comment += fingerprintMark + fp
	}
	return userdata.AppendString(nil, userdata.TypeComment, comment)
}

// Script renders rs as an nft -f script that builds the same table: for
// comparing with nft, and for reading what roost would apply.
func Script(rs Ruleset) string {
	t := table()
	zones := map[string]*nftables.Set{}
	for _, z := range rs.zoneList() {
		zones[z] = zoneSet(t, z)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {\n", TableName)
	for _, n := range namedSets(t, rs, zones) {
		var texts []string
		for _, e := range n.elems {
			texts = append(texts, elemText(n.set, e))
		}
		writeSet(&b, n.set, texts)
	}
	for _, n := range counterNames {
		fmt.Fprintf(&b, "\tcounter %s {\n\t}\n", n)
	}
	rules := render(t, rs, zones)
	for _, cs := range chainSpecs() {
		fmt.Fprintf(&b, "\tchain %s {\n\t\t%s\n", cs.name, cs.text)
		for _, r := range rules {
			if r.chain == cs.name {
				fmt.Fprintf(&b, "\t\t%s\n", r.text)
			}
		}
		fmt.Fprintf(&b, "\t}\n")
	}
	b.WriteString("}\n")
	return b.String()
}

// batchBuffer bounds a ruleset's netlink batch: thousands of rules are
// megabytes, more than a socket's default send buffer holds in one message.
const batchBuffer = 32 << 20

// ErrNoNFTables is the error NewConn wraps when the kernel has no nf_tables.
var ErrNoNFTables = errors.New("nf_tables is not in this kernel")

// NewConn returns a connection to the kernel's nftables, with a send buffer
// that holds a large ruleset's whole batch (the batch is what makes an
// update atomic, so it is never split). It fails with ErrNoNFTables, naming
// the modules to load, on a kernel that has nf_tables as modules none has
// loaded (Debian's MIPS kernels; OpenWrt's without a firewall package):
// only the firewall needs it, so only the firewall fails.
func NewConn(opts ...nftables.ConnOption) (*nftables.Conn, error) {
	opts = append(opts, nftables.WithSockOptions(func(c *netlink.Conn) error {
		raw, err := c.SyscallConn()
		if err != nil {
			return err
		}
		var serr error
		err = raw.Control(func(fd uintptr) {
			// Past wmem_max and rmem_max only with the FORCE options, which
			// need CAP_NET_ADMIN; roostd has it, and without it the plain
			// options give what they can. The receive side holds the
			// kernel's acknowledgement of every message of the batch.
			for _, o := range [][2]int{{unix.SO_SNDBUFFORCE, unix.SO_SNDBUF}, {unix.SO_RCVBUFFORCE, unix.SO_RCVBUF}} {
				if e := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o[0], batchBuffer); e != nil {
					if e = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o[1], batchBuffer); e != nil {
						serr = e
					}
				}
			}
		})
		if err != nil {
			return err
		}
		return serr
	}))
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, err
	}
	// The library opens its netlink socket only when it sends, so without
	// this the first sign of a missing nf_tables would be a bare "protocol
	// not supported" from the first batch.
	if _, err := c.ListTablesOfFamily(nftables.TableFamilyINet); err != nil {
		return nil, kernelError(err)
	}
	return c, nil
}

// kernelError says what a failed first request means: no NETLINK_NETFILTER
// socket is the nfnetlink module missing; nfnetlink without an nftables
// subsystem answers EINVAL (or EOPNOTSUPP in a batch): nf_tables missing.
// The kernel loads both by itself where it can run modprobe; a board's init
// should load them at boot all the same (see KernelModules).
func kernelError(err error) error {
	if errors.Is(err, unix.EPROTONOSUPPORT) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) {
		return fmt.Errorf("%w (%w): load its modules: modprobe -a nfnetlink %s", ErrNoNFTables, err, strings.Join(KernelModules, " "))
	}
	return fmt.Errorf("list nftables tables: %w", err)
}
