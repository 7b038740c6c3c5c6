package event

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"
)

func preparedSamples() []*Event {
	return []*Event{
		{Schema: Schema, ID: "01A", Time: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC), Type: AgentStart, Host: Host{ID: "h", Name: "n"}},
		{
			Schema: Schema, ID: "01B", Time: time.Now().UTC(), Type: NetConnect, Host: Host{ID: "h"},
			Identity: &Identity{Sub: "alice", Email: "a@x", Groups: []string{"b", "a"}, Issuer: "https://i", SessionID: "s"},
			Process:  &Process{ExecID: "e", PID: 4, Args: []string{"psql", "-c", "select '<&>' \u2028"}, Ancestors: []Ancestor{{ExecID: "p", PID: 1}}},
			Target:   &Target{Name: "db", Protocol: "postgres", Address: "10.0.0.5:5432"},
			Decision: &Decision{Action: Deny, Rule: "no-ddl", Reason: "warden: \"quoted\"\n"},
			Data: map[string]any{"z": 1, "a": []any{"x", 2.5, nil, true}, "big": json.Number("18446744073709551615"),
				"nested": map[string]any{"b": 1, "a": map[string]any{"d": "é", "c": ""}}},
		},
	}
}

// The prepared path must produce exactly the canonical form the spec
// defines (Event.Canonical), or events would not verify.
func TestPreparedMatchesCanonical(t *testing.T) {
	_, key, _ := ed25519.GenerateKey(nil)
	for _, e := range preparedSamples() {
		p, err := Prepare(e)
		if err != nil {
			t.Fatal(err)
		}
		for _, chain := range []struct {
			seq  uint64
			prev string
		}{{1, ""}, {42, "ab12"}, {math.MaxUint64, "ff"}} {
			e.Seq, e.PrevHash = chain.seq, chain.prev
			want, err := e.Canonical()
			if err != nil {
				t.Fatal(err)
			}
			if got := p.Canonical(e.ID, chain.seq, chain.prev); string(got) != string(want) {
				t.Fatalf("prepared canonical differs:\n got %s\nwant %s", got, want)
			}
		}

		s := NewSigner(key, 6, "cafe")
		wire := s.SealPrepared(e, p)
		if e.Seq != 7 || e.PrevHash != "cafe" {
			t.Fatalf("chain fields %d %q", e.Seq, e.PrevHash)
		}
		if h, err := HashRaw(wire); err != nil || h != e.Hash {
			t.Fatalf("wire bytes hash to %s (%v), event claims %s", h, err, e.Hash)
		}
		// The wire form is the canonical form with the hash member
		// inserted before host: encoded once, nothing else differs.
		canon := string(p.Canonical(e.ID, e.Seq, e.PrevHash))
		if got := strings.Replace(string(wire), `"hash":"`+e.Hash+`",`, "", 1); got != canon {
			t.Fatalf("wire form is not the canonical form plus hash:\n got %s\nwant %s", got, canon)
		}
		var back Event
		if err := json.Unmarshal(wire, &back); err != nil {
			t.Fatal(err)
		}
		v := NewVerifier(StaticKeys{"h": key.Public().(ed25519.PublicKey)})
		v.Resume("h", 6, "cafe")
		if probs := v.Check(&back); len(probs) != 0 {
			t.Fatalf("sealed event does not verify: %+v", probs)
		}
	}
}

func TestPrepareRejectsUnencodable(t *testing.T) {
	if _, err := Prepare(&Event{ID: "x", Data: map[string]any{"n": math.NaN()}}); err == nil {
		t.Fatal("NaN accepted")
	}
}

