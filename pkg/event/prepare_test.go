package event

import (
	"crypto/ed25519"
	"encoding/json"
	"math"
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
