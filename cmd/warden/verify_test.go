package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wardenhq/warden/pkg/event"
)

// bundleFor seals n v2 events of host h, signs a checkpoint over them and
// returns the proof bundle of event i.
func bundleFor(t *testing.T, key ed25519.PrivateKey, n, i int) *event.ProofBundle {
	t.Helper()
	s := event.NewSigner(nil, 0, "")
	var raws [][]byte
	var leaves [][]byte
	for k := range n {
		e := &event.Event{Schema: event.Schema, ID: "01JPA7Q5" + strings.Repeat("0", 17) + string(rune('A'+k)), Time: time.Unix(1700000000, 0).UTC(),
			Type: event.DBQuery, Host: event.Host{ID: "bastion-1", Name: "b1"}, Data: map[string]any{"statement": "SELECT 1"}}
		s.Seal(e)
		raw, _ := json.Marshal(e)
		raws = append(raws, raw)
		leaf, _ := event.LeafHash(e.Hash)
		leaves = append(leaves, leaf)
	}
	signer, err := event.NewNoteSigner("bastion-1", key)
	if err != nil {
		t.Fatal(err)
	}
	note, err := event.SignTreeHead(signer, event.TreeHead{Origin: "bastion-1", Size: uint64(n), Root: event.RootOf(leaves)})
	if err != nil {
		t.Fatal(err)
	}
	p, err := event.InclusionProof(uint64(i), 0, nil, leaves)
	if err != nil {
		t.Fatal(err)
	}
	vkey, _ := event.NoteVerifierKey("bastion-1", key.Public().(ed25519.PublicKey))
	return &event.ProofBundle{Format: event.ProofFormat, Event: raws[i], LeafIndex: uint64(i), TreeSize: uint64(n),
		Inclusion: event.EncodeHashes(p), Checkpoint: note, CheckpointID: "cp-1", Key: vkey}
}

func writeBundle(t *testing.T, b *event.ProofBundle) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "bundle.json")
	data, _ := json.Marshal(b)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestVerifyBundleOffline(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	keyFile := filepath.Join(t.TempDir(), "bastion-1.pub")
	if err := os.WriteFile(keyFile, event.EncodePublicKey(pub), 0o644); err != nil {
		t.Fatal(err)
	}
	for i := range 7 {
		if rc := runVerify([]string{"--bundle", writeBundle(t, bundleFor(t, priv, 7, i)), "--key", keyFile}); rc != 0 {
			t.Fatalf("event %d of 7: exit %d, want 0", i, rc)
		}
	}

	// A changed statement: the hash no longer matches.
	b := bundleFor(t, priv, 7, 3)
	b.Event = json.RawMessage(strings.Replace(string(b.Event), "SELECT 1", "SELECT 2", 1))
	if rc := runVerify([]string{"--bundle", writeBundle(t, b), "--key", keyFile}); rc != 1 {
		t.Errorf("modified event: exit %d, want 1", rc)
	}
	// A checkpoint signed by another key, which the bundle names: pinning
	// the host's key catches it.
	_, evil, _ := ed25519.GenerateKey(rand.Reader)
	b = bundleFor(t, evil, 7, 3)
	if rc := runVerify([]string{"--bundle", writeBundle(t, b)}); rc != 0 {
		t.Errorf("self-consistent bundle without a pinned key: exit %d, want 0", rc)
	}
	if rc := runVerify([]string{"--bundle", writeBundle(t, b), "--key", keyFile}); rc != 1 {
		t.Errorf("bundle signed by another key: exit %d, want 1", rc)
	}
	// A proof for another leaf.
	b = bundleFor(t, priv, 7, 3)
	other := bundleFor(t, priv, 7, 4)
	b.Inclusion = other.Inclusion
	if rc := runVerify([]string{"--bundle", writeBundle(t, b), "--key", keyFile}); rc != 1 {
		t.Errorf("wrong inclusion proof: exit %d, want 1", rc)
	}
	if rc := runVerify([]string{"--bundle", filepath.Join(t.TempDir(), "missing.json")}); rc != 3 {
		t.Errorf("missing bundle: exit %d, want 3", rc)
	}
}
