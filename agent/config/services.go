package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"time"

	"github.com/roostrouter/roost/agent/supervisor"
	"github.com/roostrouter/roost/boards"
	"github.com/roostrouter/roost/firewall"
)

// Service is one entry of "services": a kind and the kind's settings.
type Service struct {
	Kind  string   `json:"kind"`
	After []string `json:"after,omitempty"` // more dependencies, besides the ones its settings imply

	Link     *LinkService     `json:"-"`
	Bridge   *BridgeService   `json:"-"`
	VLAN     *VLANService     `json:"-"`
	Address  *AddressService  `json:"-"`
	Route    *RouteService    `json:"-"`
	Sysctl   *SysctlService   `json:"-"`
	Firewall *FirewallService `json:"-"`
	DHCP4    *DHCP4Client     `json:"-"`
	DHCPD4   *DHCP4Server     `json:"-"`
	DHCP6    *DHCP6Client     `json:"-"`
	RA       *RAService       `json:"-"`
	PPPoE    *PPPoEService    `json:"-"`

	raw json.RawMessage
}

// LinkService configures a board interface.
type LinkService struct {
	Interface string `json:"interface"`        // the board's logical name: wan, lan0, …
	MTU       int    `json:"mtu,omitempty"`    // unchanged if 0
	MAC       string `json:"mac,omitempty"`    // unchanged if empty
	Bridge    string `json:"bridge,omitempty"` // the bridge service it joins
}

// BridgeService creates a bridge.
type BridgeService struct {
	Name string `json:"name"`
	MTU  int    `json:"mtu,omitempty"`
}

// VLANService creates a VLAN device on a link.
type VLANService struct {
	Parent string `json:"parent"` // a link, bridge or vlan service
	ID     int    `json:"id"`
	Name   string `json:"name"`
}

// AddressService puts a static address on a link.
type AddressService struct {
	Link    string `json:"link"`    // a link, bridge or vlan service
	Address string `json:"address"` // CIDR: 192.168.1.1/24, fd00::1/64
}

// RouteService adds a route.
type RouteService struct {
	Link        string          `json:"link"`
	Destination string          `json:"destination"` // CIDR; 0.0.0.0/0 or ::/0 for a default route
	Gateway     *OutputRef      `json:"-"`
	GatewayIP   string          `json:"-"`
	RawGateway  json.RawMessage `json:"gateway,omitempty"` // "192.0.2.1" or {"service": "…", "output": "…"}
	Metric      int             `json:"metric,omitempty"`
	Table       int             `json:"table,omitempty"`
}

// OutputRef names another service's output.
type OutputRef struct {
	Service string `json:"service"`
	Output  string `json:"output"`
}

// DHCP4Client gets the link's IPv4 address from a DHCP server.
type DHCP4Client struct {
	Link     string `json:"link"`               // a link, bridge or vlan service
	Hostname string `json:"hostname,omitempty"` // sent in option 12
	ClientID string `json:"clientId,omitempty"` // sent in option 61
}

// DHCP6Client gets an address and a delegated prefix from the ISP.
type DHCP6Client struct {
	Link          string `json:"link"`
	PrefixHint    int    `json:"prefixHint,omitempty"`    // the delegated prefix length to ask for, like 56
	ReleaseOnStop bool   `json:"releaseOnStop,omitempty"` // give the binding back when roostd stops
}

// RAService puts a /64 of a delegated prefix on a LAN and advertises it.
type RAService struct {
	Link       string `json:"link"`               // the LAN's link, bridge or vlan service
	PrefixFrom string `json:"prefixFrom"`         // the dhcp6-client service whose prefix it splits
	Subnet     int    `json:"subnet"`             // which /64: a /56 has 256
	Interval   string `json:"interval,omitempty"` // between unsolicited advertisements; default 200s
	MTU        int    `json:"mtu,omitempty"`
}

