package harness

import "strings"

// LogStatements makes the server log every statement it receives
// (log_statement = all), so a test can show that a statement never reached
// it: Log then lacks it.
func (pg *Postgres) LogStatements() {
	pg.env.T.Helper()
	pg.Exec("postgres", "ALTER SYSTEM SET log_statement = 'all'")
	pg.Exec("postgres", "SELECT pg_reload_conf()")
	// The setting applies to sessions once they see the reload; a fresh
	// superuser session shows it does.
	pg.env.Eventually("log_statement = all in force", func() error {
		pg.Exec("postgres", "SELECT 'warden-log-probe'")
		if !strings.Contains(pg.Log(), "warden-log-probe") {
			return errLogOff
		}
		return nil
	})
}

// Log is everything the server wrote to its log so far.
func (pg *Postgres) Log() string { return pg.proc.Output() }

type logOff struct{}

func (logOff) Error() string { return "the server does not log statements yet" }

var errLogOff error = logOff{}
