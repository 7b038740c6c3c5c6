package redis

import (
	"bytes"
	"strings"

	resp "github.com/wardenhq/warden/pkg/protocol/redis"
)

// Pub/Sub breaks the one-reply-per-command rule: SUBSCRIBE a b is
// confirmed twice, UNSUBSCRIBE with no channel once per subscription, and
// published messages arrive unasked. The upstream loop follows the
// subscriptions from the server's own confirmations, so it always knows
// which replies answer a command and which are messages.

// pubsubWait is a subscribe-family command waiting for its confirmations.
type pubsubWait struct {
	kind     string // the confirmation's first element: "subscribe", ...
	category string // what it counts: "channel", "pattern", "shard"
	left     int    // confirmations still due; -1: one per subscription
}

func newPubsubWait(name string, channels int) *pubsubWait {
	w := &pubsubWait{kind: name, left: channels}
	switch strings.TrimSuffix(strings.TrimSuffix(name, "subscribe"), "un") {
	case "p":
		w.category = "pattern"
	case "s":
		w.category = "shard"
	default:
		w.category = "channel"
	}
	if channels == 0 {
		w.left = -1
	}
	return w
}

// confirm takes one reply to w's command and reports whether it was the
// last one due. Callers hold mu.
func (ss *session) confirm(w *pubsubWait, rep resp.Reply) bool {
	if rep.Kind != resp.KindArray || len(rep.Elems) < 3 || !bytes.EqualFold(rep.Elems[0].Str, []byte(w.kind)) {
		// An error (an ACL refusal of the channel) answers the whole
		// command at once.
		return true
	}
	set := ss.subs[w.category]
	if set == nil {
		set = map[string]bool{}
		ss.subs[w.category] = set
	}
	if w.left < 0 {
		// Unsubscribe from all: one confirmation per subscription the
		// server holds now, or one (with a null channel) for none.
		w.left = max(1, len(set))
	}
	if ch := rep.Elems[1]; !ch.Null {
		if strings.HasPrefix(w.kind, "un") || strings.HasPrefix(w.kind, "pun") || strings.HasPrefix(w.kind, "sun") {
			delete(set, string(ch.Str))
		} else {
			set[string(ch.Str)] = true
		}
	}
	w.left--
	return w.left <= 0
}

// subscribed reports whether the server holds any subscription of the
// client's. Callers hold mu.
func (ss *session) subscribed() bool {
	for _, set := range ss.subs {
		if len(set) > 0 {
			return true
		}
	}
	return false
}

// isMessage reports whether rep is a published message: only a
// subscribed client gets one, and only then is the shape unambiguous.
func isMessage(rep resp.Reply) bool {
	if rep.Kind != resp.KindArray || len(rep.Elems) < 3 || rep.Elems[0].Kind != resp.KindBulk {
		return false
	}
	switch string(rep.Elems[0].Str) {
	case "message", "pmessage", "smessage":
		return true
	}
	return false
}
