package image

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
)

// A boot image is read back with u-boot-tools' own listing (dumpimage -l
// for a uImage, which checks its header and data CRCs; mkimage -l for a
// FIT) and its parts compared byte for byte with what went in: a build
// that does not say what U-Boot will see is refused.

// verifyUImage checks uimage (dumpimage checks its data's CRC over the
// whole file, so it reads the uImage alone) against info and the packed
// kernel, and that file holds it and then the squashfs at the root offset.
func verifyUImage(ctx context.Context, plan Plan, file, uimage, kernel, squashfs string, info *BootInfo) error {
	out, err := output(ctx, "dumpimage", "-T", "kernel", "-l", uimage)
	if err != nil {
		return fmt.Errorf("the uImage does not verify (header or data CRC): %w", err)
	}
	l := parseListing(out)
	comp := info.Compression + " compressed"
	if info.Compression == "none" {
		comp = "uncompressed"
	}
	size, _ := strconv.ParseUint(strings.Fields(l[0]["Data Size"] + " x")[0], 10, 64)
	var errs []string
	if typ := l[0]["Image Type"]; !strings.Contains(typ, "Linux Kernel Image") || !strings.Contains(typ, "("+comp+")") {
		errs = append(errs, fmt.Sprintf("image type %q, want a Linux kernel image (%s)", typ, comp))
	}
	errs = append(errs, checkAddress("load address", l[0]["Load Address"], info.LoadAddress)...)
	errs = append(errs, checkAddress("entry point", l[0]["Entry Point"], info.EntryAddress)...)
	if size != info.KernelBytes {
		errs = append(errs, fmt.Sprintf("data size %d, want the packed kernel's %d", size, info.KernelBytes))
	}
	if 64+size > info.RootOffset {
		errs = append(errs, fmt.Sprintf("the uImage (64 + %d bytes) runs into the root at %d", size, info.RootOffset))
	}
	errs = append(errs, sameBytes(uimage, 64, kernel, "the kernel")...)
	errs = append(errs, sameBytes(file, 0, uimage, "the uImage")...)
	errs = append(errs, sameBytes(file, int64(info.RootOffset), squashfs, "the root")...)
	return verified(file, errs)
}

// fitInputs are the files a FIT image was made of.
type fitInputs struct{ kernel, dtb, initrd, root string }

// verifyFIT checks mkimage's listing of file against info and each
// image's data, at the position the FIT structure gives, against its
// input and its sha1 hash.
func verifyFIT(ctx context.Context, plan Plan, file string, in fitInputs, info *BootInfo) error {
	out, err := output(ctx, "mkimage", "-l", file)
	if err != nil {
		return err
	}
	l := parseListing(out)
	var errs []string
	want := []struct{ node, typ, file string }{{"kernel-1", "Kernel Image", in.kernel}}
	config := map[string]string{"Kernel": "kernel-1", "Loadables": "rootfs-1"}
	if in.dtb != "" {
		want, config["FDT"] = append(want, struct{ node, typ, file string }{"fdt-1", "Flat Device Tree", in.dtb}), "fdt-1"
	}
	if in.initrd != "" {
		want, config["Init Ramdisk"] = append(want, struct{ node, typ, file string }{"initrd-1", "RAMDisk Image", in.initrd}), "initrd-1"
	}
	want = append(want, struct{ node, typ, file string }{"rootfs-1", "Filesystem Image", in.root})
	for _, w := range want {
		img := l["image "+w.node]
		if img == nil {
			errs = append(errs, "no image "+w.node)
			continue
		}
		if img["Type"] != w.typ {
			errs = append(errs, fmt.Sprintf("%s: type %q, want %q", w.node, img["Type"], w.typ))
		}
		pos, size, err := dataPosition(ctx, file, w.node)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		if pos%uint64(plan.Boot.RootAlignBytes) != 0 {
			errs = append(errs, fmt.Sprintf("%s: data at %d, not aligned to %d", w.node, pos, plan.Boot.RootAlignBytes))
		}
		errs = append(errs, sameBytes(file, int64(pos), w.file, w.node)...)
		if got, err := sha1At(file, int64(pos), int64(size)); err != nil || got != img["sha1"] {
			errs = append(errs, fmt.Sprintf("%s: its data's sha1 %s is not the hash U-Boot checks, %s (%v)", w.node, got, img["sha1"], err))
		}
		switch w.node {
		case "kernel-1":
			info.KernelBytes = size
			if img["Compression"] != info.Compression+" compressed" && !(info.Compression == "none" && img["Compression"] == "uncompressed") {
				errs = append(errs, fmt.Sprintf("kernel-1: compression %q, want %s", img["Compression"], info.Compression))
			}
			errs = append(errs, checkAddress("kernel-1 load address", img["Load Address"], info.LoadAddress)...)
			errs = append(errs, checkAddress("kernel-1 entry point", img["Entry Point"], info.EntryAddress)...)
		case "fdt-1":
			if a := plan.Boot.DeviceTreeAddress; a != 0 {
				errs = append(errs, checkAddress("fdt-1 load address", img["Load Address"], a.String())...)
			}
		case "rootfs-1":
			info.RootOffset, info.RootBytes = pos, size
		}
	}
	if d := l[0]["Default Configuration"]; d != "'config-1'" {
		errs = append(errs, fmt.Sprintf("default configuration %s, want 'config-1'", d))
	}
	for k, v := range config {
		if got := l["configuration config-1"][k]; got != v {
			errs = append(errs, fmt.Sprintf("config-1: %s %q, want %q", k, got, v))
		}
	}
	return verified(file, errs)
}

