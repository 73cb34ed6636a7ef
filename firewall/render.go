package firewall

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"sort"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// TableName is roost's table; nothing else is ever changed.
const TableName = "roost"

// maxComment is what the kernel keeps of a rule's userdata (NFT_USERDATA_MAXLEN).
const maxComment = 256

// rule is one rule with its nft text, which is kept as the rule's comment:
// roostd firewall show prints the live rules with it. The kernel keeps at
// most maxComment bytes of a rule's comment.
type rule struct {
	chain string
	text  string
	exprs []expr.Any
	anon  []anonSet // anonymous sets the rule looks up
}

type anonSet struct {
	set   *nftables.Set
	elems []nftables.SetElement
}

type chainSpec struct {
	name     string
	typ      nftables.ChainType
	hook     *nftables.ChainHook
	priority *nftables.ChainPriority
	policy   nftables.ChainPolicy
	text     string
}

func chainSpecs() []chainSpec {
	return []chainSpec{
		{"input", nftables.ChainTypeFilter, nftables.ChainHookInput, nftables.ChainPriorityFilter, nftables.ChainPolicyDrop, "type filter hook input priority filter; policy drop;"},
		{"forward", nftables.ChainTypeFilter, nftables.ChainHookForward, nftables.ChainPriorityFilter, nftables.ChainPolicyDrop, "type filter hook forward priority filter; policy drop;"},
		{"prerouting", nftables.ChainTypeNAT, nftables.ChainHookPrerouting, nftables.ChainPriorityNATDest, nftables.ChainPolicyAccept, "type nat hook prerouting priority dstnat; policy accept;"},
		{"postrouting", nftables.ChainTypeNAT, nftables.ChainHookPostrouting, nftables.ChainPriorityNATSource, nftables.ChainPolicyAccept, "type nat hook postrouting priority srcnat; policy accept;"},
	}
}

// Named counters live outside the rules, so they survive a reload.
var counterNames = []string{"input_drop", "forward_drop"}

func zoneSet(t *nftables.Table, zone string) *nftables.Set {
	// nft keeps strings, interface names among them, in host byte order;
	// saying so lets nft print the members as names.
	return &nftables.Set{Table: t, Name: "zone_" + zone, KeyType: nftables.TypeIFName, KeyByteOrder: binaryutil.NativeEndian}
}

// forwardProtos are the protocols port forwards are for: each has a
// named map, present even while empty, so that a forward added or removed
// changes the map's elements in place and never the rules.
var forwardProtos = []string{"tcp", "udp"}

// forwardMap sends a protocol's forwarded WAN ports to their LAN hosts:
// one lookup per new connection however many forwards there are, where a
// rule each would be matched one after another.
func forwardMap(t *nftables.Table, proto string) *nftables.Set {
	return &nftables.Set{Table: t, Name: "forward_" + proto, IsMap: true, KeyType: nftables.TypeInetService,
		DataType: nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetService)}
}

// forwardElems are the elements of proto's forward map: the WAN port, to
// the host's address and port (each part of the value padded to the
// kernel's 4-byte registers).
func (r Ruleset) forwardElems(proto string) []nftables.SetElement {
	var elems []nftables.SetElement
	for _, f := range r.Forwards {
		if f.Proto != proto {
			continue
		}
		addr, to := f.To.As4(), f.toPort()
		elems = append(elems, nftables.SetElement{Key: binaryutil.BigEndian.PutUint16(uint16(f.Port)),
			Val: append(addr[:], byte(to>>8), byte(to), 0, 0)})
	}
	return elems
}

// toPort is the LAN host's port: the WAN port unless given.
func (f Forward) toPort() int {
	if f.ToPort == 0 {
		return f.Port
	}
	return f.ToPort
}

func ifnameKey(name string) []byte {
	b := make([]byte, 16)
	copy(b, name)
	return b
}

// builder collects the rules with small helpers that write both the
// expressions and the nft text.
type builder struct {
	t     *nftables.Table
	zones map[string]*nftables.Set
	rules []rule
}

type frag struct {
	text  string
	exprs []expr.Any
	anon  []anonSet
}

func (b *builder) add(chain string, parts ...frag) {
	r := rule{chain: chain}
	var texts []string
	for _, p := range parts {
		if p.text != "" {
			texts = append(texts, p.text)
		}
		r.exprs = append(r.exprs, p.exprs...)
		r.anon = append(r.anon, p.anon...)
	}
	r.text = strings.Join(texts, " ")
	b.rules = append(b.rules, r)
}

