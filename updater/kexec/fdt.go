package kexec

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// FDT is a flattened device tree (a DTB), parsed so that /chosen can be
// changed and the tree written out again.
type FDT struct {
	root    *fdtNode
	rsvmap  [][2]uint64 // the memory reservation map, without its terminator
	bootCPU uint32
}

type fdtNode struct {
	name     string
	props    []fdtProp
	children []*fdtNode
}

type fdtProp struct {
	name  string
	value []byte
}

const (
	fdtMagic     = 0xd00dfeed
	tokBeginNode = 1
	tokEndNode   = 2
	tokProp      = 3
	tokNop       = 4
	tokEnd       = 9
	fdtMaxSize   = 4 << 20 // DTBs are tens of KiB; this bounds what a hostile one costs
	fdtMaxDepth  = 64
	fdtMaxRsv    = 1024
)

var be = binary.BigEndian

// ParseFDT parses a DTB (version 16 or 17). b is untrusted.
func ParseFDT(b []byte) (*FDT, error) {
	if len(b) < 40 || be.Uint32(b) != fdtMagic {
		return nil, errors.New("device tree: no FDT magic 0xd00dfeed")
	}
	total := uint64(be.Uint32(b[4:]))
	if total > uint64(len(b)) || total > fdtMaxSize || total < 40 {
		return nil, fmt.Errorf("device tree: total size %d, but %d bytes given (at most %d)", total, len(b), fdtMaxSize)
	}
	b = b[:total]
	offStruct, offStrings, offRsv := uint64(be.Uint32(b[8:])), uint64(be.Uint32(b[12:])), uint64(be.Uint32(b[16:]))
	version, lastComp := be.Uint32(b[20:]), be.Uint32(b[24:])
	if version < 16 || lastComp > 17 {
		return nil, fmt.Errorf("device tree: version %d (compatible with %d), want 16 or 17", version, lastComp)
	}
	sizeStrings := uint64(be.Uint32(b[32:]))
	sizeStruct := total - min(offStruct, total)
	if version >= 17 {
		sizeStruct = uint64(be.Uint32(b[36:]))
	}
	if offStruct > total || sizeStruct > total-offStruct || offStrings > total || sizeStrings > total-offStrings || offRsv > total {
		return nil, errors.New("device tree: a block lies outside the tree")
	}
	f := &FDT{bootCPU: be.Uint32(b[28:])}
	if err := f.parseRsvmap(b[offRsv:]); err != nil {
		return nil, err
	}
	root, err := parseStruct(b[offStruct:offStruct+sizeStruct], b[offStrings:offStrings+sizeStrings])
	if err != nil {
		return nil, err
	}
	f.root = root
	return f, nil
}

func (f *FDT) parseRsvmap(b []byte) error {
	for i := 0; ; i++ {
		if len(b) < 16*(i+1) || i > fdtMaxRsv {
			return errors.New("device tree: memory reservation map has no end")
		}
		addr, size := be.Uint64(b[16*i:]), be.Uint64(b[16*i+8:])
		if addr == 0 && size == 0 {
			return nil
		}
		f.rsvmap = append(f.rsvmap, [2]uint64{addr, size})
	}
}

// parseStruct reads the structure block into a tree.
func parseStruct(st, strs []byte) (*fdtNode, error) {
	var stack []*fdtNode
	var root *fdtNode
	off := 0
	word := func() (uint32, error) {
		if off+4 > len(st) {
			return 0, errors.New("device tree: structure block cut short")
		}
		v := be.Uint32(st[off:])
		off += 4
		return v, nil
	}
	for {
		tok, err := word()
		if err != nil {
			return nil, err
		}
		switch tok {
		case tokBeginNode:
			end := bytes.IndexByte(st[off:], 0)
			if end < 0 {
				return nil, errors.New("device tree: node name has no end")
			}
			n := &fdtNode{name: string(st[off : off+end])}
			off = int(alignUp(uint64(off+end+1), 4))
			switch {
			case len(stack) > 0:
				parent := stack[len(stack)-1]
				parent.children = append(parent.children, n)
			case root != nil:
				return nil, errors.New("device tree: more than one root node")
			default:
				root = n
			}
			if stack = append(stack, n); len(stack) > fdtMaxDepth {
				return nil, fmt.Errorf("device tree: nested deeper than %d", fdtMaxDepth)
			}
		case tokEndNode:
			if len(stack) == 0 {
				return nil, errors.New("device tree: end of a node that never began")
			}
			stack = stack[:len(stack)-1]
		case tokProp:
			if len(stack) == 0 {
				return nil, errors.New("device tree: property outside a node")
			}
			p, err := parseProp(st, &off, strs)
			if err != nil {
				return nil, err
			}
			n := stack[len(stack)-1]
			n.props = append(n.props, p)
		case tokNop:
		case tokEnd:
			if root == nil || len(stack) != 0 {
				return nil, errors.New("device tree: ends inside a node, or has no root")
			}
			return root, nil
		default:
			return nil, fmt.Errorf("device tree: unknown token %#x at %d", tok, off-4)
		}
	}
}

