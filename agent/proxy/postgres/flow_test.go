package postgres

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/wardenhq/warden/agent/spool"
	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/pkg/policy"
	pgwire "github.com/wardenhq/warden/pkg/protocol/postgres"
)

// Type OIDs of the columns the fake server describes.
const (
	oidInt4 = 23
	oidText = 25
)

func rowDescription(cols ...string) *pgproto3.RowDescription {
	rd := &pgproto3.RowDescription{}
	for _, c := range cols {
		oid, size := uint32(oidText), int16(-1)
		if c == "id" {
			oid, size = oidInt4, 4
		}
		rd.Fields = append(rd.Fields, pgproto3.FieldDescription{Name: []byte(c), DataTypeOID: oid, DataTypeSize: size, TypeModifier: -1})
	}
	return rd
}

func dataRow(values ...string) *pgproto3.DataRow {
	dr := &pgproto3.DataRow{}
	for _, v := range values {
		dr.Values = append(dr.Values, []byte(v))
	}
	return dr
}

// statementSession is a logged-in session whose server runs serve for
// the statements that follow the login.
func statementSession(t *testing.T, p *policy.Policy, serve func(s *fakeServer) error) (*session, *fakeRecorder) {
	t.Helper()
	clk := &clock{}
	rec := &fakeRecorder{clock: clk}
	ss := serveSession(t, New(Options{}), attribution("alice", p, policy.Target{}), rec, clk, func(s *fakeServer) error {
		if _, err := s.trustLogin(serverPID, serverSecret); err != nil {
			return err
		}
		if err := serve(s); err != nil {
			return err
		}
		return s.drain()
	})
	ss.startup(map[string]string{"user": "person", "database": "orders"})
	ss.untilReady()
	return ss, rec
}

var noDDL = policy.Rule{Name: "no-ddl", When: policy.Match{Statements: []string{"drop", "truncate"}}, Action: policy.Deny}

// A denied statement never reaches the server: it runs Warden's
// substitute, which fails, and the client gets the denial naming the rule.
func TestDenial(t *testing.T) {
	var got string
	ss, rec := statementSession(t, testPolicy([]policy.Rule{noDDL}, nil), func(s *fakeServer) error {
		q, _, err := s.query()
		if err != nil {
			return err
		}
		got = q
		// What PostgreSQL answers to the substitute.
		return s.send(
			&pgproto3.ErrorResponse{Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: "42601",
				Message: fmt.Sprintf("syntax error at or near %q", q), Position: 1},
			&pgproto3.ReadyForQuery{TxStatus: 'I'})
	})
	ss.send(&pgproto3.Query{String: "DROP TABLE customers"})
	msgs := ss.untilReady()
	ss.endOK()

	if !strings.HasPrefix(got, "warden_denied_") || strings.Contains(strings.ToLower(got), "drop") {
		t.Errorf("server got %q, want Warden's substitute", got)
	}
	if len(msgs) != 2 {
		t.Fatalf("client got %d messages %T, want ErrorResponse, ReadyForQuery", len(msgs), msgs)
	}
	e, ok := msgs[0].(*pgproto3.ErrorResponse)
	if !ok || e.Severity != "ERROR" || e.Code != pgwire.CodeInsufficientPrivilege || !strings.Contains(e.Message, `DROP denied by rule "no-ddl"`) {
		t.Fatalf("client got %+v, want ERROR 42501 naming rule no-ddl", msgs[0])
	}
	if strings.Contains(e.Message, "warden_denied_") || e.Position != 0 {
		t.Errorf("the substitute's error leaked to the client: %+v", e)
	}
	queries := rec.ofType(event.DBQuery)
	if len(queries) != 1 {
		t.Fatalf("%d db.query events, want 1", len(queries))
	}
	ev := queries[0].ev
	if ev.Decision == nil || ev.Decision.Action != event.Deny || ev.Decision.Rule != "no-ddl" {
		t.Errorf("db.query decision %+v, want deny by no-ddl", ev.Decision)
	}
	if ev.Data["kind"] != "drop" || ev.Identity == nil || ev.Identity.Sub != "alice" || ev.Target == nil || ev.Target.Name != targetName {
		t.Errorf("db.query event %+v data %v", ev, ev.Data)
	}
	if res := rec.ofType(event.DBResult); len(res) != 0 {
		t.Errorf("a refused statement has a db.result: %v", res[0].ev.Data)
	}
}

