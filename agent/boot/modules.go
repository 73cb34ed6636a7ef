package boot

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/roostrouter/roost/updater/storepath"
)

// Module is one line of a modules list: a module file and its parameters.
type Module struct {
	File   string // as the list has it: absolute, or relative to the list's folder
	Params string // "key=value ...", as modprobe takes them
}

// ParseModules reads a modules list: one module a line, its .ko file (plain,
// or .ko.xz/.ko.zst/.ko.gz where the kernel decompresses) and optional
// parameters, in load order (dependencies first); # starts a comment.
func ParseModules(text string) ([]Module, error) {
	var mods []Module
	sc := bufio.NewScanner(strings.NewReader(text))
	for n := 1; sc.Scan(); n++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		file, params := f[0], strings.Join(f[1:], " ")
		if !strings.Contains(filepath.Base(file), ".ko") {
			return nil, fmt.Errorf("line %d: %q is not a kernel module file (*.ko)", n, file)
		}
		mods = append(mods, Module{File: file, Params: params})
	}
	return mods, sc.Err()
}

// loadModules loads the modules that the list (a path as the router sees
// it) names, with the board's parameters for them after the list's
// (boardParams); a list that does not exist names none. A module that does
// not load is a loud warning, not a stop: the router must come up to be
// fixed, and the agent says what is missing when it needs it.
func (in *Init) loadModules(list string) {
	b, err := os.ReadFile(in.resolve(list))
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	mods, err := ParseModules(string(b))
	if err != nil {
		in.log.Error("MODULES NOT LOADED: the modules list is malformed", "list", list, "err", err)
		return
	}
	loaded := 0
	for _, m := range mods {
		file := m.File
		if !filepath.IsAbs(file) {
			file = filepath.Join(filepath.Dir(list), file)
		}
		params := m.Params
		if moduleName(file) == "block2mtd" && in.fromImage {
			extra, disks := block2mtdParams(in.board)
			in.waitDisks(disks)
			params = strings.TrimSpace(params + " " + extra)
			in.log.Info("module parameters from the board's flash", "module", file, "params", params)
		}
		if extra := in.boardParams(file); extra != "" {
			params = strings.TrimSpace(params + " " + extra)
			in.log.Info("module parameters from the board", "module", file, "params", params)
		}
		if err := in.loadModule(file, params); err != nil {
			in.log.Error("MODULE NOT LOADED", "module", file, "err", err)
			continue
		}
		loaded++
	}
	in.log.Info("modules loaded", "list", list, "loaded", loaded, "of", len(mods))
}

func (in *Init) loadModule(file, params string) error {
	f, err := os.Open(in.resolve(file))
	if err != nil {
		return err
	}
	defer f.Close()
	flags := 0
	switch filepath.Ext(file) {
	case ".xz", ".zst", ".gz":
		flags = unix.MODULE_INIT_COMPRESSED_FILE
	}
	err = in.opts.Kernel.LoadModule(f, params, flags)
	if errors.Is(err, unix.EEXIST) {
		return nil // loaded already: built in, or a list names it twice
	}
	return err
}

// boardParams are the board's parameters for the module in file
// (boards.Watchdog.ModuleParams): modprobe would take them from the kernel
// command line, but init loads modules itself, and the kernel applies its
// command line's module.param= to built-in code only.
func (in *Init) boardParams(file string) string {
	if in.board.Watchdog == nil {
		return ""
	}
	name := moduleName(file)
	for mod, params := range in.board.Watchdog.ModuleParams {
		if moduleName(mod) == name {
			return params
		}
	}
	return ""
}

// moduleName is the name of the module in file, as the kernel knows it:
// the base name without .ko (and .xz, .zst, .gz), '-' read as '_', and
// without the hash of a store path that is the file itself
// (/nix/store/<hash>-i6300esb.ko, as Nix copies a module file).
func moduleName(file string) string {
	name := filepath.Base(file)
	if filepath.Dir(file) == storepath.Dir && len(name) > 33 && name[32] == '-' {
		name = name[33:]
	}
	for _, ext := range []string{".xz", ".zst", ".gz"} {
		name = strings.TrimSuffix(name, ext)
	}
	name = strings.TrimSuffix(name, ".ko")
	return strings.ReplaceAll(name, "-", "_")
}