func ifIn(dir string, set *nftables.Set) frag {
	key := expr.MetaKeyIIFNAME
	if dir == "oifname" {
		key = expr.MetaKeyOIFNAME
	}
	return frag{text: dir + " @" + set.Name, exprs: []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Lookup{SourceRegister: 1, SetName: set.Name},
	}}
}

func ifname(dir, name string) frag {
	key := expr.MetaKeyIIFNAME
	if dir == "oifname" {
		key = expr.MetaKeyOIFNAME
	}
	return frag{text: fmt.Sprintf("%s %q", dir, name), exprs: []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifnameKey(name)},
	}}
}

func ctState(text string, bits uint32) frag {
	return frag{text: "ct state " + text, exprs: []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: binaryutil.NativeEndian.PutUint32(bits), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
	}}
}

func ctStatusDNAT() frag {
	return frag{text: "ct status dnat", exprs: []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATUS},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: binaryutil.NativeEndian.PutUint32(ipsDstNAT), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
	}}
}

func nfproto(v6 bool) frag {
	p, text := byte(unix.NFPROTO_IPV4), "meta nfproto ipv4"
	if v6 {
		p, text = unix.NFPROTO_IPV6, "meta nfproto ipv6"
	}
	return frag{text: text, exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p}},
	}}
}

func l4proto(name string) frag {
	p := map[string]byte{"tcp": unix.IPPROTO_TCP, "udp": unix.IPPROTO_UDP, "icmp": unix.IPPROTO_ICMP, "ipv6-icmp": unix.IPPROTO_ICMPV6}[name]
	return frag{text: "meta l4proto " + name, exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p}},
	}}
}

func dport(proto string, port int) frag {
	f := l4proto(proto)
	f.text = fmt.Sprintf("%s dport %d", proto, port)
	f.exprs = append(f.exprs,
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(uint16(port))})
	return f
}

// icmpTypes matches ICMP (v4 or v6) types: one by comparison, more
// through an anonymous set.
func (b *builder) icmpTypes(v6 bool, names []string, types []byte) frag {
	proto, kt := "icmp", nftables.TypeICMPType
	if v6 {
		proto, kt = "ipv6-icmp", nftables.TypeICMP6Type
	}
	if len(types) == 1 {
		f := l4proto(proto)
		word := "icmp"
		if v6 {
			word = "icmpv6"
		}
		f.text = word + " type " + names[0]
		f.exprs = append(f.exprs,
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{types[0]}})
		return f
	}
	set := &nftables.Set{Table: b.t, Anonymous: true, Constant: true, KeyType: kt}
	var elems []nftables.SetElement
	for _, t := range types {
		elems = append(elems, nftables.SetElement{Key: []byte{t}})
	}
	f := l4proto(proto)
	word := "icmp"
	if v6 {
		word = "icmpv6"
	}
	f.text = fmt.Sprintf("%s type { %s }", word, strings.Join(names, ", "))
	f.exprs = append(f.exprs,
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
		&expr.Lookup{SourceRegister: 1, SetName: "", SetID: 0})
	f.anon = []anonSet{{set, elems}}
	return f
}

func limit(perSecond uint64) frag {
	return frag{text: fmt.Sprintf("limit rate %d/second", perSecond), exprs: []expr.Any{
		&expr.Limit{Type: expr.LimitTypePkts, Rate: perSecond, Unit: expr.LimitTimeSecond, Burst: 5}, // nft's default burst
	}}
}

// userRules adds the user's rules of one chain, in their order.
func (b *builder) userRules(chain string, rules []Rule) {
	for _, u := range rules {
		if u.Chain != chain {
			continue
		}
		var parts []frag
		if u.From != "" {
			parts = append(parts, ifIn("iifname", b.zones[u.From]))
		}
		if u.To != "" {
			parts = append(parts, ifIn("oifname", b.zones[u.To]))
		}
		if u.Source != nil {
			parts = append(parts, addrMatch("saddr", *u.Source))
		}
		if u.Dest != nil {
			parts = append(parts, addrMatch("daddr", *u.Dest))
		}
		switch {
		case u.Port != 0:
			parts = append(parts, dport(u.Proto, u.Port))
		case u.Proto == "icmpv6":
			parts = append(parts, l4proto("ipv6-icmp"))
		case u.Proto != "":
			parts = append(parts, l4proto(u.Proto))
		}
		if u.Verdict == "drop" {
			parts = append(parts, drop)
		} else {
			parts = append(parts, accept)
		}
		b.add(chain, parts...)
	}
}

