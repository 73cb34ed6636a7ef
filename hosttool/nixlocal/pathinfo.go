package nixlocal

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/roostrouter/roost/updater/nixhash"
	"github.com/roostrouter/roost/updater/registry"
	"github.com/roostrouter/roost/updater/storepath"
)

// The shapes of nix path-info --json, as NixOS/nix and Lix print them
// (testdata/ holds one of each):
//
//   - Nix 2.3 to 2.18 and Lix: an array of objects, each with its "path"
//     (and from 2.4 "valid"; false for a path not in the store); Nix 2.3
//     prints NAR hashes as sha256:<nix32>, later ones as SRI.
//   - Nix 2.19 to 2.32 (NixOS/nix#9242), and 2.33+ with --json-format 1 or
//     none: an object keyed by full store path, null for a path not in the
//     store; from 2.24 absent fields are null; 2.33 adds "version" and
//     "storeDir" to each.
//   - Nix 2.33+ with --json-format 2 or 3: {"version", "storeDir", "info"},
//     info keyed by store path base name; references and deriver are base
//     names, "ca" is an object; format 3 (2.35) prints signatures as
//     {"keyName", "sig"} objects. Nix's master branch printed format 2
//     unwrapped and with hashes as {"algorithm", "format", "hash"} objects
//     for a while before 2.33 (never released; read all the same).

// ParsePathInfo reads the output of nix path-info --json in any of the
// shapes above. An output it does not recognise is an error that says what
// it saw.
func ParsePathInfo(out []byte) ([]registry.Info, error) {
	out = bytes.TrimSpace(out)
	var infos []registry.Info
	switch {
	case len(out) == 0:
		return nil, errors.New("nix path-info printed nothing")
	case out[0] == '[':
		var list []json.RawMessage
		if err := json.Unmarshal(out, &list); err != nil {
			return nil, fmt.Errorf("nix path-info printed a JSON array roost cannot read: %w", err)
		}
		for i, raw := range list {
			info, err := arrayEntry(raw)
			if err != nil {
				return nil, fmt.Errorf("nix path-info's entry %d: %w", i, err)
			}
			infos = append(infos, info)
		}
	case out[0] == '{':
		var top map[string]json.RawMessage
		if err := json.Unmarshal(out, &top); err != nil {
			return nil, fmt.Errorf("nix path-info printed a JSON object roost cannot read: %w", err)
		}
		byPath := top
		if info, wrapped := top["info"]; wrapped {
			if err := checkStoreDir(top["storeDir"]); err != nil {
				return nil, err
			}
			byPath = nil
			if err := json.Unmarshal(info, &byPath); err != nil || byPath == nil {
				return nil, fmt.Errorf("nix path-info printed %s, whose \"info\" is not an object of store paths: %s", describe(out), unknownShape)
			}
		}
		for key, raw := range byPath {
			info, err := objectEntry(key, raw)
			if err != nil {
				if !looksLikePath(key) {
					return nil, fmt.Errorf("nix path-info printed %s: %s", describe(out), unknownShape)
				}
				return nil, fmt.Errorf("nix path-info's entry for %s: %w", key, err)
			}
			infos = append(infos, info)
		}
	default:
		return nil, fmt.Errorf("nix path-info printed %s: %s", describe(out), unknownShape)
	}
	sort.Slice(infos, func(i, j int) bool { return infos[i].Path < infos[j].Path })
	for i := 1; i < len(infos); i++ {
		if infos[i].Path == infos[i-1].Path {
			return nil, fmt.Errorf("nix path-info printed %s twice", infos[i].Path)
		}
	}
	return infos, nil
}

// knownVersions are the values of "version" that Nix 2.33 to 2.35 print.
var knownVersions = []string{"1", "2", "3"}

const unknownShape = "roost reads the shapes of Nix 2.3 to 2.35 and Lix, not this one; " +
	"please report it to roost's developers with the output of nix --version"

func looksLikePath(key string) bool {
	_, err := storepath.ParseBase(key)
	return err == nil || strings.HasPrefix(key, "/")
}

