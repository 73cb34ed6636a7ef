package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"sort"
	"strings"

	"github.com/roostrouter/roost/agent/kind"
	"github.com/roostrouter/roost/agent/supervisor"
	"github.com/roostrouter/roost/boards"
)

// Service is one entry of "services": a kind and its declaration.
type Service struct {
	Kind  string
	After []string // more dependencies, besides the services its settings name
	Decl  kind.Decl

	refs []kind.Ref
	raw  json.RawMessage
}

// Fingerprint identifies a service's declaration: it changes when any
// setting does, so a reload restarts exactly the services that changed.
// It is the declaration's JSON in one canonical form (keys sorted, no
// spaces): a config written out again differently, by Nix rather than
// by hand, restarts nothing.
func (s *Service) Fingerprint() string {
	var v any
	dec := json.NewDecoder(bytes.NewReader(s.raw))
	dec.UseNumber() // numbers as written: 1e3 and 1000 differ, as a setting may care
	if dec.Decode(&v) != nil {
		return string(s.raw)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return string(s.raw)
	}
	return string(b)
}

// Deps are the services it depends on: the ones its settings name, and After.
func (s *Service) Deps() []string {
	deps := append([]string(nil), s.After...)
	for _, r := range s.refs {
		if r.Follow {
			continue // read while it runs, not waited for
		}
		deps = append(deps, r.Service)
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
			if want, ok := textTypes[f.Type()]; ok {
				err = fmt.Errorf("%s.%s: %s is not %s", path, k, obj[k], want)
			}
			errs = append(errs, err.Error())
		}
	}
	return errs
}

// textTypes say what a value of a type the standard library parses from
// text looks like, for the error when it does not parse.
var textTypes = map[reflect.Type]string{
	reflect.TypeFor[netip.Addr]():   "an IP address, like 192.0.2.1 or 2001:db8::1",
	reflect.TypeFor[netip.Prefix](): "an address with its prefix length, like 192.168.1.1/24 or 2001:db8::/32",
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

// parseServices decodes and checks "services" with kinds and appends
// every problem.
func parseServices(raw json.RawMessage, kinds []kind.Kind, board *boards.Board, errs *Errors) map[string]*Service {
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
	byKind := map[string]kind.Kind{}
	for _, k := range kinds {
		byKind[k.Name] = k
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
		var head struct {
			Kind  string   `json:"kind"`
			After []string `json:"after"`
		}
		if err := json.Unmarshal(byName[name], &head); err != nil {
			*errs = append(*errs, fmt.Sprintf("%s: expected an object with a kind", path))
			continue
		}
		k, ok := byKind[head.Kind]
		if !ok {
			*errs = append(*errs, fmt.Sprintf("%s.kind: unknown kind %q (want one of %s)", path, head.Kind, kindNames(kinds)))
			continue
		}
		s := &Service{Kind: head.Kind, After: head.After, Decl: k.New(), raw: byName[name]}
		// The kind's settings are the rest of the object.
		var rest map[string]json.RawMessage
		json.Unmarshal(byName[name], &rest)
		delete(rest, "kind")
		delete(rest, "after")
		settings, _ := json.Marshal(rest)
		if problems := decodeFields(path, settings, s.Decl); len(problems) > 0 {
			*errs = append(*errs, problems...)
			continue
		}
		c := kind.NewCheck(path, board)
		s.Decl.Check(c)
		*errs = append(*errs, c.Problems()...)
		s.refs = c.Refs()
		out[name] = s
	}
	checkRefs(out, byKind, errs)
	return out
}

func kindNames(kinds []kind.Kind) string {
	var n []string
	for _, k := range kinds {
		n = append(n, k.Name)
	}
	sort.Strings(n)
	return strings.Join(n, ", ")
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

// checkRefs checks what each service names (that it exists, is of a
// kind that plays the role wanted, publishes the output named) and finds
// dependency cycles.
func checkRefs(svcs map[string]*Service, kinds map[string]kind.Kind, errs *Errors) {
	for _, name := range sortedKeys(svcs) {
		s := svcs[name]
		path := "services." + name
		refs := s.refs
		for i, a := range s.After {
			refs = append(refs, kind.Ref{Field: fmt.Sprintf("after[%d]", i), Service: a})
		}
		for _, r := range refs {
			t, ok := svcs[r.Service]
			switch {
			case r.Service == "":
				*errs = append(*errs, fmt.Sprintf("%s.%s: required", path, r.Field))
			case !ok:
				*errs = append(*errs, fmt.Sprintf("%s.%s: there is no service %q", path, r.Field, r.Service))
			case !kinds[t.Kind].Plays(r.Want):
				*errs = append(*errs, fmt.Sprintf("%s.%s: %q is of kind %s, want %s", path, r.Field, r.Service, t.Kind, r.Want))
			case r.Output != "" && !slices.Contains(kinds[t.Kind].Outputs, r.Output):
				*errs = append(*errs, fmt.Sprintf("%s.%s: a %s service has no output %q (it has %s)", path, r.Field, t.Kind, r.Output, strings.Join(kinds[t.Kind].Outputs, ", ")))
			}
		}
	}
	deps := map[string][]string{}
	for name, s := range svcs {
		deps[name] = s.Deps()
	}
	for _, cycle := range supervisor.Cycles(deps) {
		*errs = append(*errs, fmt.Sprintf("services.%s: dependency cycle: %s", cycle[0], strings.Join(cycle, " → ")))
	}
}
