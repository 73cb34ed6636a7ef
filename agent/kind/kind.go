// Package kind is the contract between roostd and a kind of service: a
// typed declaration that the config decodes, that checks itself and names
// the services it refers to (its dependencies), and that builds its
// service for the supervisor. A kind lives with the code of its service;
// the agent lists the kinds it runs in one place.
package kind

import (
	"fmt"
	"strings"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/roostrouter/roost/agent/supervisor"
	"github.com/roostrouter/roost/boards"
)

// Kind is one kind of service, as "kind" names it in the config.
type Kind struct {
	Name string
	// Roles are what its services are to the services that name them.
	Roles []Role
	// Outputs are the outputs of its services a config may name (a
	// route's gateway): the top-level keys, not tables.
	Outputs []string
	// New returns an empty declaration to decode the settings into.
	New func() Decl
}

// Role is what a setting that names another service wants it to be; its
// text completes "want …" in an error.
type Role string

// The roles services play for each other.
const (
	Ethernet  Role = "a link, bridge or vlan"        // an Ethernet device: it has an ifname
	Device    Role = "a link, bridge, vlan or pppoe" // any network device: it has an ifname
	Bridge    Role = "a bridge"                      // a bridge others join
	Address   Role = "an address"                    // a static address on a link
	Delegator Role = "a dhcp6-client"                // it holds delegated prefixes
	Announcer Role = "an ra"                         // it puts a subnet on a LAN and announces it
	// Resolver: it answers DNS for a LAN (what the LAN is handed by
	// default).
	Resolver Role = "a dns"
	// Learner: its dns output names the ISP's DNS servers, as the WAN
	// learns them.
	Learner  Role = "a dhcp4-client, dhcp6-client or pppoe"
	Anything Role = "" // any service (after)
)

// Plays reports whether k's services play r.
func (k Kind) Plays(r Role) bool {
	if r == Anything {
		return true
	}
	for _, have := range k.Roles {
		if have == r {
			return true
		}
	}
	return false
}

// Decl is a service's declaration: a pointer to a struct whose JSON
// fields are the kind's settings (unknown fields are refused).
type Decl interface {
	// Check reports what is wrong with the settings, and names the
	// services they refer to (its dependencies).
	Check(c *Check)
	// Build makes the service from a declaration that checked clean.
	Build(env Env) (Built, error)
}

// Env is what roostd gives every service.
type Env struct {
	Name    string // the service's
	NL      *netlink.Handle
	Board   boards.Board
	State   string // the state folder: leases, DUIDs
	Root    string // the router's root
	ProcSys string // /proc/sys
	Self    string // roostd's binary, for hooks
	// Services are every service of the config, by name, with its kind:
	// for defaults that depend on what else runs (the DNS servers a LAN
	// is handed).
	Services map[string]Kind
}

// Built is a service as the supervisor runs it.
type Built struct {
	Reads   []supervisor.Ref // outputs it reads: a change re-runs it
	Watches []supervisor.Ref // outputs it follows while running
	// AfterKinds are kinds whose services must all be up before it starts
	// (the forwarding sysctls wait for the firewall).
	AfterKinds []string
	New        func() supervisor.Service
}

// Ref is a setting that names another service.
type Ref struct {
	Field   string // its JSON path below the service
	Service string
	Want    Role
	Output  string // an output the service must publish, if any
	// Follow: the service only reads the output while it runs (it
	// watches it), and is not a dependency: it starts, and goes on,
	// without it (a DNS forwarder's upstreams, a LAN's DNS servers).
	Follow bool
}

// Check collects a declaration's problems and references.
type Check struct {
	Board    *boards.Board
	path     string
	problems []string
	refs     []Ref
}

// NewCheck checks the service at path (services.NAME) on board.
func NewCheck(path string, board *boards.Board) *Check { return &Check{Board: board, path: path} }

// Errorf reports a problem with field (a JSON path below the service).
func (c *Check) Errorf(field, format string, args ...any) {
	c.problems = append(c.problems, fmt.Sprintf("%s.%s: %s", c.path, field, fmt.Sprintf(format, args...)))
}

// Problem reports a problem whose text already starts with its path below
// the service (the firewall's own checks).
func (c *Check) Problem(p string) { c.problems = append(c.problems, c.path+"."+p) }

// Ref records that field names service, which must play want. An empty
// name is reported as missing.
func (c *Check) Ref(field, service string, want Role) {
	c.refs = append(c.refs, Ref{Field: field, Service: service, Want: want})
}

// OutputRef records that field names service's output.
func (c *Check) OutputRef(field, service, output string) {
	c.refs = append(c.refs, Ref{Field: field, Service: service, Output: output})
}

// Watch records that field names service, which must play want, and
// whose outputs the service only reads: it does not wait for it (the
// firewall follows an ra's prefix, but must be in force before the DHCPv6
// client under that ra can hear its server).
func (c *Check) Watch(field, service string, want Role) {
	c.refs = append(c.refs, Ref{Field: field, Service: service, Want: want, Follow: true})
}

// Follow records that field names service's output, which the service
// follows while it runs (Built.Watches) without depending on it.
func (c *Check) Follow(field, service, output string) {
	c.refs = append(c.refs, Ref{Field: field, Service: service, Output: output, Follow: true})
}

// Problems are the problems found.
func (c *Check) Problems() []string { return c.problems }

// Refs are the references recorded.
func (c *Check) Refs() []Ref { return c.refs }

// MTU reports an MTU out of range (0 is "unchanged").
func (c *Check) MTU(field string, mtu int) {
	if mtu != 0 && (mtu < 68 || mtu > 65535) {
		c.Errorf(field, "%d is not an MTU (68 to 65535)", mtu)
	}
}

// Ifname reports a name the kernel would refuse for a device.
func (c *Check) Ifname(field, name string) {
	if !ValidIfname(name) {
		c.Errorf(field, "%q is not a device name (1 to 15 characters, no / or spaces)", name)
	}
}

// ValidIfname reports whether the kernel takes n as a device name.
func ValidIfname(n string) bool {
	return n != "" && len(n) < 16 && !strings.ContainsAny(n, "/ \t\n:")
}

// Duration is a duration in the config, written like 12h or 200s.
type Duration time.Duration

func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("%q is not a duration, like 12h or 200s", b)
	}
	*d = Duration(v)
	return nil
}

func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }
