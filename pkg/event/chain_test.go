package event

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"
)

func testKey(t *testing.T) (ed25519.PublicKey, ed25519.PrivateKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub, priv
}

func sampleEvent(i int) *Event {
	return &Event{
		Schema:   Schema,
		ID:       fmt.Sprintf("01J%023d", i),
		Time:     time.Date(2025, 1, 2, 3, 4, 5, 123456789, time.UTC).Add(time.Duration(i) * time.Millisecond),
		Type:     DBQuery,
		Host:     Host{ID: "bastion-1", Name: "bastion-1.example"},
		Identity: &Identity{Sub: "u1", Email: "a@example.com", Groups: []string{"eng"}, Issuer: "https://idp", SessionID: "s1"},
		Process:  &Process{ExecID: "x1", PID: 42, Binary: "/usr/bin/psql", Args: []string{"psql", "-h", "db"}, Ancestors: []Ancestor{{ExecID: "x0", PID: 1, Binary: "/bin/bash"}}},
		Target:   &Target{Name: "orders-db", Protocol: "postgres", Address: "10.0.0.5:5432"},
		Decision: &Decision{Action: Allow, Rule: "default"},
		Data: map[string]any{
			"statement": "SELECT <b> & 'x' FROM t\u2028",
			"rows":      int64(1) << 60, // above 2^53: must survive the wire
			"ratio":     0.1,
			"nested":    struct{ B, A int }{B: 2, A: 1},
		},
	}
}

// chain seals n events with a fresh signer and returns them and the key ring.
func chain(t *testing.T, n int) ([]*Event, StaticKeys) {
	t.Helper()
	pub, priv := testKey(t)
	s := NewSigner(priv, 0, "")
	evs := make([]*Event, n)
	for i := range evs {
		evs[i] = sampleEvent(i)
		s.Seal(evs[i])
	}
	return evs, StaticKeys{"bastion-1": pub}
}

// wire simulates a trip over NATS: encode, decode into a fresh Event.
func wire(t *testing.T, e *Event) *Event {
	t.Helper()
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	var out Event
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return &out
}

func kinds(ps []Problem) []ProblemKind {
	var ks []ProblemKind
	for _, p := range ps {
		ks = append(ks, p.Kind)
	}
	return ks
}

func wantKinds(t *testing.T, what string, got []Problem, want ...ProblemKind) {
	t.Helper()
	if fmt.Sprint(kinds(got)) != fmt.Sprint(want) {
		t.Fatalf("%s: problems %v, want kinds %v", what, got, want)
	}
}

func TestSealLinksAndSigns(t *testing.T) {
	evs, keys := chain(t, 3)
	if evs[0].Seq != 1 || evs[0].PrevHash != "" {
		t.Fatalf("first event: seq %d prev %q, want 1 and empty", evs[0].Seq, evs[0].PrevHash)
	}
	for i := 1; i < len(evs); i++ {
		if evs[i].Seq != uint64(i+1) || evs[i].PrevHash != evs[i-1].Hash {
			t.Fatalf("event %d: seq %d prev %s, want %d and %s", i, evs[i].Seq, evs[i].PrevHash, i+1, evs[i-1].Hash)
		}
	}
	v := NewVerifier(keys)
	for _, e := range evs {
		wantKinds(t, "intact event over the wire", v.Check(wire(t, e)))
	}
}