func verified(file string, errs []string) error {
	if len(errs) > 0 {
		return fmt.Errorf("the image built in %s does not read back as built: %s", file, strings.Join(errs, "; "))
	}
	return nil
}

// listing is u-boot-tools' listing of an image: its fields by section
// (0 for the top, "image NAME", "configuration NAME"), each image's sha1
// hash as "sha1".
type listing map[any]map[string]string

var sectionRe = regexp.MustCompile(`^\s*(Image|Configuration) \d+ \(([^)]*)\)$`)

// parseListing reads mkimage -l or dumpimage -l output: "Key: value"
// lines, under " Image N (name)" and " Configuration N (name)" headings.
func parseListing(out string) listing {
	l := listing{0: {}}
	var cur any = 0
	lastAlgo := ""
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if m := sectionRe.FindStringSubmatch(line); m != nil {
			cur = strings.ToLower(m[1]) + " " + m[2]
			l[cur] = map[string]string{}
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch {
		case k == "Hash algo":
			lastAlgo = v
		case k == "Hash value":
			l[cur][lastAlgo] = v
		case k == "Default Configuration":
			l[0][k] = v
		default:
			l[cur][k] = v
		}
	}
	return l
}

// checkAddress compares a listed address (80060000 or 0x80060000) with
// want (0x80060000).
func checkAddress(what, got, want string) []string {
	g, err1 := strconv.ParseUint(strings.TrimPrefix(got, "0x"), 16, 64)
	w, err2 := strconv.ParseUint(strings.TrimPrefix(want, "0x"), 16, 64)
	if err1 != nil || err2 != nil || g != w {
		return []string{fmt.Sprintf("%s %q, want %s", what, got, want)}
	}
	return nil
}

// dataPosition is where node's data is in a FIT image with external data
// at fixed positions, and its size, as the FIT structure says.
func dataPosition(ctx context.Context, file, node string) (pos, size uint64, err error) {
	out, err := output(ctx, "fdtget", "-t", "u", file, "/images/"+node, "data-position", "/images/"+node, "data-size")
	if err != nil {
		return 0, 0, err
	}
	f := strings.Fields(out)
	if len(f) != 2 {
		return 0, 0, fmt.Errorf("%s: data-position and data-size: %q", node, out)
	}
	pos, err1 := strconv.ParseUint(f[0], 10, 64)
	size, err2 := strconv.ParseUint(f[1], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("%s: data-position and data-size: %q", node, out)
	}
	return pos, size, nil
}

// sameBytes compares want's bytes with file's at offset.
func sameBytes(file string, offset int64, want, what string) []string {
	w, err := os.ReadFile(want)
	if err != nil {
		return []string{err.Error()}
	}
	f, err := os.Open(file)
	if err != nil {
		return []string{err.Error()}
	}
	defer f.Close()
	got := make([]byte, len(w))
	if _, err := f.ReadAt(got, offset); err != nil {
		return []string{fmt.Sprintf("%s at %d: %v", what, offset, err)}
	}
	if sha256.Sum256(got) != sha256.Sum256(w) {
		return []string{fmt.Sprintf("%s at %d is not %s's %d bytes", what, offset, want, len(w))}
	}
	return nil
}

func sha1At(file string, offset, size int64) (string, error) {
	f, err := os.Open(file)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha1.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, offset, size)); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// output runs a tool and returns its standard output.
func output(ctx context.Context, tool string, args ...string) (string, error) {
	p, err := lookPath(tool, []string{"/usr/sbin", "/sbin"})
	if err != nil {
		return "", err
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, p, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s %s: %w: %s", tool, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()+stdout.String()))
	}
	return stdout.String(), nil
}
