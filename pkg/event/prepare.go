package event

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"
)

// Prepared is an event already encoded member by member in canonical form,
// except for the members assigned in chain order: id (so ids rise with seq),
// seq and prev_hash. Preparing is the costly part of sealing and needs no
// chain state, so concurrent producers prepare in parallel and only the
// cheap assembly, hashing and signing happen in chain order.
type Prepared struct {
	members []member // sorted by key; no id, seq, prev_hash, hash or sig
	// buf holds the direct encoder's output, which the members' values
	// alias; nil on the generic path. Release recycles it.
	buf []byte
}

// preparedPool recycles the direct encoder's buffers: two events per SQL
// statement would otherwise allocate about 2 KiB for the collector to
// sweep.
var preparedPool = sync.Pool{New: func() any { return &Prepared{buf: make([]byte, 0, 1024), members: make([]member, 0, 9)} }}

// maxPooledBytes keeps an occasional huge event's buffer out of the pool.
const maxPooledBytes = 16 << 10

// Release hands p's memory back for later Prepare calls. The caller must
// not use p, or the wire bytes' source members, afterwards; sealed wire
// bytes are a copy and stay valid.
func (p *Prepared) Release() {
	if p == nil || p.buf == nil || cap(p.buf) > maxPooledBytes {
		return
	}
	clear(p.members)
	p.members, p.buf = p.members[:0], p.buf[:0]
	preparedPool.Put(p)
}

type member struct {
	key   string
	value []byte // canonical JSON
}

// Prepare encodes e for sealing. The caller must not modify e afterwards
// until it is sealed, except to set e.ID.
//
// The known struct members are encoded directly in canonical form (see
// appendCanonical), which is several times cheaper than encoding the event
// with encoding/json and re-encoding each member; Data values of types the
// direct encoder does not know send the whole event down the generic path.
// Both produce exactly Event.Canonical's bytes, which the tests check.
func Prepare(e *Event) (*Prepared, error) {
	return PrepareIn(nil, e)
}

// PrepareIn is Prepare for an event of a stream whose shared members are
// encoded in c: an event whose Identity, Process and Target are c's (the
// same pointers) takes their encoding from c instead of encoding them
// again. A nil c, or other pointers, encode as Prepare does.
func PrepareIn(c *Context, e *Event) (*Prepared, error) {
	p, err := prepareDirect(e, c)
	if err == errGeneric {
		return prepareGeneric(e)
	}
	return p, err
}

// prepareGeneric is the reference implementation of Prepare: encode with
// encoding/json, then re-encode every member in canonical form.
func prepareGeneric(e *Event) (*Prepared, error) {
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
// returns the sealed event's wire encoding: its canonical form plus hash.
// Prepared events are of the current schema, which carries no signature.
//
// The event is assembled once: the wire bytes are written with room for
// the hash member, which sorts right before "host" (present in every
// event), and the hash is taken over the bytes around that room, which are
// exactly the canonical form.
func (s *Signer) SealPrepared(e *Event, p *Prepared) []byte {
	return s.SealPreparedTo(nil, e, p)
}

// SealPreparedTo is SealPrepared writing the wire bytes into buf's memory
// (from its start), growing it if needed, so that a caller that is done
// with them before its next seal (the recorder: the spool copies them)
// reuses one buffer.
func (s *Signer) SealPreparedTo(buf []byte, e *Event, p *Prepared) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	e.Seq, e.PrevHash = s.lastSeq+1, s.lastHash
	wire, at := p.encode(buf[:0], e.ID, e.Seq, e.PrevHash)
	h := sha256.New()
	h.Write(wire[:at])
	h.Write(wire[at+len(hashMemberPrefix)+64+2:])
	var sum [sha256.Size]byte
	hex.Encode(wire[at+len(hashMemberPrefix):], h.Sum(sum[:0]))
	e.Hash, e.Sig = string(wire[at+len(hashMemberPrefix):at+len(hashMemberPrefix)+64]), ""
	s.lastSeq, s.lastHash = e.Seq, e.Hash
	return wire
}

// hashMemberPrefix starts the hash member in the wire form.
const hashMemberPrefix = `"hash":"`