func TestCanonicalForm(t *testing.T) {
	e := sampleEvent(0)
	e.Hash, e.Sig = "h", "s"
	c, err := e.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	s := string(c)
	for _, bad := range []string{`"hash"`, `"sig"`, "\n", ` `} {
		if bad == ` ` {
			// The only spaces allowed are inside string values.
			if strings.Contains(s, `": `) || strings.Contains(s, `, "`) {
				t.Errorf("canonical form has insignificant whitespace: %s", s)
			}
			continue
		}
		if strings.Contains(s, bad) {
			t.Errorf("canonical form contains %q: %s", bad, s)
		}
	}
	// HTML is not escaped, U+2028 is, integers keep all digits, and keys are
	// sorted at every depth (including inside Data's struct).
	for _, want := range []string{`<b> & 'x'`, `\u2028`, `"rows":1152921504606846976`, `"nested":{"A":1,"B":2}`, `{"data":`} {
		if !strings.Contains(s, want) {
			t.Errorf("canonical form lacks %s: %s", want, s)
		}
	}
	// Hash and Sig do not take part.
	e2 := sampleEvent(0)
	if e.ComputeHash() != e2.ComputeHash() {
		t.Error("hash depends on hash/sig fields")
	}
	// HashRaw over the wire bytes agrees, and keeps unknown members.
	b, _ := json.Marshal(e)
	if h, err := HashRaw(b); err != nil || h != e.ComputeHash() {
		t.Errorf("HashRaw = %s, %v; want %s", h, err, e.ComputeHash())
	}
	withExtra := strings.Replace(string(b), `{"schema"`, `{"future":1,"schema"`, 1)
	if h, _ := HashRaw([]byte(withExtra)); h == e.ComputeHash() {
		t.Error("HashRaw ignores unknown members")
	}
}

func TestSealUnencodable(t *testing.T) {
	_, priv := testKey(t)
	s := NewSigner(priv, 7, "abc")
	e := sampleEvent(0)
	e.Data["bad"] = math.NaN()
	s.Seal(e)
	if e.Hash != "" || e.Seq != 0 {
		t.Fatalf("unencodable event sealed: seq %d hash %q", e.Seq, e.Hash)
	}
	if seq, h := s.Head(); seq != 7 || h != "abc" {
		t.Fatalf("chain moved on failed seal: %d %s", seq, h)
	}
}

