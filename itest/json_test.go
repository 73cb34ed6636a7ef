package itest

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/roostrouter/roost/itest/labnet"
)

// mustJSON decodes out, which must be exactly one JSON document, into v.
func mustJSON(t *testing.T, what, out string, v any) {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(out))
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s printed no JSON (%v):\n%s", what, err, out)
	}
	if dec.More() {
		t.Fatalf("%s printed more than one JSON document:\n%s", what, out)
	}
}

// TestRoostJSON: every roost command with --json prints one JSON document
// that says what happened, against a running roostd; and roostd's activate
// and confirm, which need the agent, answer in JSON over SSH too.
func TestRoostJSON(t *testing.T) {
	l := newLaptop(t)
	r := startRouter(t, l)
	l.sshConfig(r.port)
	sys1 := l.system("1.0", r.port, 1)
	sys2 := l.system("2.0", r.port, 1)
	sys3 := l.system("3.0", r.port, 1)

	var version struct{ Version string }
	mustJSON(t, "roost version --json", l.mustRoost("version", "--json"), &version)
	if version.Version == "" {
		t.Error("roost version --json names no version")
	}

	if first := l.rebuild("--system", sys1, "--accept-new-host-key"); first.Generation != 1 || !first.Confirmed {
		t.Fatalf("roost rebuild --json: %+v", first)
	}
	var copied rebuildJSON
	mustJSON(t, "roost copy --json", l.mustRoost("copy", "--host", "rotuer", "--json", sys2), &copied)
	if copied.SentPaths == 0 || copied.ClosurePaths == 0 {
		t.Fatalf("roost copy --json: %+v, want the new paths sent", copied)
	}

	// activate and confirm over two connections, as roost does.
	act := l.openssh("", nil, "rotuer", "roostd", "activate", "switch", sys2, "--json")
	var activation struct {
		Generation int
		Token      string
	}
	mustJSON(t, "roostd activate --json", act.stdout, &activation)
	if act.code != 0 || activation.Generation != 2 || activation.Token == "" {
		t.Fatalf("roostd activate switch --json: exit %d, %+v\n%s", act.code, activation, act.stderr)
	}
	conf := l.openssh("", nil, "rotuer", "roostd", "confirm", activation.Token, "--json")
	var confirmed struct{ Confirmed bool }
	mustJSON(t, "roostd confirm --json", conf.stdout, &confirmed)
	if conf.code != 0 || !confirmed.Confirmed {
		t.Fatalf("roostd confirm --json: exit %d, %+v\n%s", conf.code, confirmed, conf.stderr)
	}

	var st routerStatus
	mustJSON(t, "roost status --json", l.mustRoost("status", "--host", "rotuer", "--json"), &st)
	if st.Current != sys2 || st.Generation != 2 || st.Pending != nil {
		t.Fatalf("roost status --json: %+v, want %s confirmed as generation 2", st, sys2)
	}
	var gens []generation
	mustJSON(t, "roost generations --json", l.mustRoost("generations", "--host", "rotuer", "--json"), &gens)
	if len(gens) != 2 {
		t.Fatalf("roost generations --json: %+v, want 2", gens)
	}
	if third := l.rebuild("--system", sys3); third.Generation != 3 {
		t.Fatalf("roost rebuild --json: %+v, want generation 3", third)
	}
	var back struct {
		Generation int
		System     string
	}
	mustJSON(t, "roost rollback --json", l.mustRoost("rollback", "--host", "rotuer", "--json"), &back)
	if back.Generation != 2 || back.System != sys2 {
		t.Fatalf("roost rollback --json: %+v, want generation 2, %s", back, sys2)
	}
	r.waitCurrent(sys2, 2, 10*time.Second)
	// gc keeps the newest generation and the current one: generation 1 goes.
	var dry, gc struct {
		DryRun      bool  `json:"dryRun"`
		Generations []int `json:"deletedGenerations"`
	}
	mustJSON(t, "roost gc --dry-run --json", l.mustRoost("gc", "--host", "rotuer", "--keep", "1", "--dry-run", "--json"), &dry)
	mustJSON(t, "roost gc --json", l.mustRoost("gc", "--host", "rotuer", "--keep", "1", "--json"), &gc)
	// (Its paths stay a while: a transfer's temporary roots hold them.)
	if !dry.DryRun || gc.DryRun || fmt.Sprint(dry.Generations) != "[1]" || fmt.Sprint(gc.Generations) != "[1]" {
		t.Fatalf("roost gc --json: dry run %+v, then %+v; want generation 1 deleted", dry, gc)
	}
}