// An allowed statement is recorded before the server sees it, and its
// result afterwards, linked to it.
func TestAllowedStatementRecorded(t *testing.T) {
	var (
		got        string
		receivedAt int64
		seenBefore int // db.query events recorded when the server got the query
	)
	var rec *fakeRecorder
	ss, rec := statementSession(t, testPolicy([]policy.Rule{noDDL}, nil), func(s *fakeServer) error {
		q, at, err := s.query()
		if err != nil {
			return err
		}
		got, receivedAt, seenBefore = q, at, len(rec.ofType(event.DBQuery))
		return s.send(rowDescription("id", "name"), dataRow("1", "one"), dataRow("2", "two"),
			&pgproto3.CommandComplete{CommandTag: []byte("SELECT 2")}, &pgproto3.ReadyForQuery{TxStatus: 'I'})
	})
	const sql = "SELECT id, name FROM customers WHERE id < 3"
	ss.send(&pgproto3.Query{String: sql})
	msgs := ss.untilReady()
	ss.endOK()

	if got != sql {
		t.Fatalf("server got %q, want %q", got, sql)
	}
	if rows := find[*pgproto3.DataRow](msgs); len(rows) != 2 || string(rows[1].Values[1]) != "two" {
		t.Errorf("client's rows %v", rows)
	}
	queries, results := rec.ofType(event.DBQuery), rec.ofType(event.DBResult)
	if len(queries) != 1 || len(results) != 1 {
		t.Fatalf("%d db.query and %d db.result events, want 1 each", len(queries), len(results))
	}
	q, r := queries[0], results[0]
	if seenBefore != 1 || q.at >= receivedAt {
		t.Errorf("db.query recorded at tick %d, server got the query at %d with %d db.query recorded: not recorded before forwarding",
			q.at, receivedAt, seenBefore)
	}
	if q.ev.Decision == nil || q.ev.Decision.Action != event.Allow {
		t.Errorf("db.query decision %+v", q.ev.Decision)
	}
	stmt, _ := q.ev.Data["statement"].(string)
	if !strings.Contains(stmt, "customers") || strings.Contains(stmt, "< 3") || q.ev.Data["kind"] != "select" ||
		q.ev.Data["database"] != "orders" || q.ev.Data["db_user"] != "person" || q.ev.Data["protocol"] != "simple" {
		t.Errorf("db.query data %v: want the literal-free select by person on orders", q.ev.Data)
	}
	if r.at <= receivedAt {
		t.Errorf("db.result recorded at tick %d, before the server answered (%d)", r.at, receivedAt)
	}
	if r.ev.Data["request_id"] != q.ev.ID || q.ev.ID == "" {
		t.Errorf("db.result request_id %v, want the db.query's id %q", r.ev.Data["request_id"], q.ev.ID)
	}
	if r.ev.Data["rows"] != int64(2) || r.ev.Data["command"] != "SELECT 2" || r.ev.Data["rows_returned"] != int64(2) {
		t.Errorf("db.result data %v: want 2 rows from SELECT 2", r.ev.Data)
	}
	if r.ev.Identity == nil || r.ev.Identity.Sub != "alice" {
		t.Errorf("db.result identity %+v", r.ev.Identity)
	}
}

// A statement the server fails is recorded with its SQLSTATE.
func TestFailedStatementResult(t *testing.T) {
	ss, rec := statementSession(t, testPolicy(nil, nil), func(s *fakeServer) error {
		if _, _, err := s.query(); err != nil {
			return err
		}
		return s.send(&pgproto3.ErrorResponse{Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: "42P01", Message: `relation "nope" does not exist`},
			&pgproto3.ReadyForQuery{TxStatus: 'I'})
	})
	ss.send(&pgproto3.Query{String: "SELECT * FROM nope"})
	msgs := ss.untilReady()
	ss.endOK()
	if e, ok := msgs[0].(*pgproto3.ErrorResponse); !ok || e.Code != "42P01" {
		t.Errorf("client got %+v, want the server's error", msgs[0])
	}
	q, r := rec.ofType(event.DBQuery), rec.ofType(event.DBResult)
	if len(q) != 1 || len(r) != 1 || r[0].ev.Data["error"] != "42P01" || r[0].ev.Data["request_id"] != q[0].ev.ID {
		t.Fatalf("events: %d db.query, db.result %v", len(q), r)
	}
}

