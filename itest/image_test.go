package itest

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/roostrouter/roost/itest/vm"
)

// imageModules are the modules imageinit loads, with what they need
// first (modules.dep), and their parameters: an 8 MiB mtdram in 64 KiB
// blocks; a 64 MiB nandsim (ST's 0xa2 with extended ID 0x15: 2 KiB pages,
// 128 KiB blocks) in partitions of 8 and 128 blocks and the rest, with
// chip block 11 (partition 1's block 3) bad; UBI; a 16 MiB RAM disk.
func imageModules(t *testing.T, version string) []vm.File {
	t.Helper()
	params := map[string]string{
		"mtdram":  "total_size=8192 erase_size=64",
		"nandsim": "id_bytes=0x20,0xa2,0x00,0x15 parts=8,128 badblocks=11",
		"brd":     "rd_nr=1 rd_size=16384 max_part=0",
	}
	files, err := vm.ModuleFiles(version, []string{"mtd", "mtdram", "nandsim", "ubi", "brd"}, params)
	if err != nil {
		t.Fatalf("%v (the kernel's MTD modules: %s)", err, mtdModules(filepath.Join("/lib/modules", version)))
	}
	return files
}

func mtdModules(base string) string {
	m, _ := filepath.Glob(filepath.Join(base, "kernel/drivers/mtd/*/*.ko*"))
	for i := range m {
		m[i] = filepath.Base(m[i])
	}
	return strings.Join(m, " ")
}

// imageResult is a line "IMAGETEST-RESULT {json}" of imageinit.
type imageResult struct {
	Case      string             `json:"case"`
	OK        bool               `json:"ok"`
	Error     string             `json:"error"`
	Device    string             `json:"device"`
	Bytes     int64              `json:"bytes"`
	BadBlocks []uint64           `json:"badBlocks"`
	Seconds   map[string]float64 `json:"seconds"`
	Check     string             `json:"check"`
	Volumes   map[string]int     `json:"volumes"`
}

func (r imageResult) rate(phase string) string {
	s := r.Seconds[phase]
	if s == 0 {
		return "-"
	}
	// The erase covers whole blocks: the image's size is near enough.
	mib := float64(r.Bytes) / (1 << 20)
	return fmt.Sprintf("%.1f MiB/s (%.2f s)", mib/s, s)
}

// TestImageWriteInVM: updater/image on Debian's kernel's MTD (mtdram as
// NOR, nandsim as NAND with a bad block), UBI (on nandsim) and block
// (brd) devices, driven by imageinit (itest/vm/cmd/imageinit): each write
// reads back what the package wrote and the init compares the devices
// itself; the writes the board forbids are refused and leave their
// partitions as they were; the UBI swap holds across a detach and attach.
func TestImageWriteInVM(t *testing.T) {
	image, version := needX86(t)
	out := filepath.Join(t.TempDir(), "init")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, "./itest/vm/cmd/imageinit")
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build imageinit: %v\n%s", err, b)
	}
	d, c := startDirect(t, vm.DirectOptions{Arch: "x86_64", Kernel: image, NoReboot: true, Memory: 512,
		Initrd: initramfs(t, readFile(t, out), imageModules(t, version)...),
		Append: "console=ttyS0 panic=-1 quiet"})
	_, startedAt := c.waitFor(t, "init started", 0, 3*time.Minute)
	_, doneAt := c.waitFor(t, "IMAGETEST DONE", 0, 10*time.Minute)
	if err := d.Wait(time.Minute); err != nil {
		t.Fatalf("QEMU after the power off: %v", err)
	}
	results := map[string]imageResult{}
	for i := 0; ; i++ {
		line, _, ok := c.find("IMAGETEST-RESULT ", i)
		if !ok {
			break
		}
		var r imageResult
		if err := json.Unmarshal([]byte(line[strings.Index(line, "{"):]), &r); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		results[r.Case] = r
	}
	get := func(name string) imageResult {
		r, ok := results[name]
		if !ok {
			t.Fatalf("no result for %q on the console", name)
		}
		return r
	}
	wrote := func(name, device, check string) imageResult {
		r := get(name)
		if !r.OK || r.Device != device || r.Check != check {
			t.Errorf("%s: %+v; want written to %s, and the init's own look: %s", name, r, device, check)
		}
		return r
	}
	refused := func(name, want, check string) {
		r := get(name)
		if r.OK || !strings.Contains(r.Error, want) || r.Check != check {
			t.Errorf("%s: %+v; want refused with %q, and the init's own look: %s", name, r, want, check)
		}
	}
	norR := wrote("nor", "/dev/mtd0", "match")
	nandR := wrote("nand", "/dev/mtd2", "match")
	if !slices.Equal(nandR.BadBlocks, []uint64{3 << 17}) {
		t.Errorf("nand: bad blocks %v, want [%d] (block 3 of the partition)", nandR.BadBlocks, 3<<17)
	}
	refused("nand too big", `does not fit MTD partition "NAND simulator partition 1" (/dev/mtd2): 16646144 bytes usable (16777216 of 16777216, less 1 bad blocks of 131072)`, "unchanged")
	refused("never", `partition "NAND simulator partition 0" of board vm (bootloader, on nand) is never written: refused`, "unchanged")
	refused("ubi partition raw", `partition "NAND simulator partition 2" of board vm (ubi, on nand) is never written: refused`, "unchanged")

	setup := get("ubi setup")
	if !setup.OK {
		t.Fatalf("UBI setup: %s", setup.Error)
	}
	oldFit := setup.Volumes["fit"]
	first := wrote("ubi first", fmt.Sprintf("/dev/ubi0_%d", 2), "fit match, fit_spare match")
	if first.Volumes["fit"] != 2 || first.Volumes["fit_spare"] != oldFit {
		t.Errorf("ubi first: volumes %v, want fit the new volume 2 and fit_spare the old fit %d", first.Volumes, oldFit)
	}
	second := wrote("ubi second", fmt.Sprintf("/dev/ubi0_%d", oldFit), "fit match, fit_spare match")
	if second.Volumes["fit"] != oldFit || second.Volumes["fit_spare"] != 2 {
		t.Errorf("ubi second: volumes %v, want swapped back", second.Volumes)
	}
	re := get("ubi reattached")
	if !re.OK || re.Check != "fit match, fit_spare match" || !maps.Equal(re.Volumes, second.Volumes) {
		t.Errorf("after detach and attach: %+v, want volumes %v", re, second.Volumes)
	}
	refused("ubi never", `"ubootenv" of board vm (bootloader-env, on nand) is never written: refused`, "ubootenv match; after: ubootenv match")
	blockR := wrote("block", "/dev/ram0", "match")
	if r := get("memory fits"); !r.OK {
		t.Errorf("memory fits: %s", r.Error)
	}
	mem := get("memory refused")
	if mem.OK || !strings.Contains(mem.Error, "need 1038.0 MiB (image 1024.0 + roostd's closure 12.0 + margin 2.0), have ") {
		t.Errorf("memory refused: %+v", mem)
	}
	t.Logf("init at %.1f s, done at %.1f s (TCG)", startedAt.Seconds(), doneAt.Seconds())
	for _, r := range []imageResult{norR, nandR, first, second, blockR} {
		t.Logf("%-10s %5.1f MiB to %-12s erase %s, write %s, verify %s", r.Case, float64(r.Bytes)/(1<<20), r.Device, r.rate("erase"), r.rate("write"), r.rate("verify"))
	}
	t.Logf("refused: %s", mem.Error)
}