// TestPrepareRandomEvents checks the direct encoder against the reference
// (Event.Canonical) and the generic path over many generated events. The
// generator fills every field of the event structs by reflection, so a
// field added to them without a matching change in prepareDirect fails
// here.
func TestPrepareRandomEvents(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	n := 20000
	if testing.Short() {
		n = 2000
	}
	direct := 0
	var other *Context
	for i := range n {
		e := &Event{}
		fillRandom(rng, reflect.ValueOf(e).Elem(), 0)
		// The chain members are written by Prepared.Canonical, which
		// trusts them to be a ULID and hex.
		e.ID = fmt.Sprintf("01J%023d", i)
		e.PrevHash = fmt.Sprintf("%x", rng.Uint64())
		if rng.IntN(8) == 0 {
			e.Data = nil
		}
		want, werr := e.Canonical()
		p, perr := Prepare(e)
		if _, derr := prepareDirect(e, nil); derr != errGeneric {
			direct++
		}
		if (werr != nil) != (perr != nil) {
			t.Fatalf("event %d: Canonical error %v, Prepare error %v\n%#v", i, werr, perr, e)
		}
		if werr != nil {
			continue
		}
		if got := p.Canonical(e.ID, e.Seq, e.PrevHash); !bytes.Equal(got, want) {
			t.Fatalf("event %d: prepared canonical differs:\n got %s\nwant %s", i, got, want)
		}
		// A stream's context (its own pointers) and another stream's
		// (the previous event's) give the same bytes.
		for _, c := range []*Context{NewContext(e.Identity, e.Process, e.Target), other} {
			pc, err := PrepareIn(c, e)
			if err != nil {
				t.Fatalf("event %d: in context: %v", i, err)
			}
			if got := pc.Canonical(e.ID, e.Seq, e.PrevHash); !bytes.Equal(got, want) {
				t.Fatalf("event %d: prepared in context differs:\n got %s\nwant %s", i, got, want)
			}
			pc.Release()
		}
		other = NewContext(e.Identity, e.Process, e.Target)
		g, err := prepareGeneric(e)
		if err != nil {
			t.Fatalf("event %d: generic: %v", i, err)
		}
		if got, gen := p.Canonical(e.ID, e.Seq, e.PrevHash), g.Canonical(e.ID, e.Seq, e.PrevHash); !bytes.Equal(got, gen) {
			t.Fatalf("event %d: direct and generic differ:\n got %s\nwant %s", i, got, gen)
		}
	}
	// The generator must mostly exercise the direct encoder, not the
	// generic fallback.
	if direct < n/2 {
		t.Fatalf("only %d of %d events took the direct path", direct, n)
	}
}

// randomStrings are the awkward cases of the canonical string rules.
var randomStrings = []string{
	"", "a", "alice", "<&>", "</script>", "\u2028", "\u2029", "x\u2028y\u2029z", "é", "日本語", "🙂",
	"\"quoted\"", `back\slash`, "\b\f\n\r\t", "\x00\x01\x1f\x7f", "bad\xffutf8", "\xed\xa0\x80", "\xc3",
	"a/b", "'single'", "\ufffd", "tab\there", "emoji\U0001F600end", strings.Repeat("long ", 40),
}

func randomString(rng *rand.Rand) string {
	if rng.IntN(4) == 0 {
		// Mix pieces, so escapes land at every position.
		var b strings.Builder
		for range rng.IntN(5) {
			b.WriteString(randomStrings[rng.IntN(len(randomStrings))])
		}
		return b.String()
	}
	return randomStrings[rng.IntN(len(randomStrings))]
}

var randomNumbers = []json.Number{
	"0", "-0", "1", "-1", "18446744073709551615", "123456789012345678901234567890", "1.5", "-2.5e-10",
	"1E+300", "0.000001", "", "01", "1 ", " 1", "+1", "1e", "NaN", "0x10", "1.", ".5", `"1"`, "[1]",
}

var randomFloats = []float64{
	0, math.Copysign(0, -1), 1, -1, 0.1, 1e-6, 1e-7, 9.999e-7, 1e20, 1e21, 1.5e300, -2.5e-300,
	math.MaxFloat64, math.SmallestNonzeroFloat64, 123456789.125, 1 << 53, 1<<53 + 1, math.NaN(), math.Inf(1),
}

