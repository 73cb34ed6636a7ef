package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/roostrouter/roost/boards"
	"github.com/roostrouter/roost/firewall"
	hostimage "github.com/roostrouter/roost/hosttool/image"
	"github.com/roostrouter/roost/itest/vm"
	"github.com/roostrouter/roost/updater/maintenance"
	"github.com/roostrouter/roost/updater/storepath"
)

// mipsBoard is the board the MIPS VM is: its flash (block2mtd image slots)
// and memory are boards.json's.
const mipsBoard = "qemu-mipsel"

// buildMIPS builds a Go package for the MIPS VM (mipsle, no FPU), stripped
// with trimmed paths as a router's build is, from the module in dir.
func buildMIPS(dir, pkg, out string) error {
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, pkg)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=mipsle", "GOMIPS=softfloat")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build %s for mipsle in %s: %v\n%s", pkg, dir, err, b)
	}
	return nil
}

// oldRoostd builds the roostd of git revision rev (from git archive: the
// work tree and its git state are not touched), the one the "running"
// image holds.
func oldRoostd(work, rev, out string) error {
	src := filepath.Join(work, "old-src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		return err
	}
	archive := exec.Command("git", "archive", "--format=tar", rev)
	untar := exec.Command("tar", "-x", "-C", src)
	pipe, err := archive.StdoutPipe()
	if err != nil {
		return err
	}
	untar.Stdin = pipe
	var stderr bytes.Buffer
	archive.Stderr, untar.Stderr = &stderr, &stderr
	if err := untar.Start(); err != nil {
		return err
	}
	if err := archive.Run(); err != nil {
		untar.Wait()
		return fmt.Errorf("git archive %s: %v: %s", rev, err, stderr.String())
	}
	if err := untar.Wait(); err != nil {
		return fmt.Errorf("untar git archive %s: %v: %s", rev, err, stderr.String())
	}
	return buildMIPS(src, "./agent/cmd/roostd", out)
}

// mipsImage is one image slot's content: a squashfs as roost image makes
// it for the board, of a system (roostd, the malta kernel with the
// modules the router loads, an initrd whose /init is roostd).
type mipsImage struct {
	File   string
	Bytes  int64
	SHA256 string
}

// buildImage makes, in dir, the image of a system whose roostd is the
// file roostd and whose config is config.
func buildImage(dir, roostd string, config []byte, b boards.Board) (mipsImage, error) {
	sb := &storeBuilder{vm.StoreBuilder{Src: filepath.Join(dir, "src")}}
	sys, err := sb.system(roostd, config, b)
	if err != nil {
		return mipsImage{}, err
	}
	root := filepath.Join(dir, "root")
	if err := sb.Install(root, sys); err != nil {
		return mipsImage{}, err
	}
	plan, err := hostimage.PlanFor(b)
	if err != nil {
		return mipsImage{}, err
	}
	img := mipsImage{File: filepath.Join(dir, "image.squashfs")}
	size, err := hostimage.Make(context.Background(), plan, root, img.File, 0, func(string) {})
	if err != nil {
		return mipsImage{}, err
	}
	data, err := os.ReadFile(img.File)
	if err != nil {
		return mipsImage{}, err
	}
	sum := sha256.Sum256(data)
	img.Bytes, img.SHA256 = int64(size), hex.EncodeToString(sum[:])
	return img, nil
}

// system makes a system's store paths as roost.lib.mkSystem lays them out
// for board b (nix/system.sh): roostd, the kernel with the modules it
// loads, the initrd, and the system itself.
func (sb *storeBuilder) system(roostd string, config []byte, b boards.Board) (storepath.Path, error) {
	kernel, err := vm.MIPSKernel()
	if err != nil {
		return "", err
	}
	version := strings.TrimPrefix(filepath.Base(kernel), "vmlinuz-")
	mods, err := vm.MIPSModuleClosure(append([]string{"virtio_net", "bridge", "softdog", "crc32c_generic"}, firewall.KernelModules...))
	if err != nil {
		return "", err
	}
	linuxFiles := map[string]string{"vmlinuz": "copy:" + kernel}
	for _, m := range mods {
		linuxFiles["lib/modules/"+filepath.Base(m)] = "copy:" + m
	}
	linux, err := sb.Add("linux-"+version, nil, linuxFiles)
	if err != nil {
		return "", err
	}
	var list strings.Builder
	for _, m := range mods {
		fmt.Fprintf(&list, "%s/lib/modules/%s\n", linux, filepath.Base(m))
	}
	agent, err := sb.Add("roostd", nil, map[string]string{"bin/roostd": "copy:" + roostd})
	if err != nil {
		return "", err
	}
	initrd, err := sb.initrd(roostd, b)
	if err != nil {
		return "", err
	}
	return sb.Add("roost-system-"+b.Name, []storepath.Path{agent, linux, initrd}, map[string]string{
		"bin/roostd":            "link:" + agent.String() + "/bin/roostd",
		"etc/roost/config.json": "data:" + string(config),
		"board":                 "data:" + b.Name + "\n",
		"cmdline":               "data:" + strings.Join(b.Cmdline, " ") + "\n",
		"kernel":                "link:" + linux.String() + "/vmlinuz",
		"initrd":                "link:" + initrd.String() + "/initrd",
		"modules":               "data:" + list.String(),
	})
}

// initrd makes the initrd's store path: roostd as /init, with the board's
// name and the modules that reach the flash.
func (sb *storeBuilder) initrd(roostd string, b boards.Board) (storepath.Path, error) {
	mods, err := vm.MIPSModuleClosure([]string{"virtio_pci", "virtio_blk", "block2mtd", "squashfs"})
	if err != nil {
		return "", err
	}
	init, err := os.ReadFile(roostd)
	if err != nil {
		return "", err
	}
	files := []vm.File{{Name: "board", Data: []byte(b.Name + "\n"), Perm: 0o644}}
	var list strings.Builder
	for _, m := range mods {
		data, err := os.ReadFile(m)
		if err != nil {
			return "", err
		}
		files = append(files, vm.File{Name: "lib/modules/" + filepath.Base(m), Data: data, Perm: 0o644})
		fmt.Fprintf(&list, "lib/modules/%s\n", filepath.Base(m))
	}
	files = append(files, vm.File{Name: "modules", Data: []byte(list.String()), Perm: 0o644})
	archive, err := vm.Initramfs(init, files)
	if err != nil {
		return "", err
	}
	return sb.Add("initrd-"+b.Name, nil, map[string]string{"initrd": "data:" + string(archive)})
}

// storeBuilder makes a system's store paths (vm.StoreBuilder) as
// roost.lib.mkSystem would.
type storeBuilder struct {
	vm.StoreBuilder
}

// writeDelta writes the delta of image against base as roost sends it
// for an image upgrade (maintenance.EncodeDelta), and returns its size.
func writeDelta(file string, base, image mipsImage) (int64, error) {
	b, err := os.ReadFile(base.File)
	if err != nil {
		return 0, err
	}
	n, err := os.ReadFile(image.File)
	if err != nil {
		return 0, err
	}
	var out bytes.Buffer
	if err := maintenance.EncodeDelta(&out, b, n); err != nil {
		return 0, err
	}
	return int64(out.Len()), os.WriteFile(file, out.Bytes(), 0o644)
}
