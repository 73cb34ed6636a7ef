package netconf

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/roostrouter/roost/agent/supervisor"
	"github.com/roostrouter/roost/updater/atomicfile"
)

// PPPoE is a WAN over PPPoE: roostd runs pppd with its PPPoE plugin (the
// kernel's PPPoE data plane) on a link, with an options file written at
// each start, and learns what the link got from pppd's hooks, which run
// `roostd hook ppp EVENT …` and reach the service through Hooks.
//
// Outputs: ifname (ppp0), address, peer, dns (IPv4, from the peer), and
// ipv6/local, ipv6/peer (link-local addresses). It is ready while either
// family is up. pppd exits when the session ends; the supervisor then
// starts it again with backoff.
//
// IPv4 comes from the ip-up and ip-down hooks. IPv6 is read from the
// interface (the link-local address and peer IPv6CP set), because pppd
// before 2.5 (Debian 12 has 2.4.9) has no option for the path of its
// ipv6-up script; `roostd hook ppp ipv6-up` is taken too, for a pppd that
// runs it.
type PPPoE struct {
	NL           *netlink.Handle
	LinkRef      supervisor.Ref // the Ethernet link the session runs over
	Name         string         // the service's name: pppd's ipparam
	User         string
	PasswordFile string // read at each start; never on a command line
	Unit         int    // pppN
	MTU          int    // and MRU; default 1492
	EchoInterval int    // LCP echo every n seconds; default 10
	EchoFailures int    // the session is down after n missed echoes; default 3
	NoIPv6       bool
	StateDir     string // the options file and hook scripts live below it
	Pppd         string // default "pppd"
	Roostd       string // the roostd binary the hooks run
	Root         string // the root the hooks' roostd talks to (its control socket)
	Hooks        *PPPHooks
}

// PPPEvent is what one pppd hook reports.
type PPPEvent struct {
	Kind    string // ip-up, ip-down, ipv6-up, ipv6-down
	Service string // pppd's ipparam: the service's name
	Ifname  string
	Local   netip.Addr
	Peer    netip.Addr
	DNS     []netip.Addr
}

