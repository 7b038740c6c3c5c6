package natsauth_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/jwt/v2"

	"github.com/wardenhq/warden/pkg/natsauth"
)

func TestOpenIsStableAndPrivate(t *testing.T) {
	dir := t.TempDir()
	a, err := natsauth.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	jwtFile := a.AccountFile()
	before, _ := os.Stat(jwtFile)
	b, err := natsauth.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if a.Account() != b.Account() || a.SystemAccount() != b.SystemAccount() {
		t.Fatal("a second Open made a new chain")
	}
	if after, _ := os.Stat(jwtFile); !after.ModTime().Equal(before.ModTime()) {
		t.Fatal("Open rewrote an account JWT that was up to date")
	}
	for _, f := range []string{"operator.nk", "system.nk", "account.nk", "signer.nk"} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, mode %v; want 0600", f, err, fi.Mode())
		}
	}
	cfg, err := a.ServerConfig()
	if err != nil || !strings.Contains(cfg, "operator: ") || !strings.Contains(cfg, a.Account()+": ") {
		t.Fatalf("server config %q (%v)", cfg, err)
	}
	for _, f := range []string{"operator.nk", "system.nk", "account.nk", "signer.nk"} {
		seed, _ := os.ReadFile(filepath.Join(dir, f))
		if strings.Contains(cfg, strings.TrimSpace(string(seed))) {
			t.Fatalf("the server config holds the seed of %s", f)
		}
	}
}

func TestIssueRecordsKeysAndPermissions(t *testing.T) {
	a, err := natsauth.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	creds1, u1, err := a.Issue(natsauth.RoleAgent, "web.prod", "")
	if err != nil {
		t.Fatal(err)
	}
	_, u2, err := a.Issue(natsauth.RoleAgent, "web.prod", "")
	if err != nil {
		t.Fatal(err)
	}
	got, err := a.Lookup(natsauth.RoleAgent, "web.prod")
	if err != nil || got.PublicKey != u2.PublicKey || !slices.Equal(got.Previous, []string{u1.PublicKey}) {
		t.Fatalf("record %+v (%v); want current %s, previous %s", got, err, u2.PublicKey, u1.PublicKey)
	}
	tok, err := jwt.ParseDecoratedJWT(creds1)
	if err != nil {
		t.Fatal(err)
	}
	uc, err := jwt.DecodeUserClaims(tok)
	if err != nil {
		t.Fatal(err)
	}
	// The host token escapes the dot: the agent may publish its own
	// host's events only, and reads no event.
	if !slices.Contains(uc.Pub.Allow, "warden.events.web%2Eprod.>") || slices.Contains(uc.Sub.Allow, "warden.events.>") {
		t.Fatalf("agent permissions: pub %v sub %v", uc.Pub.Allow, uc.Sub.Allow)
	}
	if uc.IssuerAccount != a.Account() || uc.Name != "agent:web.prod" {
		t.Fatalf("issuer account %s, name %q", uc.IssuerAccount, uc.Name)
	}
	if _, _, err := a.Revoke(natsauth.RoleSOC, "nobody", false); err == nil {
		t.Fatal("revoked a user never issued")
	}
}

func TestCheckName(t *testing.T) {
	for _, tc := range []struct {
		r    natsauth.Role
		name string
		ok   bool
	}{
		{natsauth.RoleAgent, "bastion-1.example.com", true},
		{natsauth.RoleAgent, "", false},
		{natsauth.RoleAgent, "a\nb", false},
		{natsauth.RoleSOC, "sam", true},
		{natsauth.RoleSOC, "sam.x", false}, // a consumer name
		{natsauth.RoleCollector, "col-a", true},
		{natsauth.RoleCollector, "col a", false},
		{natsauth.Role("admin"), "x", false},
	} {
		if err := natsauth.CheckName(tc.r, tc.name); (err == nil) != tc.ok {
			t.Errorf("CheckName(%s, %q) = %v", tc.r, tc.name, err)
		}
	}
}
