// Package store keeps verified (and flagged) Warden events, and the review
// queue, in SQLite (embedded, the default) or PostgreSQL (pgx), with the
// same schema and the same queries; only the column types of the DDL and
// the placeholder syntax differ (dialect). The schema is versioned
// (migrations, recorded in schema_migrations).
//
// Each event is one row: a few columns extracted for filtering, plus the raw
// JSON exactly as it arrived, so that an auditor can re-verify hashes and
// signatures from the store alone. The rowid column (SQLite's implicit
// rowid, an identity column in PostgreSQL) grows in insertion order and
// serves as the cursor for following new events, since event ids (ULIDs
// minted by many agents) are not inserted in order.
package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/wardenhq/warden/pkg/event"
	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// ErrNotFound is returned when no event matches.
var ErrNotFound = errors.New("event not found")

// Store is an open event database. It is safe for concurrent use, and
// several collectors may write to one PostgreSQL store: inserts are
// idempotent on the event id.
type Store struct {
	db *sql.DB
	d  dialect
}

// Open opens (creating and migrating if needed) the store at location: a
// postgres:// or postgresql:// URL opens PostgreSQL, anything else is the
// path of a SQLite file.
func Open(location string) (*Store, error) {
	if isPostgres(location) {
		return openPostgres(location)
	}
	return openSQLite(location)
}

// openSQLite opens the database at path, in WAL mode so that API readers
// never block the ingester.
func openSQLite(path string) (*Store, error) {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, fmt.Errorf("store: create directory for %s: %w", path, err)
		}
	}
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "journal_mode(WAL)")
	// FULL: an event is acked to JetStream once committed, so the commit
	// must survive a power loss, not only a crash of the collector.
	q.Add("_pragma", "synchronous(FULL)")
	// The statement journal of multi-row inserts in memory, not in a
	// temporary file: it only undoes a failed statement inside its
	// transaction, and durability does not depend on it.
	q.Add("_pragma", "temp_store(MEMORY)")
	q.Add("_txlock", "immediate")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	db.SetMaxOpenConns(8)
	st := &Store{db: db, d: sqliteDialect{}}
	if err := st.migrate(context.Background()); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: %s: %w", path, err)
	}
	return st, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Record is one row to insert.
type Record struct {
	Event     *event.Event
	Raw       []byte   // the JSON as received; stored verbatim
	Integrity []string // problem kinds; empty when the event verified
	ChainHead bool     // the verifier's chain head moved to this event
	StreamSeq uint64
}

// Insert stores recs in one transaction. A record whose id is already
// stored is skipped (redelivery after a lost ack), which makes ingestion
// idempotent. It returns how many rows were new.
func (s *Store) Insert(ctx context.Context, recs []Record) (int, error) {
	return s.Write(ctx, Batch{Events: recs})
}

// Batch is what the ingester writes for one batch of messages.
type Batch struct {
	Events      []Record
	Checkpoints []Checkpoint
	// Covered are checkpoints stored earlier that the stored events were
	// now found to hash to.
	Covered []Covered
	// Marks flag ranges of a host's chain events, after Events are in.
	Marks []Mark
}

// Covered records a stored checkpoint as covered, with the compact range
// of the tree at its size.
type Covered struct {
	ID       string
	Frontier [][]byte
}

// Mark adds problem Kind to the chain events of HostID with seq in
// [From, To].
type Mark struct {
	HostID   string
	From, To uint64
	Kind     string
}

