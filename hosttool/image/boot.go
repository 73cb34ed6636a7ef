package image

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/roostrouter/roost/boards"
	"github.com/roostrouter/roost/updater/storepath"
)

// BootInfo describes the part of an image the board's U-Boot boots, as
// Make built and then read back.
type BootInfo struct {
	Format       string `json:"format"`       // uimage or fit
	Compression  string `json:"compression"`  // the kernel's
	KernelBytes  uint64 `json:"kernelBytes"`  // the kernel in the image, compressed (and its device tree, in a uImage)
	LoadAddress  string `json:"loadAddress"`  // 0x80060000
	EntryAddress string `json:"entryAddress"` // 0x80060000
	DeviceTree   string `json:"deviceTree"`   // the file used, "" if none
	Initrd       bool   `json:"initrd"`       // the system's initrd is in the image (fit)
	// RootOffset and RootBytes are where the squashfs is in the image.
	RootOffset uint64 `json:"rootOffset"`
	RootBytes  uint64 `json:"rootBytes"`
}

// bootParts are the files of a system a boot image is made of, found in
// the image's root as the router would see them.
type bootParts struct {
	name    string // the uImage's or FIT's description
	kernel  string
	initrd  string // "" if the system has none
	cmdline string
	dtb     string // "" if the board boots none
}

// readBootParts finds system's kernel, initrd, cmdline and the board's
// device tree (dtb if given, else the system's dtbs/<deviceTree>) below
// root.
func readBootParts(root string, system storepath.Path, boot boards.Boot, dtb string) (bootParts, error) {
	p := bootParts{name: system.Name()}
	part := func(name string) (string, error) { return resolve(root, path.Join(system.String(), name)) }
	var err error
	if p.kernel, err = part(boards.PartKernel); err != nil {
		return p, fmt.Errorf("system %s has no kernel, which a %s image boots: %w", system, boot.Format, err)
	}
	if p.initrd, err = part(boards.PartInitrd); errors.Is(err, os.ErrNotExist) {
		p.initrd = ""
	} else if err != nil {
		return p, err
	}
	if c, err := part(boards.PartCmdline); err == nil {
		b, err := os.ReadFile(c)
		if err != nil {
			return p, err
		}
		p.cmdline = strings.TrimSpace(string(b))
	} else if !errors.Is(err, os.ErrNotExist) {
		return p, err
	}
	switch {
	case dtb != "":
		p.dtb = dtb
	case boot.DeviceTree != "":
		if p.dtb, err = part(path.Join(boards.PartDTBs, boot.DeviceTree)); err != nil {
			return p, fmt.Errorf("the board boots device tree %s (boards.json boot.deviceTree), and system %s has no %s/%s: give one with --dtb FILE: %w",
				boot.DeviceTree, system, boards.PartDTBs, boot.DeviceTree, err)
		}
	}
	return p, nil
}

// resolve finds name, an absolute path as the router sees it, below root,
// following symbolic links as if root were /: a system's parts link to
// other store paths by absolute links.
func resolve(root, name string) (string, error) {
	rest := strings.Split(strings.Trim(name, "/"), "/")
	cur := "/"
	for hops := 0; len(rest) > 0; {
		next := path.Join(cur, rest[0])
		rest = rest[1:]
		fi, err := os.Lstat(filepath.Join(root, next))
		if err != nil {
			return "", fmt.Errorf("%s: %w", next, err)
		}
		if fi.Mode()&os.ModeSymlink == 0 {
			cur = next
			continue
		}
		if hops++; hops > 40 {
			return "", fmt.Errorf("%s: too many symbolic links", name)
		}
		target, err := os.Readlink(filepath.Join(root, next))
		if err != nil {
			return "", err
		}
		if !path.IsAbs(target) {
			target = path.Join(cur, target)
		}
		rest = append(strings.Split(strings.Trim(path.Clean(target), "/"), "/"), rest...)
		cur = "/"
	}
	return filepath.Join(root, cur), nil
}

