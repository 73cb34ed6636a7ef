package supervisor

import (
	"fmt"
	"net/netip"
	"strconv"
)

// Output is an output's key with the type of its value. A producer
// declares its outputs as Outputs and its consumers read through them, so
// a misspelt key does not compile; on disk each is still one value a file.
type Output[T any] struct {
	Key    string
	format func(T) string
	parse  func(string) (T, error)
}

// NewOutput is an output at key whose values format and parse convert.
func NewOutput[T any](key string, format func(T) string, parse func(string) (T, error)) Output[T] {
	return Output[T]{Key: key, format: format, parse: parse}
}

// StringOutput is an output holding text.
func StringOutput(key string) Output[string] {
	return NewOutput(key, func(s string) string { return s }, func(s string) (string, error) { return s, nil })
}

// IntOutput is an output holding a decimal number.
func IntOutput(key string) Output[int] { return NewOutput(key, strconv.Itoa, strconv.Atoi) }

// Int64Output is an output holding a decimal number that may not fit an
// int on 32-bit routers (Unix times).
func Int64Output(key string) Output[int64] {
	return NewOutput(key, func(v int64) string { return strconv.FormatInt(v, 10) },
		func(s string) (int64, error) { return strconv.ParseInt(s, 10, 64) })
}

// AddrOutput is an output holding an IP address.
func AddrOutput(key string) Output[netip.Addr] {
	return NewOutput(key, netip.Addr.String, netip.ParseAddr)
}

// PrefixOutput is an output holding a prefix, like 2001:db8:1::/56.
func PrefixOutput(key string) Output[netip.Prefix] {
	return NewOutput(key, netip.Prefix.String, netip.ParsePrefix)
}

// In is the same output inside the table dir (dir/Key): outputs of the
// nth lease are a table, like prefix/0/len.
func (o Output[T]) In(dir string) Output[T] {
	o.Key = dir + "/" + o.Key
	return o
}

// Of names the output of a service, for Spec.Reads and Spec.Watches.
func (o Output[T]) Of(service string) Ref { return Ref{Service: service, Key: o.Key} }

// Set publishes v.
func (o Output[T]) Set(env *Env, v T) { env.SetOutput(o.Key, o.format(v)) }

// Delete withdraws it.
func (o Output[T]) Delete(env *Env) { env.DeleteOutput(o.Key) }

// Inputs are where a service reads other services' outputs: its Env
// while it runs, its Stopped as it stops.
type Inputs interface {
	Input(r Ref) (string, bool)
}

// Get reads it from service; false if service has not published it.
func (o Output[T]) Get(env Inputs, service string) (T, bool, error) {
	var zero T
	s, ok := env.Input(o.Of(service))
	if !ok {
		return zero, false, nil
	}
	v, err := o.parse(s)
	if err != nil {
		return zero, true, fmt.Errorf("%s's output %s: %w", service, o.Key, err)
	}
	return v, true, nil
}

// Require is Get for an output the reader cannot run without.
func (o Output[T]) Require(env Inputs, service string) (T, error) {
	v, ok, err := o.Get(env, service)
	if err == nil && !ok {
		err = fmt.Errorf("%s has no %s output", service, o.Key)
	}
	return v, err
}
