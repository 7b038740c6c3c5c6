package store

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// DefaultRetainBatch is how many rows one retention transaction deletes:
// small enough that ingestion, which waits for the same lock, never
// stalls for long.
const DefaultRetainBatch = 1000

// Anchor is where a host's stored chain starts after retention deleted
// what came before: the seq and hash of the newest chain event deleted.
// The next stored event of the host has PrevHash == Hash.
type Anchor struct {
	HostID string
	Seq    uint64
	Hash   string
	Time   time.Time
}

// Retain deletes the events older than cutoff, batch rows per
// transaction (DefaultRetainBatch if batch <= 0), and returns how many
// rows it deleted. It never deletes a host's current chain head, which
// the verifier resumes from; and before a batch deletes events of a
// host's chain, the newest of them is recorded as the host's Anchor in
// the same transaction, so the chain that remains can still be checked
// from a recorded position.
func (s *Store) Retain(ctx context.Context, cutoff time.Time, batch int) (int, error) {
	if batch <= 0 {
		batch = DefaultRetainBatch
	}
	total := 0
	for {
		n, err := s.retainBatch(ctx, cutoff.UnixNano(), batch)
		total += n
		if err != nil {
			return total, err
		}
		if n < batch {
			return total, nil
		}
	}
}

type doomed struct {
	id, host, hash string
	seq, time      int64
	head           bool
}

func (s *Store) retainBatch(ctx context.Context, cutoff int64, batch int) (int, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("store: begin retention: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	if err := s.d.lock(ctx, tx, lockEvents); err != nil {
		return 0, err
	}
	rows, err := tx.QueryContext(ctx, s.d.rebind(fmt.Sprintf(`SELECT id, host_id, seq, hash, chain_head, time FROM events
		WHERE time < ? AND id NOT IN (
			SELECT e.id FROM events e
			JOIN (SELECT host_id, MAX(seq) AS seq FROM events WHERE chain_head = 1 GROUP BY host_id) h
			ON e.host_id = h.host_id AND e.seq = h.seq AND e.chain_head = 1)
		ORDER BY rowid LIMIT %d`, batch)), cutoff)
	if err != nil {
		return 0, fmt.Errorf("store: select expired events: %w", err)
	}
	var list []doomed
	for rows.Next() {
		var d doomed
		var head int64
		if err := rows.Scan(&d.id, &d.host, &d.seq, &d.hash, &head, &d.time); err != nil {
			rows.Close()
			return 0, fmt.Errorf("store: scan expired event: %w", err)
		}
		d.head = head == 1
		list = append(list, d)
	}
	err = rows.Err()
	rows.Close()
	if err != nil {
		return 0, fmt.Errorf("store: select expired events: %w", err)
	}
	if len(list) == 0 {
		return 0, nil
	}
	// The anchors first: the newest deleted chain event of each host.
	anchors := map[string]doomed{}
	for _, d := range list {
		if a, ok := anchors[d.host]; d.head && (!ok || d.seq > a.seq) {
			anchors[d.host] = d
		}
	}
	now := nowNanos()
	for _, a := range anchors {
		if _, err := tx.ExecContext(ctx, s.d.rebind(`INSERT INTO retention_anchors (host_id, seq, hash, time, recorded_at)
			VALUES (?, ?, ?, ?, ?)
			ON CONFLICT (host_id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, time = excluded.time,
				recorded_at = excluded.recorded_at
			WHERE excluded.seq > retention_anchors.seq`), a.host, a.seq, a.hash, a.time, now); err != nil {
			return 0, fmt.Errorf("store: record retention anchor of %s: %w", a.host, err)
		}
	}
	args := make([]any, len(list))
	for i, d := range list {
		args[i] = d.id
	}
	res, err := tx.ExecContext(ctx, s.d.rebind(`DELETE FROM events WHERE id IN (?`+strings.Repeat(",?", len(list)-1)+`)`), args...)
	if err != nil {
		return 0, fmt.Errorf("store: delete expired events: %w", err)
	}
	n, _ := res.RowsAffected()
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("store: commit retention: %w", err)
	}
	return int(n), nil
}

// Anchors returns the retention anchor of every host retention reached.
func (s *Store) Anchors(ctx context.Context) ([]Anchor, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT host_id, seq, hash, time FROM retention_anchors ORDER BY host_id`)
	if err != nil {
		return nil, fmt.Errorf("store: read retention anchors: %w", err)
	}
	defer rows.Close()
	var out []Anchor
	for rows.Next() {
		var a Anchor
		var seq, ns int64
		if err := rows.Scan(&a.HostID, &seq, &a.Hash, &ns); err != nil {
			return nil, fmt.Errorf("store: scan retention anchor: %w", err)
		}
		a.Seq, a.Time = uint64(seq), time.Unix(0, ns).UTC()
		out = append(out, a)
	}
	return out, rows.Err()
}