// Write stores a batch in one transaction, so that one commit (one fsync)
// serves the events and the checkpoints that came with them: events
// first (skipping ids already stored), then checkpoints (skipping ids
// already stored), then coverage and marks. It returns how many event
// rows were new.
func (s *Store) Write(ctx context.Context, b Batch) (int, error) {
	if len(b.Events) == 0 && len(b.Checkpoints) == 0 && len(b.Covered) == 0 && len(b.Marks) == 0 {
		return 0, nil
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("store: begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	// Writers one at a time: rowids then commit in the order they were
	// given, so a follower's cursor never skips a row committed late.
	if err := s.d.lock(ctx, tx, lockEvents); err != nil {
		return 0, err
	}
	n, err := s.insertEvents(ctx, tx, b.Events)
	if err != nil {
		return 0, err
	}
	if err := s.insertCheckpoints(ctx, tx, b.Checkpoints); err != nil {
		return 0, err
	}
	for _, c := range b.Covered {
		if err := s.markCovered(ctx, tx, c.ID, c.Frontier); err != nil {
			return 0, err
		}
	}
	for _, m := range b.Marks {
		if err := s.markEvents(ctx, tx, m.HostID, m.From, m.To, m.Kind); err != nil {
			return 0, err
		}
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("store: commit %d events, %d checkpoints: %w", len(b.Events), len(b.Checkpoints), err)
	}
	return n, nil
}

// insertEvents inserts recs in tx and returns how many were new.
func (s *Store) insertEvents(ctx context.Context, tx *sql.Tx, recs []Record) (int, error) {
	now := time.Now().UnixNano()
	n := 0
	// Multi-row statements: one round trip (PostgreSQL) and one statement
	// step (SQLite) per insertChunk rows instead of per row. The full-size
	// statement is prepared once per transaction; the tail gets its own.
	var full *sql.Stmt
	args := make([]any, 0, insertChunk*insertColumns)
	for len(recs) > 0 {
		chunk := recs[:min(len(recs), insertChunk)]
		recs = recs[len(chunk):]
		args = args[:0]
		for _, r := range chunk {
			args = appendRecordArgs(args, r, now)
		}
		var stmt *sql.Stmt
		if len(chunk) == insertChunk && full != nil {
			stmt = full
		} else {
			var err error
			if stmt, err = tx.PrepareContext(ctx, s.insertSQL(len(chunk))); err != nil {
				return 0, fmt.Errorf("store: prepare insert: %w", err)
			}
			if len(chunk) == insertChunk {
				full = stmt
			}
			defer stmt.Close()
		}
		res, err := stmt.ExecContext(ctx, args...)
		if err != nil {
			return 0, fmt.Errorf("store: insert events %s to %s: %w", chunk[0].Event.ID, chunk[len(chunk)-1].Event.ID, err)
		}
		k, err := res.RowsAffected()
		if err != nil {
			return 0, fmt.Errorf("store: insert events: rows affected: %w", err)
		}
		n += int(k)
	}
	return n, nil
}

// insertColumns is the number of columns Insert writes per row, and
// insertChunk the rows per statement: 1,600 parameters, well under
// SQLite's 32,766 and PostgreSQL's 65,535.
const (
	insertColumns = 16
	insertChunk   = 100
)

// insertSQL is the multi-row insert of rows records.
func (s *Store) insertSQL(rows int) string {
	var b strings.Builder
	b.WriteString(`INSERT INTO events
		(id, time, type, host_id, sub, email, session_id, target, exec_id, seq, hash, integrity, chain_head, stream_seq, stored_at, raw)
		VALUES `)
	row := "(?" + strings.Repeat(",?", insertColumns-1) + ")"
	for i := range rows {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(row)
	}
	b.WriteString(" ON CONFLICT (id) DO NOTHING")
	return s.d.rebind(b.String())
}

// appendRecordArgs appends one row's insertColumns values.
func appendRecordArgs(args []any, r Record, now int64) []any {
	e := r.Event
	var sub, email, sid, target, execID string
	if e.Identity != nil {
		sub, email, sid = e.Identity.Sub, e.Identity.Email, e.Identity.SessionID
	}
	if e.Target != nil {
		target = e.Target.Name
	}
	if e.Process != nil {
		execID = e.Process.ExecID
	}
	head := 0
	if r.ChainHead {
		head = 1
	}
	return append(args, e.ID, e.Time.UnixNano(), string(e.Type), e.Host.ID, sub, email, sid,
		target, execID, int64(e.Seq), e.Hash, strings.Join(r.Integrity, ","), head, int64(r.StreamSeq), now, r.Raw)
}

// StreamSeqs returns, for those of ids that are stored, the JetStream stream
// sequence each arrived with. The ingester tells a redelivery (same stream
// sequence) from a replay (same id published again) with it.
func (s *Store) StreamSeqs(ctx context.Context, ids []string) (map[string]uint64, error) {
	out := make(map[string]uint64, len(ids))
	// SQLite limits bound parameters; 500 is well under every build's limit.
	for len(ids) > 0 {
		chunk := ids[:min(len(ids), 500)]
		ids = ids[len(chunk):]
		args := make([]any, len(chunk))
		for i, id := range chunk {
			args[i] = id
		}
		rows, err := s.db.QueryContext(ctx, s.d.rebind(`SELECT id, stream_seq FROM events WHERE id IN (?`+strings.Repeat(",?", len(chunk)-1)+`)`), args...)
		if err != nil {
			return nil, fmt.Errorf("store: look up ids: %w", err)
		}
		for rows.Next() {
			var id string
			var seq int64
			if err := rows.Scan(&id, &seq); err != nil {
				rows.Close()
				return nil, fmt.Errorf("store: scan id: %w", err)
			}
			out[id] = uint64(seq)
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("store: look up ids: %w", err)
		}
	}
	return out, nil
}

// ChainHead is the last event of a host's chain that the verifier accepted.
type ChainHead struct {
	HostID string
	Seq    uint64
	Hash   string
}

// ChainHeads returns the stored chain head of every host, for resuming the
// verifier after a restart.
func (s *Store) ChainHeads(ctx context.Context) ([]ChainHead, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT e.host_id, e.seq, e.hash FROM events e
		JOIN (SELECT host_id, MAX(seq) AS seq FROM events WHERE chain_head = 1 GROUP BY host_id) h
		ON e.host_id = h.host_id AND e.seq = h.seq AND e.chain_head = 1`)
	if err != nil {
		return nil, fmt.Errorf("store: read chain heads: %w", err)
	}
	defer rows.Close()
	var out []ChainHead
	for rows.Next() {
		var h ChainHead
		var seq int64
		if err := rows.Scan(&h.HostID, &seq, &h.Hash); err != nil {
			return nil, fmt.Errorf("store: scan chain head: %w", err)
		}
		h.Seq = uint64(seq)
		out = append(out, h)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: read chain heads: %w", err)
	}
	return out, nil
}

// Row is one stored event.
type Row struct {
	RowID     int64
	ID        string
	Time      time.Time
	Type      string
	HostID    string
	SessionID string
	Target    string
	ExecID    string
	Integrity []string
	Raw       json.RawMessage
}

// Event decodes the row's raw JSON.
func (r *Row) Event() (*event.Event, error) {
	var e event.Event
	if err := json.Unmarshal(r.Raw, &e); err != nil {
		return nil, fmt.Errorf("store: decode event %s: %w", r.ID, err)
	}
	return &e, nil
}

// Filter selects events. Zero fields do not filter.
type Filter struct {
	Types     []string
	User      string // matches sub or email
	Target    string
	HostID    string
	SessionID string
	ExecID    string
	Since     time.Time // inclusive
	Until     time.Time // exclusive
	// AfterID continues a listing after this id, in the listing's order.
	AfterID string
	// AfterRow selects rows inserted after this rowid (following).
	AfterRow int64
	// ByRow orders by insertion instead of by id.
	ByRow bool
	Desc  bool
	Limit int // 0 means no limit
}

const rowColumns = `rowid, id, time, type, host_id, session_id, target, exec_id, integrity, raw`

// Query returns the events matching f, ordered by id (ascending unless
// f.Desc), or by insertion when f.ByRow.
func (s *Store) Query(ctx context.Context, f Filter) ([]Row, error) {
	q, args := s.querySQL(f)
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("store: query events: %w", err)
	}
	defer rows.Close()
	var out []Row
	for rows.Next() {
		r, err := scanRow(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: query events: %w", err)
	}
	return out, nil
}

// querySQL is Query's statement, in the store's dialect, and its arguments.
func (s *Store) querySQL(f Filter) (string, []any) {
	var where []string
	var args []any
	if len(f.Types) > 0 {
		where = append(where, "type IN (?"+strings.Repeat(",?", len(f.Types)-1)+")")
		for _, t := range f.Types {
			args = append(args, t)
		}
	}
	for _, c := range []struct{ col, val string }{
		{"target", f.Target}, {"host_id", f.HostID}, {"session_id", f.SessionID}, {"exec_id", f.ExecID},
	} {
		if c.val != "" {
			where = append(where, c.col+" = ?")
			args = append(args, c.val)
		}
	}
	if !f.Since.IsZero() {
		where = append(where, "time >= ?")
		args = append(args, f.Since.UnixNano())
	}
	if !f.Until.IsZero() {
		where = append(where, "time < ?")
		args = append(args, f.Until.UnixNano())
	}
	if f.AfterID != "" {
		if f.Desc {
			where = append(where, "id < ?")
		} else {
			where = append(where, "id > ?")
		}
		args = append(args, f.AfterID)
	}
	if f.AfterRow > 0 {
		where = append(where, "rowid > ?")
		args = append(args, f.AfterRow)
	}
	order := "id"
	if f.ByRow {
		order = "rowid"
	}
	if f.Desc {
		order += " DESC"
	}
	tail := " ORDER BY " + order
	if f.Limit > 0 {
		tail += fmt.Sprintf(" LIMIT %d", f.Limit)
	}
	sel := func(cond string) string {
		conds := where
		if cond != "" {
			conds = append([]string{cond}, where...)
		}
		q := "SELECT " + rowColumns + " FROM events"
		if len(conds) > 0 {
			q += " WHERE " + strings.Join(conds, " AND ")
		}
		return q + tail
	}
	switch {
	case f.User == "":
		return s.d.rebind(sel("")), args
	case f.Limit > 0 && !f.ByRow:
		// A user is a sub or an email. "sub = ? OR email = ?" reads both
		// indexes and sorts every match; the union of the first Limit rows
		// from each, in order, is the same answer from two bounded walks.
		q := "SELECT * FROM (SELECT * FROM (" + sel("sub = ?") + ") AS s UNION SELECT * FROM (" + sel("email = ?") + ") AS e) AS u" + tail
		both := append(append(append([]any{f.User}, args...), f.User), args...)
		return s.d.rebind(q), both
	default:
		return s.d.rebind(sel("(sub = ? OR email = ?)")), append([]any{f.User, f.User}, args...)
	}
}

// Get returns the event with the given id, or ErrNotFound.
func (s *Store) Get(ctx context.Context, id string) (Row, error) {
	rows, err := s.db.QueryContext(ctx, s.d.rebind("SELECT "+rowColumns+" FROM events WHERE id = ?"), id)
	if err != nil {
		return Row{}, fmt.Errorf("store: get event %s: %w", id, err)
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return Row{}, fmt.Errorf("store: get event %s: %w", id, err)
		}
		return Row{}, ErrNotFound
	}
	return scanRow(rows)
}

// DistinctTargets returns the names of the targets touched by events of a
// terminal session, sorted.
func (s *Store) DistinctTargets(ctx context.Context, sessionID string) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, s.d.rebind(`SELECT DISTINCT target FROM events WHERE session_id = ? AND target != '' ORDER BY target`), sessionID)
	if err != nil {
		return nil, fmt.Errorf("store: targets of session %s: %w", sessionID, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			return nil, fmt.Errorf("store: scan target: %w", err)
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// LastRowID returns the rowid of the newest stored row (0 when empty), the
// starting cursor for following only new events.
func (s *Store) LastRowID(ctx context.Context) (int64, error) {
	var n sql.NullInt64
	if err := s.db.QueryRowContext(ctx, "SELECT MAX(rowid) FROM events").Scan(&n); err != nil {
		return 0, fmt.Errorf("store: last rowid: %w", err)
	}
	return n.Int64, nil
}

// Count returns the number of stored rows.
func (s *Store) Count(ctx context.Context) (int64, error) {
	var n int64
	if err := s.db.QueryRowContext(ctx, "SELECT COUNT(*) FROM events").Scan(&n); err != nil {
		return 0, fmt.Errorf("store: count: %w", err)
	}
	return n, nil
}

func scanRow(rows *sql.Rows) (Row, error) {
	var r Row
	var ns int64
	var integ string
	var raw []byte
	if err := rows.Scan(&r.RowID, &r.ID, &ns, &r.Type, &r.HostID, &r.SessionID, &r.Target, &r.ExecID, &integ, &raw); err != nil {
		return Row{}, fmt.Errorf("store: scan event: %w", err)
	}
	r.Time = time.Unix(0, ns).UTC()
	if integ != "" {
		r.Integrity = strings.Split(integ, ",")
	}
	r.Raw = raw
	return r, nil
}