// PPPoEService is a WAN over PPPoE: pppd with its PPPoE plugin on a link.
type PPPoEService struct {
	Link         string `json:"link"`           // the Ethernet link, or a vlan on it
	User         string `json:"user"`           // the ISP's username
	PasswordFile string `json:"passwordFile"`   // absolute, outside the store: under $STATE or a secrets path
	Unit         int    `json:"unit,omitempty"` // the interface is ppp<unit>; default 0
	MTU          int    `json:"mtu,omitempty"`  // and MRU; default 1492
	LCPEcho      *struct {
		Interval int `json:"interval"` // seconds between echoes; default 10
		Failures int `json:"failures"` // missed echoes before the link is down; default 3
	} `json:"lcpEcho,omitempty"`
	IPv6 *bool  `json:"ipv6,omitempty"` // negotiate IPv6CP; default true
	Pppd string `json:"pppd,omitempty"` // pppd's path, like the system's own /nix/store/…-ppp/bin/pppd; default pppd from PATH
}

// DHCP4Server serves addresses on a LAN.
type DHCP4Server struct {
	Link      string        `json:"link"`    // the LAN's link, bridge or vlan service
	Address   string        `json:"address"` // the router's address service on it (server id, router, subnet)
	Pool      DHCP4Pool     `json:"pool"`
	LeaseTime string        `json:"leaseTime,omitempty"` // like 12h; default 12h
	DNS       []string      `json:"dns,omitempty"`       // default: the router
	Domain    string        `json:"domain,omitempty"`
	Static    []DHCP4Static `json:"static,omitempty"`
}

// DHCP4Pool is the dynamic range.
type DHCP4Pool struct {
	Start string `json:"start"`
	End   string `json:"end"`
}

// DHCP4Static is an address reserved for a MAC.
type DHCP4Static struct {
	MAC     string `json:"mac"`
	Address string `json:"address"`
}

// FirewallService is the nftables firewall (see the firewall package).
type FirewallService struct {
	Zones    map[string]firewall.Zone `json:"zones"`
	Open     []firewall.Port          `json:"open,omitempty"`
	Forwards []firewall.Forward       `json:"forwards,omitempty"`
	Allow6   []firewall.Allow6        `json:"allow6,omitempty"`
	Rules    []firewall.Rule          `json:"rules,omitempty"`
}

// SysctlService sets kernel parameters.
type SysctlService struct {
	Values map[string]string `json:"values"`
}

var kinds = map[string]func(*Service) any{
	"link":         func(s *Service) any { s.Link = &LinkService{}; return s.Link },
	"bridge":       func(s *Service) any { s.Bridge = &BridgeService{}; return s.Bridge },
	"vlan":         func(s *Service) any { s.VLAN = &VLANService{}; return s.VLAN },
	"address":      func(s *Service) any { s.Address = &AddressService{}; return s.Address },
	"route":        func(s *Service) any { s.Route = &RouteService{}; return s.Route },
	"sysctl":       func(s *Service) any { s.Sysctl = &SysctlService{}; return s.Sysctl },
	"firewall":     func(s *Service) any { s.Firewall = &FirewallService{}; return s.Firewall },
	"dhcp4-client": func(s *Service) any { s.DHCP4 = &DHCP4Client{}; return s.DHCP4 },
	"dhcp4-server": func(s *Service) any { s.DHCPD4 = &DHCP4Server{}; return s.DHCPD4 },
	"dhcp6-client": func(s *Service) any { s.DHCP6 = &DHCP6Client{}; return s.DHCP6 },
	"ra":           func(s *Service) any { s.RA = &RAService{}; return s.RA },
	"pppoe":        func(s *Service) any { s.PPPoE = &PPPoEService{}; return s.PPPoE },
}

func kindNames() string {
	var n []string
	for k := range kinds {
		n = append(n, k)
	}
	sort.Strings(n)
	return strings.Join(n, ", ")
}

// Fingerprint identifies a service's declaration: it changes when any
// setting does, so a reload restarts exactly the services that changed.
func (s *Service) Fingerprint() string { return string(s.raw) }

