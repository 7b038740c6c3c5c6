package collector_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"testing"

	"github.com/wardenhq/warden/collector/ingest"
	"github.com/wardenhq/warden/collector/store"
	cc "github.com/wardenhq/warden/pkg/collectorclient"
	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/tests/harness"
)

// violationsByProblem lists integrity.violation events as problem -> data.
func violationsByProblem(t *testing.T, cl *cc.Client) map[string][]map[string]any {
	t.Helper()
	vs, _ := allEvents(t, cl, cc.Query{Type: string(event.IntegrityViolation)})
	out := map[string][]map[string]any{}
	for _, v := range vs {
		p, _ := v.Data["problem"].(string)
		out[p] = append(out[p], v.Data)
	}
	return out
}

func TestTamper(t *testing.T) {
	ns := startNATS(t)
	ag := newAgent(t, ns.ClientURL(), "bastion-1")
	col := startCollector(t, ns.ClientURL(), harness.StoreLocation(t, t.TempDir()),
		event.StaticKeys{"bastion-1": ag.pub()}, "warden-collector", ingest.ChainFull, 0)

	var good []*event.Event
	var goodRaw [][]byte
	for i := 0; i < 3; i++ {
		e := ag.newEvent(event.NetConnect, alice)
		e.Target = &event.Target{Name: "orders-db", Protocol: "postgres", Address: "10.0.0.5:5432"}
		raw := ag.seal(e)
		ag.publishRaw(e.Subject(), e.ID, raw)
		good, goodRaw = append(good, e), append(goodRaw, raw)
	}

	// Modified: sealed, then a field changed before it reached NATS.
	mod := ag.newEvent(event.DBQuery, alice)
	mod.Data = map[string]any{"statement": "DROP TABLE orders"}
	ag.seal(mod)
	mod.Data["statement"] = "SELECT 1"
	b, _ := json.Marshal(mod)
	ag.publishRaw(mod.Subject(), mod.ID, b)

	// Forged: claims bastion-1 but is signed with another key.
	_, evil, _ := ed25519.GenerateKey(rand.Reader)
	forged := ag.newEvent(event.SessionLogin, bob)
	event.NewSigner(evil, 4, mod.Hash).Seal(forged)
	b, _ = json.Marshal(forged)
	ag.publishRaw(forged.Subject(), forged.ID, b)

	// Unknown host: a key the collector was never given.
	stranger := newAgent(t, ns.ClientURL(), "rogue-host")
	unknown := stranger.send(stranger.newEvent(event.AgentStart, nil))

	// Replayed: event 2 again under a new Nats-Msg-Id (old seq).
	ag.publishRaw(good[1].Subject(), "replay-"+good[1].ID, goodRaw[1])

	// Gap: seq 5 is sealed but never published; seq 6 is.
	ag.seal(ag.newEvent(event.NetConnect, alice))
	afterGap := ag.send(ag.newEvent(event.NetConnect, alice))

	// Malformed: not an event at all.
	ag.publishRaw("warden.events.db.query", "junk-1", []byte("this is not json"))

	// 3 good + modified + forged + unknown + after-gap stored as rows, plus
	// one violation each for modified, forged, unknown, replay, gap, junk.
	waitCount(t, col.Store(), 7+6)

	v := violationsByProblem(t, col.client)
	want := map[string]string{
		string(event.BadHash):      mod.ID,
		string(event.BadSignature): forged.ID,
		string(event.UnknownKey):   unknown.ID,
		string(event.Replay):       good[1].ID,
		string(event.Gap):          afterGap.ID,
		string(ingest.Malformed):   "",
	}
	for problem, id := range want {
		if len(v[problem]) != 1 {
			t.Errorf("%s: %d violations, want 1 (all: %v)", problem, len(v[problem]), v)
			continue
		}
		d := v[problem][0]
		if d["event_id"] != id {
			t.Errorf("%s: violation names event %v, want %s", problem, d["event_id"], id)
		}
		for _, k := range []string{"problem", "detail", "event_id", "host_id", "seq"} {
			if _, ok := d[k]; !ok {
				t.Errorf("%s: violation data lacks %q: %v", problem, k, d)
			}
		}
	}
	if d := v[string(event.Replay)]; len(d) == 1 && d[0]["raw"] != string(goodRaw[1]) {
		t.Errorf("replay violation does not carry the replayed message")
	}
	if d := v[string(ingest.Malformed)]; len(d) == 1 && d[0]["raw"] != "this is not json" {
		t.Errorf("malformed violation does not carry the message: %v", d[0])
	}
	if len(v) != len(want) {
		t.Errorf("unexpected violations: %v", v)
	}

	// The offending events are stored too, marked.
	_, integ := allEvents(t, col.client, cc.Query{})
	for id, problem := range map[string]string{mod.ID: "bad_hash", forged.ID: "bad_signature", unknown.ID: "unknown_key", afterGap.ID: "gap"} {
		if !slices.Equal(integ[id], []string{problem}) {
			t.Errorf("event %s marked %v, want [%s]", id, integ[id], problem)
		}
	}
	for _, e := range good {
		if integ[e.ID] != nil {
			t.Errorf("good event %s marked %v", e.ID, integ[e.ID])
		}
	}
	// The chain still continues cleanly after the gap.
	next := ag.send(ag.newEvent(event.NetConnect, alice))
	waitCount(t, col.Store(), 14)
	if _, integ := allEvents(t, col.client, cc.Query{}); integ[next.ID] != nil {
		t.Errorf("event after the gap's successor flagged %v", integ[next.ID])
	}
}