// checkKernel refuses a kernel U-Boot could not start from its load
// address: an ELF file (bootm jumps into the raw image, as OpenWrt's
// kernel-bin is: objcopy -O binary vmlinux).
func checkKernel(file string) ([]byte, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	switch {
	case len(b) < 64:
		return nil, fmt.Errorf("kernel %s has %d bytes: not a kernel", file, len(b))
	case bytes.HasPrefix(b, []byte("\x7fELF")):
		return nil, fmt.Errorf("kernel %s is an ELF file: U-Boot jumps into the raw image at the load address; give the system the raw kernel (objcopy -O binary vmlinux, as OpenWrt's kernel-bin)", file)
	}
	return b, nil
}

// compressKernel writes data to file compressed as U-Boot will undo it,
// returning the compression used: a kernel already gzipped (arm64's
// Image.gz) is kept as it is.
func compressKernel(ctx context.Context, data []byte, compression, file string) (string, error) {
	switch {
	case compression == boards.CompressGzip && bytes.HasPrefix(data, []byte{0x1f, 0x8b}):
		return compression, os.WriteFile(file, data, 0o644)
	case compression == boards.CompressGzip:
		var buf bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
		if _, err := zw.Write(data); err != nil {
			return "", err
		}
		if err := zw.Close(); err != nil {
			return "", err
		}
		return compression, os.WriteFile(file, buf.Bytes(), 0o644)
	case compression == boards.CompressLZMA:
		raw := file + ".raw"
		if err := os.WriteFile(raw, data, 0o644); err != nil {
			return "", err
		}
		// lzma_alone (the LZMA SDK's encoder, as OpenWrt's lzma tool)
		// writes the size in the header and no end marker, which every
		// U-Boot's decoder takes; lc1 lp2 pb2 are OpenWrt's for MIPS.
		return compression, run(ctx, nil, "lzma_alone", "e", raw, file, "-lc1", "-lp2", "-pb2")
	case compression == boards.CompressNone:
		return compression, os.WriteFile(file, data, 0o644)
	}
	return "", fmt.Errorf("unknown kernel compression %q", compression)
}

// deviceTree copies the board's device tree to file with the system's
// kernel command line as /chosen/bootargs (the kernels of these boards
// take it from there: U-Boot passes none of its own), padded by pad bytes
// for what U-Boot adds at boot.
func deviceTree(ctx context.Context, src, cmdline, file string, pad int) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if !bytes.HasPrefix(b, []byte{0xd0, 0x0d, 0xfe, 0xed}) {
		return fmt.Errorf("device tree %s is not a device tree blob (no d00dfeed magic): give the compiled .dtb", src)
	}
	if err := os.WriteFile(file, b, 0o644); err != nil {
		return err
	}
	if cmdline != "" {
		if err := run(ctx, nil, "fdtput", "-p", "-t", "s", file, "/chosen", "bootargs", cmdline); err != nil {
			return err
		}
	}
	if pad > 0 {
		return run(ctx, nil, "dtc", "-q", "-I", "dtb", "-O", "dtb", "-p", fmt.Sprint(pad), "-o", file, file)
	}
	return nil
}

// mkimageEnv makes mkimage's timestamps fixed, so that a system gives the
// same image each time.
var mkimageEnv = []string{"SOURCE_DATE_EPOCH=1"}

