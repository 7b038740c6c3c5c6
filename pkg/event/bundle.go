package event

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// ProofFormat is ProofBundle.Format.
const ProofFormat = "warden.proof/v1"

// ProofBundle is everything an auditor needs to check one event offline:
// the event as stored, the agent's signed checkpoint, the inclusion proof
// of the event's hash in that checkpoint's tree, and the agent's verifier
// key. `warden verify` fetches it from the collector (GET
// /v1/proofs/{id}) or reads it from a file.
type ProofBundle struct {
	Format string `json:"format"`
	// Event is the event's JSON exactly as the collector stored it.
	Event json.RawMessage `json:"event"`
	// LeafIndex is seq-1; TreeSize the checkpoint's size.
	LeafIndex uint64 `json:"leaf_index"`
	TreeSize  uint64 `json:"tree_size"`
	// Inclusion is the RFC 6962 inclusion proof, standard base64 hashes.
	Inclusion []string `json:"inclusion"`
	// Checkpoint is the agent's C2SP signed note; CheckpointID its id.
	Checkpoint   string `json:"checkpoint"`
	CheckpointID string `json:"checkpoint_id"`
	// Key is the host's C2SP verifier key (<host>+<hash>+<key>), as the
	// collector knows it. Pin it (warden verify --key) rather than trust
	// the bundle's word for it.
	Key string `json:"key"`
	// Integrity lists the problems the collector flagged on the event.
	Integrity []string `json:"integrity,omitempty"`
}

// VerifiedProof is what ProofBundle.Verify established.
type VerifiedProof struct {
	EventID  string
	HostID   string
	Seq      uint64
	Hash     string
	Schema   string
	TreeSize uint64
	Root     []byte
	// Key is the verifier key that signed the checkpoint (v2) or the
	// event (v1).
	Key string
}

// Verify checks the bundle with the host's verifier key vkey (the bundle's
// own Key if vkey is ""): the event hashes to its hash; for a v2 event, the
// checkpoint is signed by that key with the host id as origin and the
// inclusion proof places the hash at leaf seq-1 of its tree; for a v1
// event, the event's own signature verifies under that key.
func (b *ProofBundle) Verify(vkey string) (*VerifiedProof, error) {
	if b.Format != ProofFormat {
		return nil, fmt.Errorf("bundle format %q, want %q", b.Format, ProofFormat)
	}
	if vkey == "" {
		vkey = b.Key
	}
	var e Event
	if err := json.Unmarshal(b.Event, &e); err != nil {
		return nil, fmt.Errorf("bundle event: %w", err)
	}
	v := &VerifiedProof{EventID: e.ID, HostID: e.Host.ID, Seq: e.Seq, Hash: e.Hash, Schema: e.Schema, Key: vkey}
	h, err := HashRaw(b.Event)
	if err != nil {
		return v, fmt.Errorf("event %s: %w", e.ID, err)
	}
	if h != e.Hash {
		return v, fmt.Errorf("event %s: its content hashes to %s, but it claims %s: it was changed after it was sealed", e.ID, h, e.Hash)
	}
	name, pub, err := parseVerifierKey(vkey)
	if err != nil {
		return v, err
	}
	if name != e.Host.ID {
		return v, fmt.Errorf("key %q is host %q's, the event is host %q's", vkey, name, e.Host.ID)
	}
	switch e.Schema {
	case SchemaV1:
		sig, err := base64.StdEncoding.DecodeString(e.Sig)
		if err != nil || !ed25519.Verify(pub, []byte(e.Hash), sig) {
			return v, fmt.Errorf("event %s (v1): its signature does not verify under key %s", e.ID, vkey)
		}
		return v, nil
	case Schema:
	default:
		return v, fmt.Errorf("event %s: schema %q", e.ID, e.Schema)
	}
	if b.Checkpoint == "" {
		return v, fmt.Errorf("event %s: no checkpoint covers it yet", e.ID)
	}
	head, err := OpenTreeHeadVKey(b.Checkpoint, vkey)
	if err != nil {
		return v, fmt.Errorf("checkpoint %s: %w", b.CheckpointID, err)
	}
	v.TreeSize, v.Root = head.Size, head.Root
	if e.Seq == 0 || b.LeafIndex != e.Seq-1 {
		return v, fmt.Errorf("event %s has seq %d, the proof is for leaf %d", e.ID, e.Seq, b.LeafIndex)
	}
	if head.Size != b.TreeSize {
		return v, fmt.Errorf("the proof is for a tree of %d, the checkpoint's has %d", b.TreeSize, head.Size)
	}
	proof := make([][]byte, len(b.Inclusion))
	for i, s := range b.Inclusion {
		if proof[i], err = base64.StdEncoding.DecodeString(s); err != nil {
			return v, fmt.Errorf("inclusion proof hash %d: %w", i, err)
		}
	}
	leaf, err := LeafHash(e.Hash)
	if err != nil {
		return v, err
	}
	if err := VerifyInclusion(b.LeafIndex, head.Size, leaf, proof, head.Root); err != nil {
		return v, fmt.Errorf("event %s is not in the tree host %s signed at size %d: %w", e.ID, e.Host.ID, head.Size, err)
	}
	return v, nil
}

// parseVerifierKey reads an ed25519 C2SP verifier key.
func parseVerifierKey(vkey string) (name string, pub ed25519.PublicKey, err error) {
	parts := strings.SplitN(vkey, "+", 3)
	if len(parts) != 3 {
		return "", nil, fmt.Errorf("verifier key %q: want <name>+<hash>+<key>", vkey)
	}
	raw, err := base64.StdEncoding.DecodeString(parts[2])
	if err != nil || len(raw) != 1+ed25519.PublicKeySize || raw[0] != 1 {
		return "", nil, fmt.Errorf("verifier key %q: not an ed25519 key", vkey)
	}
	// Check the name and hash agree with the key.
	want, err := NoteVerifierKey(parts[0], raw[1:])
	if err != nil {
		return "", nil, err
	}
	if want != vkey {
		return "", nil, errors.New("verifier key " + vkey + ": its hash does not match its name and key")
	}
	return parts[0], raw[1:], nil
}

// ParseVerifierKey reads a host's key given as a C2SP verifier key or as a
// public key file's contents (base64 or PEM, see ParsePublicKey) together
// with the host id, and returns it as a verifier key.
func ParseVerifierKey(text, hostID string) (string, error) {
	text = strings.TrimSpace(text)
	if strings.Count(text, "+") >= 2 && !strings.HasPrefix(text, "-----") {
		if _, _, err := parseVerifierKey(text); err == nil {
			return text, nil
		}
	}
	pub, err := ParsePublicKey([]byte(text))
	if err != nil {
		return "", fmt.Errorf("key: neither a verifier key nor a public key: %w", err)
	}
	return NoteVerifierKey(hostID, pub)
}
