package ingest

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wardenhq/warden/pkg/event"
)

// fakeMsg is an event message of host h at seq s.
type fakeMsg struct {
	jetstream.Msg
	subject string
	data    []byte
}

func (m fakeMsg) Subject() string { return m.subject }
func (m fakeMsg) Data() []byte    { return m.data }

func ev(host string, seq uint64) decoded {
	m := fakeMsg{subject: "warden.events." + host + ".net.connect", data: fmt.Appendf(nil, `{"host":{"id":%q},"seq":%d}`, host, seq)}
	return decoded{msg: m, subject: m.subject, ev: &event.Event{Host: event.Host{ID: host}, Seq: seq}}
}

func seqs(ms []decoded) []string {
	var out []string
	for _, m := range ms {
		out = append(out, string(m.msg.Data()))
	}
	return out
}

func TestReorderPutsChainsBackInOrder(t *testing.T) {
	heads := map[string]uint64{"a": 2, "b": 0}
	r := &reorderer{wait: time.Minute, held: map[string][]heldMsg{}, head: func(h string) (uint64, bool) {
		s, ok := heads[h]
		return s, ok
	}}
	t0 := time.Now()
	// a expects 3: 5 and 6 wait; b expects 1; c is unknown (passes).
	got := r.order([]decoded{ev("a", 5), ev("b", 1), ev("a", 6), ev("c", 9), ev("a", 2)}, t0)
	want := []decoded{ev("b", 1), ev("c", 9), ev("a", 2)}
	if !slices.Equal(seqs(got), seqs(want)) {
		t.Fatalf("first batch %v, want %v", seqs(got), seqs(want))
	}
	heads["b"] = 1
	// 3 and 4 arrive: 3, 4, 5, 6 in order.
	got = r.order([]decoded{ev("a", 4), ev("a", 3)}, t0)
	if want := []decoded{ev("a", 3), ev("a", 4), ev("a", 5), ev("a", 6)}; !slices.Equal(seqs(got), seqs(want)) {
		t.Fatalf("second batch %v, want %v", seqs(got), seqs(want))
	}
	heads["a"] = 6
	// A real gap: 9 waits until its hold runs out, then goes on its own.
	if got := r.order([]decoded{ev("a", 9)}, t0); len(got) != 0 {
		t.Fatalf("9 passed at once: %v", seqs(got))
	}
	if got := r.expired(t0.Add(30 * time.Second)); len(got) != 0 {
		t.Fatalf("released before its time: %v", seqs(got))
	}
	if got := r.expired(t0.Add(time.Minute)); !slices.Equal(seqs(got), seqs([]decoded{ev("a", 9)})) {
		t.Fatalf("expired %v, want a@9", seqs(got))
	}
	if len(r.all()) != 0 {
		t.Fatal("messages left held")
	}
}
