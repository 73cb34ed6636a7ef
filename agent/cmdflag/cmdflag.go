// Package cmdflag parses command lines whose flags may stand after the
// positional arguments too ("roostd store query-valid PATH --root DIR"), as
// people type them; the standard flag package stops at the first argument.
package cmdflag

import "flag"

// Parse parses args with fs and returns the positional arguments in order.
func Parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}
