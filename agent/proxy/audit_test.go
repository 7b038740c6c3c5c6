package proxy

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"github.com/rs/zerolog"

	"github.com/wardenhq/warden/agent/recorder"
	"github.com/wardenhq/warden/agent/spool"
	"github.com/wardenhq/warden/pkg/event"
)

func auditAttribution() *Attribution {
	return &Attribution{
		Target:   dbTarget(),
		Identity: &event.Identity{Sub: "alice", Groups: []string{"engineering"}},
		Process:  &event.Process{PID: 4242, UID: 1001, Binary: "/usr/bin/psql"},
	}
}

func insert(i int) event.Query {
	return event.Query{Database: "orders", DBUser: "app", Statement: "INSERT INTO t VALUES ($1)",
		Fingerprint: fmt.Sprintf("f%d", i), Kind: "insert", Tables: []string{"t"}, Protocol: "simple"}
}

var allow = event.Decision{Action: event.Allow, Rule: "access"}

// Failing closed, every way the recorder can fail refuses the request,
// with a cause the user can read and Full set only for a full spool.
// Failing open, none does.
func TestAuditRequestWhenRecordingFails(t *testing.T) {
	for _, tt := range []struct {
		err   error
		cause string
	}{
		{fmt.Errorf("record db.query: %w", spool.ErrFull), "spool full"},
		{fmt.Errorf("record db.query: %w: 9000000 bytes", spool.ErrTooLarge), "event too large"},
		{fmt.Errorf("record db.query: %w: json: unsupported value: NaN", recorder.ErrEncode), "event cannot be encoded"},
		{fmt.Errorf("record db.query: %w", recorder.ErrClosed), "agent stopping"},
		{fmt.Errorf("record db.query: %w", spool.ErrClosed), "agent stopping"},
		{errors.New("record db.query: spool write: write /var/lib/warden/spool/x.seg: input/output error"), "disk error"},
	} {
		t.Run(tt.cause, func(t *testing.T) {
			rec := &fakeRecorder{}
			rec.fail(tt.err)
			_, err := NewAudit(rec, auditAttribution(), FailClosed).Request(event.DBQuery, allow, insert(1))
			var u *UnrecordedError
			if !errors.As(err, &u) {
				t.Fatalf("failing closed, Request returned %v, want an *UnrecordedError", err)
			}
			full := errors.Is(tt.err, spool.ErrFull)
			if u.Cause != tt.cause || u.Full != full || !errors.Is(err, tt.err) || errors.Is(err, spool.ErrFull) != full {
				t.Fatalf("got %+v (%v), want cause %q, full %v, wrapping %v", u, err, tt.cause, full, tt.err)
			}

			rec = &fakeRecorder{}
			rec.fail(tt.err)
			if _, err := NewAudit(rec, auditAttribution(), FailOpen).Request(event.DBQuery, allow, insert(1)); err != nil {
				t.Fatalf("failing open, Request returned %v", err)
			}
			if n := len(rec.lost()); n != 1 {
				t.Fatalf("failing open, the recorder was asked %d times", n)
			}
		})
	}
}

// A request is recorded with its decision, refused ones too, and with the
// stream's attribution.
func TestAuditRecordsDecisionAndAttribution(t *testing.T) {
	rec := &fakeRecorder{}
	att := auditAttribution()
	a := NewAudit(rec, att, FailClosed)
	deny := event.Decision{Action: event.Deny, Rule: "no-ddl", Reason: "warden: statement denied"}
	if _, err := a.Request(event.DBQuery, deny, insert(1)); err != nil {
		t.Fatal(err)
	}
	evs := rec.all()
	if len(evs) != 1 {
		t.Fatalf("%d events", len(evs))
	}
	e := evs[0]
	if e.Type != event.DBQuery || *e.Decision != deny || e.Identity != att.Identity || e.Process != att.Process || *e.Target != att.Target {
		t.Fatalf("event %+v", e)
	}
	if e.Data["statement"] != "INSERT INTO t VALUES ($1)" || e.Data["kind"] != "insert" {
		t.Fatalf("data %v", e.Data)
	}
}

// With the real recorder and spool: once the spool is full a request
// cannot be recorded and is refused, and as soon as the publisher has
// acknowledged what the spool held, requests are recorded again with no
// restart. A result is linked to its request by id.
func TestAuditWithFullSpoolRecovers(t *testing.T) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := spool.Open(t.TempDir(), spool.Options{MaxBytes: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	rec, err := recorder.New(recorder.Options{Host: event.Host{ID: "h"}, Key: key, Spool: sp, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer rec.Close()
	a := NewAudit(rec, auditAttribution(), FailClosed)

	recorded := 0
	var refusal error
	for i := 0; refusal == nil; i++ {
		if i > 10000 {
			t.Fatal("the spool never filled")
		}
		if _, refusal = a.Request(event.DBQuery, allow, insert(i)); refusal == nil {
			recorded++
		}
	}
	var u *UnrecordedError
	if !errors.As(refusal, &u) || !u.Full || u.Cause != "spool full" {
		t.Fatalf("full spool: Request returned %v", refusal)
	}
	// Still full: still refused.
	if _, err := a.Request(event.DBQuery, allow, insert(-1)); !errors.As(err, &u) || !u.Full {
		t.Fatalf("second request on a full spool: %v", err)
	}
	// A result is never refused, but its loss is reported to the caller.
	if err := a.Result(Receipt{ID: "01JPA7Q5000000000000000000"}, event.DBResult, event.QueryResult{Rows: 1}); !errors.Is(err, spool.ErrFull) {
		t.Fatalf("Result on a full spool: %v", err)
	}

	// The publisher delivers everything: the spool has room again.
	r := sp.NewReader()
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()
	queries := 0
	var last spool.Record
	for queries < recorded {
		if last, err = r.Next(ctx); err != nil {
			t.Fatalf("after %d of %d queries: %v", queries, recorded, err)
		}
		var e event.Event
		if err := json.Unmarshal(last.Data, &e); err != nil {
			t.Fatal(err)
		}
		if e.Type == event.DBQuery {
			queries++
		}
	}
	if err := sp.Ack(last.Pos); err != nil {
		t.Fatal(err)
	}
	receipt, err := a.Request(event.DBQuery, allow, insert(recorded))
	if err != nil {
		t.Fatalf("after the spool drained, Request returned %v", err)
	}
	if err := a.Result(receipt, event.DBResult, event.QueryResult{RequestID: receipt.ID, Rows: 1}); err != nil {
		t.Fatal(err)
	}
	var evs []event.Event
	for len(evs) < 2 {
		rec, err := r.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var e event.Event
		if err := json.Unmarshal(rec.Data, &e); err != nil {
			t.Fatal(err)
		}
		if e.Type == event.DBQuery || e.Type == event.DBResult {
			evs = append(evs, e)
		}
	}
	if evs[0].Type != event.DBQuery || evs[0].ID != receipt.ID || evs[1].Type != event.DBResult || evs[1].Data["request_id"] != receipt.ID {
		t.Fatalf("after recovery: %s %s, %s %v; receipt %s", evs[0].Type, evs[0].ID, evs[1].Type, evs[1].Data, receipt.ID)
	}
}
