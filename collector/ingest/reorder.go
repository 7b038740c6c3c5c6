package ingest

import (
	"slices"
	"time"
)

// DefaultReorderWait is how long an event that arrives ahead of a gap in
// its host's chain is held, waiting for the missing ones, before the gap
// is reported. The agent pipelines its publishes; when the NATS node
// leading the stream dies, the publishes in flight to it are lost and sent
// again once their acknowledgement times out (5 s by default), while later
// ones, sent after the new leader was elected, are already stored. The
// stream then holds a host's events out of chain order, though none is
// missing. Held messages stay unacknowledged, well inside the consumer's
// 30 s AckWait.
const DefaultReorderWait = 8 * time.Second

// heldMsg is an event waiting for the events before it. It is held
// decoded: its hash is checked already, only its place in the chain waits.
type heldMsg struct {
	d     decoded
	seq   uint64
	until time.Time
}

// reorderer puts each host's events back in chain order before they reach
// the verifier (ChainFull only). It keeps no state beyond the held
// messages: the chain's position is the verifier's.
type reorderer struct {
	wait time.Duration
	// head returns the seq of the host's last verified event, false for
	// a host the verifier has not seen (then nothing is held: its chain
	// starts wherever its first event is).
	head func(host string) (uint64, bool)
	held map[string][]heldMsg
}

// order returns the messages of batch that may be verified now, in order,
// with any held ones they unblock; the others are held. Messages that are
// not events of a known chain pass through untouched.
func (r *reorderer) order(batch []decoded, now time.Time) []decoded {
	out := make([]decoded, 0, len(batch))
	next := map[string]uint64{} // next expected seq per host, in this call
	expect := func(host string) (uint64, bool) {
		if n, ok := next[host]; ok {
			return n, true
		}
		h, ok := r.head(host)
		if !ok {
			return 0, false
		}
		next[host] = h + 1
		return h + 1, true
	}
	release := func(host string) {
		hs := r.held[host]
		for len(hs) > 0 {
			n, _ := expect(host)
			if hs[0].seq > n {
				break
			}
			out = append(out, hs[0].d)
			if hs[0].seq == n {
				next[host] = n + 1
			}
			hs = hs[1:]
		}
		r.setHeld(host, hs)
	}
	for _, m := range batch {
		if m.isCP || m.err != nil || m.ev == nil || m.ev.Seq == 0 {
			out = append(out, m) // not in a chain, or the verifier reports what is wrong with it
			continue
		}
		host, seq := m.ev.Host.ID, m.ev.Seq
		n, known := expect(host)
		switch {
		case !known:
			out = append(out, m)
		case seq == n:
			out = append(out, m)
			next[host] = n + 1
			release(host)
		case seq < n:
			out = append(out, m) // a replay or a redelivery: for the verifier
		default:
			hs := append(r.held[host], heldMsg{d: m, seq: seq, until: now.Add(r.wait)})
			slices.SortStableFunc(hs, func(a, b heldMsg) int {
				switch {
				case a.seq < b.seq:
					return -1
				case a.seq > b.seq:
					return 1
				}
				return 0
			})
			r.setHeld(host, hs)
		}
	}
	return out
}

// expired returns, in order, the held messages of every host whose oldest
// hold ran out: the gap before them is real.
func (r *reorderer) expired(now time.Time) []decoded {
	var out []decoded
	for host, hs := range r.held {
		if slices.ContainsFunc(hs, func(h heldMsg) bool { return !now.Before(h.until) }) {
			for _, h := range hs {
				out = append(out, h.d)
			}
			delete(r.held, host)
		}
	}
	return out
}

// all returns every held message and forgets them (on stop, to nak).
func (r *reorderer) all() []decoded {
	var out []decoded
	for host, hs := range r.held {
		for _, h := range hs {
			out = append(out, h.d)
		}
		delete(r.held, host)
	}
	return out
}

func (r *reorderer) setHeld(host string, hs []heldMsg) {
	if len(hs) == 0 {
		delete(r.held, host)
		return
	}
	r.held[host] = hs
}
