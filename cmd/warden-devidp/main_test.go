package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func write(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadUsers(t *testing.T) {
	users, err := loadUsers(write(t, "u.yaml", "- sub: carol\n  email: carol@example.com\n  name: Carol\n  groups: [sre, dba]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(users) != 1 || users[0].Sub != "carol" || strings.Join(users[0].Groups, ",") != "sre,dba" {
		t.Errorf("users = %+v", users)
	}
	for name, content := range map[string]string{
		"typo":     "- sub: carol\n  group: [sre]\n",
		"not list": "sub: carol\n",
		"empty":    "",
	} {
		if _, err := loadUsers(write(t, "u.yaml", content)); err == nil {
			t.Errorf("%s: loadUsers accepted %q", name, content)
		}
	}
}

func TestLoadKey(t *testing.T) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	got, err := loadKey(write(t, "k.pem", string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))))
	if err != nil {
		t.Fatal(err)
	}
	if !got.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(k.Public()) {
		t.Error("loaded a different key")
	}
	if _, err := loadKey(write(t, "k.pem", "not pem")); err == nil || !strings.Contains(err.Error(), "no PEM block") {
		t.Errorf("non-PEM key: %v", err)
	}
}