// UImage builds OpenWrt's sysupgrade layout for NOR boards into out: the
// kernel with the device tree appended, compressed, in a legacy uImage,
// padded with 0xff (erased flash) to the alignment, then the squashfs,
// padded likewise.
func UImage(ctx context.Context, plan Plan, parts bootParts, squashfs, out, tmp string, log func(string)) (*BootInfo, error) {
	bt := plan.Boot
	kernel, err := checkKernel(parts.kernel)
	if err != nil {
		return nil, err
	}
	info := &BootInfo{Format: bt.Format, LoadAddress: bt.LoadAddress.String(), EntryAddress: bt.EntryAddress.String()}
	if parts.dtb != "" {
		dtb := filepath.Join(tmp, "board.dtb")
		if err := deviceTree(ctx, parts.dtb, parts.cmdline, dtb, 0); err != nil {
			return nil, err
		}
		b, err := os.ReadFile(dtb)
		if err != nil {
			return nil, err
		}
		kernel, info.DeviceTree = append(kernel, b...), parts.dtb
	} else if parts.cmdline != "" {
		log("the board boots no device tree: the system's cmdline is not in the image, the kernel's built-in one applies")
	}
	packed := filepath.Join(tmp, "kernel."+bt.Compression)
	if info.Compression, err = compressKernel(ctx, kernel, bt.Compression, packed); err != nil {
		return nil, err
	}
	uimage := filepath.Join(tmp, "kernel.uimage")
	name := parts.name
	if len(name) > 31 { // the header's name holds 32 bytes with its NUL
		name = name[:31]
	}
	log(fmt.Sprintf("mkimage: uImage of the kernel (%d bytes with the device tree, %s), load and entry %s", len(kernel), info.Compression, bt.LoadAddress))
	if err := run(ctx, mkimageEnv, "mkimage", "-A", plan.Arch, "-O", "linux", "-T", "kernel", "-C", info.Compression,
		"-a", bt.LoadAddress.String(), "-e", bt.EntryAddress.String(), "-n", name, "-d", packed, uimage); err != nil {
		return nil, err
	}
	if parts.initrd != "" {
		log("the uImage holds no initrd (U-Boot passes none to these kernels): the kernel must have its initramfs, roostd init, built in")
	}
	align := uint64(bt.RootAlignBytes)
	f, err := os.Create(out)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if info.RootOffset, err = appendPadded(f, uimage, 0, align); err != nil {
		return nil, err
	}
	end, err := appendPadded(f, squashfs, info.RootOffset, align)
	if err != nil {
		return nil, err
	}
	info.RootBytes = end - info.RootOffset
	if err := f.Close(); err != nil {
		return nil, err
	}
	if fi, err := os.Stat(packed); err == nil {
		info.KernelBytes = uint64(fi.Size())
	}
	return info, verifyUImage(ctx, plan, out, uimage, packed, squashfs, info)
}

// appendPadded copies file to w at offset at and pads with 0xff to a
// multiple of align, returning the offset after the padding.
func appendPadded(w io.Writer, file string, at, align uint64) (uint64, error) {
	r, err := os.Open(file)
	if err != nil {
		return 0, err
	}
	defer r.Close()
	n, err := io.Copy(w, r)
	if err != nil {
		return 0, err
	}
	end := at + uint64(n)
	pad := (align - end%align) % align
	if _, err := w.Write(bytes.Repeat([]byte{0xff}, int(pad))); err != nil {
		return 0, err
	}
	return end + pad, nil
}

// FIT builds, into out, the FIT image OpenWrt's NAND boards boot from
// their fit volume: the compressed kernel, the device tree, the system's
// initrd as the ramdisk and the squashfs as a filesystem image, each
// outside the FIT structure at a fixed position aligned as the board says
// (mkimage -E -B -p), in one configuration, config-1, as U-Boot's bootconf
// names it.
func FIT(ctx context.Context, plan Plan, parts bootParts, squashfs, out, tmp string, log func(string)) (*BootInfo, error) {
	bt := plan.Boot
	kernel, err := checkKernel(parts.kernel)
	if err != nil {
		return nil, err
	}
	info := &BootInfo{Format: bt.Format, LoadAddress: bt.LoadAddress.String(), EntryAddress: bt.EntryAddress.String(), Initrd: parts.initrd != ""}
	packed := filepath.Join(tmp, "kernel."+bt.Compression)
	if info.Compression, err = compressKernel(ctx, kernel, bt.Compression, packed); err != nil {
		return nil, err
	}
	dtb := ""
	if parts.dtb != "" {
		dtb, info.DeviceTree = filepath.Join(tmp, "board.dtb"), parts.dtb
		if err := deviceTree(ctx, parts.dtb, parts.cmdline, dtb, 4096); err != nil {
			return nil, err
		}
	}
	its := filepath.Join(tmp, "image.its")
	if err := os.WriteFile(its, []byte(fitSource(plan, parts.name, packed, dtb, parts.initrd, squashfs, info.Compression)), 0o644); err != nil {
		return nil, err
	}
	align := fmt.Sprintf("0x%x", bt.RootAlignBytes)
	what := []string{"kernel (" + info.Compression + ")"}
	if dtb != "" {
		what = append(what, "device tree")
	}
	if info.Initrd {
		what = append(what, "initrd")
	}
	log(fmt.Sprintf("mkimage: FIT image of the %s and the root, load and entry %s", strings.Join(what, ", "), bt.LoadAddress))
	if err := run(ctx, mkimageEnv, "mkimage", "-E", "-B", align, "-p", align, "-f", its, out); err != nil {
		return nil, err
	}
	return info, verifyFIT(ctx, plan, out, fitInputs{kernel: packed, dtb: dtb, initrd: parts.initrd, root: squashfs}, info)
}