// describe names what a JSON value is, for errors about shapes roost does
// not know: its kind, an object's keys and version.
func describe(raw []byte) string {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return fmt.Sprintf("something that is not JSON (%q…)", clip(raw))
	}
	switch v := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		s := "a JSON object with keys " + quoteList(keys, 6)
		if ver, ok := v["version"]; ok {
			s += fmt.Sprintf(" and version %v", ver)
		}
		return s
	case []any:
		if len(v) == 0 {
			return "an empty JSON array"
		}
		first, _ := json.Marshal(v[0])
		return fmt.Sprintf("a JSON array whose first element is %s", describe(first))
	case nil:
		return "JSON null"
	case string:
		return fmt.Sprintf("a JSON string (%q)", clip([]byte(v)))
	case float64:
		return fmt.Sprintf("a JSON number (%s)", clip(raw))
	default:
		return fmt.Sprintf("a JSON boolean (%s)", clip(raw))
	}
}

func clip(b []byte) string {
	if len(b) > 60 {
		return string(b[:60])
	}
	return string(b)
}

func quoteList(ss []string, most int) string {
	var q []string
	for i, s := range ss {
		if i == most {
			q = append(q, fmt.Sprintf("and %d more", len(ss)-most))
			break
		}
		q = append(q, fmt.Sprintf("%q", s))
	}
	return strings.Join(q, ", ")
}

// arrayEntry reads an element of the array shape: the path is a field.
func arrayEntry(raw json.RawMessage) (registry.Info, error) {
	var f map[string]json.RawMessage
	if err := json.Unmarshal(raw, &f); err != nil || f == nil {
		return registry.Info{}, fmt.Errorf("%s is not a store object's info: %s", describe(raw), unknownShape)
	}
	var path string
	if err := json.Unmarshal(f["path"], &path); err != nil || path == "" {
		return registry.Info{}, fmt.Errorf("%s has no \"path\": %s", describe(raw), unknownShape)
	}
	var valid *bool
	if err := decodeOptional(f, "valid", &valid); err != nil {
		return registry.Info{}, fmt.Errorf("%s: %w", path, err)
	}
	if valid != nil && !*valid {
		return registry.Info{}, notValid(path)
	}
	return fields(path, f)
}

// objectEntry reads a value of the object shapes, keyed by its path.
func objectEntry(key string, raw json.RawMessage) (registry.Info, error) {
	if bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return registry.Info{}, notValid(key)
	}
	var f map[string]json.RawMessage
	if err := json.Unmarshal(raw, &f); err != nil || f == nil {
		return registry.Info{}, fmt.Errorf("%s is not a store object's info", describe(raw))
	}
	return fields(key, f)
}

func notValid(path string) error {
	return fmt.Errorf("%s is not valid in the laptop's Nix store: build it first (nix-build, or nix-store --realise)", path)
}

// parsePath accepts a full store path or, as --json-format 2 prints them,
// a base name.
func parsePath(s string) (storepath.Path, error) {
	if strings.HasPrefix(s, "/") {
		return storepath.Parse(s)
	}
	return storepath.ParseBase(s)
}

func checkStoreDir(raw json.RawMessage) error {
	if raw == nil {
		return nil
	}
	var dir *string
	if err := json.Unmarshal(raw, &dir); err != nil {
		return fmt.Errorf("storeDir %s: want a string", raw)
	}
	if dir != nil && strings.TrimSuffix(*dir, "/") != storepath.Dir {
		return fmt.Errorf("the laptop's Nix store is %s, but a router's store is %s: build the system with a Nix whose store is %s", *dir, storepath.Dir, storepath.Dir)
	}
	return nil
}

