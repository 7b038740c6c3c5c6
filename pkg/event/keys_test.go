package event

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
)

func TestKeyFiles(t *testing.T) {
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "agent", "signing.key")
	priv, err := LoadOrCreateKey(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("key mode %v, want 0600", st.Mode().Perm())
	}
	again, err := LoadOrCreateKey(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if !priv.Equal(again) {
		t.Fatal("reloaded key differs")
	}

	// Public keys: base64 as written by the agent, and PEM from openssl.
	pubDir := filepath.Join(dir, "keys")
	if err := os.Mkdir(pubDir, 0o755); err != nil {
		t.Fatal(err)
	}
	pub := priv.Public().(ed25519.PublicKey)
	if err := WritePublicKey(filepath.Join(pubDir, "bastion-1.pub"), pub); err != nil {
		t.Fatal(err)
	}
	_, priv2 := testKey(t)
	der, err := x509.MarshalPKIXPublicKey(priv2.Public())
	if err != nil {
		t.Fatal(err)
	}
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	if err := os.WriteFile(filepath.Join(pubDir, "bastion-2.pub"), pemBytes, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(pubDir, "README"), []byte("not a key"), 0o644); err != nil {
		t.Fatal(err)
	}
	keys, err := LoadPublicKeys(pubDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 {
		t.Fatalf("loaded %d keys, want 2", len(keys))
	}
	if k, ok := keys.PublicKey("bastion-1"); !ok || !pub.Equal(k) {
		t.Fatal("bastion-1 key mismatch")
	}
	if k, ok := keys.PublicKey("bastion-2"); !ok || !priv2.Public().(ed25519.PublicKey).Equal(k) {
		t.Fatal("bastion-2 key mismatch")
	}

	// A bad key file is an error naming the host, not a silent skip.
	if err := os.WriteFile(filepath.Join(pubDir, "bastion-3.pub"), []byte("AAAA\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadPublicKeys(pubDir); err == nil {
		t.Fatal("short key accepted")
	}

	// A world-readable signing key is refused.
	if err := os.Chmod(keyPath, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateKey(keyPath); err == nil {
		t.Fatal("world-readable signing key accepted")
	}
}