// randomValue returns a Data value: mostly types the direct encoder
// handles, sometimes one it leaves to the generic path.
func randomValue(rng *rand.Rand, depth int) any {
	k := rng.IntN(24)
	if depth > 3 && k >= 18 {
		k = rng.IntN(18)
	}
	switch k {
	case 0:
		return nil
	case 1, 2, 3:
		return randomString(rng)
	case 4:
		return rng.IntN(2) == 0
	case 5:
		return randomFloats[rng.IntN(len(randomFloats))] * float64(rng.IntN(3)+1)
	case 6:
		return float32(randomFloats[rng.IntN(len(randomFloats))])
	case 7:
		return []any{int(rng.Int64()), int8(rng.Int32()), int16(rng.Int32()), int32(rng.Int32()), -rng.Int64()}[rng.IntN(5)]
	case 8:
		return []any{uint(rng.Uint64()), uint8(rng.Uint32()), uint16(rng.Uint32()), uint32(rng.Uint32()), rng.Uint64()}[rng.IntN(5)]
	case 9:
		return randomNumbers[rng.IntN(len(randomNumbers))]
	case 10:
		return float64(rng.Int64N(1<<40)) / 1000 // like duration_ms
	case 11, 12:
		switch rng.IntN(3) {
		case 0:
			return []string(nil)
		case 1:
			return []string{}
		}
		s := make([]string, rng.IntN(4)+1)
		for i := range s {
			s[i] = randomString(rng)
		}
		return s
	case 13, 14:
		if rng.IntN(5) == 0 {
			return []any(nil)
		}
		s := make([]any, rng.IntN(4))
		for i := range s {
			s[i] = randomValue(rng, depth+1)
		}
		return s
	case 15, 16, 17:
		return randomMap(rng, depth+1)
	// Types the direct encoder leaves to the generic path.
	case 18:
		return Deny // a named string type
	case 19:
		return time.Duration(rng.Int64())
	case 20:
		return []byte(randomString(rng))
	case 21:
		return map[string]int{"a": 1, randomString(rng): 2}
	case 22:
		return time.Unix(rng.Int64N(1<<33), 0)
	}
	return struct {
		A string `json:"a"`
		B int    `json:"b,omitempty"`
	}{randomString(rng), rng.IntN(2)}
}

func randomMap(rng *rand.Rand, depth int) map[string]any {
	switch rng.IntN(8) {
	case 0:
		return nil
	case 1:
		return map[string]any{}
	}
	m := map[string]any{}
	for range rng.IntN(6) + 1 {
		k := randomString(rng)
		if rng.IntN(2) == 0 {
			k = []string{"database", "db_user", "statement", "rows", "z", "a", "A", "_", "é"}[rng.IntN(9)]
		}
		m[k] = randomValue(rng, depth)
	}
	return m
}

// fillRandom sets every exported field of v, recursively.
func fillRandom(rng *rand.Rand, v reflect.Value, depth int) {
	switch v.Type() {
	case reflect.TypeFor[time.Time]():
		tm := time.Unix(rng.Int64N(1<<35), rng.Int64N(1e9))
		switch rng.IntN(6) {
		case 0:
			tm = tm.In(time.FixedZone("x", -(rng.IntN(24*3600) / 60 * 60)))
		case 1:
			tm = time.Date(10000+rng.IntN(5), 1, 1, 0, 0, 0, 0, time.UTC) // cannot be encoded
		case 2:
			tm = tm.Truncate(time.Second)
		default:
			tm = tm.UTC()
		}
		v.Set(reflect.ValueOf(tm))
		return
	case reflect.TypeFor[map[string]any]():
		v.Set(reflect.ValueOf(randomMap(rng, 1)))
		return
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(randomString(rng))
	case reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uint:
		switch rng.IntN(3) {
		case 0:
			v.SetUint(0)
		case 1:
			v.SetUint(rng.Uint64() & 0xFFFF)
		default:
			v.SetUint(rng.Uint64())
			v.SetUint(v.Uint()) // truncated by the field's width
		}
	case reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64, reflect.Int:
		v.SetInt(rng.Int64() - rng.Int64())
	case reflect.Bool:
		v.SetBool(rng.IntN(2) == 0)
	case reflect.Pointer:
		if rng.IntN(5) == 0 {
			v.SetZero()
			return
		}
		p := reflect.New(v.Type().Elem())
		fillRandom(rng, p.Elem(), depth+1)
		v.Set(p)
	case reflect.Slice:
		switch rng.IntN(4) {
		case 0:
			v.SetZero()
			return
		case 1:
			v.Set(reflect.MakeSlice(v.Type(), 0, 0))
			return
		}
		s := reflect.MakeSlice(v.Type(), rng.IntN(3)+1, 4)
		for i := range s.Len() {
			fillRandom(rng, s.Index(i), depth+1)
		}
		v.Set(s)
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fillRandom(rng, v.Field(i), depth+1)
			}
		}
	default:
		panic(fmt.Sprintf("fillRandom: no generator for %s; add one", v.Type()))
	}
}

