package main

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/google/nftables"

	"github.com/roostrouter/roost/firewall"
)

// benchFirewall times applying a ruleset with 1,000 port forwards, then
// adding an interface to the wan zone and a port forward: roost's one
// netlink batch beside nft -f of the same ruleset, and nft add element.
func benchFirewall() error {
	rs := firewall.Ruleset{Zones: map[string][]string{"wan": {"wan"}, "lan": {"br-lan"}}}
	for i := 0; i < 1000; i++ {
		rs.Forwards = append(rs.Forwards, firewall.Forward{Proto: "tcp", Port: 10000 + i,
			To: netip.AddrFrom4([4]byte{192, 168, 1, byte(2 + i%250)}), ToPort: 80})
	}
	type row struct {
		what, tool string
		d          time.Duration
	}
	var rows []row
	for _, tool := range []string{"roost (google/nftables)", "nft -f (nftables 1.0.6)"} {
		ns := fmt.Sprintf("fwbench%d", os.Getpid())
		if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
			return fmt.Errorf("ip netns add: %s", out)
		}
		defer exec.Command("ip", "netns", "del", ns).Run() // also when a step fails
		f, err := os.Open("/run/netns/" + ns)
		if err != nil {
			return err
		}
		c, err := firewall.NewConn(nftables.WithNetNSFd(int(f.Fd())))
		if err != nil {
			return err
		}
		var apply, update, forward time.Duration
		if tool == "roost (google/nftables)" {
			start := time.Now()
			if _, err := firewall.Apply(c, rs); err != nil {
				return err
			}
			apply = time.Since(start)
			more := rs
			more.Zones = map[string][]string{"wan": {"wan", "ppp0"}, "lan": {"br-lan"}}
			start = time.Now()
			if res, err := firewall.Apply(c, more); err != nil || res.Rules {
				return fmt.Errorf("zone update: %+v %v", res, err)
			}
			update = time.Since(start)
			more.Forwards = append(more.Forwards, firewall.Forward{Proto: "tcp", Port: 20000, To: netip.MustParseAddr("192.168.1.9"), ToPort: 80})
			start = time.Now()
			if res, err := firewall.Apply(c, more); err != nil || res.Rules {
				return fmt.Errorf("port forward added: %+v %v", res, err)
			}
			forward = time.Since(start)
		} else {
			script := filepath.Join(os.TempDir(), ns+".nft")
			os.WriteFile(script, []byte(firewall.Script(rs)), 0o644)
			defer os.Remove(script)
			start := time.Now()
			if out, err := exec.Command("ip", "netns", "exec", ns, "nft", "-f", script).CombinedOutput(); err != nil {
				return fmt.Errorf("nft -f: %v: %s", err, out)
			}
			apply = time.Since(start)
			start = time.Now()
			if out, err := exec.Command("ip", "netns", "exec", ns, "nft", "add", "element", "inet", "roost", "zone_wan", `{ "ppp0" }`).CombinedOutput(); err != nil {
				return fmt.Errorf("nft add element: %v: %s", err, out)
			}
			update = time.Since(start)
			start = time.Now()
			if out, err := exec.Command("ip", "netns", "exec", ns, "nft", "add", "element", "inet", "roost", "forward_tcp", `{ 20000 : 192.168.1.9 . 80 }`).CombinedOutput(); err != nil {
				return fmt.Errorf("nft add element: %v: %s", err, out)
			}
			forward = time.Since(start)
		}
		f.Close()
		exec.Command("ip", "netns", "del", ns).Run()
		rows = append(rows, row{"apply 1,000 port forwards", tool, apply}, row{"add an interface to a zone", tool, update},
			row{"add a port forward", tool, forward})
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "firewall\ttool\tms\t")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%.1f\t\n", r.what, r.tool, float64(r.d.Microseconds())/1000)
	}
	return tw.Flush()
}
