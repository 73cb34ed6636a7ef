package boot

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/roostrouter/roost/updater/slots"
)

// block2mtdLoaded is the qemu-mipsel board's block2mtd parameters, as
// init loads the module with them.
const block2mtdLoaded = `module block2mtd.ko "block2mtd=/dev/vda,65536,image-a block2mtd=/dev/vdb,65536,image-b block2mtd=/dev/vdc,65536,data" 0`

// newImageRouter is a qemu-mipsel router: its initrd loads virtio_blk
// and block2mtd, whose loading makes the board's MTD devices (if mtd),
// and its store has one generation.
func newImageRouter(t *testing.T, cmdline string, mtd bool) *router {
	r := newRouter(t, cmdline)
	write(t, r.root, "board", "qemu-mipsel\n", 0o644)
	write(t, r.root, "modules", "lib/modules/virtio_blk.ko\nlib/modules/block2mtd.ko\n", 0o644)
	write(t, r.root, "lib/modules/block2mtd.ko", "elf", 0o644)
	for _, d := range []string{"vda", "vdb", "vdc"} {
		write(t, r.root, "dev/"+d, "", 0o600)
	}
	r.sys.onModule = func(name string) {
		if name != "block2mtd.ko" || !mtd {
			return
		}
		write(t, r.root, "proc/mtd", "dev:    size   erasesize  name\n"+
			`mtd0: 01000000 00010000 "image-a"`+"\n"+`mtd1: 01000000 00010000 "image-b"`+"\n"+`mtd2: 00400000 00010000 "data"`+"\n", 0o444)
		for i := range 3 {
			write(t, r.root, fmt.Sprintf("dev/mtdblock%d", i), "", 0o600)
		}
	}
	r.generation(r.system("one", false))
	return r
}