// TestRoostdJSONInAgent: roostd's commands that need the agent in its
// network namespace (firewall show, hook ppp) print one JSON document with
// --json that says what the kernel and the agent have.
func TestRoostdJSONInAgent(t *testing.T) {
	need(t, "nft")
	dir := t.TempDir()
	pppd := filepath.Join(dir, "pppd")
	os.WriteFile(pppd, []byte(fakePppd), 0o755)
	secret := filepath.Join(dir, "pppoe-password")
	os.WriteFile(secret, []byte("s3cret\n"), 0o600)
	a := startAgentLab(t, []byte(fmt.Sprintf(`{
  "board": "lab",
  "services": {
    "wan": { "kind": "link", "interface": "wan" },
    "wan-ppp": { "kind": "pppoe", "link": "wan", "user": "rotuer@isp.example", "passwordFile": %q, "pppd": %q },
    "firewall": {
      "kind": "firewall",
      "zones": { "wan": { "services": ["wan-ppp"] }, "lan": { "interfaces": ["lan0"] } },
      "forwards": [ { "proto": "tcp", "port": 8080, "to": "192.168.1.100", "toPort": 80 } ]
    }
  }
}`, secret, pppd)))
	a.waitServices("up", func(s map[string]serviceStatus) bool {
		return s["wan-ppp"].State == "up" && s["wan-ppp"].Outputs["address"] != "" && s["firewall"].State == "up"
	})
	roostd := func(args ...string) string {
		return mustRun(t, nil, "ip", labnet.In(a.net.Router, append([]string{roostd}, append(args, "--root", a.root)...)...)[1:]...)
	}

	var fw struct {
		Table  string
		Chains []struct {
			Name, Type, Hook, Policy string
			Rules                    []string
		}
		Sets []struct {
			Name     string
			Elements []string
		}
		Counters []struct {
			Name    string
			Packets *uint64
		}
		Ruleset string
	}
	mustJSON(t, "roostd firewall show --json", roostd("firewall", "show", "--json"), &fw)
	text := roostd("firewall", "show")
	if fw.Table != "inet roost" || fw.Ruleset != text {
		t.Errorf("firewall show --json: table %q, and its ruleset differs from firewall show's:\n%s", fw.Table, fw.Ruleset)
	}
	chains := map[string]string{}
	rules := 0
	for _, c := range fw.Chains {
		chains[c.Name] = c.Type + " " + c.Hook + " " + c.Policy
		for _, r := range c.Rules {
			rules++
			if strings.Contains(r, "# roost:") || !strings.Contains(text, "\t\t"+r+"\n") {
				t.Errorf("chain %s: rule %q is not as firewall show prints it", c.Name, r)
			}
		}
	}
	if chains["input"] != "filter input drop" || chains["forward"] != "filter forward drop" || rules == 0 {
		t.Errorf("firewall show --json chains: %v (%d rules)", chains, rules)
	}
	sets := map[string]string{}
	for _, s := range fw.Sets {
		sets[s.Name] = strings.Join(s.Elements, " ")
	}
	if sets["zone_wan"] != "ppp0" || sets["zone_lan"] != "lan0" {
		t.Errorf("firewall show --json sets: %v, want the zones' members", sets)
	}
	counted := false
	for _, c := range fw.Counters {
		counted = counted || c.Name == "input_drop" && c.Packets != nil
	}
	if !counted {
		t.Errorf("firewall show --json has no input_drop counter: %+v", fw.Counters)
	}

	// The event pppd's ip-up gave, delivered again by hand.
	var hook struct {
		Delivered                       bool
		Event, Service, Interface, Peer string
		DNS                             []string
	}
	mustJSON(t, "roostd hook --json", roostd("hook", "--json", "--dns", "192.0.2.53 192.0.2.54", "ppp", "ip-up", "ppp0", "/dev/ppp", "0", "198.51.100.7", "198.51.100.1", "wan-ppp"), &hook)
	if !hook.Delivered || hook.Event != "ip-up" || hook.Service != "wan-ppp" || hook.Interface != "ppp0" || hook.Peer != "198.51.100.1" || len(hook.DNS) != 2 {
		t.Errorf("roostd hook --json: %+v", hook)
	}
	if out := a.services()["wan-ppp"].Outputs; out["address"] != "198.51.100.7" || out["dns"] != "192.0.2.53 192.0.2.54" {
		t.Errorf("after the hook wan-ppp's outputs are %v", out)
	}

	var st struct{ Services []serviceStatus }
	mustJSON(t, "roostd status --json", roostd("status", "--json"), &st)
	up := map[string]bool{}
	for _, s := range st.Services {
		up[s.Name] = s.State == "up"
	}
	if !up["wan"] || !up["wan-ppp"] || !up["firewall"] {
		t.Errorf("roostd status --json: %+v, want wan, wan-ppp and firewall up", st.Services)
	}
}
