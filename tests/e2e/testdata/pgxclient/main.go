// Command pgxclient is the pgx-based client the end-to-end tests run
// inside a logged-in session, so its connections go through Warden's BPF
// redirection like any user's program. It prints one "key: value" line
// per result for the test to check.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: pgxclient DSN MODE")
		os.Exit(2)
	}
	ctx := context.Background()
	cfg, err := pgx.ParseConfig(os.Args[1])
	if err != nil {
		fail(err)
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		fail(err)
	}
	defer conn.Close(ctx)
	switch os.Args[2] {
	case "mask":
		rows, err := conn.Query(ctx, "select id, email, ssn, card, note from customers order by id")
		if err != nil {
			fail(err)
		}
		for rows.Next() {
			vals, err := rows.Values()
			if err != nil {
				fail(err)
			}
			fmt.Printf("row: %v\n", vals)
		}
		if err := rows.Err(); err != nil {
			fail(err)
		}
		var alias string
		if err := conn.QueryRow(ctx, "select ssn as x from customers where id = $1", 1).Scan(&alias); err != nil {
			fail(err)
		}
		fmt.Printf("alias: %s\n", alias)
	case "prepare":
		_, err := conn.Prepare(ctx, "wipe", "DELETE FROM customers")
		fmt.Printf("prepare: %s\n", pgErr(err))
		_, err = conn.Exec(ctx, "DROP TABLE customers")
		fmt.Printf("exec: %s\n", pgErr(err))
		batch := &pgx.Batch{}
		batch.Queue("select 1")
		batch.Queue("/**/DrOp/**/ TABLE customers")
		batch.Queue("select 2")
		err = conn.SendBatch(ctx, batch).Close()
		fmt.Printf("pipeline: %s\n", pgErr(err))
		var n int64
		if err := conn.QueryRow(ctx, "select count(*) from customers").Scan(&n); err != nil {
			fail(err)
		}
		fmt.Printf("count: %d\n", n)
	case "cancel":
		// pgx's own cancel: it dials getpeername()'s address, which the
		// kernel reports as the original destination, so the cancel goes
		// through the proxy like any connection to the target.
		go func() {
			time.Sleep(time.Second)
			if err := conn.PgConn().CancelRequest(context.Background()); err != nil {
				fmt.Fprintln(os.Stderr, "cancel request:", err)
			}
		}()
		_, err := conn.Exec(ctx, "select pg_sleep(60)")
		fmt.Printf("cancel: %s\n", pgErr(err))
		var one int
		if err := conn.QueryRow(ctx, "select 1").Scan(&one); err != nil {
			fail(err)
		}
		fmt.Printf("after: %d\n", one)
	case "review":
		// The Parse is held for review; once approved, the prepared
		// statement is executed, then executed again by name.
		_, err := conn.Prepare(ctx, "wipe", "DELETE FROM t")
		fmt.Printf("prepare: %s\n", pgErr(err))
		tag, err := conn.Exec(ctx, "wipe")
		fmt.Printf("first: %s %s\n", tag, pgErr(err))
		tag, err = conn.Exec(ctx, "wipe")
		fmt.Printf("second: %s %s\n", tag, pgErr(err))
	case "terminate":
		// The pid the driver was given at login must be the backend's
		// own, so that pg_terminate_backend(pid) from another session
		// ends this one.
		var backend uint32
		if err := conn.QueryRow(ctx, "select pg_backend_pid()").Scan(&backend); err != nil {
			fail(err)
		}
		pid := conn.PgConn().PID()
		fmt.Printf("pid: driver %d backend %d\n", pid, backend)
		other, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			fail(err)
		}
		defer other.Close(ctx)
		var otherPID uint32
		if err := other.QueryRow(ctx, "select pg_backend_pid()").Scan(&otherPID); err != nil {
			fail(err)
		}
		fmt.Printf("other: driver %d backend %d\n", other.PgConn().PID(), otherPID)
		// With a timeout, pg_terminate_backend waits until the backend
		// has exited.
		var done bool
		if err := other.QueryRow(ctx, "select pg_terminate_backend($1, 10000)", int64(pid)).Scan(&done); err != nil {
			fail(err)
		}
		fmt.Printf("terminated: %v\n", done)
		var one int
		err = conn.QueryRow(ctx, "select 1").Scan(&one)
		var pe *pgconn.PgError
		if errors.As(err, &pe) {
			fmt.Printf("after: %s %s\n", pe.Severity, pe.Code)
		} else {
			fmt.Printf("after: %s\n", pgErr(err))
		}
	default:
		fail(fmt.Errorf("unknown mode %q", os.Args[2]))
	}
}

func pgErr(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code + " " + strings.ReplaceAll(pe.Message, "\n", " ")
	}
	if err == nil {
		return "ok"
	}
	return "error " + err.Error()
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "pgxclient:", err)
	os.Exit(1)
}
