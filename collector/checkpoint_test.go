package collector_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/wardenhq/warden/collector/ingest"
	cc "github.com/wardenhq/warden/pkg/collectorclient"
	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/tests/harness"
)

// v2agent is a test publisher of warden.event/v2: a hash chain without
// per-event signatures, a Merkle log, and signed checkpoints published on
// the host's checkpoint subject, the way agent/recorder does.
type v2agent struct {
	*agent
	log    *event.MerkleLog
	leaves [][]byte
}

func newV2Agent(t *testing.T, natsURL, hostID string) *v2agent {
	return &v2agent{agent: newAgent(t, natsURL, hostID), log: event.NewMerkleLog()}
}

// event returns an unsealed v2 event.
func (a *v2agent) event(typ event.Type) *event.Event {
	e := a.newEvent(typ, alice)
	e.Schema = event.Schema
	e.Data = map[string]any{"n": len(a.leaves)}
	return e
}

// seal links e into the chain and the tree; it returns the wire bytes.
func (a *v2agent) seal(e *event.Event) []byte {
	b := a.agent.seal(e)
	leaf, err := event.LeafHash(e.Hash)
	if err != nil {
		a.t.Fatal(err)
	}
	a.log.Append(leaf)
	a.leaves = append(a.leaves, leaf)
	return b
}

// send seals and publishes n events.
func (a *v2agent) send(n int) []*event.Event {
	var out []*event.Event
	for range n {
		e := a.event(event.NetConnect)
		a.publishRaw(e.Subject(), e.ID, a.seal(e))
		out = append(out, e)
	}
	return out
}

// checkpointMsg signs the head of the tree as a checkpoint message, with
// the consistency proof from the previous one.
func (a *v2agent) checkpointMsg(key ed25519.PrivateKey, origin string, size uint64, root []byte, prev uint64, proof [][]byte) (*event.Checkpoint, []byte) {
	s, err := event.NewNoteSigner(origin, key)
	if err != nil {
		a.t.Fatal(err)
	}
	note, err := event.SignTreeHead(s, event.TreeHead{Origin: origin, Size: size, Root: root})
	if err != nil {
		a.t.Fatal(err)
	}
	cp := &event.Checkpoint{Schema: event.CheckpointSchema, ID: ulid.Make().String(), Time: time.Now().UTC(), Type: event.CheckpointType,
		Host: event.Host{ID: a.hostID, Name: a.hostID}, Size: size, Root: event.EncodeHashes([][]byte{root})[0],
		PrevSize: prev, Consistency: event.EncodeHashes(proof), IntervalMS: 1000, Note: note}
	b, err := json.Marshal(cp)
	if err != nil {
		a.t.Fatal(err)
	}
	return cp, b
}

// checkpoint signs and publishes the current tree head.
func (a *v2agent) checkpoint() *event.Checkpoint {
	proof, err := a.log.Consistency()
	if err != nil {
		a.t.Fatal(err)
	}
	cp, b := a.checkpointMsg(a.priv, a.hostID, a.log.Size(), a.log.Root(), a.log.MarkSize(), proof)
	if err := a.log.MarkAt(a.log.Size()); err != nil {
		a.t.Fatal(err)
	}
	a.publishRaw(cp.Subject(), cp.ID, b)
	return cp
}

// violationsOf lists the integrity.violation data of one host by problem.
func violationsOf(t *testing.T, cl *cc.Client, hostID string) map[string][]map[string]any {
	t.Helper()
	out := map[string][]map[string]any{}
	for p, vs := range violationsByProblem(t, cl) {
		for _, v := range vs {
			if v["host_id"] == hostID {
				out[p] = append(out[p], v)
			}
		}
	}
	return out
}

// verifyEvent fetches an event's proof bundle and verifies it with the
// host's pinned key, as warden verify does.
func verifyEvent(t *testing.T, cl *cc.Client, a *v2agent, id string) error {
	t.Helper()
	b, err := cl.Proof(context.Background(), id)
	if err != nil {
		return err
	}
	vkey, err := event.NoteVerifierKey(a.hostID, a.pub())
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.Verify(vkey)
	return err
}