// encode writes the wire form of the event with id, seq and prevHash and a
// hash member of 64 zero bytes into b (which must be empty), and returns it
// with the offset of that member (`"hash":"<64>",`, which precedes "host").
func (p *Prepared) encode(b []byte, id string, seq uint64, prevHash string) ([]byte, int) {
	var seqBuf [20]byte
	seqText := strconv.AppendUint(seqBuf[:0], seq, 10)
	n := 2 + len(hashMemberPrefix) + 64 + 2 + len(id) + 2 + len(prevHash) + len(seqText) + 40
	for _, m := range p.members {
		n += len(m.key) + len(m.value) + 4
	}
	b = slices.Grow(b[:0], n)
	b = append(b, '{')
	w := wireWriter{b: b, at: -1, first: true}
	// Chain members, in key order: id < prev_hash < seq.
	ci := 0
	chain := func(upTo string) {
		for ; ci < 3; ci++ {
			var key string
			switch ci {
			case 0:
				key = "id"
			case 1:
				key = "prev_hash"
			default:
				key = "seq"
			}
			if upTo != "" && key >= upTo {
				return
			}
			w.member(key)
			switch ci {
			case 0:
				w.b = appendCanonicalString(w.b, id)
			case 1:
				w.b = appendCanonicalString(w.b, prevHash)
			default:
				w.b = append(w.b, seqText...)
			}
		}
	}
	for _, m := range p.members {
		chain(m.key)
		w.member(m.key)
		w.b = append(w.b, m.value...)
	}
	chain("")
	if w.at < 0 {
		// Prepare always encodes host (a struct member without omitempty).
		panic("event: prepared event without a host member")
	}
	return append(w.b, '}'), w.at
}

// wireWriter writes an event's members in key order, and the room for the
// hash member right before host.
type wireWriter struct {
	b     []byte
	at    int
	first bool
}

func (w *wireWriter) member(key string) {
	if key == "host" && w.at < 0 {
		// The hash member goes right before host, with the comma that
		// separates them: canonical form without it is intact.
		if !w.first {
			w.b = append(w.b, ',')
		}
		w.at = len(w.b)
		w.b = append(w.b, hashMemberPrefix...)
		w.b = append(w.b, zeroHash[:]...)
		w.b = append(w.b, '"', ',')
		w.first = true // host follows without another comma
	}
	if !w.first {
		w.b = append(w.b, ',')
	}
	w.first = false
	w.b = append(w.b, '"')
	w.b = append(w.b, key...)
	w.b = append(w.b, '"', ':')
}

// zeroHash is the hash member's room before the hash is known.
var zeroHash [64]byte

// Context is the canonical encoding of the members every event of one
// stream shares: its identity, process and target. A proxied connection
// records two events per statement with the same three, and the process
// with its ancestors and their arguments is most of an event's bytes.
//
// The identity, process and target must not change once NewContext has
// encoded them: events prepared in the Context carry the encoding, and
// their hashes cover it.
type Context struct {
	identity                              *Identity
	process                               *Process
	target                                *Target
	identityJSON, processJSON, targetJSON []byte
}

// NewContext encodes the members shared by a stream's events. Any of them
// may be nil.
func NewContext(id *Identity, pr *Process, t *Target) *Context {
	c := &Context{identity: id, process: pr, target: t, identityJSON: appendIdentity(nil, id)}
	if pr != nil {
		c.processJSON = appendProcess(nil, pr)
	}
	if t != nil {
		c.targetJSON = appendTarget(nil, t)
	}
	return c
}

// errGeneric tells Prepare that prepareDirect met a value it does not
// encode itself, so the generic path must encode the event.
var errGeneric = errors.New("event needs the generic encoder")

// maxDirectDepth bounds how deep prepareDirect follows nested Data values
// before it hands the event to the generic path, which also owns the
// errors for cyclic and absurdly deep values.
const maxDirectDepth = 32

// prepareDirect encodes e's members straight into canonical form. It
// mirrors, member by member, what encoding/json writes for the struct tags
// in event.go followed by CanonicalizeRaw's re-encoding: members sorted by
// key, omitempty members left out when empty, nil pointers, slices and maps
// written as null, strings escaped by appendCanonicalString. A field added
// to these structs must be added here too; TestPrepareRandomEvents fills
// every field by reflection and fails until it is.
func prepareDirect(e *Event, c *Context) (*Prepared, error) {
	tm, err := e.Time.MarshalJSON()
	if err != nil {
		return nil, fmt.Errorf("encode event %s: %w", e.ID, err)
	}
	// One buffer holds every member; offsets are turned into slices at
	// the end, since appending may move it.
	p := preparedPool.Get().(*Prepared)
	b := p.buf[:0]
	var ends [9]int
	var keys [9]string
	n := 0
	mark := func(key string) {
		keys[n], ends[n] = key, len(b)
		n++
	}
	// Keys in byte order: data, decision, host, identity, process,
	// schema, target, time, type.
	if len(e.Data) > 0 {
		if b, err = appendCanonicalMap(b, e.Data, 1); err != nil {
			p.buf = b
			p.Release()
			if err == errGeneric {
				return nil, err
			}
			return nil, fmt.Errorf("encode event %s member data: %w", e.ID, err)
		}
		mark("data")
	}
	if d := e.Decision; d != nil {
		b = append(b, `{"action":`...)
		b = appendCanonicalString(b, string(d.Action))
		if d.Reason != "" {
			b = append(b, `,"reason":`...)
			b = appendCanonicalString(b, d.Reason)
		}
		if d.Rule != "" {
			b = append(b, `,"rule":`...)
			b = appendCanonicalString(b, d.Rule)
		}
		b = append(b, '}')
		mark("decision")
	}
	b = append(b, `{"id":`...)
	b = appendCanonicalString(b, e.Host.ID)
	b = append(b, `,"name":`...)
	b = appendCanonicalString(b, e.Host.Name)
	b = append(b, '}')
	mark("host")
	switch {
	case c != nil && e.Identity == c.identity:
		b = append(b, c.identityJSON...)
	default:
		b = appendIdentity(b, e.Identity)
	}
	mark("identity")
	if pr := e.Process; pr != nil {
		if c != nil && pr == c.process {
			b = append(b, c.processJSON...)
		} else {
			b = appendProcess(b, pr)
		}
		mark("process")
	}
	b = appendCanonicalString(b, e.Schema)
	mark("schema")
	if t := e.Target; t != nil {
		if c != nil && t == c.target {
			b = append(b, c.targetJSON...)
		} else {
			b = appendTarget(b, t)
		}
		mark("target")
	}
	// RFC 3339 text: digits, letters and punctuation json never escapes.
	b = append(b, tm...)
	mark("time")
	b = appendCanonicalString(b, string(e.Type))
	mark("type")

	p.buf = b
	start := 0
	for i := range n {
		p.members = append(p.members, member{key: keys[i], value: b[start:ends[i]:ends[i]]})
		start = ends[i]
	}
	return p, nil
}