// Deps are the services it depends on: the ones its settings name, and After.
func (s *Service) Deps() []string {
	deps := append([]string(nil), s.After...)
	switch {
	case s.Link != nil && s.Link.Bridge != "":
		deps = append(deps, s.Link.Bridge)
	case s.VLAN != nil:
		deps = append(deps, s.VLAN.Parent)
	case s.Address != nil:
		deps = append(deps, s.Address.Link)
	case s.DHCP4 != nil:
		deps = append(deps, s.DHCP4.Link)
	case s.DHCPD4 != nil:
		deps = append(deps, s.DHCPD4.Link, s.DHCPD4.Address)
	case s.DHCP6 != nil:
		deps = append(deps, s.DHCP6.Link)
	case s.RA != nil:
		deps = append(deps, s.RA.Link, s.RA.PrefixFrom)
	case s.PPPoE != nil:
		deps = append(deps, s.PPPoE.Link)
	case s.Route != nil:
		deps = append(deps, s.Route.Link)
		if s.Route.Gateway != nil {
			deps = append(deps, s.Route.Gateway.Service)
		}
	}
	sort.Strings(deps)
	return compact(deps)
}

func compact(s []string) []string {
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

// objectKeys returns the keys of a JSON object in order, to catch keys given
// twice (encoding/json keeps the last silently).
func objectKeys(raw json.RawMessage) ([]string, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	t, err := dec.Token()
	if err != nil {
		return nil, err
	}
	if d, ok := t.(json.Delim); !ok || d != '{' {
		return nil, errors.New("expected an object")
	}
	var keys []string
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, err
		}
		keys = append(keys, t.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return nil, err
		}
	}
	return keys, nil
}

// decodeFields decodes a JSON object into the struct v field by field, so
// that every unknown field and every wrong type is reported, each with its
// JSON path, not just the first.
func decodeFields(path string, raw json.RawMessage, v any) []string {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return []string{fmt.Sprintf("%s: expected an object", path)}
	}
	rv := reflect.ValueOf(v).Elem()
	fields := map[string]reflect.Value{}
	var names []string
	for i := 0; i < rv.NumField(); i++ {
		tag, _, _ := strings.Cut(rv.Type().Field(i).Tag.Get("json"), ",")
		if tag != "" && tag != "-" {
			fields[tag] = rv.Field(i)
			names = append(names, tag)
		}
	}
	var errs []string
	for _, k := range sortedKeys(obj) {
		f, ok := fields[k]
		if !ok {
			errs = append(errs, fmt.Sprintf("%s: unknown field %q (want %s)", path, k, strings.Join(names, ", ")))
			continue
		}
		if err := decodeStrict(path+"."+k, obj[k], f.Addr().Interface()); err != nil {
			errs = append(errs, err.Error())
		}
	}
	return errs
}

// decodeStrict decodes raw into v, refusing unknown fields, and returns an
// error naming the JSON path.
func decodeStrict(path string, raw json.RawMessage, v any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			field := path
			if te.Field != "" {
				field += "." + te.Field
			}
			return fmt.Errorf("%s: expected %s, got JSON %s", field, te.Type, te.Value)
		}
		msg := err.Error()
		if f, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
			return fmt.Errorf("%s: unknown field %s", path, f)
		}
		return fmt.Errorf("%s: %s", path, strings.TrimPrefix(msg, "json: "))
	}
	return nil
}

