package proxy

import (
	"errors"

	"github.com/wardenhq/warden/agent/recorder"
	"github.com/wardenhq/warden/agent/spool"
	"github.com/wardenhq/warden/pkg/event"
)

// AuditFailure says what a stream does with a request its audit cannot
// record (agent.yaml's audit_failure).
type AuditFailure uint8

const (
	// FailClosed refuses the request: no record, no access. It is the
	// zero value, so a proxy or audit configured with nothing fails
	// closed.
	FailClosed AuditFailure = iota
	// FailOpen forwards the request unrecorded. The recorder counts the
	// loss and reports it in an agent.loss event.
	FailOpen
)

// Audit records what one stream does, attributed to the stream's identity,
// process and target. Codecs record through it and never build events of
// their own, so every protocol's records carry the same attribution.
//
// A request is recorded before it is forwarded; its result, when the
// protocol has one, afterwards in a second event linked to the first. A
// crash between the two loses no request.
type Audit struct {
	rec     Recorder
	att     *Attribution
	failure AuditFailure
	// shared is the attribution's encoding, for a recorder that takes it.
	shared *event.Context
}

// contextRecorder is a Recorder that can take a stream's shared members
// encoded once (*recorder.Recorder is one).
type contextRecorder interface {
	EmitIn(*event.Context, *event.Event) error
}

// NewAudit returns the audit of a stream attributed to att, which does
// what failure says with requests it cannot record. Codec tests use it;
// the proxy makes one for every stream it serves.
func NewAudit(rec Recorder, att *Attribution, failure AuditFailure) *Audit {
	a := &Audit{rec: rec, att: att, failure: failure}
	if _, ok := rec.(contextRecorder); ok {
		// The attribution does not change once the stream is served.
		a.shared = event.NewContext(att.Identity, att.Process, &att.Target)
	}
	return a
}

func (a *Audit) emit(e *event.Event) error {
	if cr, ok := a.rec.(contextRecorder); ok {
		return cr.EmitIn(a.shared, e)
	}
	return a.rec.Emit(e)
}

// Receipt identifies a recorded request, for linking its result.
type Receipt struct {
	// ID is the request event's id.
	ID string
}

// Request records one request with the decision on it. The codec calls it
// before it forwards the request, and must not forward it when Request
// returns an error: under FailClosed that is an *UnrecordedError whenever
// the recorder could not store the event. Under FailOpen Request never
// fails; the recorder counts the loss.
//
// A refused request (dec is deny or review) is not forwarded either way,
// so its codec only logs the error.
func (a *Audit) Request(typ event.Type, dec event.Decision, p event.Payload) (Receipt, error) {
	e := a.event(typ, p)
	e.Decision = &dec
	err := a.emit(e)
	// The recorder sets the id before it tries to store the event, so
	// even an unrecorded request's result names it (under FailOpen),
	// and agent.loss tells what happened to it.
	r := Receipt{ID: e.ID}
	if err != nil && a.failure == FailClosed {
		return r, Unrecorded(err)
	}
	return r, nil
}

// Result records how the request r ended, in an event linked to it. The
// request has already run, so there is nothing left to refuse: a result
// that cannot be stored is counted as lost by the recorder and reported in
// an agent.loss event. The error says so, for the codec to log if it
// wants; it is never a reason to stop the stream.
func (a *Audit) Result(r Receipt, typ event.Type, p event.Payload) error {
	return a.emit(a.event(typ, p))
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

// Unrecorded describes err, an error from Recorder.Emit, as an
// *UnrecordedError. The proxy uses it for connections; codecs get it from
// Audit.Request.
func Unrecorded(err error) *UnrecordedError {
	u := &UnrecordedError{Cause: "disk error", Err: err}
	switch {
	case errors.Is(err, spool.ErrFull):
		u.Cause, u.Full = "spool full", true
	case errors.Is(err, spool.ErrTooLarge):
		u.Cause = "event too large"
	case errors.Is(err, recorder.ErrEncode):
		u.Cause = "event cannot be encoded"
	case errors.Is(err, recorder.ErrClosed), errors.Is(err, spool.ErrClosed):
		u.Cause = "agent stopping"
	}
	return u
}
