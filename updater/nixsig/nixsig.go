// Package nixsig makes and checks Nix's store path signatures: ed25519 over
// the path's fingerprint "1;<path>;<narHash>;<narSize>;<refs>", with keys
// and signatures written "<key name>:<base64>", as `nix store sign` and
// `nix-store --generate-binary-cache-key` write them.
package nixsig

import (
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/roostrouter/roost/updater/registry"
)

// PublicKey is a named verification key.
type PublicKey struct {
	Name string
	Key  ed25519.PublicKey
}

// SecretKey is a named signing key.
type SecretKey struct {
	Name string
	Key  ed25519.PrivateKey
}

func split(s, what string, size int) (string, []byte, error) {
	name, b64, ok := strings.Cut(strings.TrimSpace(s), ":")
	if !ok || name == "" {
		return "", nil, fmt.Errorf("%s %q: want <name>:<base64>", what, s)
	}
	b, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(b) != size {
		return "", nil, fmt.Errorf("%s %q: want %d bytes of base64 after the name", what, name, size)
	}
	return name, b, nil
}

// ParsePublicKey reads "name:base64" (32 bytes).
func ParsePublicKey(s string) (PublicKey, error) {
	name, b, err := split(s, "public key", ed25519.PublicKeySize)
	return PublicKey{name, ed25519.PublicKey(b)}, err
}

// ParseSecretKey reads "name:base64" (64 bytes), as in a secret key file.
func ParseSecretKey(s string) (SecretKey, error) {
	name, b, err := split(s, "secret key", ed25519.PrivateKeySize)
	return SecretKey{name, ed25519.PrivateKey(b)}, err
}

// LoadSecretKey reads a secret key file.
func LoadSecretKey(file string) (SecretKey, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return SecretKey{}, fmt.Errorf("read signing key: %w", err)
	}
	return ParseSecretKey(string(b))
}

// Fingerprint is what a path's signature covers.
func Fingerprint(info *registry.Info) string {
	refs := make([]string, 0, len(info.References))
	for _, r := range info.References {
		refs = append(refs, r.String())
	}
	sort.Strings(refs)
	return "1;" + info.Path.String() + ";" + info.NarHash.String() + ";" + strconv.FormatUint(info.NarSize, 10) + ";" + strings.Join(refs, ",")
}

// Sign returns the signature of info by k.
func Sign(info *registry.Info, k SecretKey) string {
	sig := ed25519.Sign(k.Key, []byte(Fingerprint(info)))
	return k.Name + ":" + base64.StdEncoding.EncodeToString(sig)
}

// Verify reports whether one of info's signatures is valid by one of keys.
func Verify(info *registry.Info, keys []PublicKey) bool {
	fp := []byte(Fingerprint(info))
	for _, s := range info.Signatures {
		name, b64, ok := strings.Cut(s, ":")
		if !ok {
			continue
		}
		sig, err := base64.StdEncoding.DecodeString(b64)
		if err != nil || len(sig) != ed25519.SignatureSize {
			continue
		}
		for _, k := range keys {
			if k.Name == name && ed25519.Verify(k.Key, fp, sig) {
				return true
			}
		}
	}
	return false
}

// Check refuses info unless a trusted key signed it; with no trusted keys
// everything passes.
func Check(info *registry.Info, keys []PublicKey) error {
	if len(keys) == 0 || Verify(info, keys) {
		return nil
	}
	var names []string
	for _, k := range keys {
		names = append(names, k.Name)
	}
	return fmt.Errorf("%s is not signed by a trusted key (%s): sign it with nix store sign, or roost rebuild --sign-key", info.Path, strings.Join(names, ", "))
}