// Every way to tamper with a v2 log, against the real collector: each is
// flagged as its own kind of violation, and the proof of the tampered
// event fails.
func TestCheckpointTamper(t *testing.T) {
	ns := startNATS(t)
	url := ns.ClientURL()
	hosts := map[string]*v2agent{}
	keys := event.StaticKeys{}
	for _, h := range []string{"clean", "modify", "drop", "reorder", "replay", "forge", "truncate", "swap", "rewrite", "silent"} {
		hosts[h] = newV2Agent(t, url, h)
		keys[h] = hosts[h].pub()
	}
	col := startCollector(t, url, harness.StoreLocation(t, t.TempDir()), keys, "warden-collector", ingest.ChainFull, 0)

	// clean: events and checkpoints, twice.
	clean := hosts["clean"]
	cleanEvs := clean.send(5)
	clean.checkpoint()
	cleanEvs = append(cleanEvs, clean.send(3)...)
	clean.checkpoint()

	// modify: sealed, then changed on the way.
	mod := hosts["modify"]
	mod.send(2)
	modified := mod.event(event.DBQuery)
	mod.seal(modified)
	modified.Data["n"] = "changed"
	b, _ := json.Marshal(modified)
	mod.publishRaw(modified.Subject(), modified.ID, b)
	mod.checkpoint()

	// drop: seq 3 sealed (and checkpointed) but never published.
	drop := hosts["drop"]
	drop.send(2)
	drop.seal(drop.event(event.NetConnect))
	afterDrop := drop.send(1)[0]
	drop.checkpoint()

	// reorder: seq 3 published before seq 2.
	ro := hosts["reorder"]
	ro.send(1)
	e2, e3 := ro.event(event.NetConnect), ro.event(event.NetConnect)
	b2, b3 := ro.seal(e2), ro.seal(e3)
	ro.publishRaw(e3.Subject(), e3.ID, b3)
	ro.publishRaw(e2.Subject(), e2.ID, b2)
	ro.checkpoint()

	// replay: seq 2 again under a new message id.
	rp := hosts["replay"]
	rpEvs := rp.send(3)
	raw2, _ := json.Marshal(rpEvs[1])
	rp.publishRaw(rpEvs[1].Subject(), "replay-"+rpEvs[1].ID, raw2)
	rp.checkpoint()

	// forge: someone with publish rights but no key slips in a well
	// chained seq 3 before the agent's own.
	fg := hosts["forge"]
	fg.send(2)
	forged := fg.event(event.DBQuery)
	forged.Data = map[string]any{"statement": "GRANT ALL TO mallory"}
	_, head := fg.signer.Head()
	event.NewSigner(nil, 2, head).Seal(forged)
	fb, _ := json.Marshal(forged)
	fg.publishRaw(forged.Subject(), forged.ID, fb)
	fg.send(1) // the genuine seq 3
	fg.checkpoint()

	// truncate: the agent's key signs a smaller tree after a larger one.
	tr := hosts["truncate"]
	tr.send(5)
	tr.checkpoint()
	_, tb := tr.checkpointMsg(tr.priv, "truncate", 3, event.RootOf(tr.leaves[:3]), 0, nil)
	publishCheckpoint(tr, tb)

	// swap: another agent's checkpoint, signed with its key and origin.
	sw := hosts["swap"]
	sw.send(3)
	_, sb := sw.checkpointMsg(clean.priv, "clean", 3, sw.log.Root(), 0, nil)
	publishCheckpoint(sw, sb)
	sw.checkpoint() // the genuine one still verifies

	// rewrite: a larger tree that does not extend the signed one.
	rw := hosts["rewrite"]
	rw.send(3)
	rw.checkpoint()
	other := append([][]byte{rw.leaves[0], rw.leaves[2], rw.leaves[1]}, rw.leaves[2])
	forkedLog, _ := event.ResumeMerkleLog(0, nil, nil)
	for _, l := range other {
		forkedLog.Append(l)
	}
	_, rb := rw.checkpointMsg(rw.priv, "rewrite", 4, forkedLog.Root(), 3, [][]byte{rw.leaves[2]})
	publishCheckpoint(rw, rb)

	// silent: events, and no checkpoint for 5 s.
	sl := hosts["silent"]
	sl.send(3)

	want := map[string]string{
		"modify":   string(event.BadHash),
		"drop":     string(event.Gap),
		"replay":   string(event.Replay),
		"forge":    string(event.NotCovered),
		"truncate": string(event.TreeTruncated),
		"swap":     string(event.CheckpointBadSignature),
		"rewrite":  string(event.TreeInconsistent),
		"silent":   string(event.CheckpointLate),
	}
	waitFor(t, "every violation", func() (bool, error) {
		for h, kind := range want {
			if len(violationsOf(t, col.client, h)[kind]) == 0 {
				return false, nil
			}
		}
		return true, nil
	})
	time.Sleep(4 * time.Second) // lets a late check that should not fire fire
	for h, kind := range want {
		vs := violationsOf(t, col.client, h)
		if len(vs[kind]) != 1 {
			t.Errorf("%s: %d %s violations, want 1: %v", h, len(vs[kind]), kind, vs)
		}
		if len(vs[string(event.CheckpointLate)]) > 0 && kind != string(event.CheckpointLate) {
			t.Errorf("%s: checkpoint_late raised although checkpoints came: %v", h, vs)
		}
	}
	// Reordered events: flagged as a gap then a reorder, unless the
	// collector put them back in order before the chain check (it may
	// hold an event ahead of a gap for a while); either way nothing else.
	if vs := violationsOf(t, col.client, "reorder"); len(vs[string(event.Gap)]) != len(vs[string(event.Reorder)]) || len(vs) > 2 ||
		len(vs) == 2 && (len(vs[string(event.Gap)]) != 1 || len(vs[string(event.Reorder)]) != 1) {
		t.Errorf("reorder: violations %v, want one gap and one reorder, or none", vs)
	}
	if err := verifyEvent(t, col.client, ro, e2.ID); err != nil {
		t.Errorf("reordered event: %v", err)
	}
	if vs := violationsOf(t, col.client, "clean"); len(vs) != 0 {
		t.Errorf("clean host flagged: %v", vs)
	}

	// Proofs: every clean event verifies against the newest checkpoint;
	// the tampered ones do not.
	for _, e := range cleanEvs {
		if err := verifyEvent(t, col.client, clean, e.ID); err != nil {
			t.Errorf("clean event seq %d: %v", e.Seq, err)
		}
	}
	for name, c := range map[string]struct {
		a  *v2agent
		id string
	}{
		"modified": {mod, modified.ID},
		"forged":   {fg, forged.ID},
		"replayed": {rp, rpEvs[1].ID}, // stored once, and proves fine: it is the genuine event
		"dropped":  {drop, afterDrop.ID},
	} {
		err := verifyEvent(t, col.client, c.a, c.id)
		if name == "replayed" {
			if err != nil {
				t.Errorf("replayed event's original: %v", err)
			}
			continue
		}
		if err == nil {
			t.Errorf("%s event verifies", name)
		} else {
			t.Logf("%s event: %v", name, err)
		}
	}
	// The events the forged checkpoint range covers are marked.
	_, integ := allEvents(t, col.client, cc.Query{})
	if !slices.Contains(integ[forged.ID], string(event.NotCovered)) {
		t.Errorf("forged event marked %v, want not_covered among them", integ[forged.ID])
	}
	// Checkpoints are stored, with the verdicts.
	cps, err := col.Store().Checkpoints(context.Background(), "swap", 0)
	if err != nil {
		t.Fatal(err)
	}
	var verdicts []string
	for _, c := range cps {
		verdicts = append(verdicts, fmt.Sprintf("%d:%v:%s", c.Size, c.Accepted, strings.Join(c.Integrity, ",")))
	}
	slices.Sort(verdicts)
	if !slices.Equal(verdicts, []string{"3:false:checkpoint_bad_signature", "3:true:"}) {
		t.Errorf("swap host's checkpoints stored as %v", verdicts)
	}
}

// publishCheckpoint publishes a checkpoint message on a's checkpoint
// subject.
func publishCheckpoint(a *v2agent, b []byte) {
	cp, err := event.DecodeCheckpoint(b)
	if err != nil {
		a.t.Fatal(err)
	}
	a.publishRaw(cp.Subject(), cp.ID, b)
}