// addrMatch matches a source or destination of either family.
func addrMatch(field string, p netip.Prefix) frag {
	if p.Addr().Is6() {
		offset := uint32(8)
		if field == "daddr" {
			offset = 24
		}
		return prefixMatch("ip6 "+field, offset, p)
	}
	offset := uint32(12)
	if field == "daddr" {
		offset = 16
	}
	mask, want := masked(p)
	text := "ip " + field + " " + p.String()
	if p.Bits() == 32 {
		text = strings.TrimSuffix(text, "/32")
	}
	exprs := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4},
	}
	if p.Bits() < 32 {
		exprs = append(exprs, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: make([]byte, 4)})
	}
	exprs = append(exprs, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: want})
	return frag{text: text, exprs: exprs}
}

// masked returns a prefix's netmask and its address under it, in the
// address's own length (4 or 16 bytes).
func masked(p netip.Prefix) (mask, want []byte) {
	addr := p.Addr().AsSlice()
	mask = make([]byte, len(addr))
	for i := 0; i < p.Bits(); i++ {
		mask[i/8] |= 0x80 >> (i % 8)
	}
	want = make([]byte, len(addr))
	for i := range want {
		want[i] = addr[i] & mask[i]
	}
	return mask, want
}

func ip6Saddr(p netip.Prefix) frag {
	return prefixMatch("ip6 saddr", 8, p)
}

func ip6Daddr(p netip.Prefix) frag {
	return prefixMatch("ip6 daddr", 24, p)
}

// prefixMatch matches an IPv6 header field; in an inet table it must check
// that the packet is IPv6 first, or it would read an IPv4 packet's bytes.
func prefixMatch(text string, offset uint32, p netip.Prefix) frag {
	mask, want := masked(p)
	text += " " + p.String()
	if p.Bits() == 128 {
		text = strings.TrimSuffix(text, "/128")
	}
	return frag{text: text, exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV6}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 16},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 16, Mask: mask, Xor: make([]byte, 16)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: want},
	}}
}

func verdict(kind expr.VerdictKind, text string) frag {
	return frag{text: text, exprs: []expr.Any{&expr.Verdict{Kind: kind}}}
}

var (
	accept = verdict(expr.VerdictAccept, "accept")
	drop   = verdict(expr.VerdictDrop, "drop")
)

func namedCounter(name string) frag {
	return frag{text: "counter name " + name, exprs: []expr.Any{&expr.Objref{Type: int(nftables.ObjTypeCounter), Name: name}}}
}

func mssClamp() frag {
	f := l4proto("tcp")
	f.text = "tcp flags syn / syn,rst tcp option maxseg size set rt mtu"
	f.exprs = append(f.exprs,
		// tcp flags & (syn|rst) == syn
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{0x02 | 0x04}, Xor: []byte{0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0x02}},
		&expr.Rt{Register: 1, Key: expr.RtTCPMSS},
		&expr.Byteorder{SourceRegister: 1, DestRegister: 1, Op: expr.ByteorderHton, Len: 2, Size: 2},
		&expr.Exthdr{SourceRegister: 1, Type: 2, Offset: 2, Len: 2, Op: expr.ExthdrOpTcpopt, Flags: unix.NFT_EXTHDR_F_PRESENT})
	return f
}

func fibDaddrLocal() frag {
	return frag{text: "fib daddr type local", exprs: []expr.Any{
		&expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
	}}
}

// dnatMap sends a new connection to the host proto's forward map names
// for its destination port; a port the map lacks is left alone.
func dnatMap(proto string) frag {
	f := l4proto(proto)
	name := "forward_" + proto
	f.text = fmt.Sprintf("dnat ip to %s dport map @%s", proto, name)
	f.exprs = append(f.exprs,
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		// The address lands in register 1, the port in the next 4-byte
		// register (9, NFT_REG32_01), as nft lays out the concatenation.
		&expr.Lookup{SourceRegister: 1, SetName: name, DestRegister: 1, IsDestRegSet: true},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegAddrMax: 1, RegProtoMin: 9, RegProtoMax: 9, Specified: true})
	return f
}

func masquerade() frag {
	return frag{text: "masquerade", exprs: []expr.Any{&expr.Masq{}}}
}

