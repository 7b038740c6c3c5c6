package store

import (
	"context"
	"fmt"
	"strings"
)

// Plan returns the database's query plan for Query(f), one line per plan
// node. On PostgreSQL sorting is disabled for the statement (not
// forbidden: a plan with no other way still sorts), so that the plan
// shows whether an index can deliver the order at all, whatever the
// table's size and statistics.
func (s *Store) Plan(ctx context.Context, f Filter) (string, error) {
	q, args := s.querySQL(f)
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	explain := "EXPLAIN QUERY PLAN " + q
	if s.d.name() == "postgres" {
		if _, err := conn.ExecContext(ctx, "SET enable_sort = off"); err != nil {
			return "", err
		}
		defer conn.ExecContext(ctx, "RESET enable_sort") //nolint:errcheck // the connection is closed right after
		explain = "EXPLAIN " + q
	}
	rows, err := conn.QueryContext(ctx, explain, args...)
	if err != nil {
		return "", fmt.Errorf("explain %s: %w", q, err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return "", err
	}
	var lines []string
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return "", err
		}
		// The plan text is the last column in both (SQLite: id, parent,
		// notused, detail).
		lines = append(lines, fmt.Sprint(vals[len(vals)-1]))
	}
	return strings.Join(lines, "\n"), rows.Err()
}
