package event

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"
)

// Signed checkpoints (schema warden.event/v2).
//
// Events no longer carry a signature each. Instead the agent signs, about
// every second, the head of its Merkle log (merkle.go) as a C2SP signed note
// (https://c2sp.org/signed-note) whose text is a C2SP checkpoint
// (https://c2sp.org/tlog-checkpoint):
//
//	<origin: the host id>
//	<tree size, decimal>
//	<root hash, standard base64>
//
// followed by one ed25519 signature line of the agent's key, named after the
// host id. The note travels inside a Checkpoint message on the host's
// "checkpoint" subject, in the same stream as its events.

// Checkpoint message constants.
const (
	// CheckpointSchema is Checkpoint.Schema.
	CheckpointSchema = "warden.checkpoint/v1"
	// CheckpointType is Checkpoint.Type, and the last token of the subject
	// checkpoints travel on. No event type is a single token.
	CheckpointType Type = "checkpoint"
	// DefaultCheckpointInterval is how often an agent signs its tree head
	// when events were sealed since the last checkpoint.
	DefaultCheckpointInterval = time.Second
	// DefaultCheckpointEvents is how many events an agent seals at most
	// between two checkpoints.
	DefaultCheckpointEvents = 1000
)

// Checkpoint is the message an agent publishes for each signed tree head.
// Note is authoritative; Size and Root repeat it for readers, and a verifier
// checks that they agree.
type Checkpoint struct {
	Schema string    `json:"schema"`
	ID     string    `json:"id"` // ULID; the Nats-Msg-Id
	Time   time.Time `json:"time"`
	Type   Type      `json:"type"` // always "checkpoint"
	Host   Host      `json:"host"`
	Size   uint64    `json:"size"`
	// Root is the standard base64 root hash, as in the note.
	Root string `json:"root"`
	// PrevSize is the size of the agent's previous checkpoint and
	// Consistency the RFC 6962 consistency proof from it to Size (standard
	// base64 hashes), so that anyone holding the previous checkpoint can
	// check that the tree only grew.
	PrevSize    uint64   `json:"prev_size"`
	Consistency []string `json:"consistency"`
	// IntervalMS is the agent's checkpoint interval: the collector flags a
	// host whose events stay uncovered for three of them.
	IntervalMS int64 `json:"interval_ms"`
	// Note is the C2SP signed note.
	Note string `json:"note"`
}

// Subject returns the NATS subject a checkpoint is published on: the one
// an event of type "checkpoint" of its host would use.
func (c *Checkpoint) Subject() string {
	e := Event{Type: CheckpointType, Host: c.Host}
	return e.Subject()
}

// TreeHead is the content of a checkpoint note.
type TreeHead struct {
	Origin string
	Size   uint64
	Root   []byte
}

// Text returns the C2SP checkpoint text of h.
func (h TreeHead) Text() string {
	return h.Origin + "\n" + strconv.FormatUint(h.Size, 10) + "\n" + base64.StdEncoding.EncodeToString(h.Root) + "\n"
}

// ParseTreeHead reads a C2SP checkpoint text. Extension lines after the
// root hash are allowed and ignored.
func ParseTreeHead(text string) (TreeHead, error) {
	lines := strings.Split(text, "\n")
	if len(lines) < 4 || lines[len(lines)-1] != "" {
		return TreeHead{}, errors.New("checkpoint text: want origin, size and root hash lines, each ending in a newline")
	}
	h := TreeHead{Origin: lines[0]}
	if h.Origin == "" {
		return TreeHead{}, errors.New("checkpoint text: empty origin")
	}
	size, err := strconv.ParseUint(lines[1], 10, 64)
	if err != nil || (len(lines[1]) > 1 && lines[1][0] == '0') {
		return TreeHead{}, fmt.Errorf("checkpoint text: size %q is not a decimal number", lines[1])
	}
	h.Size = size
	root, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(root) != 32 {
		return TreeHead{}, fmt.Errorf("checkpoint text: root hash %q is not 32 bytes of base64", lines[2])
	}
	h.Root = root
	return h, nil
}

// NoteVerifierKey returns the C2SP verifier key ("<name>+<hash>+<key>") of
// a host's ed25519 public key: what an auditor pins to check checkpoints
// offline.
func NoteVerifierKey(hostID string, pub ed25519.PublicKey) (string, error) {
	vkey, err := note.NewEd25519VerifierKey(hostID, pub)
	if err != nil {
		return "", fmt.Errorf("verifier key of host %q: %w", hostID, err)
	}
	return vkey, nil
}

// NewNoteSigner returns the signer of a host's checkpoints: its ed25519
// agent key, named after the host id.
func NewNoteSigner(hostID string, key ed25519.PrivateKey) (note.Signer, error) {
	pub, ok := key.Public().(ed25519.PublicKey)
	if !ok || len(key) != ed25519.PrivateKeySize {
		return nil, errors.New("checkpoint signer: not an ed25519 key")
	}
	vkey, err := NoteVerifierKey(hostID, pub)
	if err != nil {
		return nil, err
	}
	// vkey is name+hash+base64(0x01||pub); the signer key has the same
	// name and hash, with the seed.
	// (The name holds no '+'; the base64 key may.)
	parts := strings.SplitN(vkey, "+", 3)
	skey := "PRIVATE+KEY+" + hostID + "+" + parts[1] + "+" +
		base64.StdEncoding.EncodeToString(append([]byte{1}, key.Seed()...))
	s, err := note.NewSigner(skey)
	if err != nil {
		return nil, fmt.Errorf("checkpoint signer of host %q: %w", hostID, err)
	}
	return s, nil
}