// appendIdentity writes an event's identity member value.
func appendIdentity(b []byte, id *Identity) []byte {
	if id != nil {
		b = append(b, '{')
		if id.Email != "" {
			b = append(b, `"email":`...)
			b = appendCanonicalString(b, id.Email)
			b = append(b, ',')
		}
		b = append(b, `"groups":`...)
		b = appendCanonicalStrings(b, id.Groups)
		b = append(b, `,"issuer":`...)
		b = appendCanonicalString(b, id.Issuer)
		if id.Name != "" {
			b = append(b, `,"name":`...)
			b = appendCanonicalString(b, id.Name)
		}
		b = append(b, `,"session_id":`...)
		b = appendCanonicalString(b, id.SessionID)
		b = append(b, `,"sub":`...)
		b = appendCanonicalString(b, id.Sub)
		b = append(b, '}')
	} else {
		b = append(b, "null"...)
	}
	return b
}

// appendProcess writes an event's process member value (pr is not nil).
func appendProcess(b []byte, pr *Process) []byte {
	b = append(b, `{"ancestors":`...)
	if pr.Ancestors == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i := range pr.Ancestors {
			if i > 0 {
				b = append(b, ',')
			}
			a := &pr.Ancestors[i]
			b = append(b, '{')
			if len(a.Args) > 0 {
				b = append(b, `"args":`...)
				b = appendCanonicalStrings(b, a.Args)
				b = append(b, ',')
			}
			b = append(b, `"binary":`...)
			b = appendCanonicalString(b, a.Binary)
			b = append(b, `,"exec_id":`...)
			b = appendCanonicalString(b, a.ExecID)
			b = append(b, `,"pid":`...)
			b = strconv.AppendUint(b, uint64(a.PID), 10)
			b = append(b, `,"uid":`...)
			b = strconv.AppendUint(b, uint64(a.UID), 10)
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	b = append(b, `,"args":`...)
	b = appendCanonicalStrings(b, pr.Args)
	b = append(b, `,"binary":`...)
	b = appendCanonicalString(b, pr.Binary)
	if pr.CgroupID != 0 {
		b = append(b, `,"cgroup_id":`...)
		b = strconv.AppendUint(b, pr.CgroupID, 10)
	}
	b = append(b, `,"exec_id":`...)
	b = appendCanonicalString(b, pr.ExecID)
	b = append(b, `,"parent_exec_id":`...)
	b = appendCanonicalString(b, pr.ParentExecID)
	b = append(b, `,"pid":`...)
	b = strconv.AppendUint(b, uint64(pr.PID), 10)
	b = append(b, `,"uid":`...)
	b = strconv.AppendUint(b, uint64(pr.UID), 10)
	b = append(b, '}')
	return b
}

// appendTarget writes an event's target member value (t is not nil).
func appendTarget(b []byte, t *Target) []byte {
	b = append(b, `{"address":`...)
	b = appendCanonicalString(b, t.Address)
	b = append(b, `,"name":`...)
	b = appendCanonicalString(b, t.Name)
	b = append(b, `,"protocol":`...)
	b = appendCanonicalString(b, t.Protocol)
	b = append(b, '}')
	return b
}

// appendCanonicalStrings writes a []string as encoding/json does: nil as
// null.
func appendCanonicalStrings(b []byte, ss []string) []byte {
	if ss == nil {
		return append(b, "null"...)
	}
	b = append(b, '[')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendCanonicalString(b, s)
	}
	return append(b, ']')
}