func TestVerifierProblems(t *testing.T) {
	t.Run("unknown key", func(t *testing.T) {
		evs, _ := chain(t, 1)
		v := NewVerifier(StaticKeys{})
		wantKinds(t, "unknown host", v.Check(evs[0]), UnknownKey)
		if _, _, ok := v.Head("bastion-1"); ok {
			t.Error("unknown-key event moved the chain")
		}
	})
	t.Run("bad signature", func(t *testing.T) {
		// v1 events carry a signature each.
		pub, priv := testKey(t)
		s := NewSigner(priv, 0, "")
		evs := make([]*Event, 3)
		for i := range evs {
			evs[i] = sampleEvent(i)
			evs[i].Schema = SchemaV1
			s.Seal(evs[i])
		}
		keys := StaticKeys{"bastion-1": pub}
		_, other := testKey(t)
		// A forger re-seals event 2 with another key: hash is consistent but
		// the signature is not the host's.
		forged := sampleEvent(99)
		forged.Schema = SchemaV1
		NewSigner(other, 1, evs[0].Hash).Seal(forged)
		v := NewVerifier(keys)
		wantKinds(t, "e1", v.Check(evs[0]))
		wantKinds(t, "forged e2", v.Check(forged), BadSignature)
		// The forgery did not move the chain: the real e2 and e3 verify.
		wantKinds(t, "real e2", v.Check(evs[1]))
		wantKinds(t, "e3", v.Check(evs[2]))
		garbled := *evs[2]
		garbled.Sig = "!!not base64"
		wantKinds(t, "garbled sig", v.Check(&garbled), BadSignature)
	})
	t.Run("modified content", func(t *testing.T) {
		evs, keys := chain(t, 3)
		v := NewVerifier(keys)
		wantKinds(t, "e1", v.Check(evs[0]))
		mod := wire(t, evs[1])
		mod.Data["statement"] = "SELECT 1"
		wantKinds(t, "modified e2", v.Check(mod), BadHash)
		// Only the modified event is flagged.
		wantKinds(t, "e3", v.Check(evs[2]))
	})
	t.Run("gap then continue", func(t *testing.T) {
		evs, keys := chain(t, 6)
		v := NewVerifier(keys)
		wantKinds(t, "e1", v.Check(evs[0]))
		ps := v.Check(evs[3])
		wantKinds(t, "e4 after e1", ps, Gap)
		if ps[0].Expected != 2 || ps[0].Got != 4 || !strings.Contains(ps[0].Detail, "expected seq 2, got 4") {
			t.Errorf("gap detail: %+v", ps[0])
		}
		wantKinds(t, "e5", v.Check(evs[4]))
		wantKinds(t, "e6", v.Check(evs[5]))
		// A missing event arriving late is a reorder, once.
		wantKinds(t, "late e2", v.Check(evs[1]), Reorder)
		wantKinds(t, "late e2 again", v.Check(evs[1]), Replay)
		wantKinds(t, "late e3", v.Check(evs[2]), Reorder)
	})
	t.Run("first event not seq 1", func(t *testing.T) {
		evs, keys := chain(t, 3)
		v := NewVerifier(keys)
		wantKinds(t, "e3 first", v.Check(evs[2]), Gap)
	})
	t.Run("replay", func(t *testing.T) {
		evs, keys := chain(t, 3)
		v := NewVerifier(keys)
		for _, e := range evs {
			wantKinds(t, "in order", v.Check(e))
		}
		ps := v.Check(evs[1])
		wantKinds(t, "replayed e2", ps, Replay)
		if !strings.Contains(ps[0].Detail, "same content") {
			t.Errorf("replay detail: %s", ps[0].Detail)
		}
		wantKinds(t, "replayed e3", v.Check(evs[2]), Replay)
	})
	t.Run("equivocation", func(t *testing.T) {
		// The host key signs two different events with the same seq (a
		// compromised agent rewinding its chain): reported as Replay with
		// different content.
		pub, priv := testKey(t)
		a, b := sampleEvent(1), sampleEvent(2)
		NewSigner(priv, 0, "").Seal(a)
		NewSigner(priv, 0, "").Seal(b)
		v := NewVerifier(StaticKeys{"bastion-1": pub})
		wantKinds(t, "a", v.Check(a))
		ps := v.Check(b)
		wantKinds(t, "b", ps, Replay)
		if !strings.Contains(ps[0].Detail, "different content") {
			t.Errorf("detail: %s", ps[0].Detail)
		}
	})
	t.Run("broken link", func(t *testing.T) {
		pub, priv := testKey(t)
		s := NewSigner(priv, 0, "")
		e1, e2 := sampleEvent(1), sampleEvent(2)
		s.Seal(e1)
		// The agent's key signs e2 but links it to the wrong predecessor.
		NewSigner(priv, 1, strings.Repeat("0", 64)).Seal(e2)
		v := NewVerifier(StaticKeys{"bastion-1": pub})
		wantKinds(t, "e1", v.Check(e1))
		wantKinds(t, "e2", v.Check(e2), BrokenLink)
	})
	t.Run("resume", func(t *testing.T) {
		evs, keys := chain(t, 4)
		v := NewVerifier(keys)
		v.Resume("bastion-1", evs[1].Seq, evs[1].Hash)
		wantKinds(t, "e3 after resume", v.Check(evs[2]))
		wantKinds(t, "e4", v.Check(evs[3]))
		v2 := NewVerifier(keys)
		v2.Resume("bastion-1", evs[1].Seq, "wrong")
		wantKinds(t, "e3 after bad resume", v2.Check(evs[2]), BrokenLink)
		if seq, h, _ := v.Head("bastion-1"); seq != 4 || h != evs[3].Hash {
			t.Errorf("head %d %s", seq, h)
		}
	})
	t.Run("signer resumes", func(t *testing.T) {
		pub, priv := testKey(t)
		e1, e2 := sampleEvent(1), sampleEvent(2)
		NewSigner(priv, 0, "").Seal(e1)
		NewSigner(priv, e1.Seq, e1.Hash).Seal(e2) // a restarted agent
		v := NewVerifier(StaticKeys{"bastion-1": pub})
		wantKinds(t, "e1", v.Check(e1))
		wantKinds(t, "e2", v.Check(e2))
	})
}

func TestUnmarshalKeepsNumbers(t *testing.T) {
	var e Event
	if err := json.Unmarshal([]byte(`{"schema":"warden.event/v1","data":{"n":9007199254740993}}`), &e); err != nil {
		t.Fatal(err)
	}
	if n, ok := e.Data["n"].(json.Number); !ok || n.String() != "9007199254740993" {
		t.Fatalf("data.n = %#v", e.Data["n"])
	}
}
