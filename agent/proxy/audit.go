package proxy

import (
	"github.com/wardenhq/warden/pkg/event"
)

// Audit records what one stream does, attributed to the stream's identity,
// process and target. Codecs record through it and never build events of
// their own, so every protocol's records carry the same attribution.
//
// A request is recorded before it is forwarded; its result, when the
// protocol has one, afterwards in a second event linked to the first. A
// crash between the two loses no request.
type Audit struct {
	rec Recorder
	att *Attribution
}

// NewAudit returns the audit of a stream attributed to att. Codec tests use
// it; the proxy makes one for every stream it serves.
func NewAudit(rec Recorder, att *Attribution) *Audit {
	return &Audit{rec: rec, att: att}
}

// Receipt identifies a recorded request, for linking its result.
type Receipt struct {
	// ID is the request event's id.
	ID string
}

// Request records one request with the decision on it.
func (a *Audit) Request(typ event.Type, dec event.Decision, p event.Payload) (Receipt, error) {
	e := a.event(typ, p)
	e.Decision = &dec
	a.rec.Emit(e)
	return Receipt{ID: e.ID}, nil
}

// Result records how the request r ended.
func (a *Audit) Result(r Receipt, typ event.Type, p event.Payload) {
	a.rec.Emit(a.event(typ, p))
}

func (a *Audit) event(typ event.Type, p event.Payload) *event.Event {
	return &event.Event{
		Type:     typ,
		Identity: a.att.Identity,
		Process:  a.att.Process,
		Target:   &a.att.Target,
		Data:     p.Data(),
	}
}

// UnrecordedError is what Audit.Request returns for a request that could
// not be recorded while the audit fails closed (audit_failure: deny). The
// codec must refuse the request with the protocol's own error.
type UnrecordedError struct {
	// Cause says why, in a few words fit for the user: "spool full", ...
	Cause string
	// Full is set when the cause is a full spool, which clears by itself
	// once the collector drains it.
	Full bool
	Err  error
}

func (e *UnrecordedError) Error() string {
	return "the audit log cannot record this request (" + e.Cause + "): " + e.Err.Error()
}

func (e *UnrecordedError) Unwrap() error { return e.Err }
