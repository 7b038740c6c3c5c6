package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/wardenhq/warden/pkg/review"
)

// ErrReviewNotFound is returned when no review has the id asked for.
var ErrReviewNotFound = errors.New("review not found")

// ReviewFilter selects reviews. Zero fields do not filter.
type ReviewFilter struct {
	States      []review.State
	Kind        review.Kind
	Host        string
	Sub         string // the requester's
	Target      string
	Rule        string
	Fingerprint string
	// Due selects the reviews Expire may change at Due: pending ones past
	// ExpiresAt and unused once-grants past GrantUntil.
	Due time.Time
	// OpenAt selects the reviews still open at OpenAt: pending ones, and
	// approved ones that still grant something (not past GrantUntil, not
	// a used once-grant). Pending ones past ExpiresAt are included, for
	// the caller to expire.
	OpenAt time.Time
	// Keep, when set, is applied to each review before Limit counts it,
	// for selections the columns cannot express (who may decide).
	Keep func(*review.Review) bool
	// Limit bounds the result; 0 means no limit. Newest first.
	Limit int
}

// reviewQuerier is what reading reviews needs: the database or a
// transaction, and the dialect to write the query in.
type reviewQuerier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// dialected pairs a querier with its dialect.
type dialected struct {
	reviewQuerier
	d dialect
}

func (q dialected) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return q.reviewQuerier.QueryContext(ctx, q.d.rebind(query), args...)
}

func (q dialected) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return q.reviewQuerier.ExecContext(ctx, q.d.rebind(query), args...)
}

// Review returns the review with id, or ErrReviewNotFound.
func (s *Store) Review(ctx context.Context, id string) (*review.Review, error) {
	return getReview(ctx, dialected{s.db, s.d}, id)
}

// Reviews returns the reviews matching f, newest first.
func (s *Store) Reviews(ctx context.Context, f ReviewFilter) ([]review.Review, error) {
	return findReviews(ctx, dialected{s.db, s.d}, f)
}

// ReviewTx is a write transaction on reviews: what fn reads through it
// cannot change before fn's writes commit, so read-decide-write steps
// (use a grant once, decide once) are atomic.
type ReviewTx struct {
	ctx context.Context
	tx  dialected
}

// Review returns the review with id, or ErrReviewNotFound.
func (t *ReviewTx) Review(id string) (*review.Review, error) { return getReview(t.ctx, t.tx, id) }

// Reviews returns the reviews matching f, newest first.
func (t *ReviewTx) Reviews(f ReviewFilter) ([]review.Review, error) {
	return findReviews(t.ctx, t.tx, f)
}

// Put inserts r or replaces the stored review with its id.
func (t *ReviewTx) Put(r *review.Review) error {
	raw, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("store: encode review %s: %w", r.ID, err)
	}
	once := 0
	if r.GrantOnce {
		once = 1
	}
	_, err = t.tx.ExecContext(t.ctx, `INSERT INTO reviews
		(id, state, kind, host_id, sub, target, rule, fingerprint, grant_once, created_at, expires_at, grant_until, used_at, raw)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET state = excluded.state, kind = excluded.kind, host_id = excluded.host_id,
			sub = excluded.sub, target = excluded.target, rule = excluded.rule, fingerprint = excluded.fingerprint,
			grant_once = excluded.grant_once, created_at = excluded.created_at, expires_at = excluded.expires_at,
			grant_until = excluded.grant_until, used_at = excluded.used_at, raw = excluded.raw`,
		r.ID, string(r.State), string(r.Kind), r.Host, r.Requester.Sub, r.Target, r.Rule, r.Fingerprint, once,
		r.CreatedAt.UnixNano(), r.ExpiresAt.UnixNano(), nanos(r.GrantUntil), nanos(r.UsedAt), raw)
	if err != nil {
		return fmt.Errorf("store: put review %s: %w", r.ID, err)
	}
	return nil
}

// UpdateReviews runs fn in one write transaction and commits if it returns
// nil. The write lock is taken at the start (SQLite's immediate
// transactions, a PostgreSQL advisory lock), so two updates never
// interleave, from one collector or several.
func (s *Store) UpdateReviews(ctx context.Context, fn func(*ReviewTx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: begin review update: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	if err := s.d.lock(ctx, tx, lockReviews); err != nil {
		return err
	}
	if err := fn(&ReviewTx{ctx: ctx, tx: dialected{tx, s.d}}); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: commit review update: %w", err)
	}
	return nil
}

func nanos(t *time.Time) int64 {
	if t == nil {
		return 0
	}
	return t.UnixNano()
}

func getReview(ctx context.Context, q reviewQuerier, id string) (*review.Review, error) {
	rows, err := q.QueryContext(ctx, `SELECT raw FROM reviews WHERE id = ?`, id)
	if err != nil {
		return nil, fmt.Errorf("store: get review %s: %w", id, err)
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("store: get review %s: %w", id, err)
		}
		return nil, fmt.Errorf("%w: %s", ErrReviewNotFound, id)
	}
	var raw []byte
	if err := rows.Scan(&raw); err != nil {
		return nil, fmt.Errorf("store: scan review %s: %w", id, err)
	}
	var r review.Review
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, fmt.Errorf("store: decode review %s: %w", id, err)
	}
	return &r, nil
}

func findReviews(ctx context.Context, q reviewQuerier, f ReviewFilter) ([]review.Review, error) {
	var where []string
	var args []any
	if len(f.States) > 0 {
		where = append(where, "state IN (?"+strings.Repeat(",?", len(f.States)-1)+")")
		for _, st := range f.States {
			args = append(args, string(st))
		}
	}
	for _, c := range []struct{ col, val string }{
		{"kind", string(f.Kind)}, {"host_id", f.Host}, {"sub", f.Sub}, {"target", f.Target},
		{"rule", f.Rule}, {"fingerprint", f.Fingerprint},
	} {
		if c.val != "" {
			where = append(where, c.col+" = ?")
			args = append(args, c.val)
		}
	}
	if !f.Due.IsZero() {
		due := f.Due.UnixNano()
		where = append(where, "((state = ? AND expires_at <= ?) OR (state = ? AND grant_once = 1 AND used_at = 0 AND grant_until > 0 AND grant_until <= ?))")
		args = append(args, string(review.Pending), due, string(review.Approved), due)
	}
	if !f.OpenAt.IsZero() {
		where = append(where, "(state = ? OR (state = ? AND grant_until > ? AND (grant_once = 0 OR used_at = 0)))")
		args = append(args, string(review.Pending), string(review.Approved), f.OpenAt.UnixNano())
	}
	query := "SELECT id, raw FROM reviews"
	if len(where) > 0 {
		query += " WHERE " + strings.Join(where, " AND ")
	}
	query += " ORDER BY created_at DESC, id DESC"
	if f.Limit > 0 && f.Keep == nil {
		query += fmt.Sprintf(" LIMIT %d", f.Limit)
	}
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("store: query reviews: %w", err)
	}
	defer rows.Close()
	var out []review.Review
	for rows.Next() && (f.Limit == 0 || len(out) < f.Limit) {
		var id string
		var raw []byte
		if err := rows.Scan(&id, &raw); err != nil {
			return nil, fmt.Errorf("store: scan review: %w", err)
		}
		var r review.Review
		if err := json.Unmarshal(raw, &r); err != nil {
			return nil, fmt.Errorf("store: decode review %s: %w", id, err)
		}
		if f.Keep != nil && !f.Keep(&r) {
			continue
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: query reviews: %w", err)
	}
	return out, nil
}