// TestImageBoot: on an image board without roost.disk=, init makes the
// board's flash MTD devices (block2mtd with the board's parameters, once
// its disks exist), mounts the data partition as jffs2 on /persist, the
// slot updater/slots chooses as squashfs on /storage (another slot if
// that one does not mount, loudly), binds its nix folder on /nix, says
// which slot it booted, and boots on; a trial slot boots once.
func TestImageBoot(t *testing.T) {
	for _, tc := range []struct {
		name    string
		state   *slots.State // slots.json before the boot; nil: none
		corrupt []string     // devices that do not mount
		want    BootedSlot
		mount   string // the squashfs mount that took
		log     []string
	}{
		{name: "first boot", want: BootedSlot{Slot: "image-a", Device: "/dev/mtdblock0"}, mount: "mount squashfs /dev/mtdblock0 /storage",
			log: []string{"image slot mounted", "slot=image-a", "trial=false"}},
		{name: "the default", state: &slots.State{Default: "image-b"}, want: BootedSlot{Slot: "image-b", Device: "/dev/mtdblock1"},
			mount: "mount squashfs /dev/mtdblock1 /storage"},
		{name: "a trial, once", state: &slots.State{Default: "image-a", Once: "image-b"}, want: BootedSlot{Slot: "image-b", Device: "/dev/mtdblock1", Trial: true},
			mount: "mount squashfs /dev/mtdblock1 /storage", log: []string{"slot=image-b", "trial=true"}},
		{name: "a corrupt default", corrupt: []string{"/dev/mtdblock0"},
			want:  BootedSlot{Slot: "image-b", Device: "/dev/mtdblock1", Chosen: "image-a", Fallback: "slot image-a: mount /dev/mtdblock0 (squashfs) on /storage: invalid argument"},
			mount: "mount squashfs /dev/mtdblock1 /storage", log: []string{"SLOT image-a DOES NOT MOUNT", "BOOTING SLOT image-b INSTEAD OF image-a"}},
		{name: "a corrupt trial", state: &slots.State{Default: "image-a", Once: "image-b"}, corrupt: []string{"/dev/mtdblock1"},
			want:  BootedSlot{Slot: "image-a", Device: "/dev/mtdblock0", Chosen: "image-b", Fallback: "slot image-b: mount /dev/mtdblock1 (squashfs) on /storage: invalid argument"},
			mount: "mount squashfs /dev/mtdblock0 /storage", log: []string{"SLOT image-b DOES NOT MOUNT"}},
		{name: "an unreadable slot state", state: &slots.State{Default: "rootfs"}, want: BootedSlot{Slot: "image-a", Device: "/dev/mtdblock0"},
			mount: "mount squashfs /dev/mtdblock0 /storage", log: []string{"SLOT STATE UNUSABLE", `default slot \"rootfs\"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newImageRouter(t, "console=ttyS0", true)
			state := filepath.Join(r.root, "persist/roost")
			if tc.state != nil {
				if err := slots.Save(state, *tc.state); err != nil {
					t.Fatal(err)
				}
			}
			r.sys.mountErr = map[string]error{}
			for _, d := range tc.corrupt {
				r.sys.mountErr[d] = unix.EINVAL
			}
			r.run()
			r.sys.nextStart(t)
			calls := r.sys.callsSince(0)
			i := slices.Index(calls, block2mtdLoaded)
			if i < 0 || !slices.Contains(calls[:i], `module virtio_blk.ko "" 0`) {
				t.Fatalf("block2mtd not loaded with the board's flash, after the disks' driver: %q", calls)
			}
			persist, storage, nix := slices.Index(calls, "mount jffs2 /dev/mtdblock2 /persist"), slices.Index(calls, tc.mount), slices.Index(calls, "bind /storage/nix /nix")
			if persist < i || storage < persist || nix < storage {
				t.Fatalf("want the data partition on /persist, then %q, then /nix bound, in that order: %q", tc.mount, calls)
			}
			got, err := ReadBootedSlot(r.root)
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Errorf("booted slot %+v (%v), want %+v", got, err, tc.want)
			}
			if after, err := slots.Load(state); err == nil && after.Once != "" {
				t.Errorf("slots.json still has a trial to boot once: %+v", after)
			}
			log := r.log.String()
			for _, w := range tc.log {
				if !strings.Contains(log, w) {
					t.Errorf("the log does not say %q:\n%s", w, log)
				}
			}
			// Shutdown undoes the mounts, last first.
			r.request(Reboot)
			down := r.sys.callsSince(len(calls))
			if u := []int{slices.Index(down, "umount /nix"), slices.Index(down, "umount /storage"), slices.Index(down, "umount /persist")}; u[0] < 0 || u[1] < u[0] || u[2] < u[1] {
				t.Errorf("shutdown: %q", down)
			}
		})
	}
}

// TestImageBootFails: no slot that mounts, or no MTD partitions at all,
// is a failed boot that says why and reboots; no agent runs.
func TestImageBootFails(t *testing.T) {
	for _, tc := range []struct {
		name    string
		mtd     bool
		corrupt []string
		want    string
	}{
		{"no slot mounts", true, []string{"/dev/mtdblock0", "/dev/mtdblock1"}, "no image slot mounts: slot image-a: mount /dev/mtdblock0 (squashfs) on /storage: invalid argument; slot image-b"},
		{"no MTD", false, nil, "the board's flash after 10s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newImageRouter(t, "", tc.mtd)
			r.sys.mountErr = map[string]error{}
			for _, d := range tc.corrupt {
				r.sys.mountErr[d] = unix.EINVAL
			}
			r.run()
			r.ended("rebooting")
			if log := r.log.String(); !strings.Contains(log, "BOOT FAILED") || !strings.Contains(log, tc.want) {
				t.Fatalf("log:\n%s", log)
			}
			if len(r.sys.starts) != 0 {
				t.Fatal("an agent was started")
			}
		})
	}
}

// TestImageBoardWithDisk: roost.disk= on an image board boots that disk
// as a store board does; block2mtd gets no disks (it would hold the one
// mounted).
func TestImageBoardWithDisk(t *testing.T) {
	r := newImageRouter(t, "roost.disk=/dev/sda", true)
	write(t, r.root, "dev/sda", "", 0o600)
	r.run()
	r.sys.nextStart(t)
	calls := r.sys.callsSince(0)
	for _, want := range []string{`module block2mtd.ko "" 0`, "mount ext4 /dev/sda /storage", "bind /storage/nix /nix", "bind /storage/persist /persist"} {
		if !slices.Contains(calls, want) {
			t.Errorf("no %q: %q", want, calls)
		}
	}
	if _, err := ReadBootedSlot(r.root); !os.IsNotExist(err) {
		t.Errorf("a booted slot on a disk boot: %v", err)
	}
	r.request(Reboot)
}

func TestImageLayout(t *testing.T) {
	r := newImageRouter(t, "", true)
	in := New(Options{Root: r.root})
	_, b, err := in.lookupBoard(Params{})
	if err != nil {
		t.Fatal(err)
	}
	slotNames, data, err := imageLayout(b)
	if err != nil || !slices.Equal(slotNames, []string{"image-a", "image-b"}) || data != "data" {
		t.Fatalf("imageLayout(qemu-mipsel) = %q, %q, %v", slotNames, data, err)
	}
	if _, b, _ = in.lookupBoard(Params{Board: "qemu-x86_64"}); imageBoot(b, Params{}) {
		t.Error("qemu-x86_64 boots from an image")
	}
	if _, _, err := imageLayout(b); err == nil || !strings.Contains(err.Error(), `board qemu-x86_64 boots from an image, but boards.json gives it no MTD partition`) {
		t.Errorf("imageLayout(qemu-x86_64): %v", err)
	}
	if got := tryOrder("image-b", slotNames); !slices.Equal(got, []string{"image-b", "image-a"}) {
		t.Errorf("tryOrder: %q", got)
	}
}
