package nixsig

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/roostrouter/roost/updater/registry"
	"github.com/roostrouter/roost/updater/storepath"
	"github.com/roostrouter/roost/updater/storetest"
)

func keys(t *testing.T, name string) (SecretKey, PublicKey) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	sk, err := ParseSecretKey(name + ":" + base64.StdEncoding.EncodeToString(priv))
	if err != nil {
		t.Fatal(err)
	}
	pk, err := ParsePublicKey(name + ":" + base64.StdEncoding.EncodeToString(pub))
	if err != nil {
		t.Fatal(err)
	}
	return sk, pk
}

func TestSignVerify(t *testing.T) {
	a, b := storetest.NewPath("a-1"), storetest.NewPath("b-2")
	info := &registry.Info{Path: a, NarHash: sha256.Sum256([]byte("x")), NarSize: 120, References: []storepath.Path{b, a}}
	first, second := a.String(), b.String()
	if second < first {
		first, second = second, first
	}
	// References sorted, full paths, comma-separated, as Nix writes them.
	if got, want := Fingerprint(info), "1;"+a.String()+";"+info.NarHash.String()+";120;"+first+","+second; got != want {
		t.Fatalf("fingerprint %q, want %q", got, want)
	}
	sk, pk := keys(t, "laptop-1")
	_, other := keys(t, "other-1")
	info.Signatures = []string{"junk", "laptop-1:AAAA", Sign(info, sk)}
	if !Verify(info, []PublicKey{other, pk}) {
		t.Fatal("a valid signature did not verify")
	}
	if err := Check(info, []PublicKey{other}); err == nil || !strings.Contains(err.Error(), "not signed by a trusted key (other-1)") {
		t.Fatalf("Check with the wrong key: %v", err)
	}
	info.NarSize++
	if Verify(info, []PublicKey{pk}) {
		t.Fatal("a signature verified for other contents")
	}
	if Check(info, nil) != nil {
		t.Fatal("with no trusted keys everything passes")
	}
	for _, bad := range []string{"nokey", "k:!!", "k:" + base64.StdEncoding.EncodeToString([]byte("short"))} {
		if _, err := ParsePublicKey(bad); err == nil {
			t.Errorf("ParsePublicKey(%q) succeeded", bad)
		}
	}
}
