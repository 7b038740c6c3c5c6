package event

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sync"
)

// Canonical returns the canonical encoding of e that its hash covers.
//
// The canonical form is defined on the JSON value, not on Go types, so that a
// verifier in any language (or a collector decoding into an older struct) can
// reproduce it from the wire bytes (see CanonicalizeRaw and docs/events.md):
//
//   - the event encoded as a JSON object, members "hash" and "sig" removed;
//   - object members sorted by key (byte-wise) at every depth;
//   - no insignificant whitespace;
//   - numbers written exactly as they appear in the encoded event;
//   - strings escaped as Go's encoding/json does with HTML escaping off.
func (e *Event) Canonical() ([]byte, error) {
	raw, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("encode event %s: %w", e.ID, err)
	}
	return CanonicalizeRaw(raw)
}

// CanonicalizeRaw returns the canonical form (see Event.Canonical) of one
// encoded event as received on the wire. Members unknown to this version of
// the struct are kept, so a newer agent's events still verify.
func CanonicalizeRaw(raw []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	// Numbers stay as their literal text: a round trip through float64 would
	// change integers above 2^53 and with them the hash.
	dec.UseNumber()
	var v map[string]any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("decode event: %w", err)
	}
	if v == nil {
		return nil, fmt.Errorf("decode event: not a JSON object")
	}
	delete(v, "hash")
	delete(v, "sig")
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	// Go encodes maps with sorted keys, which gives the sorted-member rule.
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("encode canonical event: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// ComputeHash returns the hex SHA-256 of e's canonical form (see Canonical).
// Hash and Sig do not take part. It returns "" if e cannot be encoded, for
// example when Data holds a NaN; such an event can never verify.
func (e *Event) ComputeHash() string {
	c, err := e.Canonical()
	if err != nil {
		return ""
	}
	return hashBytes(c)
}

// HashRaw returns the hex SHA-256 of the canonical form of an encoded event.
// For a v1 event decoded without loss it equals ComputeHash.
func HashRaw(raw []byte) (string, error) {
	c, err := CanonicalizeRaw(raw)
	if err != nil {
		return "", err
	}
	return hashBytes(c), nil
}

func hashBytes(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// UnmarshalJSON decodes an event keeping numbers in Data as json.Number, so
// that re-encoding it for verification reproduces the agent's bytes exactly.
func (e *Event) UnmarshalJSON(b []byte) error {
	// The alias has Event's fields but not its methods, which stops recursion.
	type plain Event
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var p plain
	if err := dec.Decode(&p); err != nil {
		return err
	}
	*e = Event(p)
	return nil
}

// Signer extends one agent's hash chain. It is safe for concurrent use, but
// callers that must store events in chain order (the recorder) seal and store
// under their own lock. Despite its name it signs only warden.event/v1
// events: from v2 the agent signs checkpoints of its Merkle log instead.
type Signer struct {
	key ed25519.PrivateKey

	mu       sync.Mutex
	lastSeq  uint64
	lastHash string
}

// NewSigner returns a Signer that continues a chain whose head is
// (lastSeq, lastHash). A new chain starts with NewSigner(key, 0, ""). key
// is used only for v1 events and may be nil otherwise.
func NewSigner(key ed25519.PrivateKey, lastSeq uint64, lastHash string) *Signer {
	return &Signer{key: key, lastSeq: lastSeq, lastHash: lastHash}
}

// Seal links e to the chain: Seq is the previous seq plus one, PrevHash the
// previous hash and Hash e.ComputeHash(). The first event of a chain has
// seq 1 and an empty prev_hash. A v1 event (Schema SchemaV1) is also signed:
// Sig is the standard base64 ed25519 signature of the ASCII hex Hash.
//
// If e cannot be encoded (see ComputeHash) Seal leaves the chain where it was
// and e with Seq 0 and empty Hash and Sig; callers check e.Hash != "".
func (s *Signer) Seal(e *Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e.Seq = s.lastSeq + 1
	e.PrevHash = s.lastHash
	e.Hash, e.Sig = "", ""
	h := e.ComputeHash()
	if h == "" {
		e.Seq, e.PrevHash = 0, ""
		return
	}
	e.Hash = h
	if e.Schema == SchemaV1 && len(s.key) == ed25519.PrivateKeySize {
		e.Sig = base64.StdEncoding.EncodeToString(ed25519.Sign(s.key, []byte(h)))
	}
	s.lastSeq, s.lastHash = e.Seq, e.Hash
}

// Head returns the seq and hash of the last sealed event.
func (s *Signer) Head() (seq uint64, hash string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastSeq, s.lastHash
}

// KeyRing finds the public key a host signs its events with.
type KeyRing interface {
	PublicKey(hostID string) (ed25519.PublicKey, bool)
}

// StaticKeys is a fixed KeyRing, keyed by host ID.
type StaticKeys map[string]ed25519.PublicKey

// PublicKey implements KeyRing.
func (k StaticKeys) PublicKey(hostID string) (ed25519.PublicKey, bool) {
	pub, ok := k[hostID]
	return pub, ok
}

// ProblemKind classifies a verification failure.
type ProblemKind string

// Problem kinds reported by Verifier.Check.
const (
	// UnknownKey: no public key for the event's host; nothing about the
	// event can be trusted, so it does not move the host's chain.
	// (A v2 event is authenticated by the checkpoints covering it, which
	// the host's key signs; an unknown host can sign none.)
	UnknownKey ProblemKind = "unknown_key"
	// BadSignature: a v1 event's sig is not a valid signature of hash by
	// the host's key. The event is forged; it does not move the chain.
	BadSignature ProblemKind = "bad_signature"
	// BadHash: the event's content does not match its (validly signed) hash:
	// it was modified after sealing.
	BadHash ProblemKind = "bad_hash"
	// Gap: seq jumped past the expected next value; events are missing.
	Gap ProblemKind = "gap"
	// Replay: seq was already seen (a duplicate, or a different event that
	// claims an already used seq).
	Replay ProblemKind = "replay"
	// Reorder: a seq previously reported missing by a Gap arrived late.
	Reorder ProblemKind = "reorder"
	// BrokenLink: prev_hash is not the hash of the previous event.
	BrokenLink ProblemKind = "broken_link"
)

// Problem is one verification failure of one event.
type Problem struct {
	Kind   ProblemKind `json:"kind"`
	Detail string      `json:"detail"`
	// Expected and Got are the seqs involved for Gap, Replay and Reorder,
	// zero otherwise.
	Expected uint64 `json:"expected,omitempty"`
	Got      uint64 `json:"got,omitempty"`
}

// String returns "kind: detail".
func (p Problem) String() string { return string(p.Kind) + ": " + p.Detail }

// Bounds on the per-host memory a Verifier keeps to tell a replay from a late
// (reordered) event. Older history is forgotten: a replay of a seq older than
// the window is still reported, as Replay without a content comparison.
const (
	seenWindow  = 4096
	maxMissing  = 256
	missingSpan = 1 << 20 // a gap larger than this is not remembered seq by seq
)

// chainState is what a Verifier remembers about one host.
type chainState struct {
	lastSeq  uint64
	lastHash string
	// seen maps recent seqs to their hash, to tell a duplicate from an
	// equivocation (same seq, different content).
	seen  map[uint64]string
	order []uint64 // insertion order of seen, oldest first
	// missing holds seq ranges reported as Gap, to recognise late arrivals.
	missing []seqRange
}

type seqRange struct{ from, to uint64 } // inclusive

// Verifier checks events against their hosts' keys and hash chains. It keeps
// per-host chain state in memory; a collector that restarts calls Resume with
// the head it stored. It is safe for concurrent use.
type Verifier struct {
	keys KeyRing

	mu    sync.Mutex
	hosts map[string]*chainState
}

// NewVerifier returns a Verifier that trusts keys.
func NewVerifier(keys KeyRing) *Verifier {
	return &Verifier{keys: keys, hosts: make(map[string]*chainState)}
}

// Resume sets a host's chain head, as stored by a collector before a restart,
// so that verification continues at lastSeq+1 linking to lastHash.
func (v *Verifier) Resume(hostID string, lastSeq uint64, lastHash string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.hosts[hostID] = &chainState{lastSeq: lastSeq, lastHash: lastHash, seen: map[uint64]string{}}
}

// Head returns the last accepted seq and hash of a host's chain.
func (v *Verifier) Head(hostID string) (lastSeq uint64, lastHash string, ok bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	st, ok := v.hosts[hostID]
	if !ok {
		return 0, "", false
	}
	return st.lastSeq, st.lastHash, true
}

// Check verifies one event and advances its host's chain. It returns nil when
// the event is intact and in order.
//
// Events must be checked in the order the agent published them. After a Gap
// the chain continues from the event that revealed it, so only that event is
// flagged. An event with a valid signature but modified content (BadHash)
// still advances the chain to its signed hash, so its successor links
// cleanly; a forged event (UnknownKey, BadSignature) never advances it.
func (v *Verifier) Check(e *Event) []Problem {
	return v.Chain(e, v.Authenticate(e))
}

// Authenticate checks what one event shows on its own: a known key, for a
// v1 event a signature over its hash, and a hash over its content. It
// touches no chain state, so a consumer can authenticate a batch
// concurrently (the costly part: canonical JSON, and ed25519 for v1) and
// then Chain the events in order. A v2 event is authenticated later, by the
// signed checkpoint whose tree covers it.
func (v *Verifier) Authenticate(e *Event) []Problem {
	pub, ok := v.keys.PublicKey(e.Host.ID)
	if !ok {
		return []Problem{{Kind: UnknownKey, Detail: fmt.Sprintf("no public key for host %q", e.Host.ID)}}
	}
	if e.Schema == SchemaV1 {
		sig, err := base64.StdEncoding.DecodeString(e.Sig)
		if err != nil || !ed25519.Verify(pub, []byte(e.Hash), sig) {
			return []Problem{{Kind: BadSignature, Detail: fmt.Sprintf("seq %d: signature does not match hash under host %q key", e.Seq, e.Host.ID)}}
		}
	}
	if got := e.ComputeHash(); got != e.Hash {
		return []Problem{{Kind: BadHash, Detail: fmt.Sprintf("seq %d: content hashes to %s, event claims %s", e.Seq, got, e.Hash)}}
	}
	return nil
}

// AuthenticateRaw is Authenticate for an event decoded from raw, its bytes
// as received: the hash is checked over raw (members unknown to this
// version included, as the canonical form defines), which is also much
// cheaper than re-encoding the decoded event. See RawHashMatches.
func (v *Verifier) AuthenticateRaw(e *Event, raw []byte) []Problem {
	pub, ok := v.keys.PublicKey(e.Host.ID)
	if !ok {
		return []Problem{{Kind: UnknownKey, Detail: fmt.Sprintf("no public key for host %q", e.Host.ID)}}
	}
	if e.Schema == SchemaV1 {
		sig, err := base64.StdEncoding.DecodeString(e.Sig)
		if err != nil || !ed25519.Verify(pub, []byte(e.Hash), sig) {
			return []Problem{{Kind: BadSignature, Detail: fmt.Sprintf("seq %d: signature does not match hash under host %q key", e.Seq, e.Host.ID)}}
		}
	}
	if !RawHashMatches(raw, e.Hash) {
		got, err := HashRaw(raw)
		if err != nil {
			got = "(not encodable: " + err.Error() + ")"
		}
		return []Problem{{Kind: BadHash, Detail: fmt.Sprintf("seq %d: content hashes to %s, event claims %s", e.Seq, got, e.Hash)}}
	}
	return nil
}

// RawHashMatches reports whether raw, an encoded event, hashes to claimed
// under the canonical form. Agents send events in canonical form with the
// hash member inserted, so the fast path hashes raw with that member cut
// out: a match proves the bytes are the ones the agent hashed (anything
// else would be a SHA-256 collision). Otherwise raw is canonicalized (an
// encoder that writes another layout, or a tampered event) and compared.
func RawHashMatches(raw []byte, claimed string) bool {
	if len(claimed) == 64 {
		member := []byte(`"hash":"` + claimed + `"`)
		if i := bytes.Index(raw, member); i > 0 {
			j := i + len(member)
			var cut [2][]byte
			switch {
			case j < len(raw) && raw[j] == ',':
				cut = [2][]byte{raw[:i], raw[j+1:]}
			case raw[i-1] == ',':
				cut = [2][]byte{raw[:i-1], raw[j:]}
			default:
				cut = [2][]byte{raw[:i], raw[j:]}
			}
			h := sha256.New()
			h.Write(cut[0])
			h.Write(cut[1])
			var sum [sha256.Size]byte
			if hex.EncodeToString(h.Sum(sum[:0])) == claimed {
				return true
			}
		}
	}
	got, err := HashRaw(raw)
	return err == nil && got == claimed
}

// Chain places an event in its host's chain, given what Authenticate found,
// and returns those problems plus any of the chain's. Forged events (unknown
// key, bad signature) do not move the chain; a modified one (bad hash) moves
// it to the signed hash, so only that event is flagged. Events of one host
// must be chained in the order they were received.
func (v *Verifier) Chain(e *Event, auth []Problem) []Problem {
	for _, p := range auth {
		if p.Kind == UnknownKey || p.Kind == BadSignature {
			return auth
		}
	}
	probs := append([]Problem(nil), auth...)

	v.mu.Lock()
	defer v.mu.Unlock()
	st, known := v.hosts[e.Host.ID]
	if !known {
		st = &chainState{seen: map[uint64]string{}}
		v.hosts[e.Host.ID] = st
	}
	switch next := st.lastSeq + 1; {
	case e.Seq == next:
		if e.PrevHash != st.lastHash {
			probs = append(probs, Problem{Kind: BrokenLink, Detail: fmt.Sprintf("seq %d: prev_hash %s, previous event hashed %s", e.Seq, e.PrevHash, st.lastHash)})
		}
		st.advance(e.Seq, e.Hash)
	case e.Seq > next:
		detail := fmt.Sprintf("expected seq %d, got %d (%d missing)", next, e.Seq, e.Seq-next)
		if !known {
			detail = fmt.Sprintf("first event seen from host %q has seq %d, expected 1 (%d missing)", e.Host.ID, e.Seq, e.Seq-next)
		}
		probs = append(probs, Problem{Kind: Gap, Detail: detail, Expected: next, Got: e.Seq})
		st.addMissing(next, e.Seq-1)
		st.advance(e.Seq, e.Hash)
	default: // e.Seq <= lastSeq
		if st.takeMissing(e.Seq) {
			probs = append(probs, Problem{Kind: Reorder, Detail: fmt.Sprintf("seq %d arrived after seq %d (it was reported missing)", e.Seq, st.lastSeq), Expected: st.lastSeq + 1, Got: e.Seq})
			st.remember(e.Seq, e.Hash)
			break
		}
		detail := fmt.Sprintf("seq %d already seen (last seq %d)", e.Seq, st.lastSeq)
		if h, ok := st.seen[e.Seq]; ok {
			if h == e.Hash {
				detail = fmt.Sprintf("seq %d delivered again, same content (last seq %d)", e.Seq, st.lastSeq)
			} else {
				detail = fmt.Sprintf("seq %d reused with different content: hash %s, first seen %s (last seq %d)", e.Seq, e.Hash, h, st.lastSeq)
			}
		}
		probs = append(probs, Problem{Kind: Replay, Detail: detail, Expected: st.lastSeq + 1, Got: e.Seq})
	}
	return probs
}

func (st *chainState) advance(seq uint64, hash string) {
	st.lastSeq, st.lastHash = seq, hash
	st.remember(seq, hash)
}

func (st *chainState) remember(seq uint64, hash string) {
	if _, ok := st.seen[seq]; ok {
		return
	}
	st.seen[seq] = hash
	st.order = append(st.order, seq)
	if len(st.order) > seenWindow {
		delete(st.seen, st.order[0])
		st.order = st.order[1:]
	}
}

func (st *chainState) addMissing(from, to uint64) {
	if to-from >= missingSpan {
		// Remember only the most recent part of a huge gap; earlier late
		// arrivals are then reported as Replay, which is still a failure.
		from = to - missingSpan + 1
	}
	st.missing = append(st.missing, seqRange{from, to})
	if len(st.missing) > maxMissing {
		st.missing = st.missing[1:]
	}
}

// takeMissing reports whether seq lies in a remembered gap and removes it.
func (st *chainState) takeMissing(seq uint64) bool {
	for i, r := range st.missing {
		if seq < r.from || seq > r.to {
			continue
		}
		var repl []seqRange
		if seq > r.from {
			repl = append(repl, seqRange{r.from, seq - 1})
		}
		if seq < r.to {
			repl = append(repl, seqRange{seq + 1, r.to})
		}
		st.missing = append(st.missing[:i], append(repl, st.missing[i+1:]...)...)
		return true
	}
	return false
}
