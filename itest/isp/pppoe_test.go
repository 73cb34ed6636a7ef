package isp

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/roostrouter/roost/agent"
	"github.com/roostrouter/roost/agent/config"
	"github.com/roostrouter/roost/netconf"
)

// TestPPPoEConfigIsValid: the PPPoE variant of the example config that the
// VM tests and make lab WAN=pppoe run passes roostd's validation.
func TestPPPoEConfigIsValid(t *testing.T) {
	example, err := os.ReadFile("../../docs/rotuer.json")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := PPPoEConfig(string(example), "/persist/secrets/pppoe-password")
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "config.json")
	os.WriteFile(file, []byte(cfg), 0o644)
	c, err := config.Load(file, agent.Kinds(nil))
	if err != nil {
		t.Fatal(err)
	}
	route, _ := c.Services["default"].Decl.(*netconf.RouteDecl)
	if c.Services["wan-ppp"].Kind != "pppoe" || route == nil || route.Link != "wan-ppp" {
		t.Fatalf("services: %+v", c.Services)
	}
	if _, err := PPPoEConfig(`{"services": {}}`, "/x"); err == nil {
		t.Fatal("a config without the example's services was transformed")
	}
}
