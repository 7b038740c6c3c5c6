package store

import (
	"context"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"
)

// ErrNoCheckpoint is returned when no stored checkpoint fits a request.
var ErrNoCheckpoint = errors.New("no checkpoint")

// checkpointsDDL is migration 4 of both dialects, the checkpoints table:
// every checkpoint message that arrived, as received (raw), with what the
// collector found. Its types (TEXT, BIGINT, INTEGER) mean the same in
// SQLite and PostgreSQL, so one statement serves both.
var checkpointsDDL = []string{
	`CREATE TABLE IF NOT EXISTS checkpoints (
	id         TEXT PRIMARY KEY,
	host_id    TEXT NOT NULL,
	size       BIGINT NOT NULL,
	root       TEXT NOT NULL,             -- standard base64 root hash
	time       BIGINT NOT NULL,           -- unix nanoseconds, from the checkpoint
	integrity  TEXT NOT NULL DEFAULT '',  -- '' verified; else comma-separated problem kinds
	accepted   INTEGER NOT NULL DEFAULT 0, -- 1 if its signature verified and it became the host's tree head
	covered    INTEGER NOT NULL DEFAULT 0, -- 1 if the stored events hash to its root
	frontier   TEXT NOT NULL DEFAULT '',  -- when covered: the compact range at size, base64 hashes joined by ','
	stream_seq BIGINT NOT NULL DEFAULT 0,
	stored_at  BIGINT NOT NULL,
	raw        TEXT NOT NULL
)`,
	`CREATE INDEX IF NOT EXISTS checkpoints_host ON checkpoints(host_id, accepted, size)`,
}

// Checkpoint is one stored checkpoint.
type Checkpoint struct {
	ID        string
	HostID    string
	Size      uint64
	Root      []byte
	Time      time.Time
	Integrity []string
	Accepted  bool
	Covered   bool
	// Frontier is the compact range of the host's Merkle log at Size, set
	// once Covered.
	Frontier  [][]byte
	StreamSeq uint64
	Raw       []byte // the message as received
}

// InsertCheckpoints stores checkpoints; one already stored (a redelivery)
// is left as it is.
func (s *Store) InsertCheckpoints(ctx context.Context, cps []Checkpoint) error {
	_, err := s.Write(ctx, Batch{Checkpoints: cps})
	return err
}

func (s *Store) insertCheckpoints(ctx context.Context, tx *sql.Tx, cps []Checkpoint) error {
	now := time.Now().UnixNano()
	for _, c := range cps {
		_, err := tx.ExecContext(ctx, s.d.rebind(`INSERT INTO checkpoints
			(id, host_id, size, root, time, integrity, accepted, covered, frontier, stream_seq, stored_at, raw)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`),
			c.ID, c.HostID, int64(c.Size), base64.StdEncoding.EncodeToString(c.Root), c.Time.UnixNano(),
			strings.Join(c.Integrity, ","), boolInt(c.Accepted), boolInt(c.Covered), joinHashes(c.Frontier),
			int64(c.StreamSeq), now, string(c.Raw))
		if err != nil {
			return fmt.Errorf("store: insert checkpoint %s: %w", c.ID, err)
		}
	}
	return nil
}

// MarkCovered records that the stored events of a host hash to a stored
// checkpoint's root, with the compact range at its size.
func (s *Store) MarkCovered(ctx context.Context, id string, frontier [][]byte) error {
	_, err := s.Write(ctx, Batch{Covered: []Covered{{ID: id, Frontier: frontier}}})
	return err
}

func (s *Store) markCovered(ctx context.Context, tx *sql.Tx, id string, frontier [][]byte) error {
	if _, err := tx.ExecContext(ctx, s.d.rebind(`UPDATE checkpoints SET covered = 1, frontier = ? WHERE id = ?`), joinHashes(frontier), id); err != nil {
		return fmt.Errorf("store: mark checkpoint %s covered: %w", id, err)
	}
	return nil
}

// MarkEvents adds a problem kind to the integrity of a host's chain events
// with seq in [from, to].
func (s *Store) MarkEvents(ctx context.Context, hostID string, from, to uint64, kind string) error {
	_, err := s.Write(ctx, Batch{Marks: []Mark{{HostID: hostID, From: from, To: to, Kind: kind}}})
	return err
}

func (s *Store) markEvents(ctx context.Context, tx *sql.Tx, hostID string, from, to uint64, kind string) error {
	_, err := tx.ExecContext(ctx, s.d.rebind(`UPDATE events SET integrity = CASE WHEN integrity = '' THEN ? ELSE integrity || ',' || ? END
		WHERE host_id = ? AND chain_head = 1 AND seq >= ? AND seq <= ?`), kind, kind, hostID, int64(from), int64(to))
	if err != nil {
		return fmt.Errorf("store: mark events %d-%d of host %s %s: %w", from, to, hostID, kind, err)
	}
	return nil
}

const checkpointColumns = `id, host_id, size, root, time, integrity, accepted, covered, frontier, stream_seq, raw`