// parseServices decodes and checks "services" and appends every problem.
func parseServices(raw json.RawMessage, board *boards.Board, errs *Errors) map[string]*Service {
	keys, err := objectKeys(raw)
	if err != nil {
		*errs = append(*errs, "services: expected an object of named services")
		return nil
	}
	seen := map[string]bool{}
	for _, k := range keys {
		if seen[k] {
			*errs = append(*errs, fmt.Sprintf("services.%s: declared twice", k))
		}
		seen[k] = true
	}
	var byName map[string]json.RawMessage
	json.Unmarshal(raw, &byName)
	out := map[string]*Service{}
	for _, name := range sortedKeys(byName) {
		path := "services." + name
		if !validName(name) {
			*errs = append(*errs, fmt.Sprintf("%s: a service name is letters, digits, - and _", path))
			continue
		}
		s := &Service{raw: byName[name]}
		var head struct {
			Kind  string   `json:"kind"`
			After []string `json:"after"`
		}
		if err := json.Unmarshal(byName[name], &head); err != nil {
			*errs = append(*errs, fmt.Sprintf("%s: expected an object with a kind", path))
			continue
		}
		mk, ok := kinds[head.Kind]
		if !ok {
			*errs = append(*errs, fmt.Sprintf("%s.kind: unknown kind %q (want one of %s)", path, head.Kind, kindNames()))
			continue
		}
		s.Kind, s.After = head.Kind, head.After
		// Decode the kind's settings, with kind and after known too.
		settings := mk(s)
		var withHead map[string]json.RawMessage
		json.Unmarshal(byName[name], &withHead)
		delete(withHead, "kind")
		delete(withHead, "after")
		rest, _ := json.Marshal(withHead)
		if problems := decodeFields(path, rest, settings); len(problems) > 0 {
			*errs = append(*errs, problems...)
			continue
		}
		s.check(path, board, errs)
		out[name] = s
	}
	checkRefs(out, errs)
	return out
}