// SignTreeHead returns the signed note of h.
func SignTreeHead(s note.Signer, h TreeHead) (string, error) {
	b, err := note.Sign(&note.Note{Text: h.Text()}, s)
	if err != nil {
		return "", fmt.Errorf("sign checkpoint of %s at size %d: %w", h.Origin, h.Size, err)
	}
	return string(b), nil
}

// OpenTreeHead verifies a signed checkpoint note against one host's key
// and returns its tree head. The origin must be the host id.
func OpenTreeHead(signed string, hostID string, pub ed25519.PublicKey) (TreeHead, error) {
	vkey, err := NoteVerifierKey(hostID, pub)
	if err != nil {
		return TreeHead{}, err
	}
	return OpenTreeHeadVKey(signed, vkey)
}

// OpenTreeHeadVKey is OpenTreeHead with the key given as a C2SP verifier
// key, whose name must be the checkpoint's origin.
func OpenTreeHeadVKey(signed, vkey string) (TreeHead, error) {
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return TreeHead{}, fmt.Errorf("verifier key %q: %w", vkey, err)
	}
	n, err := note.Open([]byte(signed), note.VerifierList(v))
	if err != nil {
		return TreeHead{}, fmt.Errorf("checkpoint signature: %w", err)
	}
	h, err := ParseTreeHead(n.Text)
	if err != nil {
		return TreeHead{}, err
	}
	if h.Origin != v.Name() {
		return TreeHead{}, fmt.Errorf("checkpoint origin %q is not the key's host %q", h.Origin, v.Name())
	}
	return h, nil
}

// Verify checks the checkpoint message: its signed note under the host's
// key, origin = host id, and that Size and Root repeat the note.
func (c *Checkpoint) Verify(pub ed25519.PublicKey) (TreeHead, error) {
	h, err := OpenTreeHead(c.Note, c.Host.ID, pub)
	if err != nil {
		return TreeHead{}, err
	}
	if h.Size != c.Size || base64.StdEncoding.EncodeToString(h.Root) != c.Root {
		return TreeHead{}, fmt.Errorf("checkpoint message says size %d root %s, its note size %d root %s",
			c.Size, c.Root, h.Size, base64.StdEncoding.EncodeToString(h.Root))
	}
	return h, nil
}

// ConsistencyProof decodes Consistency.
func (c *Checkpoint) ConsistencyProof() ([][]byte, error) {
	out := make([][]byte, len(c.Consistency))
	for i, s := range c.Consistency {
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil || len(b) != 32 {
			return nil, fmt.Errorf("consistency proof hash %d (%q) is not 32 bytes of base64", i, s)
		}
		out[i] = b
	}
	return out, nil
}

// EncodeHashes returns hashes as standard base64 strings.
func EncodeHashes(hs [][]byte) []string {
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = base64.StdEncoding.EncodeToString(h)
	}
	return out
}

// DecodeCheckpoint parses a checkpoint message.
func DecodeCheckpoint(data []byte) (*Checkpoint, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	var c Checkpoint
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("not a JSON checkpoint: %w", err)
	}
	switch {
	case c.Schema != CheckpointSchema:
		return nil, fmt.Errorf("checkpoint schema %q, want %q", c.Schema, CheckpointSchema)
	case c.Type != CheckpointType:
		return nil, fmt.Errorf("checkpoint type %q, want %q", c.Type, CheckpointType)
	case c.ID == "":
		return nil, errors.New("checkpoint has no id")
	case c.Host.ID == "":
		return nil, fmt.Errorf("checkpoint %s has no host.id", c.ID)
	case c.Note == "":
		return nil, fmt.Errorf("checkpoint %s has no note", c.ID)
	}
	return &c, nil
}

// Problem kinds of checkpoints and of the Merkle log, raised by the
// collector (see docs/integrity.md).
const (
	// CheckpointMalformed: a message on a checkpoint subject that is not a
	// checkpoint.
	CheckpointMalformed ProblemKind = "checkpoint_malformed"
	// CheckpointBadSignature: the note does not verify under the host's key
	// with the host id as origin: forged, or another agent's checkpoint.
	CheckpointBadSignature ProblemKind = "checkpoint_bad_signature"
	// TreeTruncated: a checkpoint for a smaller tree than one the host
	// already signed: its history was truncated.
	TreeTruncated ProblemKind = "tree_truncated"
	// TreeInconsistent: a checkpoint that does not extend the previous one
	// (its consistency proof fails, or another root for the same size): the
	// history was rewritten, or a restarted agent reused sequence numbers.
	TreeInconsistent ProblemKind = "tree_inconsistent"
	// NotCovered: the events the collector stored for a range of seqs do
	// not hash to the root the agent signed: an event was forged, or one
	// was swapped for another.
	NotCovered ProblemKind = "not_covered"
	// CheckpointLate: events stayed without a covering checkpoint for more
	// than three checkpoint intervals.
	CheckpointLate ProblemKind = "checkpoint_late"
)
