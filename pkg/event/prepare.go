package event

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Prepared is an event already encoded member by member in canonical form,
// except for the members assigned in chain order: id (so ids rise with seq),
// seq and prev_hash. Preparing is the costly part of sealing and needs no
// chain state, so concurrent producers prepare in parallel and only the
// cheap assembly, hashing and signing happen in chain order.
type Prepared struct {
	members []member // sorted by key; no id, seq, prev_hash, hash or sig
}

type member struct {
	key   string
	value []byte // canonical JSON
}

// Prepare encodes e for sealing. The caller must not modify e afterwards
// until it is sealed, except to set e.ID.
func Prepare(e *Event) (*Prepared, error) {
	raw, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("encode event %s: %w", e.ID, err)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil {
		return nil, fmt.Errorf("decode event %s: %w", e.ID, err)
	}
	p := &Prepared{members: make([]member, 0, len(top))}
	for k, v := range top {
		switch k {
		case "id", "seq", "prev_hash", "hash", "sig":
			continue
		}
		c, err := canonicalValue(v)
		if err != nil {
			return nil, fmt.Errorf("encode event %s member %s: %w", e.ID, k, err)
		}
		p.members = append(p.members, member{key: k, value: c})
	}
	slices.SortFunc(p.members, func(a, b member) int { return strings.Compare(a.key, b.key) })
	return p, nil
}

// canonicalValue re-encodes one JSON value with sorted object members, no
// whitespace, numbers as written and no HTML escaping: the rules of
// CanonicalizeRaw, applied to a member instead of the whole event.
func canonicalValue(raw []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// assemble writes the members plus extra ones as one object, keys sorted.
func (p *Prepared) assemble(extra ...member) []byte {
	all := make([]member, 0, len(p.members)+len(extra))
	all = append(all, p.members...)
	all = append(all, extra...)
	slices.SortFunc(all, func(a, b member) int { return strings.Compare(a.key, b.key) })
	n := 2
	for _, m := range all {
		n += len(m.key) + len(m.value) + 4
	}
	b := make([]byte, 0, n)
	b = append(b, '{')
	for i, m := range all {
		if i > 0 {
			b = append(b, ',')
		}
		// Member names are Warden's own lower-case ASCII: no escaping.
		b = append(b, '"')
		b = append(b, m.key...)
		b = append(b, '"', ':')
		b = append(b, m.value...)
	}
	return append(b, '}')
}

func chainMembers(id string, seq uint64, prevHash string) []member {
	return []member{
		{key: "id", value: strconv.AppendQuote(nil, id)}, // a ULID: nothing to escape
		{key: "seq", value: strconv.AppendUint(nil, seq, 10)},
		{key: "prev_hash", value: strconv.AppendQuote(nil, prevHash)}, // hex: nothing to escape
	}
}

// Canonical returns the canonical form (see Event.Canonical) the event has
// once it carries id, seq and prevHash.
func (p *Prepared) Canonical(id string, seq uint64, prevHash string) []byte {
	return p.assemble(chainMembers(id, seq, prevHash)...)
}

// SealPrepared seals e like Seal, from its prepared encoding and e.ID, and
// returns the sealed event's wire encoding: its canonical form plus hash and
// sig.
func (s *Signer) SealPrepared(e *Event, p *Prepared) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	e.Seq, e.PrevHash = s.lastSeq+1, s.lastHash
	e.Hash = hashBytes(p.Canonical(e.ID, e.Seq, e.PrevHash))
	e.Sig = base64.StdEncoding.EncodeToString(ed25519.Sign(s.key, []byte(e.Hash)))
	s.lastSeq, s.lastHash = e.Seq, e.Hash
	return p.assemble(append(chainMembers(e.ID, e.Seq, e.PrevHash),
		member{key: "hash", value: strconv.AppendQuote(nil, e.Hash)},
		member{key: "sig", value: strconv.AppendQuote(nil, e.Sig)}, // base64: nothing to escape
	)...)
}