func validName(n string) bool {
	if n == "" || len(n) > 64 {
		return false
	}
	for _, c := range n {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

func sortedKeys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func validIfname(n string) bool {
	return n != "" && len(n) < 16 && !strings.ContainsAny(n, "/ \t\n:")
}

// check validates a service's own settings.
func (s *Service) check(path string, board *boards.Board, errs *Errors) {
	add := func(field, format string, args ...any) {
		*errs = append(*errs, fmt.Sprintf("%s.%s: %s", path, field, fmt.Sprintf(format, args...)))
	}
	mtu := func(m int) {
		if m != 0 && (m < 68 || m > 65535) {
			add("mtu", "%d is not an MTU (68 to 65535)", m)
		}
	}
	switch {
	case s.Link != nil:
		if s.Link.Interface == "" {
			add("interface", "required: the board's interface (%s)", strings.Join(board.InterfaceNames(), ", "))
		} else if _, ok := board.Device(s.Link.Interface); !ok {
			add("interface", "board %s has no interface %q (it has %s)", board.Name, s.Link.Interface, strings.Join(board.InterfaceNames(), ", "))
		}
		mtu(s.Link.MTU)
		if s.Link.MAC != "" {
			if _, err := net.ParseMAC(s.Link.MAC); err != nil {
				add("mac", "%q is not a MAC address", s.Link.MAC)
			}
		}
	case s.Bridge != nil:
		if !validIfname(s.Bridge.Name) {
			add("name", "%q is not a device name (1 to 15 characters, no / or spaces)", s.Bridge.Name)
		}
		mtu(s.Bridge.MTU)
	case s.VLAN != nil:
		if !validIfname(s.VLAN.Name) {
			add("name", "%q is not a device name (1 to 15 characters, no / or spaces)", s.VLAN.Name)
		}
		if s.VLAN.ID < 1 || s.VLAN.ID > 4094 {
			add("id", "%d is not a VLAN id (1 to 4094)", s.VLAN.ID)
		}
	case s.Address != nil:
		if ip, _, err := net.ParseCIDR(s.Address.Address); err != nil || ip == nil {
			add("address", "%q is not an address with its prefix length, like 192.168.1.1/24", s.Address.Address)
		}
	case s.Route != nil:
		if _, _, err := net.ParseCIDR(s.Route.Destination); err != nil {
			add("destination", "%q is not a prefix, like 0.0.0.0/0 or 2001:db8::/32", s.Route.Destination)
		}
		if len(s.Route.RawGateway) > 0 {
			var ip string
			var ref OutputRef
			if json.Unmarshal(s.Route.RawGateway, &ip) == nil {
				if net.ParseIP(ip) == nil {
					add("gateway", "%q is not an IP address", ip)
				}
				s.Route.GatewayIP = ip
			} else if err := decodeStrict(path+".gateway", s.Route.RawGateway, &ref); err != nil || ref.Service == "" || ref.Output == "" {
				add("gateway", "want an IP address or {\"service\": …, \"output\": …}")
			} else {
				s.Route.Gateway = &ref
			}
		}
		if s.Route.Metric < 0 {
			add("metric", "%d is negative", s.Route.Metric)
		}
		if s.Route.Table < 0 || int64(s.Route.Table) > 0xfffffff0 {
			add("table", "%d is not a routing table", s.Route.Table)
		}
	case s.Firewall != nil:
		fs := firewall.Service{Zones: s.Firewall.Zones, Open: s.Firewall.Open, Forwards: s.Firewall.Forwards, Allow6: s.Firewall.Allow6, Rules: s.Firewall.Rules}
		rs := fs.Ruleset(func(supervisor.Ref) (string, bool) { return "", false })
		for _, problem := range rs.Check() {
			*errs = append(*errs, path+"."+problem)
		}
		for z, zone := range s.Firewall.Zones {
			for i, ifn := range zone.Interfaces {
				if !validIfname(ifn) {
					add(fmt.Sprintf("zones.%s.interfaces[%d]", z, i), "%q is not a device name", ifn)
				}
			}
		}
	case s.RA != nil:
		if s.RA.Subnet < 0 || s.RA.Subnet > 65535 {
			add("subnet", "%d: want 0 to 65535", s.RA.Subnet)
		}
		if s.RA.Interval != "" {
			if d, err := time.ParseDuration(s.RA.Interval); err != nil || d < time.Second {
				add("interval", "%q: want a duration of a second or more, like 200s", s.RA.Interval)
			}
		}
	case s.PPPoE != nil:
		p := s.PPPoE
		if p.User == "" {
			add("user", "required: the username your ISP gave you")
		}
		switch {
		case p.PasswordFile == "":
			add("passwordFile", "required: a file holding the password, like /persist/secrets/pppoe-password")
		case !filepath.IsAbs(p.PasswordFile):
			add("passwordFile", "%q: want an absolute path", p.PasswordFile)
		case strings.HasPrefix(filepath.Clean(p.PasswordFile), "/nix/store/"):
			add("passwordFile", "%q is in the Nix store, which anyone on the router can read: keep it under the state folder or a secrets path", p.PasswordFile)
		}
		if p.Unit < 0 || p.Unit > 999 {
			add("unit", "%d: want 0 to 999", p.Unit)
		}
		if p.MTU != 0 && (p.MTU < 576 || p.MTU > 1492) {
			add("mtu", "%d: want 576 to 1492 (PPPoE takes 8 bytes of Ethernet's 1500)", p.MTU)
		}
		if e := p.LCPEcho; e != nil && (e.Interval < 1 || e.Failures < 1) {
			add("lcpEcho", "want an interval and a failure count of 1 or more")
		}
	case s.DHCP6 != nil:
		if h := s.DHCP6.PrefixHint; h != 0 && (h < 32 || h > 64) {
			add("prefixHint", "%d: want a prefix length from 32 to 64", h)
		}
	case s.DHCPD4 != nil:
		d := s.DHCPD4
		start, err1 := netip.ParseAddr(d.Pool.Start)
		end, err2 := netip.ParseAddr(d.Pool.End)
		if err1 != nil || err2 != nil || !start.Is4() || !end.Is4() || end.Less(start) {
			add("pool", "want IPv4 start and end, start before end")
		}
		if d.LeaseTime != "" {
			if lt, err := time.ParseDuration(d.LeaseTime); err != nil || lt < time.Minute {
				add("leaseTime", "%q: want a duration of a minute or more, like 12h", d.LeaseTime)
			}
		}
		for i, a := range d.DNS {
			if ip, err := netip.ParseAddr(a); err != nil || !ip.Is4() {
				add(fmt.Sprintf("dns[%d]", i), "%q is not an IPv4 address", a)
			}
		}
		for i, st := range d.Static {
			if _, err := net.ParseMAC(st.MAC); err != nil {
				add(fmt.Sprintf("static[%d].mac", i), "%q is not a MAC address", st.MAC)
			}
			if ip, err := netip.ParseAddr(st.Address); err != nil || !ip.Is4() {
				add(fmt.Sprintf("static[%d].address", i), "%q is not an IPv4 address", st.Address)
			}
		}
	case s.Sysctl != nil:
		if len(s.Sysctl.Values) == 0 {
			add("values", "required: at least one key")
		}
		for k := range s.Sysctl.Values {
			if k == "" || strings.Contains(k, "/") || strings.Contains(k, "..") || strings.HasPrefix(k, ".") {
				add("values", "%q is not a sysctl key like net.ipv4.ip_forward", k)
			}
		}
	}
}

// checkRefs validates references between services and finds cycles.
func checkRefs(svcs map[string]*Service, errs *Errors) {
	linkish := map[string]bool{"link": true, "bridge": true, "vlan": true}
	wanish := map[string]bool{"link": true, "bridge": true, "vlan": true, "pppoe": true}
	for _, name := range sortedKeys(svcs) {
		s := svcs[name]
		path := "services." + name
		ref := func(field, target string, want map[string]bool, what string) {
			t, ok := svcs[target]
			switch {
			case target == "":
				*errs = append(*errs, fmt.Sprintf("%s.%s: required", path, field))
			case !ok:
				*errs = append(*errs, fmt.Sprintf("%s.%s: there is no service %q", path, field, target))
			case want != nil && !want[t.Kind]:
				*errs = append(*errs, fmt.Sprintf("%s.%s: %q is a %s service, want %s", path, field, target, t.Kind, what))
			}
		}
		for i, a := range s.After {
			ref(fmt.Sprintf("after[%d]", i), a, nil, "")
		}
		switch {
		case s.Link != nil && s.Link.Bridge != "":
			ref("bridge", s.Link.Bridge, map[string]bool{"bridge": true}, "a bridge")
		case s.VLAN != nil:
			ref("parent", s.VLAN.Parent, linkish, "a link, bridge or vlan")
		case s.Address != nil:
			ref("link", s.Address.Link, linkish, "a link, bridge or vlan")
		case s.DHCP4 != nil:
			ref("link", s.DHCP4.Link, linkish, "a link, bridge or vlan")
		case s.DHCP6 != nil:
			ref("link", s.DHCP6.Link, wanish, "a link, bridge, vlan or pppoe")
		case s.PPPoE != nil:
			ref("link", s.PPPoE.Link, linkish, "a link, bridge or vlan")
		case s.RA != nil:
			ref("link", s.RA.Link, linkish, "a link, bridge or vlan")
			ref("prefixFrom", s.RA.PrefixFrom, map[string]bool{"dhcp6-client": true}, "a dhcp6-client")
		case s.DHCPD4 != nil:
			ref("link", s.DHCPD4.Link, linkish, "a link, bridge or vlan")
			ref("address", s.DHCPD4.Address, map[string]bool{"address": true}, "an address")
		case s.Route != nil:
			ref("link", s.Route.Link, wanish, "a link, bridge, vlan or pppoe")
			if s.Route.Gateway != nil {
				ref("gateway.service", s.Route.Gateway.Service, nil, "")
			}
		case s.Firewall != nil:
			for _, z := range sortedKeys(s.Firewall.Zones) {
				for i, svc := range s.Firewall.Zones[z].Services {
					ref(fmt.Sprintf("zones.%s.services[%d]", z, i), svc, wanish, "a link, bridge, vlan or pppoe")
				}
			}
		}
	}
	// Cycles, each reported once with its path.
	state := map[string]int{}
	var stack []string
	var visit func(n string)
	visit = func(n string) {
		state[n] = 1
		stack = append(stack, n)
		for _, d := range svcs[n].Deps() {
			if _, ok := svcs[d]; !ok {
				continue
			}
			switch state[d] {
			case 0:
				visit(d)
			case 1:
				i := len(stack) - 1
				for stack[i] != d {
					i--
				}
				cycle := append(append([]string(nil), stack[i:]...), d)
				*errs = append(*errs, fmt.Sprintf("services.%s: dependency cycle: %s", d, strings.Join(cycle, " → ")))
			}
		}
		stack = stack[:len(stack)-1]
		state[n] = 2
	}
	for _, n := range sortedKeys(svcs) {
		if state[n] == 0 {
			visit(n)
		}
	}
}