var (
	ifnamePattern  = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,15}$`)
	servicePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)
)

// ParsePPPHook checks the arguments pppd gives a hook (interface, tty,
// speed, local address, remote address, ipparam) and, for IPv4, DNS1 and
// DNS2 from its environment. Anything missing or malformed is an error
// that says which argument and why; nothing is half-taken.
func ParsePPPHook(kind string, args []string, getenv func(string) string) (PPPEvent, error) {
	ev := PPPEvent{Kind: kind}
	v6 := false
	switch kind {
	case "ip-up", "ip-down":
	case "ipv6-up", "ipv6-down":
		v6 = true
	default:
		return ev, fmt.Errorf("unknown ppp event %q: want ip-up, ip-down, ipv6-up or ipv6-down", kind)
	}
	if len(args) != 6 {
		return ev, fmt.Errorf("ppp %s: got %d arguments, want 6 (interface tty speed local remote ipparam), as pppd passes them", kind, len(args))
	}
	if !ifnamePattern.MatchString(args[0]) {
		return ev, fmt.Errorf("ppp %s: interface %q is not an interface name", kind, args[0])
	}
	ev.Ifname = args[0]
	if !servicePattern.MatchString(args[5]) {
		return ev, fmt.Errorf("ppp %s: ipparam %q is not a service name", kind, args[5])
	}
	ev.Service = args[5]
	for i, dst := range []*netip.Addr{&ev.Local, &ev.Peer} {
		what := [...]string{"local", "remote"}[i]
		a, err := netip.ParseAddr(args[3+i])
		switch {
		case err != nil:
			return ev, fmt.Errorf("ppp %s: %s address %q: %v", kind, what, args[3+i], err)
		case !v6 && !a.Is4():
			return ev, fmt.Errorf("ppp %s: %s address %s is not IPv4", kind, what, a)
		case v6 && !a.Is6():
			return ev, fmt.Errorf("ppp %s: %s address %s is not IPv6", kind, what, a)
		case a.IsUnspecified() || a.IsMulticast():
			return ev, fmt.Errorf("ppp %s: %s address %s cannot be a link's address", kind, what, a)
		}
		*dst = a
	}
	if !v6 && getenv != nil {
		for _, k := range []string{"DNS1", "DNS2"} {
			v := strings.TrimSpace(getenv(k))
			if v == "" {
				continue
			}
			a, err := netip.ParseAddr(v)
			if err != nil || !a.Is4() {
				return ev, fmt.Errorf("ppp %s: %s %q is not an IPv4 address", kind, k, v)
			}
			if !slices.Contains(ev.DNS, a) { // pppd repeats a lone server as DNS2
				ev.DNS = append(ev.DNS, a)
			}
		}
	}
	return ev, nil
}

// PPPHooks hands hook events to the running PPPoE services, by name.
type PPPHooks struct {
	mu   sync.Mutex
	byID map[string]chan PPPEvent
}

// NewPPPHooks returns an empty hub.
func NewPPPHooks() *PPPHooks { return &PPPHooks{byID: map[string]chan PPPEvent{}} }

func (h *PPPHooks) register(name string) (<-chan PPPEvent, func()) {
	ch := make(chan PPPEvent, 8)
	h.mu.Lock()
	h.byID[name] = ch
	h.mu.Unlock()
	return ch, func() {
		h.mu.Lock()
		if h.byID[name] == ch {
			delete(h.byID, name)
		}
		h.mu.Unlock()
	}
}

// Deliver passes ev to its service; it fails if no such service runs.
func (h *PPPHooks) Deliver(ev PPPEvent) error {
	h.mu.Lock()
	ch := h.byID[ev.Service]
	h.mu.Unlock()
	if ch == nil {
		return fmt.Errorf("no PPPoE service %q is running", ev.Service)
	}
	select {
	case ch <- ev:
		return nil
	case <-time.After(5 * time.Second):
		return fmt.Errorf("PPPoE service %q is not taking events", ev.Service)
	}
}

// pppdExit says what pppd's exit status means (pppd(8), EXIT STATUS).
func pppdExit(code int) string {
	switch code {
	case 0:
		return "the session ended"
	case 2:
		return "pppd refused its options"
	case 4:
		return "the kernel has no PPP support (ppp_generic, pppoe modules)"
	case 8, 10:
		return "negotiation with the ISP failed (no PPPoE server answered, or LCP/IPCP failed)"
	case 15:
		return "the ISP stopped answering LCP echoes"
	case 16:
		return "the ISP hung up"
	case 19:
		return "the ISP refused the username or password"
	}
	return "pppd failed"
}

// ispSide says whether pppd's exit status means the ISP went away or
// hung up, which passes by itself, rather than a refused password or a
// local problem, which a retry every few seconds would not mend (and an
// ISP may lock an account that keeps failing to log in).
func ispSide(code int) bool {
	switch code {
	case 0, 8, 10, 15, 16:
		return true
	}
	return false
}

// Options is the pppd options file for a session over ifname.
func (p *PPPoE) Options(ifname, password string) string {
	q := func(s string) string { return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"` }
	mtu, every, fails := orDefault(p.MTU, 1492), orDefault(p.EchoInterval, 10), orDefault(p.EchoFailures, 3)
	var b strings.Builder
	fmt.Fprintf(&b, "plugin rp-pppoe.so\nnic-%s\n", ifname)
	// Discovery gives up after 2+4 s (pppd's default is 5+10+20) and the
	// supervisor starts pppd again within 2 s (ispSide): while the ISP is
	// away a PADI goes out every few seconds, so the session is back a few
	// seconds after the ISP is, not up to 20 s later.
	b.WriteString("pppoe-padi-timeout 2\npppoe-padi-attempts 2\n")
	fmt.Fprintf(&b, "user %s\npassword %s\n", q(p.User), q(password))
	fmt.Fprintf(&b, "unit %d\nnodetach\nmaxfail 1\nnoauth\nnoipdefault\nnodefaultroute\nusepeerdns\n", p.Unit)
	fmt.Fprintf(&b, "mtu %d\nmru %d\n", mtu, mtu)
	fmt.Fprintf(&b, "lcp-echo-interval %d\nlcp-echo-failure %d\n", every, fails)
	if !p.NoIPv6 {
		b.WriteString("+ipv6\n")
	}
	fmt.Fprintf(&b, "ipparam %s\nlogfd 2\n", p.Name)
	for _, ev := range []string{"ip-up", "ip-down"} {
		fmt.Fprintf(&b, "%s-script %s\n", ev, q(p.hookScript(ev)))
	}
	return b.String()
}