// appendCanonicalMap writes a Data map with sorted keys. Keys that are not
// valid UTF-8 could collide once encoding/json replaces their bad bytes, so
// they go to the generic path, which keeps its behaviour exactly.
func appendCanonicalMap(b []byte, m map[string]any, depth int) ([]byte, error) {
	if m == nil {
		return append(b, "null"...), nil
	}
	if depth > maxDirectDepth {
		return b, errGeneric
	}
	var small [16]string
	keys := small[:0]
	for k := range m {
		if !utf8.ValidString(k) {
			return b, errGeneric
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b = append(b, '{')
	var err error
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendCanonicalString(b, k)
		b = append(b, ':')
		if b, err = appendCanonicalAny(b, m[k], depth); err != nil {
			return b, err
		}
	}
	return append(b, '}'), nil
}

// appendCanonicalAny writes one Data value. It handles the types producers
// put in Data; any other type (named types included, which may have their
// own MarshalJSON) returns errGeneric.
func appendCanonicalAny(b []byte, v any, depth int) ([]byte, error) {
	switch v := v.(type) {
	case nil:
		return append(b, "null"...), nil
	case string:
		return appendCanonicalString(b, v), nil
	case bool:
		return strconv.AppendBool(b, v), nil
	case float64:
		return appendCanonicalFloat(b, v, 64)
	case float32:
		return appendCanonicalFloat(b, float64(v), 32)
	case int:
		return strconv.AppendInt(b, int64(v), 10), nil
	case int8:
		return strconv.AppendInt(b, int64(v), 10), nil
	case int16:
		return strconv.AppendInt(b, int64(v), 10), nil
	case int32:
		return strconv.AppendInt(b, int64(v), 10), nil
	case int64:
		return strconv.AppendInt(b, v, 10), nil
	case uint:
		return strconv.AppendUint(b, uint64(v), 10), nil
	case uint8:
		return strconv.AppendUint(b, uint64(v), 10), nil
	case uint16:
		return strconv.AppendUint(b, uint64(v), 10), nil
	case uint32:
		return strconv.AppendUint(b, uint64(v), 10), nil
	case uint64:
		return strconv.AppendUint(b, v, 10), nil
	case json.Number:
		if v == "" {
			return append(b, '0'), nil // as encoding/json writes it
		}
		// The canonical form keeps a number's literal text; whether it
		// is a valid literal is encoding/json's call.
		if !isNumberLiteral(string(v)) {
			return b, errGeneric
		}
		return append(b, v...), nil
	case []string:
		return appendCanonicalStrings(b, v), nil
	case []any:
		if v == nil {
			return append(b, "null"...), nil
		}
		if depth >= maxDirectDepth {
			return b, errGeneric
		}
		b = append(b, '[')
		var err error
		for i, x := range v {
			if i > 0 {
				b = append(b, ',')
			}
			if b, err = appendCanonicalAny(b, x, depth+1); err != nil {
				return b, err
			}
		}
		return append(b, ']'), nil
	case map[string]any:
		return appendCanonicalMap(b, v, depth+1)
	}
	return b, errGeneric
}

// isNumberLiteral reports whether s is one JSON number: text made of
// number characters only (so no whitespace, string or object) that is valid
// JSON. Anything else goes to the generic path, which rejects it.
func isNumberLiteral(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= '0' && c <= '9', c == '-', c == '+', c == '.', c == 'e', c == 'E':
		default:
			return false
		}
	}
	return json.Valid([]byte(s))
}

// appendCanonicalFloat writes f as encoding/json's float encoder does
// (ES6 number formatting); the canonical form keeps that text as is.
func appendCanonicalFloat(b []byte, f float64, bits int) ([]byte, error) {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return b, fmt.Errorf("json: unsupported value: %s", strconv.FormatFloat(f, 'g', -1, bits))
	}
	abs := math.Abs(f)
	format := byte('f')
	if abs != 0 {
		if bits == 64 && (abs < 1e-6 || abs >= 1e21) || bits == 32 && (float32(abs) < 1e-6 || float32(abs) >= 1e21) {
			format = 'e'
		}
	}
	b = strconv.AppendFloat(b, f, format, -1, bits)
	if format == 'e' {
		// Clean up e-09 to e-9.
		n := len(b)
		if n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b, nil
}

// appendCanonicalString writes s as the canonical form does (docs/events.md
// rule 4). Bytes that are not UTF-8 come out as a literal U+FFFD: the
// reference path escapes them as \ufffd, then decodes and re-encodes that.
func appendCanonicalString(b []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, "\uFFFD"...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
