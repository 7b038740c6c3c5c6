package proxy

import (
	"context"
	"sync"
	"time"

	"github.com/wardenhq/warden/pkg/event"
)

// CloseTimeout bounds how long a codec may take to tell a client why its
// stream closes (cancelling a running statement first) before the proxy
// closes both connections regardless. With the daemon's expiry timers it
// keeps "closed within 1 s" true.
const CloseTimeout = 500 * time.Millisecond

// openStream is a connection the proxy authorized and has not finished
// with. It is indexed from authorization on, before the upstream is
// dialled, so that a session ended while the dial is in progress still
// finds it: Serve then never starts, and the client is refused with the
// reason instead.
type openStream struct {
	att    *Attribution
	client string
	since  time.Time

	mu     sync.Mutex
	stream *Stream // nil until the codec's Serve starts
	reason string  // set once the stream is being closed
	done   chan struct{}
}

// OnClose installs fn as the stream's way of ending in the protocol's own
// words. When the agent ends the stream (its session expired or was logged
// out or killed, or the policy no longer gives it the target), End calls
// fn with a deadline of at most CloseTimeout and the reason, which is one
// line meant for the person at the client; fn should stop what runs
// upstream, send the reason and return. End closes both connections after
// fn returns. Without OnClose (the relay), the connections just close.
//
// A codec calls OnClose once its protocol state can carry a message, and
// again with nil when that is no longer so.
func (s *Stream) OnClose(fn func(ctx context.Context, reason string)) {
	s.lifeMu.Lock()
	defer s.lifeMu.Unlock()
	s.closeFn = fn
}

// End ends the stream for reason: the codec's closing words (see OnClose),
// bounded by CloseTimeout, then both connections close, which makes the
// codec's Serve return.
func (s *Stream) End(ctx context.Context, reason string) {
	s.lifeMu.Lock()
	fn := s.closeFn
	s.lifeMu.Unlock()
	if fn != nil {
		cctx, cancel := context.WithTimeout(ctx, CloseTimeout)
		fn(cctx, reason)
		cancel()
	}
	s.Client.Close()
	s.Upstream.Close()
}

// ClosedStream describes a stream the proxy closed on the agent's behalf.
type ClosedStream struct {
	SessionID string
	Target    event.Target
	// Client is the client's address as the proxy saw it, PID the
	// client process's.
	Client string
	PID    uint32
	Since  time.Time
	Reason string
}

// Event is the stream's entry in the connections_closed list of the event
// that reports the closure.
func (c ClosedStream) Event() event.ClosedConnection {
	return event.ClosedConnection{Target: c.Target.Name, Client: c.Client, PID: c.PID, Since: c.Since}
}

// Selector picks streams to close: it returns the reason to give a stream's
// client, and whether to close it. It is called with the proxy's index
// locked and must not call back into the proxy.
type Selector func(att *Attribution) (reason string, close bool)

// BySession selects every stream of the session id, with reason.
func BySession(id, reason string) Selector {
	return func(att *Attribution) (string, bool) { return reason, id != "" && att.SessionID == id }
}

// StreamInfo is an open stream as Streams lists it.
type StreamInfo struct {
	SessionID string
	Target    string
	Client    string
	PID       uint32
	Since     time.Time
}

// Streams lists the open streams.
func (p *Proxy) Streams() []StreamInfo {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]StreamInfo, 0, len(p.open))
	for o := range p.open {
		out = append(out, StreamInfo{SessionID: o.att.SessionID, Target: o.att.Target.Name,
			Client: o.clientAddr(), PID: o.att.Kernel.TGID, Since: o.since})
	}
	return out
}

func (o *openStream) clientAddr() string { return o.client }

// Close ends every open stream sel selects, each in its codec's words
// (see Stream.OnClose), concurrently, and returns once all of them are
// closed: at most CloseTimeout plus the time to close sockets. A stream
// selected before its codec started is refused with the reason when its
// dial returns.
func (p *Proxy) Close(ctx context.Context, sel Selector) []ClosedStream {
	// Authorizations in flight finish and index their streams first.
	p.authMu.Lock()
	p.mu.Lock()
	var picked []*openStream
	var out []ClosedStream
	for o := range p.open {
		reason, ok := sel(o.att)
		if !ok {
			continue
		}
		o.mu.Lock()
		already := o.reason != ""
		if !already {
			o.reason = reason
		}
		o.mu.Unlock()
		if already {
			continue // another closure has it; it reports it
		}
		picked = append(picked, o)
		out = append(out, ClosedStream{SessionID: o.att.SessionID, Target: o.att.Target,
			Client: o.clientAddr(), PID: o.att.Kernel.TGID, Since: o.since, Reason: reason})
	}
	p.mu.Unlock()
	p.authMu.Unlock()

	var wg sync.WaitGroup
	for _, o := range picked {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o.end(ctx)
		}()
	}
	wg.Wait()
	return out
}

// end ends the stream (Stream.End) and waits, CloseTimeout at most, for
// its handler to be done with it.
func (o *openStream) end(ctx context.Context) {
	o.mu.Lock()
	s, reason := o.stream, o.reason
	o.mu.Unlock()
	if s == nil {
		return // not served yet: handle refuses it after the dial
	}
	s.End(ctx, reason)
	select {
	case <-o.done:
	case <-time.After(CloseTimeout):
	case <-ctx.Done():
	}
}

// index adds an authorized connection to the index.
func (p *Proxy) index(att *Attribution, client string) *openStream {
	o := &openStream{att: att, client: client, since: time.Now().UTC(), done: make(chan struct{})}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.open[o] = struct{}{}
	return o
}

// unindex removes o once its handler is done with it.
func (p *Proxy) unindex(o *openStream) {
	p.mu.Lock()
	delete(p.open, o)
	p.mu.Unlock()
	close(o.done)
}

// serving attaches the stream the codec is about to serve. It returns the
// closure reason if the stream was selected for closing in the meantime,
// in which case the codec must not serve it.
func (o *openStream) serving(s *Stream) string {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.reason != "" {
		return o.reason
	}
	o.stream = s
	return ""
}
