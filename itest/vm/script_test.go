package vm

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestScriptsParse: the VM's /init (busybox sh) and run.sh (the host's sh)
// are valid shell, with the command and its environment quoted.
func TestScriptsParse(t *testing.T) {
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skip("SKIPPED: no /bin/busybox (make deps installs busybox-static)")
	}
	dir := t.TempDir()
	initFile := filepath.Join(dir, "init")
	os.WriteFile(initFile, []byte(strings.ReplaceAll(initScript, "@OUT@", "/tmp/roost-vm-1")), 0o755)
	if out, err := exec.Command("/bin/busybox", "sh", "-n", initFile).CombinedOutput(); err != nil {
		t.Fatalf("init: %v\n%s", err, out)
	}
	run := runScript(Options{Command: []string{"/tmp/x.test", "-test.run", "^TestA$"}, Env: []string{"A=it's"}, Dir: "/work/a b", Modules: []string{"pppoe"}}, "/tmp/roost-vm-1")
	runFile := filepath.Join(dir, "run.sh")
	os.WriteFile(runFile, []byte(run), 0o755)
	if out, err := exec.Command("sh", "-n", runFile).CombinedOutput(); err != nil {
		t.Fatalf("run.sh: %v\n%s\n%s", err, out, run)
	}
	for _, want := range []string{"modprobe -a pppoe", "cd '/work/a b'", `'A=it'\''s'`, "'^TestA$'", "echo $? > '/tmp/roost-vm-1'/exit", "ROOST_IN_VM=1"} {
		if !strings.Contains(run, want) {
			t.Errorf("run.sh lacks %q:\n%s", want, run)
		}
	}
}