func BenchmarkPrepare(b *testing.B) {
	e := &Event{
		Schema: Schema, ID: "01JABCDEFGHJKMNPQRSTVWXYZ0", Time: time.Now().UTC(), Type: DBQuery, Host: Host{ID: "host-1", Name: "bastion-1"},
		Identity: &Identity{Sub: "alice", Email: "alice@example.com", Groups: []string{"engineering"}, Issuer: "https://idp.example.com", SessionID: "s-123"},
		Process:  &Process{ExecID: "e-1", PID: 4242, UID: 1000, Binary: "/usr/bin/pgbench", Args: []string{"pgbench", "-S", "-c", "8"}, ParentExecID: "e-0", Ancestors: []Ancestor{{ExecID: "e-0", PID: 1, Binary: "/bin/bash", Args: []string{"bash"}}}, CgroupID: 12345},
		Target:   &Target{Name: "bench-db", Protocol: "postgres", Address: "127.0.0.1:5432"},
		Decision: &Decision{Action: Allow},
		Data: map[string]any{"duration_ms": 0.123, "command": "SELECT 1", "rows": int64(1), "rows_returned": int64(1),
			"database": "postgres", "db_user": "app", "statement": "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
			"fingerprint": "a1b2c3d4e5f60718", "kind": "select", "tables": []string{"pgbench_accounts"}, "protocol": "simple"},
	}
	for _, bc := range []struct {
		name string
		f    func(*Event) (*Prepared, error)
	}{{"direct", Prepare}, {"generic", prepareGeneric}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := bc.f(e); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// The collector's hash check over the bytes received: the fast path for
// the agent's own layout, the canonical form for any other, and a miss for
// anything changed.
func TestRawHashMatches(t *testing.T) {
	for _, e := range preparedSamples() {
		e.Data = map[string]any{"hash": strings.Repeat("a", 64), "n": 1}
		p, err := Prepare(e)
		if err != nil {
			t.Fatal(err)
		}
		wire := NewSigner(nil, 0, "").SealPrepared(e, p)
		if !RawHashMatches(wire, e.Hash) {
			t.Fatalf("agent's wire form does not match its hash")
		}
		var m map[string]any
		if err := json.Unmarshal(wire, &m); err != nil {
			t.Fatal(err)
		}
		indented, _ := json.MarshalIndent(m, "", "  ")
		if !RawHashMatches(indented, e.Hash) {
			t.Fatalf("re-encoded event does not match its hash")
		}
		changed := bytes.Replace(wire, []byte(`"n":1`), []byte(`"n":2`), 1)
		if RawHashMatches(changed, e.Hash) {
			t.Fatalf("changed event matches its hash")
		}
		// The hash member moved to the end: not the fast path, still
		// the same canonical form.
		moved := append(bytes.Replace(wire, []byte(`"hash":"`+e.Hash+`",`), nil, 1), 0)
		moved = append(moved[:len(moved)-2], []byte(`,"hash":"`+e.Hash+`"}`)...)
		if !RawHashMatches(moved, e.Hash) {
			t.Fatalf("event with the hash member last does not match: %s", moved)
		}
	}
}