func parseProp(st []byte, off *int, strs []byte) (fdtProp, error) {
	if *off+8 > len(st) {
		return fdtProp{}, errors.New("device tree: property cut short")
	}
	size, nameOff := uint64(be.Uint32(st[*off:])), uint64(be.Uint32(st[*off+4:]))
	*off += 8
	if size > uint64(len(st)-*off) {
		return fdtProp{}, errors.New("device tree: property value runs past the structure block")
	}
	if nameOff >= uint64(len(strs)) {
		return fdtProp{}, errors.New("device tree: property name outside the strings block")
	}
	end := bytes.IndexByte(strs[nameOff:], 0)
	if end < 0 {
		return fdtProp{}, errors.New("device tree: property name has no end")
	}
	p := fdtProp{name: string(strs[nameOff : nameOff+uint64(end)]), value: st[*off : *off+int(size)]}
	*off = int(alignUp(uint64(*off)+size, 4))
	return p, nil
}

func (n *fdtNode) child(name string) *fdtNode {
	for _, c := range n.children {
		if c.name == name {
			return c
		}
	}
	return nil
}

func (n *fdtNode) prop(name string) ([]byte, bool) {
	for _, p := range n.props {
		if p.name == name {
			return p.value, true
		}
	}
	return nil, false
}

// Chosen returns a property of /chosen.
func (f *FDT) Chosen(name string) ([]byte, bool) {
	if c := f.root.child("chosen"); c != nil {
		return c.prop(name)
	}
	return nil, false
}

// SetChosen sets a property of /chosen, making the node if there is none;
// a nil value removes the property.
func (f *FDT) SetChosen(name string, value []byte) {
	c := f.root.child("chosen")
	if c == nil {
		c = &fdtNode{name: "chosen"}
		f.root.children = append(f.root.children, c)
	}
	for i, p := range c.props {
		if p.name == name {
			if value == nil {
				c.props = append(c.props[:i], c.props[i+1:]...)
			} else {
				c.props[i].value = value
			}
			return
		}
	}
	if value != nil {
		c.props = append(c.props, fdtProp{name, value})
	}
}

// Bytes writes the tree as a version 17 DTB.
func (f *FDT) Bytes() []byte {
	var st, strs bytes.Buffer
	names := map[string]uint32{}
	u32 := func(v uint32) { st.Write(be.AppendUint32(nil, v)) }
	pad := func() {
		for st.Len()%4 != 0 {
			st.WriteByte(0)
		}
	}
	var node func(n *fdtNode)
	node = func(n *fdtNode) {
		u32(tokBeginNode)
		st.WriteString(n.name)
		st.WriteByte(0)
		pad()
		for _, p := range n.props {
			off, ok := names[p.name]
			if !ok {
				off = uint32(strs.Len())
				names[p.name] = off
				strs.WriteString(p.name)
				strs.WriteByte(0)
			}
			u32(tokProp)
			u32(uint32(len(p.value)))
			u32(off)
			st.Write(p.value)
			pad()
		}
		for _, c := range n.children {
			node(c)
		}
		u32(tokEndNode)
	}
	node(f.root)
	u32(tokEnd)
	offRsv := uint32(48) // the map is 8-byte aligned
	offStruct := offRsv + uint32(16*(len(f.rsvmap)+1))
	offStrings := offStruct + uint32(st.Len())
	total := offStrings + uint32(strs.Len())
	out := make([]byte, offRsv, total)
	for i, v := range []uint32{fdtMagic, total, offStruct, offStrings, offRsv, 17, 16, f.bootCPU, uint32(strs.Len()), uint32(st.Len())} {
		be.PutUint32(out[4*i:], v)
	}
	for _, r := range f.rsvmap {
		out = be.AppendUint64(be.AppendUint64(out, r[0]), r[1])
	}
	out = append(out, make([]byte, 16)...)
	out = append(out, st.Bytes()...)
	return append(out, strs.Bytes()...)
}