// render builds the rules of rs for table t with the zone sets.
func render(t *nftables.Table, rs Ruleset, zones map[string]*nftables.Set) []rule {
	b := &builder{t: t, zones: zones}
	wan, lan := zones["wan"], zones["lan"]
	est := ctState("established,related", expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED)
	inv := ctState("invalid", expr.CtStateBitINVALID)

	// input: the router itself.
	b.add("input", est, accept)
	b.add("input", inv, drop)
	b.add("input", ifname("iifname", "lo"), accept)
	// RFC 4890 4.4: what must reach the router: errors, neighbour and
	// router discovery, MLD.
	// (Two rules: a rule's text must fit in its 256-byte comment.)
	b.add("input", b.icmpTypes(true,
		[]string{"destination-unreachable", "packet-too-big", "time-exceeded", "parameter-problem", "mld-listener-query", "mld-listener-report", "mld-listener-done", "mld2-listener-report"},
		[]byte{1, 2, 3, 4, 130, 131, 132, 143}), accept)
	b.add("input", b.icmpTypes(true,
		[]string{"nd-router-solicit", "nd-router-advert", "nd-neighbor-solicit", "nd-neighbor-advert", "ind-neighbor-solicit", "ind-neighbor-advert"},
		[]byte{133, 134, 135, 136, 141, 142}), accept)
	b.add("input", b.icmpTypes(true, []string{"echo-request"}, []byte{128}), limit(10), accept)
	b.add("input", b.icmpTypes(false, []string{"destination-unreachable", "time-exceeded", "parameter-problem"}, []byte{3, 11, 12}), accept)
	b.add("input", b.icmpTypes(false, []string{"echo-request"}, []byte{8}), limit(10), accept)
	b.add("input", ifIn("iifname", wan), ip6Saddr(netip.MustParsePrefix("fe80::/10")), dport("udp", 546), accept)
	b.add("input", ifIn("iifname", wan), dport("udp", 68), accept)
	for _, p := range []struct {
		proto string
		port  int
	}{{"tcp", 22}, {"udp", 53}, {"tcp", 53}, {"udp", 67}, {"udp", 547}} {
		b.add("input", ifIn("iifname", lan), dport(p.proto, p.port), accept)
	}
	for _, o := range rs.Open {
		b.add("input", ifIn("iifname", zones[o.Zone]), dport(o.Proto, o.Port), accept)
	}
	b.userRules("input", rs.Rules)
	b.add("input", namedCounter("input_drop"))

	// forward: through the router.
	b.add("forward", mssClamp())
	b.add("forward", est, accept)
	b.add("forward", inv, drop)
	b.add("forward", b.icmpTypes(true, []string{"destination-unreachable", "packet-too-big", "time-exceeded", "parameter-problem"}, []byte{1, 2, 3, 4}), accept)
	b.add("forward", b.icmpTypes(true, []string{"echo-request"}, []byte{128}), limit(10), accept)
	b.add("forward", ifIn("iifname", lan), ifIn("oifname", wan), accept)
	b.add("forward", ctStatusDNAT(), accept)
	for _, a := range rs.Allow6 {
		if to, ok := a.dest(rs.LANPrefixes); ok {
			b.add("forward", ifIn("iifname", wan), ip6Daddr(to), dport(a.Proto, a.Port), accept)
		}
	}
	b.userRules("forward", rs.Rules)
	b.add("forward", namedCounter("forward_drop"))

	// NAT: port forwards from the WAN and, for hairpin, from the LAN to
	// the router's own address; masquerade out of the WAN.
	for _, proto := range forwardProtos {
		b.add("prerouting", ifIn("iifname", wan), nfproto(false), dnatMap(proto))
		b.add("prerouting", ifIn("iifname", lan), nfproto(false), fibDaddrLocal(), dnatMap(proto))
	}
	b.add("postrouting", ifIn("oifname", wan), nfproto(false), masquerade())
	b.add("postrouting", ifIn("iifname", lan), ifIn("oifname", lan), nfproto(false), ctStatusDNAT(), masquerade())
	return b.rules
}

// fingerprint identifies the rules (not the zones' members, which change in
// place).
func fingerprint(rules []rule, zones []string) string {
	h := sha256.New()
	for _, c := range chainSpecs() {
		fmt.Fprintln(h, c.name, c.text)
	}
	sort.Strings(zones)
	fmt.Fprintln(h, strings.Join(zones, ","), strings.Join(counterNames, ","))
	for _, r := range rules {
		fmt.Fprintln(h, r.chain, r.text)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// ipsDstNAT is the conntrack status bit of a destination-NATed connection
// (IPS_DST_NAT in linux/netfilter/nf_conntrack_common.h).
const ipsDstNAT = 1 << 5