// fitSource is the image tree source mkimage -f compiles: every image
// hashed (crc32 and sha1, as OpenWrt's mkits.sh), which U-Boot checks
// before it boots.
func fitSource(plan Plan, name, kernel, dtb, initrd, root, compression string) string {
	bt, arch := plan.Boot, plan.Arch
	var b strings.Builder
	hashes := "\t\t\thash-1 { algo = \"crc32\"; };\n\t\t\thash-2 { algo = \"sha1\"; };\n"
	image := func(node, desc, file, fields string) {
		fmt.Fprintf(&b, "\t\t%s {\n\t\t\tdescription = %q;\n\t\t\tdata = /incbin/(%q);\n%s%s\t\t};\n", node, desc, file, fields, hashes)
	}
	fmt.Fprintf(&b, "/dts-v1/;\n\n/ {\n\tdescription = %q;\n\t#address-cells = <1>;\n\timages {\n", name)
	image("kernel-1", name+" kernel", kernel, fmt.Sprintf("\t\t\ttype = \"kernel\";\n\t\t\tarch = %q;\n\t\t\tos = \"linux\";\n\t\t\tcompression = %q;\n\t\t\tload = <%s>;\n\t\t\tentry = <%s>;\n",
		arch, compression, bt.LoadAddress, bt.EntryAddress))
	config := "\t\t\tkernel = \"kernel-1\";\n"
	if dtb != "" {
		load := ""
		if bt.DeviceTreeAddress != 0 {
			load = fmt.Sprintf("\t\t\tload = <%s>;\n", bt.DeviceTreeAddress)
		}
		image("fdt-1", name+" device tree", dtb, fmt.Sprintf("\t\t\ttype = \"flat_dt\";\n\t\t\tarch = %q;\n\t\t\tcompression = \"none\";\n%s", arch, load))
		config += "\t\t\tfdt = \"fdt-1\";\n"
	}
	if initrd != "" {
		image("initrd-1", name+" initrd", initrd, fmt.Sprintf("\t\t\ttype = \"ramdisk\";\n\t\t\tarch = %q;\n\t\t\tos = \"linux\";\n\t\t\tcompression = \"none\";\n", arch))
		config += "\t\t\tramdisk = \"initrd-1\";\n"
	}
	// The root last: its data ends the image.
	image("rootfs-1", name+" root", root, fmt.Sprintf("\t\t\ttype = \"filesystem\";\n\t\t\tarch = %q;\n\t\t\tcompression = \"none\";\n", arch))
	config += "\t\t\tloadables = \"rootfs-1\";\n"
	fmt.Fprintf(&b, "\t};\n\tconfigurations {\n\t\tdefault = \"config-1\";\n\t\tconfig-1 {\n\t\t\tdescription = %q;\n%s\t\t};\n\t};\n};\n", name, config)
	return b.String()
}