// fields reads the fields of one store object's info. narHash, narSize and
// references are required: a renamed field must be an error, not a path
// that seems to reference nothing.
func fields(key string, f map[string]json.RawMessage) (info registry.Info, err error) {
	defer func() {
		var v json.Number
		if err != nil && json.Unmarshal(f["version"], &v) == nil && !slices.Contains(knownVersions, v.String()) {
			err = fmt.Errorf("%w (its format is version %s: %s)", err, v, unknownShape)
		}
	}()
	if err := checkStoreDir(f["storeDir"]); err != nil {
		return info, err
	}
	if info.Path, err = parsePath(key); err != nil {
		return info, err
	}
	if info.NarHash, err = narHash(f["narHash"]); err != nil {
		return info, err
	}
	if f["narSize"] == nil {
		return info, errors.New("no narSize")
	}
	if err := json.Unmarshal(f["narSize"], &info.NarSize); err != nil {
		return info, fmt.Errorf("narSize %s: want a number", f["narSize"])
	}
	var refs []string
	if err := json.Unmarshal(f["references"], &refs); err != nil || f["references"] == nil {
		return info, fmt.Errorf("references %s: want a list of store paths", orAbsent(f["references"]))
	}
	for _, r := range refs {
		p, err := parsePath(r)
		if err != nil {
			return info, fmt.Errorf("references: %w", err)
		}
		info.References = append(info.References, p)
	}
	var deriver *string
	if err := decodeOptional(f, "deriver", &deriver); err != nil {
		return info, err
	}
	if deriver != nil && *deriver != "" {
		if info.Deriver, err = parsePath(*deriver); err != nil {
			return info, fmt.Errorf("deriver: %w", err)
		}
	}
	var sigs []json.RawMessage
	if err := decodeOptional(f, "signatures", &sigs); err != nil {
		return info, err
	}
	for _, s := range sigs {
		sig, err := signature(s)
		if err != nil {
			return info, err
		}
		info.Signatures = append(info.Signatures, sig)
	}
	var regTime *int64
	if err := decodeOptional(f, "registrationTime", &regTime); err != nil {
		return info, err
	}
	if regTime != nil {
		info.RegistrationTime = *regTime
	}
	// ca, ultimate, valid, version, closureSize, url and the rest are not
	// the router's business: a router registers what it is sent and
	// trusts signatures, not content addresses.
	return info, nil
}

func orAbsent(raw json.RawMessage) string {
	if raw == nil {
		return "absent"
	}
	return string(raw)
}

// decodeOptional decodes field k if it is there and not null.
func decodeOptional(f map[string]json.RawMessage, k string, v any) error {
	raw, ok := f[k]
	if !ok || bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("%s %s: %w", k, clip(raw), err)
	}
	return nil
}

// narHash reads a SHA-256 NAR hash: a string in any of Nix's notations
// (SRI, sha256:<nix32>, sha256:<base16>), or an object
// {"algorithm": "sha256", "format": "base16"|"nix32"|"base64"|"sri", "hash": ...}.
func narHash(raw json.RawMessage) (nixhash.SHA256, error) {
	if raw == nil {
		return nixhash.SHA256{}, errors.New("no narHash")
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		h, err := nixhash.ParseSHA256(s)
		if err != nil {
			return h, fmt.Errorf("narHash: %w", err)
		}
		return h, nil
	}
	var o struct {
		Algorithm string `json:"algorithm"`
		Format    string `json:"format"`
		Hash      string `json:"hash"`
	}
	if err := json.Unmarshal(raw, &o); err != nil || o.Hash == "" {
		return nixhash.SHA256{}, fmt.Errorf("narHash %s: want a hash string or {algorithm, format, hash}", clip(raw))
	}
	if o.Algorithm != "sha256" {
		return nixhash.SHA256{}, fmt.Errorf("narHash %s: only sha256 NAR hashes are supported", clip(raw))
	}
	var text string
	switch o.Format {
	case "sri":
		text = o.Hash
	case "base16", "nix32", "base32", "base64":
		// ParseSHA256 tells these apart by length, and checks the digits.
		text = "sha256:" + o.Hash
	default:
		return nixhash.SHA256{}, fmt.Errorf("narHash %s: unknown hash format %q", clip(raw), o.Format)
	}
	h, err := nixhash.ParseSHA256(text)
	if err != nil {
		return h, fmt.Errorf("narHash: %w", err)
	}
	return h, nil
}

// signature reads "name:base64" or, from --json-format 3, {"keyName", "sig"}.
func signature(raw json.RawMessage) (string, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, nil
	}
	var o struct {
		KeyName string `json:"keyName"`
		Sig     string `json:"sig"`
	}
	if err := json.Unmarshal(raw, &o); err != nil || o.KeyName == "" || o.Sig == "" {
		return "", fmt.Errorf("signature %s: want \"name:base64\" or {keyName, sig}", clip(raw))
	}
	return o.KeyName + ":" + o.Sig, nil
}
