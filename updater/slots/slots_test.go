package slots

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var board = []string{"image-a", "image-b"}

func TestForBoot(t *testing.T) {
	for _, tc := range []struct {
		name      string
		state     *State // nil: no file
		slot      string
		trial     bool
		wantErr   string
		afterOnce string
	}{
		{name: "first boot", slot: "image-a"},
		{name: "default", state: &State{Default: "image-b"}, slot: "image-b"},
		{name: "trial once", state: &State{Default: "image-a", Once: "image-b"}, slot: "image-b", trial: true},
		{name: "unknown default", state: &State{Default: "rootfs"}, wantErr: `default slot "rootfs" is not one of`},
		{name: "unknown trial", state: &State{Default: "image-a", Once: "x"}, wantErr: `trial slot "x"`, afterOnce: "x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.state != nil {
				if err := Save(dir, *tc.state); err != nil {
					t.Fatal(err)
				}
			}
			slot, trial, err := ForBoot(dir, board)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ForBoot: %v, want %q", err, tc.wantErr)
				}
			} else if err != nil || slot != tc.slot || trial != tc.trial {
				t.Fatalf("ForBoot = %q, %v, %v; want %q, %v", slot, trial, err, tc.slot, tc.trial)
			}
			s, err := Load(dir)
			if err != nil {
				t.Fatal(err)
			}
			if s.Once != tc.afterOnce {
				t.Errorf("after the boot Once is %q, want %q: a trial boots once", s.Once, tc.afterOnce)
			}
			// The boot after a trial, whatever ended it, is the default's.
			if tc.trial {
				if slot, trial, err := ForBoot(dir, board); err != nil || trial || slot != tc.state.Default {
					t.Errorf("next boot = %q, %v, %v; want the default %q", slot, trial, err, tc.state.Default)
				}
			}
		})
	}
}

func TestLoadCorrupt(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, File), []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "move it away") {
		t.Fatalf("Load of a corrupt file: %v, want an error saying what to do", err)
	}
}

func TestSpare(t *testing.T) {
	if s, err := Spare(board, "image-a"); err != nil || s != "image-b" {
		t.Errorf("Spare(image-a) = %q, %v", s, err)
	}
	if s, err := Spare(board, "image-b"); err != nil || s != "image-a" {
		t.Errorf("Spare(image-b) = %q, %v", s, err)
	}
	if _, err := Spare([]string{"firmware"}, "firmware"); err == nil {
		t.Error("Spare on a one-slot board: no error")
	}
}