func orDefault(v, def int) int {
	if v > 0 {
		return v
	}
	return def
}

func (p *PPPoE) dir() string { return filepath.Join(p.StateDir, "pppoe-"+p.Name) }

func (p *PPPoE) hookScript(ev string) string { return filepath.Join(p.dir(), ev) }

// Run starts pppd and follows its hooks until it exits.
func (p *PPPoE) Run(ctx context.Context, env *supervisor.Env) error {
	ifname, err := env.Require(p.LinkRef)
	if err != nil {
		return err
	}
	pw, err := os.ReadFile(p.PasswordFile)
	if err != nil {
		return fmt.Errorf("read the PPPoE password: %w", err)
	}
	password := strings.TrimRight(string(pw), "\r\n")
	if err := os.MkdirAll(p.dir(), 0o700); err != nil {
		return err
	}
	for _, ev := range []string{"ip-up", "ip-down"} {
		script := fmt.Sprintf("#!/bin/sh\n# Written by roostd for service %s: pppd runs it.\nexec %s hook ppp %s --root %s \"$@\"\n",
			p.Name, shellQuote(p.Roostd), ev, shellQuote(p.Root))
		if err := atomicfile.WriteFile(p.hookScript(ev), []byte(script), 0o700); err != nil {
			return fmt.Errorf("write the %s hook: %w", ev, err)
		}
	}
	options := filepath.Join(p.dir(), "options")
	if err := atomicfile.WriteFile(options, []byte(p.Options(ifname, password)), 0o600); err != nil {
		return fmt.Errorf("write pppd options: %w", err)
	}
	events, unregister := p.Hooks.register(p.Name)
	defer unregister()

	// Before pppd starts, so that no address change goes unseen.
	changes := ipv6Changes(ctx, env, p.NoIPv6 || p.NL == nil)

	pppd := p.Pppd
	if pppd == "" {
		pppd = "pppd"
	}
	cmd := exec.Command(pppd, "file", options)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start pppd: %w", err)
	}
	env.Log.Info("pppoe: started pppd", "link", ifname, "user", p.User, "unit", p.Unit, "pid", cmd.Process.Pid)
	go logLines(stderr, env, "pppd")
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	up4, up6 := false, false
	pppIf := "ppp" + strconv.Itoa(p.Unit)
	for {
		select {
		case <-changes:
			local, peer, ok := p.ipv6LinkLocal(pppIf)
			switch {
			case ok && !up6:
				p.apply(env, PPPEvent{Kind: "ipv6-up", Service: p.Name, Ifname: pppIf, Local: local, Peer: peer}, &up4, &up6)
			case !ok && up6:
				p.apply(env, PPPEvent{Kind: "ipv6-down", Service: p.Name, Ifname: pppIf}, &up4, &up6)
			}
		case <-ctx.Done():
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(5 * time.Second):
				syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
				<-exited
			}
			return nil
		case err := <-exited:
			code := -1
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err == nil {
				code = 0
			}
			err = fmt.Errorf("pppoe on %s: %s (pppd exit status %d)", ifname, pppdExit(code), code)
			if ispSide(code) {
				// Back within seconds of the ISP, however long it was away.
				return &supervisor.RetrySoon{Err: err, Within: 2 * time.Second}
			}
			return err
		case ev := <-events:
			p.apply(env, ev, &up4, &up6)
		}
	}
}