// LatestCheckpoint returns the host's accepted checkpoint of the largest
// size; with covered, the largest one the stored events were found to
// hash to; with maxSize > 0, the largest of size at most maxSize; with
// minSize > 0, ErrNoCheckpoint unless it is at least minSize.
func (s *Store) LatestCheckpoint(ctx context.Context, hostID string, covered bool, minSize, maxSize uint64) (*Checkpoint, error) {
	q := `SELECT ` + checkpointColumns + ` FROM checkpoints WHERE host_id = ? AND accepted = 1`
	args := []any{hostID}
	if covered {
		q += ` AND covered = 1`
	}
	if maxSize > 0 {
		q += ` AND size <= ?`
		args = append(args, int64(maxSize))
	}
	if minSize > 0 {
		q += ` AND size >= ?`
		args = append(args, int64(minSize))
	}
	q += ` ORDER BY size DESC, stored_at DESC LIMIT 1`
	rows, err := s.db.QueryContext(ctx, s.d.rebind(q), args...)
	if err != nil {
		return nil, fmt.Errorf("store: checkpoint of host %s: %w", hostID, err)
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("store: checkpoint of host %s: %w", hostID, err)
		}
		return nil, ErrNoCheckpoint
	}
	return scanCheckpoint(rows)
}

// Checkpoints returns a host's stored checkpoints (every host's with ""),
// newest first, at most limit (0: all).
func (s *Store) Checkpoints(ctx context.Context, hostID string, limit int) ([]Checkpoint, error) {
	q := `SELECT ` + checkpointColumns + ` FROM checkpoints`
	var args []any
	if hostID != "" {
		q += ` WHERE host_id = ?`
		args = append(args, hostID)
	}
	q += ` ORDER BY stored_at DESC`
	if limit > 0 {
		q += fmt.Sprintf(" LIMIT %d", limit)
	}
	rows, err := s.db.QueryContext(ctx, s.d.rebind(q), args...)
	if err != nil {
		return nil, fmt.Errorf("store: checkpoints: %w", err)
	}
	defer rows.Close()
	var out []Checkpoint
	for rows.Next() {
		c, err := scanCheckpoint(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, *c)
	}
	return out, rows.Err()
}

// Leaves returns the hex hashes of a host's chain events with seq in
// [from, to] (to 0: no upper bound), by seq. These are the leaves of the
// host's Merkle log as the collector stored them: one per seq, the event
// the chain accepted at it.
func (s *Store) Leaves(ctx context.Context, hostID string, from, to uint64) (seqs []uint64, hashes []string, err error) {
	q := `SELECT seq, hash FROM events WHERE host_id = ? AND chain_head = 1 AND seq >= ?`
	args := []any{hostID, int64(from)}
	if to > 0 {
		q += ` AND seq <= ?`
		args = append(args, int64(to))
	}
	rows, err := s.db.QueryContext(ctx, s.d.rebind(q+` ORDER BY seq`), args...)
	if err != nil {
		return nil, nil, fmt.Errorf("store: leaves of host %s: %w", hostID, err)
	}
	defer rows.Close()
	for rows.Next() {
		var seq int64
		var h string
		if err := rows.Scan(&seq, &h); err != nil {
			return nil, nil, fmt.Errorf("store: scan leaf: %w", err)
		}
		seqs, hashes = append(seqs, uint64(seq)), append(hashes, h)
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("store: leaves of host %s: %w", hostID, err)
	}
	return seqs, hashes, nil
}

func scanCheckpoint(rows *sql.Rows) (*Checkpoint, error) {
	var c Checkpoint
	var size, tm, sseq int64
	var root, integ, frontier, raw string
	var accepted, covered int
	if err := rows.Scan(&c.ID, &c.HostID, &size, &root, &tm, &integ, &accepted, &covered, &frontier, &sseq, &raw); err != nil {
		return nil, fmt.Errorf("store: scan checkpoint: %w", err)
	}
	c.Size, c.Time, c.StreamSeq = uint64(size), time.Unix(0, tm).UTC(), uint64(sseq)
	c.Accepted, c.Covered = accepted == 1, covered == 1
	if integ != "" {
		c.Integrity = strings.Split(integ, ",")
	}
	var err error
	if c.Root, err = base64.StdEncoding.DecodeString(root); err != nil {
		return nil, fmt.Errorf("store: checkpoint %s root: %w", c.ID, err)
	}
	if frontier != "" {
		for _, h := range strings.Split(frontier, ",") {
			b, err := base64.StdEncoding.DecodeString(h)
			if err != nil {
				return nil, fmt.Errorf("store: checkpoint %s frontier: %w", c.ID, err)
			}
			c.Frontier = append(c.Frontier, b)
		}
	}
	c.Raw = []byte(raw)
	return &c, nil
}

func joinHashes(hs [][]byte) string {
	parts := make([]string, len(hs))
	for i, h := range hs {
		parts[i] = base64.StdEncoding.EncodeToString(h)
	}
	return strings.Join(parts, ",")
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
