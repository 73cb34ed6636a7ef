package firewall

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/google/nftables"
)

// forwardingKeys are the sysctls that make the router forward, below
// /proc/sys: they are on only while a ruleset is in force.
var forwardingKeys = []string{"net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding"}

// Lockdown puts the default policy in force with the zones' fixed
// interfaces (input and forward dropped, SSH, DNS and DHCP from the LAN,
// nothing opened or forwarded), unless roost's table is already in the
// kernel: at first boot it stands until the service applies the whole
// ruleset, so nothing is open from the WAN while the services come up.
func (s *Service) Lockdown() error {
	c, err := NewConn()
	if err != nil {
		return err
	}
	if _, err := c.ListTableOfFamily(TableName, nftables.TableFamilyINet); err == nil {
		return nil // in force already: a restarted agent adopts it
	}
	zones := map[string][]string{}
	for name, z := range s.Zones {
		zones[name] = append([]string{}, z.Interfaces...)
	}
	_, err = Apply(c, Ruleset{Zones: zones})
	return err
}

// failSafe is what a ruleset that cannot be applied leaves: forwarding off,
// and the default policy with the zones' current members in its place, if
// even that applies. It returns the error to report, saying what is in
// force.
func (s *Service) failSafe(c *nftables.Conn, rs Ruleset, cause error) error {
	var errs []error
	for _, k := range forwardingKeys {
		if s.ProcSys == "" {
			errs = append(errs, fmt.Errorf("turn off %s: the service was given no ProcSys", k))
			continue
		}
		file := filepath.Join(s.ProcSys, k)
		if err := os.WriteFile(file, []byte("0"), 0o644); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("turn off %s: %w", k, err))
		}
	}
	msg := "forwarding is off"
	if c != nil {
		if _, err := Apply(c, Ruleset{Zones: rs.Zones}); err != nil {
			errs = append(errs, fmt.Errorf("the default policy could not be applied either: %w", err))
		} else {
			msg += "; the default policy is in force (SSH, DNS and DHCP from the LAN; nothing opened or forwarded)"
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w; %s; %w", cause, msg, errors.Join(errs...))
	}
	return fmt.Errorf("%w; %s", cause, msg)
}