var pii = policy.Masking{Name: "pii", Columns: []string{"email"}, Detectors: []string{"credit_card"}}

const rawCard = "4111 1111 1111 1111"

func TestMasking(t *testing.T) {
	ss, rec := statementSession(t, testPolicy(nil, []policy.Masking{pii}), func(s *fakeServer) error {
		if _, _, err := s.query(); err != nil {
			return err
		}
		return s.send(rowDescription("id", "email", "note"),
			dataRow("1", "carol@example.org", "card "+rawCard+" on file"),
			dataRow("2", "dave@example.org", "nothing to see"),
			&pgproto3.CommandComplete{CommandTag: []byte("SELECT 2")}, &pgproto3.ReadyForQuery{TxStatus: 'I'})
	})
	ss.send(&pgproto3.Query{String: "SELECT id, email, note FROM customers"})
	msgs := ss.untilReady()
	ss.endOK()

	rows := find[*pgproto3.DataRow](msgs)
	if len(rows) != 2 {
		t.Fatalf("client got %d rows", len(rows))
	}
	var got [][]string
	for _, r := range rows {
		var vals []string
		for _, v := range r.Values {
			vals = append(vals, string(v))
		}
		got = append(got, vals)
	}
	want := [][]string{{"1", "****", "card [masked:credit_card] on file"}, {"2", "****", "nothing to see"}}
	if !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("client's rows %q, want %q", got, want)
	}
	r := rec.ofType(event.DBResult)
	if len(r) != 1 {
		t.Fatalf("%d db.result events", len(r))
	}
	masked, _ := r[0].ev.Data["masked_columns"].([]string)
	if !slices.Contains(masked, "email") || !slices.Contains(masked, "note") || slices.Contains(masked, "id") {
		t.Errorf("masked_columns %v, want email and note", r[0].ev.Data["masked_columns"])
	}
}

// COPY TO STDOUT learns the copied columns from a probe the codec sends
// first, whose answer the client never sees, and masks each line.
func TestCopyOutMasked(t *testing.T) {
	var probe, copyQ string
	var probeSeq []string
	ss, rec := statementSession(t, testPolicy(nil, []policy.Masking{pii}), func(s *fakeServer) error {
		// The probe prepares the COPY's source and describes it, which
		// runs nothing: Parse, Describe, Close, Sync.
		for range 4 {
			m, _, err := s.receive()
			if err != nil {
				return err
			}
			probeSeq = append(probeSeq, fmt.Sprintf("%T", m))
			if p, ok := m.(*pgproto3.Parse); ok {
				probe = p.Query
			}
		}
		if err := s.send(&pgproto3.ParseComplete{}, &pgproto3.ParameterDescription{}, rowDescription("id", "email", "note"),
			&pgproto3.CloseComplete{}, &pgproto3.ReadyForQuery{TxStatus: 'I'}); err != nil {
			return err
		}
		var err error
		if copyQ, _, err = s.query(); err != nil {
			return err
		}
		return s.send(&pgproto3.CopyOutResponse{OverallFormat: 0, ColumnFormatCodes: []uint16{0, 0, 0}},
			&pgproto3.CopyData{Data: []byte("1\tcarol@example.org\tcard " + rawCard + " on file\n")},
			&pgproto3.CopyData{Data: []byte("2\tdave@example.org\tnothing to see\n")},
			&pgproto3.CopyDone{},
			&pgproto3.CommandComplete{CommandTag: []byte("COPY 2")}, &pgproto3.ReadyForQuery{TxStatus: 'I'})
	})
	const sql = "COPY customers TO STDOUT"
	ss.send(&pgproto3.Query{String: sql})
	msgs := ss.untilReady()
	ss.endOK()

	wantSeq := []string{"*pgproto3.Parse", "*pgproto3.Describe", "*pgproto3.Close", "*pgproto3.Sync"}
	if !slices.Equal(probeSeq, wantSeq) || !strings.Contains(probe, "customers") || copyQ != sql {
		t.Errorf("server got %v (%q) then %q, want the described probe then the COPY", probeSeq, probe, copyQ)
	}
	var types []string
	for _, m := range msgs {
		types = append(types, fmt.Sprintf("%T", m))
	}
	want := []string{"*pgproto3.CopyOutResponse", "*pgproto3.CopyData", "*pgproto3.CopyData", "*pgproto3.CopyDone",
		"*pgproto3.CommandComplete", "*pgproto3.ReadyForQuery"}
	if !slices.Equal(types, want) {
		t.Fatalf("client got %v, want %v (nothing of the probe)", types, want)
	}
	lines := find[*pgproto3.CopyData](msgs)
	if got := string(lines[0].Data); got != "1\t****\tcard [masked:credit_card] on file\n" {
		t.Errorf("first line %q", got)
	}
	if got := string(lines[1].Data); got != "2\t****\tnothing to see\n" {
		t.Errorf("second line %q", got)
	}
	q, r := rec.ofType(event.DBQuery), rec.ofType(event.DBResult)
	if len(q) != 1 || q[0].ev.Data["kind"] != "copy" {
		t.Fatalf("db.query events %v: want the COPY alone, not the probe", q)
	}
	if len(r) != 1 || r[0].ev.Data["request_id"] != q[0].ev.ID || r[0].ev.Data["rows"] != int64(2) {
		t.Errorf("db.result %v", r)
	}
}

