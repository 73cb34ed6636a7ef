package image

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// MemoryError is CheckMemory's refusal, with its numbers in bytes.
type MemoryError struct {
	Image, Closure, Margin uint64
	Need, Available        uint64
}

func (e *MemoryError) Error() string {
	return fmt.Sprintf("need %s MiB (image %s + roostd's closure %s + margin %s), have %s MiB available: "+
		"pivot-to-maintenance refused before stopping anything; free memory (stop services, remove files from tmpfs) or build a smaller image",
		mib(e.Need), mib(e.Image), mib(e.Closure), mib(e.Margin), mib(e.Available))
}

func mib(n uint64) string { return strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64) }

// CheckMemory checks that the RAM the kernel can give without swapping
// (MemAvailable in meminfo, /proc/meminfo's format) holds the image,
// roostd's closure copied into a tmpfs, and a margin, all in bytes: a
// *MemoryError if not.
func CheckMemory(meminfo io.Reader, image, closure, margin uint64) error {
	avail, err := memAvailable(meminfo)
	if err != nil {
		return err
	}
	need := image + closure
	if need < image || need+margin < need {
		need = math.MaxUint64
	} else {
		need += margin
	}
	if need > avail {
		return &MemoryError{Image: image, Closure: closure, Margin: margin, Need: need, Available: avail}
	}
	return nil
}

// memAvailable is meminfo's MemAvailable, in bytes.
func memAvailable(r io.Reader) (uint64, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "MemAvailable:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("meminfo: MemAvailable %q: want a number of kB", strings.TrimSpace(rest))
		}
		kb, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil || kb > math.MaxUint64>>10 {
			return 0, fmt.Errorf("meminfo: MemAvailable %q: want a number of kB", f[0])
		}
		return kb << 10, nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("meminfo: %w", err)
	}
	return 0, fmt.Errorf("meminfo: no MemAvailable (a kernel before 3.14?): the RAM free for an image write is not known, refused")
}
