package store

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
)

// dialect is what differs between the two databases: the DDL of each
// migration, placeholders, and how writers are serialised. Every query
// is written once, with ? placeholders and SQL both accept (ON CONFLICT
// upserts, the rowid column).
type dialect interface {
	// name is "sqlite" or "postgres".
	name() string
	// rebind turns ? placeholders into the database's own.
	rebind(q string) string
	// migrations are the schema versions, oldest first.
	migrations() []migration
	// lock serialises writers of one kind for the rest of tx.
	lock(ctx context.Context, tx *sql.Tx, k lockKind) error
}

// lockKind names what a writer serialises on.
type lockKind int64

// Writer locks. The values are PostgreSQL advisory lock keys: arbitrary,
// but fixed, so that every collector on one database agrees on them.
const (
	lockEvents     lockKind = 0x57415244_0001 // "WARD" 1
	lockReviews    lockKind = 0x57415244_0002
	lockMigrations lockKind = 0x57415244_0003
)

// migration is one schema version: statements run in one transaction.
type migration struct {
	version int
	stmts   []string
}

// sqliteDialect: SQLite through modernc.org/sqlite. Its transactions are
// immediate (the write lock is taken at BEGIN), so lock has nothing to do.
type sqliteDialect struct{}

func (sqliteDialect) name() string                                  { return "sqlite" }
func (sqliteDialect) rebind(q string) string                        { return q }
func (sqliteDialect) lock(context.Context, *sql.Tx, lockKind) error { return nil }
func (sqliteDialect) migrations() []migration                       { return sqliteMigrations }

// postgresDialect: PostgreSQL through pgx's database/sql driver.
type postgresDialect struct{}

func (postgresDialect) name() string            { return "postgres" }
func (postgresDialect) migrations() []migration { return postgresMigrations }

// rebind numbers the placeholders: ? becomes $1, $2, ... No query of this
// package has a ? inside a literal.
func (postgresDialect) rebind(q string) string {
	if !strings.Contains(q, "?") {
		return q
	}
	var b strings.Builder
	n := 0
	for i := 0; i < len(q); i++ {
		if q[i] == '?' {
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(q[i])
	}
	return b.String()
}

// lock takes a transaction-scoped advisory lock, released at commit or
// rollback: several collectors writing to one database queue here.
func (postgresDialect) lock(ctx context.Context, tx *sql.Tx, k lockKind) error {
	if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", int64(k)); err != nil {
		return fmt.Errorf("store: lock %d: %w", k, err)
	}
	return nil
}

// isPostgres reports whether a --store value names PostgreSQL.
func isPostgres(location string) bool {
	return strings.HasPrefix(location, "postgres://") || strings.HasPrefix(location, "postgresql://")
}

// openPostgres connects to the database at dsn and migrates it.
func openPostgres(dsn string) (*Store, error) {
	// Errors name the server, never the URL: it may carry a password.
	where := "PostgreSQL"
	if u, err := url.Parse(dsn); err == nil {
		where = "PostgreSQL at " + u.Host + u.Path
	}
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", where, err)
	}
	db.SetMaxOpenConns(8)
	st := &Store{db: db, d: postgresDialect{}}
	if err := st.migrate(context.Background()); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: %s: %w", where, err)
	}
	return st, nil
}

// Dialect is "sqlite" or "postgres".
func (s *Store) Dialect() string { return s.d.name() }

// migrate applies the migrations the database has not seen, in one
// transaction, under a lock that collectors starting together share.
func (s *Store) migrate(ctx context.Context) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin migration: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	if err := s.d.lock(ctx, tx, lockMigrations); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    INTEGER PRIMARY KEY,
		applied_at BIGINT NOT NULL)`); err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	var cur sql.NullInt64
	if err := tx.QueryRowContext(ctx, "SELECT MAX(version) FROM schema_migrations").Scan(&cur); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	ms := s.d.migrations()
	if latest := ms[len(ms)-1].version; cur.Int64 > int64(latest) {
		return fmt.Errorf("schema version %d is newer than this collector's %d: upgrade the collector", cur.Int64, latest)
	}
	for _, m := range ms {
		if int64(m.version) <= cur.Int64 {
			continue
		}
		for _, stmt := range m.stmts {
			if _, err := tx.ExecContext(ctx, stmt); err != nil {
				return fmt.Errorf("migration %d: %w", m.version, err)
			}
		}
		if _, err := tx.ExecContext(ctx, s.d.rebind("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)"),
			m.version, nowNanos()); err != nil {
			return fmt.Errorf("record migration %d: %w", m.version, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit migrations: %w", err)
	}
	return nil
}

// SchemaVersion returns the newest migration applied.
func (s *Store) SchemaVersion(ctx context.Context) (int, error) {
	var v int
	if err := s.db.QueryRowContext(ctx, "SELECT MAX(version) FROM schema_migrations").Scan(&v); err != nil {
		return 0, fmt.Errorf("store: schema version: %w", err)
	}
	return v, nil
}