// Two collectors sharing one durable consumer split the stream: every event
// lands in exactly one store.
func TestSharedConsumerSplitsLoad(t *testing.T) {
	ns := startNATS(t)
	ag := newAgent(t, ns.ClientURL(), "bastion-1")
	keys := event.StaticKeys{"bastion-1": ag.pub()}
	dir := t.TempDir()
	// Small batches so both collectors get work; signature mode because
	// each sees only part of the host's chain (see docs/collector.md).
	a := startCollector(t, ns.ClientURL(), filepath.Join(dir, "a.db"), keys, "shared", ingest.ChainSignature, 10)
	b := startCollector(t, ns.ClientURL(), filepath.Join(dir, "b.db"), keys, "shared", ingest.ChainSignature, 10)

	const n = 1000
	sent := map[string]bool{}
	for i := 0; i < n; i++ {
		e := ag.send(ag.newEvent(event.NetConnect, alice))
		sent[e.ID] = true
	}
	ctx := context.Background()
	waitFor(t, fmt.Sprintf("%d events across both stores", n), func() (bool, error) {
		ca, err := a.Store().Count(ctx)
		if err != nil {
			return false, err
		}
		cb, err := b.Store().Count(ctx)
		return ca+cb >= n, err
	})
	ea, _ := allEvents(t, a.client, cc.Query{Limit: 10000})
	eb, _ := allEvents(t, b.client, cc.Query{Limit: 10000})
	a.stop()
	b.stop()
	t.Logf("split: collector a stored %d, b stored %d", len(ea), len(eb))
	union := map[string]int{}
	for _, e := range append(ea, eb...) {
		if e.Type == event.IntegrityViolation {
			t.Errorf("violation in shared mode: %v", e.Data)
		}
		union[e.ID]++
	}
	var dup, missing []string
	for id, k := range union {
		if k > 1 {
			dup = append(dup, id)
		}
	}
	for id := range sent {
		if union[id] == 0 {
			missing = append(missing, id)
		}
	}
	sort.Strings(dup)
	if len(dup) > 0 || len(missing) > 0 || len(union) != n {
		t.Fatalf("stored twice: %v; lost: %v; union %d, want %d", dup, missing, len(union), n)
	}
}

// A restarted collector resumes the verifier from its store: the next event
// of each host links to the stored head, with no false gap.
func TestRestartResumesVerifier(t *testing.T) {
	ns := startNATS(t)
	ag := newAgent(t, ns.ClientURL(), "bastion-1")
	keys := event.StaticKeys{"bastion-1": ag.pub()}
	path := harness.StoreLocation(t, t.TempDir())

	first := startCollector(t, ns.ClientURL(), path, keys, "warden-collector", ingest.ChainFull, 0)
	for i := 0; i < 10; i++ {
		ag.send(ag.newEvent(event.NetConnect, alice))
	}
	waitCount(t, first.Store(), 10)
	first.stop()

	// Published while no collector runs: JetStream keeps them.
	for i := 0; i < 10; i++ {
		ag.send(ag.newEvent(event.NetConnect, alice))
	}
	second := startCollector(t, ns.ClientURL(), path, keys, "warden-collector", ingest.ChainFull, 0)
	for i := 0; i < 5; i++ {
		ag.send(ag.newEvent(event.NetConnect, alice))
	}
	waitCount(t, second.Store(), 25)
	got, integ := allEvents(t, second.client, cc.Query{})
	if len(integ) != 0 {
		t.Fatalf("restart produced integrity problems: %v", integ)
	}
	for i, e := range got {
		if e.Seq != uint64(i+1) {
			t.Fatalf("event %d has seq %d", i, e.Seq)
		}
	}
	h, err := second.client.Health(context.Background())
	if err != nil || h.Ingest.Violations != 0 {
		t.Fatalf("health after restart: %+v %v", h, err)
	}
}

// A message whose ack was lost after its event was stored comes back with
// the same stream sequence: it is acked, not stored again, not a replay.
func TestRedeliveryIsIdempotent(t *testing.T) {
	ns := startNATS(t)
	ag := newAgent(t, ns.ClientURL(), "bastion-1")
	path := harness.StoreLocation(t, t.TempDir())
	e := ag.newEvent(event.NetConnect, alice)
	raw := ag.seal(e)

	// Simulate "stored, then crashed before the ack": the row is in the
	// store with stream sequence 1, the message is still unacked in NATS.
	st, err := store.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Insert(context.Background(), []store.Record{{Event: e, Raw: raw, ChainHead: true, StreamSeq: 1}}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	ag.publishRaw(e.Subject(), e.ID, raw) // stream seq 1 in a fresh stream

	col := startCollector(t, ns.ClientURL(), path, event.StaticKeys{"bastion-1": ag.pub()}, "warden-collector", ingest.ChainFull, 0)
	next := ag.send(ag.newEvent(event.NetConnect, alice))
	waitCount(t, col.Store(), 2)
	h, err := col.client.Health(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if h.Ingest.Redelivered != 1 || h.Ingest.Violations != 0 {
		t.Fatalf("ingest %+v; want 1 redelivery, 0 violations", h.Ingest)
	}
	if _, integ := allEvents(t, col.client, cc.Query{}); len(integ) != 0 {
		t.Fatalf("flagged after redelivery: %v (next %s)", integ, next.ID)
	}
}
