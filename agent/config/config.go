// Package config loads and validates roostd's configuration, the JSON file
// etc/roost/config.json of a system.
package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"golang.org/x/crypto/ssh"
)

// Config is a router's configuration.
type Config struct {
	Hostname string `json:"hostname"`
	SSH      SSH    `json:"ssh"`
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

// Load reads and validates a config file.
func Load(file string) (*Config, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	c, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", file, err)
	}
	return c, nil
}

// Parse decodes and validates a config. Unknown fields are errors.
func Parse(b []byte) (*Config, error) {
	var c Config
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &se):
			return nil, Errors{fmt.Sprintf("byte %d: invalid JSON: %v", se.Offset, se)}
		case errors.As(err, &te):
			return nil, Errors{fmt.Sprintf("%s: expected %s, got JSON %s", te.Field, te.Type, te.Value)}
		}
		return nil, Errors{err.Error()}
	}
	if errs := c.validate(); len(errs) > 0 {
		return nil, errs
	}
	return &c, nil
}

func (c *Config) validate() Errors {
	var errs Errors
	for i, l := range c.SSH.Listen {
		if _, _, err := net.SplitHostPort(l); err != nil {
			errs = append(errs, fmt.Sprintf("ssh.listen[%d]: %q is not host:port", i, l))
		}
	}
	for i, k := range c.SSH.AuthorizedKeys {
		if _, _, _, _, err := ssh.ParseAuthorizedKey([]byte(k)); err != nil {
			errs = append(errs, fmt.Sprintf("ssh.authorizedKeys[%d]: not an OpenSSH public key line: %v", i, err))
		}
	}
	return errs
}

// ListenAddrs returns where the SSH endpoint listens.
func (s SSH) ListenAddrs() []string {
	if len(s.Listen) == 0 {
		return []string{":22"}
	}
	return s.Listen
}