// A COPY the codec cannot mask is refused before it runs.
func TestCopyOutBinaryRefused(t *testing.T) {
	var got string
	ss, _ := statementSession(t, testPolicy(nil, []policy.Masking{pii}), func(s *fakeServer) error {
		q, _, err := s.query()
		if err != nil {
			return err
		}
		got = q
		return s.send(&pgproto3.ErrorResponse{Severity: "ERROR", Code: "42601", Message: "syntax error"}, &pgproto3.ReadyForQuery{TxStatus: 'I'})
	})
	ss.send(&pgproto3.Query{String: "COPY customers TO STDOUT WITH (FORMAT binary)"})
	msgs := ss.untilReady()
	ss.endOK()
	if !strings.HasPrefix(got, "warden_denied_") {
		t.Errorf("server got %q", got)
	}
	if e, ok := msgs[0].(*pgproto3.ErrorResponse); !ok || !strings.Contains(e.Message, "cannot be masked") {
		t.Errorf("client got %+v", msgs[0])
	}
}

// Through the extended protocol, a client that never asks for the
// portal's columns still gets them masked: the codec asks the server
// itself and keeps the answer from the client.
func TestExtendedMasked(t *testing.T) {
	var got []string
	ss, rec := statementSession(t, testPolicy(nil, []policy.Masking{pii}), func(s *fakeServer) error {
		for {
			m, _, err := s.receive()
			if err != nil {
				return err
			}
			got = append(got, fmt.Sprintf("%T", m))
			if d, ok := m.(*pgproto3.Describe); ok && (d.ObjectType != 'P' || d.Name != "") {
				return fmt.Errorf("server: Describe %c %q, want the unnamed portal", d.ObjectType, d.Name)
			}
			if _, ok := m.(*pgproto3.Sync); ok {
				break
			}
		}
		return s.send(&pgproto3.ParseComplete{}, &pgproto3.BindComplete{}, rowDescription("email", "note"),
			dataRow("carol@example.org", "card "+rawCard),
			&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")}, &pgproto3.ReadyForQuery{TxStatus: 'I'})
	})
	ss.send(&pgproto3.Parse{Query: "SELECT email, note FROM customers WHERE id = $1"},
		&pgproto3.Bind{Parameters: [][]byte{[]byte("1")}}, &pgproto3.Execute{}, &pgproto3.Sync{})
	msgs := ss.untilReady()
	ss.endOK()

	if want := []string{"*pgproto3.Parse", "*pgproto3.Bind", "*pgproto3.Describe", "*pgproto3.Execute", "*pgproto3.Sync"}; !slices.Equal(got, want) {
		t.Errorf("server got %v, want %v", got, want)
	}
	var types []string
	for _, m := range msgs {
		types = append(types, fmt.Sprintf("%T", m))
	}
	if want := []string{"*pgproto3.ParseComplete", "*pgproto3.BindComplete", "*pgproto3.DataRow",
		"*pgproto3.CommandComplete", "*pgproto3.ReadyForQuery"}; !slices.Equal(types, want) {
		t.Fatalf("client got %v, want %v (no RowDescription it did not ask for)", types, want)
	}
	row := find[*pgproto3.DataRow](msgs)[0]
	if string(row.Values[0]) != "****" || string(row.Values[1]) != "card [masked:credit_card]" {
		t.Errorf("client's row %q", row.Values)
	}
	q, r := rec.ofType(event.DBQuery), rec.ofType(event.DBResult)
	if len(q) != 1 || q[0].ev.Data["protocol"] != "extended" || len(r) != 1 || r[0].ev.Data["request_id"] != q[0].ev.ID {
		t.Fatalf("events: db.query %v, db.result %v", q, r)
	}
}

// A prepared statement is checked when it is prepared: a denied one is
// replaced by Warden's substitute, and the client gets the denial.
func TestExtendedDenied(t *testing.T) {
	var parsed string
	ss, rec := statementSession(t, testPolicy([]policy.Rule{noDDL}, nil), func(s *fakeServer) error {
		p, _, err := expect[*pgproto3.Parse](s)
		if err != nil {
			return err
		}
		parsed = p.Query
		for {
			m, _, err := s.receive()
			if err != nil {
				return err
			}
			if _, ok := m.(*pgproto3.Sync); ok {
				break
			}
		}
		// The server fails the Parse and skips to the Sync.
		return s.send(&pgproto3.ErrorResponse{Severity: "ERROR", Code: "42601", Message: "syntax error"}, &pgproto3.ReadyForQuery{TxStatus: 'I'})
	})
	ss.send(&pgproto3.Parse{Name: "wipe", Query: "TRUNCATE customers"}, &pgproto3.Bind{PreparedStatement: "wipe"},
		&pgproto3.Execute{}, &pgproto3.Sync{})
	msgs := ss.untilReady()
	ss.endOK()
	if !strings.HasPrefix(parsed, "warden_denied_") {
		t.Errorf("server parsed %q", parsed)
	}
	if e, ok := msgs[0].(*pgproto3.ErrorResponse); !ok || e.Code != pgwire.CodeInsufficientPrivilege || !strings.Contains(e.Message, `TRUNCATE denied by rule "no-ddl"`) {
		t.Fatalf("client got %+v", msgs[0])
	}
	if q := rec.ofType(event.DBQuery); len(q) != 1 || q[0].ev.Decision.Action != event.Deny || q[0].ev.Data["protocol"] != "extended" {
		t.Errorf("db.query events %v", q)
	}
}

// No record, no access: a statement the audit cannot record does not run,
// the client is told why, and the session goes on once recording works.
func TestUnrecordedStatementRefused(t *testing.T) {
	var got []string
	ss, rec := statementSession(t, testPolicy(nil, nil), func(s *fakeServer) error {
		q, _, err := s.query()
		if err != nil {
			return err
		}
		got = append(got, q)
		if err := s.send(&pgproto3.ErrorResponse{Severity: "ERROR", Code: "42601", Message: "syntax error"}, &pgproto3.ReadyForQuery{TxStatus: 'I'}); err != nil {
			return err
		}
		if q, _, err = s.query(); err != nil {
			return err
		}
		got = append(got, q)
		return s.send(&pgproto3.CommandComplete{CommandTag: []byte("DELETE 1")}, &pgproto3.ReadyForQuery{TxStatus: 'I'})
	})
	rec.setFail(spool.ErrFull)
	ss.send(&pgproto3.Query{String: "DELETE FROM customers WHERE id = 1"})
	refused := ss.untilReady()
	rec.setFail(nil)
	ss.send(&pgproto3.Query{String: "DELETE FROM customers WHERE id = 2"})
	after := ss.untilReady()
	ss.endOK()

	if len(got) != 2 || !strings.HasPrefix(got[0], "warden_denied_") || got[1] != "DELETE FROM customers WHERE id = 2" {
		t.Fatalf("server got %q: want the substitute, then the second statement", got)
	}
	if e, ok := refused[0].(*pgproto3.ErrorResponse); !ok || e.Code != "53100" || !strings.Contains(e.Message, "spool full") {
		t.Errorf("client got %+v, want 53100 naming the full spool", refused[0])
	}
	if c := find[*pgproto3.CommandComplete](after); len(c) != 1 || string(c[0].CommandTag) != "DELETE 1" {
		t.Errorf("after recovery the client got %T", after)
	}
	// The first statement's event was lost (the recorder counts that);
	// the second's was stored before the statement ran.
	if q := rec.ofType(event.DBQuery); len(q) != 1 || q[0].ev.Data["kind"] != "delete" || q[0].ev.Decision.Action != event.Allow {
		t.Errorf("db.query events %v: want only the second statement's", q)
	}
}