// apply publishes what a hook reported and withdraws what went down.
func (p *PPPoE) apply(env *supervisor.Env, ev PPPEvent, up4, up6 *bool) {
	env.Log.Info("pppoe: "+ev.Kind, "ifname", ev.Ifname, "local", ev.Local, "peer", ev.Peer)
	switch ev.Kind {
	case "ip-up":
		IfName.Set(env, ev.Ifname)
		Addr.Set(env, ev.Local)
		PPPPeer.Set(env, ev.Peer)
		var dns []string
		for _, d := range ev.DNS {
			dns = append(dns, d.String())
		}
		PPPDNS.Set(env, strings.Join(dns, " "))
		*up4 = true
	case "ip-down":
		Addr.Delete(env)
		PPPPeer.Delete(env)
		PPPDNS.Delete(env)
		*up4 = false
	case "ipv6-up":
		IfName.Set(env, ev.Ifname)
		PPPLocal6.Set(env, ev.Local)
		PPPPeer6.Set(env, ev.Peer)
		*up6 = true
	case "ipv6-down":
		env.DeleteOutput(PPPIPv6)
		*up6 = false
	}
	if *up4 || *up6 {
		env.Ready()
	} else {
		env.NotReady(IfName.Key)
	}
}

// ipv6Changes signals (coalesced) each change of an IPv6 address in the
// router's namespace: pppd's IPv6CP sets ppp0's link-local addresses, and
// pppd 2.4.9 runs no hook for it. Should the netlink subscription fail or
// end, it falls back to a signal every second. off: never a signal.
func ipv6Changes(ctx context.Context, env *supervisor.Env, off bool) <-chan struct{} {
	changes := make(chan struct{}, 1)
	if off {
		return changes
	}
	signal := func() {
		select {
		case changes <- struct{}{}:
		default:
		}
	}
	updates := make(chan netlink.AddrUpdate, 64)
	err := netlink.AddrSubscribeWithOptions(updates, ctx.Done(), netlink.AddrSubscribeOptions{ErrorCallback: func(err error) {
		if ctx.Err() == nil { // not the subscription closing as we stop
			env.Log.Warn("pppoe: address updates", "err", err)
		}
	}})
	go func() {
		if err == nil {
			for u := range updates {
				if u.LinkAddress.IP.To4() == nil {
					signal()
				}
			}
			if ctx.Err() != nil {
				return
			}
		}
		env.Log.Warn("pppoe: no netlink address updates; looking for IPv6 on the session every second", "err", err)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				signal()
			}
		}
	}()
	return changes
}

// ipv6LinkLocal reads the IPv6CP result from the interface: its
// link-local address and the peer's.
func (p *PPPoE) ipv6LinkLocal(ifname string) (local, peer netip.Addr, ok bool) {
	link, err := p.NL.LinkByName(ifname)
	if err != nil {
		return local, peer, false
	}
	addrs, err := p.NL.AddrList(link, netlink.FAMILY_V6)
	if err != nil {
		return local, peer, false
	}
	for _, a := range addrs {
		if !a.IP.IsLinkLocalUnicast() || a.Peer == nil {
			continue
		}
		l, ok1 := netip.AddrFromSlice(a.IP)
		r, ok2 := netip.AddrFromSlice(a.Peer.IP)
		if ok1 && ok2 {
			return l, r, true
		}
	}
	return local, peer, false
}

// Remove deletes what roostd wrote for pppd: its folder in the state
// ($STATE/pppoe-<name>: the options file, which holds the password, and
// the hook scripts). roostd writes nothing else for it (no peers file, no
// /etc/ppp). pppd stopped when Run ended and took its ppp interface with
// it; the link the session rode on is another service's and stays.
func (p *PPPoE) Remove(context.Context) error {
	if p.StateDir == "" || p.Name == "" {
		return nil // no folder of its own to name
	}
	if err := os.RemoveAll(p.dir()); err != nil {
		return fmt.Errorf("remove pppd's files in %s: %w", p.dir(), err)
	}
	return nil
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// logLines copies a child's output to the log, a line an event.
func logLines(r io.Reader, env *supervisor.Env, who string) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		env.Log.Info(who, "line", sc.Text())
	}
}
