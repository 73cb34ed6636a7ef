// Package config loads and validates roostd's configuration, the JSON file
// etc/roost/config.json of a system. Validation reports every problem at
// once, each with its JSON path; unknown fields are errors.
package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/roostrouter/roost/agent/kind"
	"github.com/roostrouter/roost/agent/sshd"
	"github.com/roostrouter/roost/boards"
	"github.com/roostrouter/roost/updater/nixsig"
)

// Config is a router's configuration.
type Config struct {
	Hostname string `json:"hostname"`
	Board    string `json:"board"`
	SSH      SSH    `json:"ssh"`
	// TrustedPublicKeys, if set, are the only keys whose signatures let a
	// store path in (Nix's name:base64 form).
	TrustedPublicKeys []string            `json:"trustedPublicKeys,omitempty"`
	Services          map[string]*Service `json:"-"`
}

// SSH configures roostd's SSH endpoint.
type SSH struct {
	// Listen is where the endpoint listens, host:port; default ":22".
	Listen []string `json:"listen,omitempty"`
	// AuthorizedKeys are OpenSSH public key lines allowed to log in.
	AuthorizedKeys []string `json:"authorizedKeys,omitempty"`
	// Disabled turns the endpoint off (roostd's commands still work under any sshd).
	Disabled bool `json:"disabled,omitempty"`
}

// Errors is every problem found in a config, each with its JSON path.
type Errors []string

func (e Errors) Error() string {
	return fmt.Sprintf("%d problem(s) in the config:\n  %s", len(e), strings.Join(e, "\n  "))
}

// Load reads and validates a config file whose services are of kinds.
func Load(file string, kinds []kind.Kind) (*Config, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	c, err := Parse(b, kinds)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", file, err)
	}
	return c, nil
}

// Parse decodes and validates a config whose services are of kinds.
func Parse(b []byte, kinds []kind.Kind) (*Config, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(b, &top); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return nil, Errors{fmt.Sprintf("byte %d: invalid JSON: %v", se.Offset, se)}
		}
		return nil, Errors{"the config must be a JSON object"}
	}
	var errs Errors
	if keys, err := objectKeys(b); err == nil {
		seen := map[string]bool{}
		for _, k := range keys {
			if seen[k] {
				errs = append(errs, fmt.Sprintf("%s: given twice", k))
			}
			seen[k] = true
		}
	}
	c := &Config{Board: "lab"}
	for _, k := range sortedKeys(top) {
		raw := top[k]
		switch k {
		case "hostname":
			if err := decodeStrict(k, raw, &c.Hostname); err != nil {
				errs = append(errs, err.Error())
			}
		case "board":
			if err := decodeStrict(k, raw, &c.Board); err != nil {
				errs = append(errs, err.Error())
			}
		case "ssh":
			if err := decodeStrict(k, raw, &c.SSH); err != nil {
				errs = append(errs, err.Error())
			}
		case "trustedPublicKeys":
			if err := decodeStrict(k, raw, &c.TrustedPublicKeys); err != nil {
				errs = append(errs, err.Error())
			}
			for i, key := range c.TrustedPublicKeys {
				if _, err := nixsig.ParsePublicKey(key); err != nil {
					errs = append(errs, fmt.Sprintf("trustedPublicKeys[%d]: %v", i, err))
				}
			}
		case "services":
		default:
			errs = append(errs, fmt.Sprintf("%s: unknown field (want hostname, board, ssh, trustedPublicKeys, services)", k))
		}
	}
	board, err := boards.Lookup(c.Board)
	if err != nil {
		errs = append(errs, "board: "+err.Error())
	}
	if raw, ok := top["services"]; ok && err == nil {
		c.Services = parseServices(raw, kinds, &board, &errs)
	}
	errs = append(errs, c.checkSSH()...)
	if len(errs) > 0 {
		return nil, errs
	}
	return c, nil
}

func (c *Config) checkSSH() Errors {
	var errs Errors
	for i, l := range c.SSH.Listen {
		if _, _, err := net.SplitHostPort(l); err != nil {
			errs = append(errs, fmt.Sprintf("ssh.listen[%d]: %q is not host:port", i, l))
		}
	}
	for i, k := range c.SSH.AuthorizedKeys {
		// The agent's own parser: it also refuses options it cannot
		// enforce (from=, command=), so the build fails, not the switch.
		if strings.Contains(k, "\n") {
			errs = append(errs, fmt.Sprintf("ssh.authorizedKeys[%d]: one key a line", i))
		} else if _, err := sshd.ParseAuthorizedKeys([]byte(k)); err != nil {
			errs = append(errs, fmt.Sprintf("ssh.authorizedKeys[%d]: %v", i, strings.TrimPrefix(err.Error(), "line 1: ")))
		}
	}
	return errs
}

// TrustedKeys returns the parsed trusted public keys.
func (c *Config) TrustedKeys() []nixsig.PublicKey {
	var keys []nixsig.PublicKey
	for _, s := range c.TrustedPublicKeys {
		if k, err := nixsig.ParsePublicKey(s); err == nil {
			keys = append(keys, k)
		}
	}
	return keys
}

// ListenAddrs returns where the SSH endpoint listens.
func (s SSH) ListenAddrs() []string {
	if len(s.Listen) == 0 {
		return []string{":22"}
	}
	return s.Listen
}

// BoardInfo returns the config's board.
func (c *Config) BoardInfo() boards.Board {
	b, _ := boards.Lookup(c.Board)
	return b
}
