// Package storepath validates Nix store path names: a 32-character nix32 hash,
// a dash, and a name of at most 211 of the characters Nix allows.
package storepath

import (
	"fmt"
	"strings"

	"github.com/roostrouter/roost/updater/nixhash"
)

// Dir is the logical store directory. On the router it is also the physical
// one; tests and the lab put it below a root folder.
const Dir = "/nix/store"

const (
	hashLen    = 32
	maxNameLen = 211
)

// Path is a valid store path, kept as its base name "<hash>-<name>".
type Path string

// Parse validates a full store path such as /nix/store/<hash>-<name>.
func Parse(full string) (Path, error) {
	base, ok := strings.CutPrefix(full, Dir+"/")
	if !ok {
		return "", fmt.Errorf("store path %q is not in %s", full, Dir)
	}
	return ParseBase(base)
}

// ParseBase validates a store path's base name "<hash>-<name>".
func ParseBase(base string) (Path, error) {
	if len(base) < hashLen+2 || base[hashLen] != '-' {
		return "", fmt.Errorf("store path %q: want <32-character hash>-<name>", base)
	}
	for i := 0; i < hashLen; i++ {
		if strings.IndexByte(nixhash.Nix32Alphabet, base[i]) < 0 {
			return "", fmt.Errorf("store path %q: hash has invalid character %q", base, base[i])
		}
	}
	name := base[hashLen+1:]
	if len(name) > maxNameLen {
		return "", fmt.Errorf("store path %q: name is %d characters, at most %d allowed", base, len(name), maxNameLen)
	}
	if name[0] == '.' {
		return "", fmt.Errorf("store path %q: name starts with a period", base)
	}
	for i := 0; i < len(name); i++ {
		if !validNameChar(name[i]) {
			return "", fmt.Errorf("store path %q: name has invalid character %q", base, name[i])
		}
	}
	return Path(base), nil
}

func validNameChar(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' ||
		strings.IndexByte("+-._?=", c) >= 0
}

// Base returns "<hash>-<name>".
func (p Path) Base() string { return string(p) }

// String returns the full path below Dir.
func (p Path) String() string { return Dir + "/" + string(p) }

// HashPart returns the 32-character hash.
func (p Path) HashPart() string { return string(p)[:hashLen] }

// Name returns the part after the hash and its dash.
func (p Path) Name() string { return string(p)[hashLen+1:] }

// FromLink returns the store path a symlink target names, allowing a
// subpath (/nix/store/<base>/bin/x names <base>).
func FromLink(target string) (Path, error) {
	rest, ok := strings.CutPrefix(target, Dir+"/")
	if !ok {
		return "", fmt.Errorf("link target %q is not in %s", target, Dir)
	}
	base, _, _ := strings.Cut(rest, "/")
	return ParseBase(base)
}

// UnmarshalText accepts a base name or a full path, and validates it.
func (p *Path) UnmarshalText(b []byte) error {
	s := string(b)
	var err error
	if strings.HasPrefix(s, "/") {
		*p, err = Parse(s)
	} else {
		*p, err = ParseBase(s)
	}
	return err
}

// MarshalText writes the full path.
func (p Path) MarshalText() ([]byte, error) { return []byte(p.String()), nil }
