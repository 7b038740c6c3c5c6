package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wardenhq/warden/pkg/collectorclient"
	"github.com/wardenhq/warden/pkg/devidp"
	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/tests/harness"
	"github.com/wardenhq/warden/tests/testenv"
)

// The audit error a statement gets when the spool is full, as psql shows
// it with VERBOSITY verbose.
const unrecordedFull = "ERROR:  53100: warden: the audit log cannot record this statement (spool full); refusing"

// auditEnv is PostgreSQL behind an agent whose spool holds 1 MiB, with
// one bound psql session that reads its statements from a FIFO the test
// writes, one statement per Query.
type auditEnv struct {
	*harness.Env
	pg    *harness.Postgres
	in    *os.File // psql's standard input
	out   *syncBuffer
	shell *exec.Cmd
	ended chan struct{} // closed when psql's shell has exited
	next  int           // number of the next INSERT
	marks int
}

func newAuditEnv(t *testing.T, failure string) *auditEnv {
	testenv.RequireCommand(t, "psql")
	testenv.RequireCommand(t, "stdbuf")
	e := &auditEnv{Env: harness.NewEnv(t), next: 1, out: &syncBuffer{}}
	e.pg = e.StartPostgres()
	secret := e.VaultedApp(e.pg)
	e.pg.Exec("orders", "SET ROLE app; CREATE TABLE audit_t (n int PRIMARY KEY); CREATE TABLE audit_done (n int)")
	e.StartAgentWith(fmt.Sprintf(`targets:
  - name: orders-db
    protocol: postgres
    address: 127.0.0.1:%d
    credentials:
      username: app
      password_file: %s
access:
  - groups: [engineering]
    targets: [orders-db]
`, e.pg.Port, secret), harness.AgentOptions{Config: fmt.Sprintf("spool_max_bytes: 1MiB\naudit_failure: %s\n", failure)})

	fifo := filepath.Join(e.Dir, "psql.in")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(fifo, 0o666); err != nil {
		t.Fatal(err)
	}
	alice := e.Token(devidp.IssueOptions{Sub: "alice"})
	conn := fmt.Sprintf("host=127.0.0.1 port=%d dbname=orders user=whoever sslmode=disable connect_timeout=10", e.pg.Port)
	// Line-buffered stdout, and stderr on the same pipe: results and
	// errors arrive in the order psql handled the statements.
	e.shell = e.Command(harness.Shell{UID: nobody, GID: nobody, Script: fmt.Sprintf(
		"warden login --token-file %s >/dev/null || exit 9\nexec stdbuf -oL psql -X -v VERBOSITY=verbose -v ECHO=errors '%s' < %s",
		alice, conn, fifo)})
	e.shell.Stdout, e.shell.Stderr = e.out, e.out
	if err := e.shell.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	e.ended = exited
	go func() {
		e.shell.Wait()
		close(exited)
	}()
	// The FIFO opens once psql's shell opens its end; a failed login
	// ends the shell first.
	e.Eventually("psql reading its input", func() error {
		select {
		case <-exited:
			t.Fatalf("psql shell exited:\n%s", e.out.String())
		default:
		}
		f, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0)
		if err != nil {
			return err
		}
		e.in = f
		return nil
	})
	t.Cleanup(func() {
		e.in.Close() // EOF: psql ends
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			e.shell.Process.Kill()
			<-exited
		}
	})
	e.send(t) // psql is connected: its net.connect is recorded
	return e
}

// send writes lines to psql, then a marker that psql prints once it has
// handled them all, and returns what psql printed for them.
func (e *auditEnv) send(t *testing.T, lines ...string) string {
	t.Helper()
	e.marks++
	mark := fmt.Sprintf("audit-mark-%d", e.marks)
	from := len(e.out.String())
	if _, err := e.in.WriteString(strings.Join(append(lines, `\warn `+mark), "\n") + "\n"); err != nil {
		t.Fatalf("write to psql: %v", err)
	}
	var got string
	e.Eventually("psql handled "+mark, func() error {
		out := e.out.String()[from:]
		i := strings.Index(out, mark+"\n")
		if i < 0 {
			select {
			case <-e.ended:
				t.Fatalf("psql ended:\n%s", e.out.String())
			default:
			}
			return fmt.Errorf("psql output so far:\n%s", tail(out, 2000))
		}
		got = out[:i]
		return nil
	})
	return got
}

var refusedInsert = regexp.MustCompile(`INSERT INTO audit_t VALUES \((\d+)\)`)

// inserts runs n numbered INSERTs, each its own Query, and returns the
// numbers of those that ran and of those Warden refused because it could
// not record them. Anything else fails the test.
func (e *auditEnv) inserts(t *testing.T, n int) (ran, refused []int) {
	t.Helper()
	lines := make([]string, n)
	first := e.next
	for i := range lines {
		lines[i] = fmt.Sprintf("INSERT INTO audit_t VALUES (%d);", e.next)
		e.next++
	}
	out := e.send(t, lines...)
	// psql echoes only the statements that failed (ECHO errors).
	failed := map[int]bool{}
	for _, m := range refusedInsert.FindAllStringSubmatch(out, -1) {
		k, _ := strconv.Atoi(m[1])
		failed[k] = true
	}
	for k := first; k < e.next; k++ {
		if failed[k] {
			refused = append(refused, k)
		} else {
			ran = append(ran, k)
		}
	}
	if ok, errs := strings.Count(out, "INSERT 0 1\n"), strings.Count(out, unrecordedFull); ok != len(ran) || errs != len(refused) ||
		strings.Count(out, "ERROR:") != len(refused) {
		t.Fatalf("%d INSERTs: %d ran, %d audit errors, but psql printed:\n%s", n, ok, errs, tail(out, 4000))
	}
	return ran, refused
}

// sentinel runs a statement on audit_done (again every half second) until
// the collector holds its db.query event, and returns that event. The
// agent publishes in chain order, so every event recorded before it is at
// the collector too. It also returns how many sentinels psql ran.
func (e *auditEnv) sentinel(t *testing.T) (*event.Event, int) {
	t.Helper()
	sent, polls := 0, 0
	var found *event.Event
	e.Eventually("a sentinel statement at the collector", func() error {
		if polls%10 == 0 {
			if out := e.send(t, "SELECT count(*) FROM audit_done;"); strings.Contains(out, "ERROR") {
				t.Fatalf("sentinel failed:\n%s", out)
			}
			sent++
		}
		polls++
		for _, ev := range e.AllEvents(collectorclient.Query{Type: string(event.DBQuery), User: "alice"}) {
			if s, _ := ev.Data["statement"].(string); strings.Contains(s, "audit_done") {
				found = &ev
				return nil
			}
		}
		return fmt.Errorf("no sentinel db.query at the collector yet")
	})
	return found, sent
}

// auditCounts is what the collector holds for the session's statements.
type auditCounts struct {
	inserts      []event.Event // db.query events of the INSERTs
	results      map[string]*event.Event
	lostQueries  int64 // in agent.loss events
	lostResults  int64
	queries      int // all db.query events
	resultsTotal int // all db.result events
	pressure     []event.Event
}

func (e *auditEnv) counts(t *testing.T) auditCounts {
	t.Helper()
	c := auditCounts{results: map[string]*event.Event{}}
	for _, ev := range e.AllEvents(collectorclient.Query{Type: string(event.DBQuery), User: "alice"}) {
		c.queries++
		if s, _ := ev.Data["statement"].(string); strings.Contains(s, "audit_t") {
			if ev.Decision == nil || ev.Decision.Action != event.Allow || ev.Data["kind"] != "insert" {
				t.Fatalf("INSERT recorded with %+v: %v", ev.Decision, ev.Data)
			}
			c.inserts = append(c.inserts, ev)
		}
	}
	for _, ev := range e.AllEvents(collectorclient.Query{Type: string(event.DBResult), User: "alice"}) {
		c.resultsTotal++
		id, _ := ev.Data["request_id"].(string)
		c.results[id] = &ev
	}
	for _, ev := range e.AllEvents(collectorclient.Query{Type: string(event.AgentLoss)}) {
		types, _ := ev.Data["types"].(map[string]any)
		c.lostQueries += number(t, types[string(event.DBQuery)])
		c.lostResults += number(t, types[string(event.DBResult)])
	}
	c.pressure = e.AllEvents(collectorclient.Query{Type: string(event.AgentSpoolPressure)})
	if bad := e.AllEvents(collectorclient.Query{Type: string(event.IntegrityViolation)}); len(bad) != 0 {
		t.Fatalf("integrity violations: %+v", bad)
	}
	return c
}

// number reads a count from event data; absent is 0.
func number(t *testing.T, v any) int64 {
	t.Helper()
	if v == nil {
		return 0
	}
	n, err := strconv.ParseInt(fmt.Sprint(v), 10, 64)
	if err != nil {
		t.Fatalf("not a count: %v", v)
	}
	return n
}

func (c auditCounts) checkPressure(t *testing.T) {
	t.Helper()
	if len(c.pressure) == 0 {
		t.Fatal("no agent.spool_pressure event on the way to a full spool")
	}
	for _, p := range c.pressure {
		if number(t, p.Data["max_bytes"]) != 1<<20 || number(t, p.Data["percent"]) < 80 {
			t.Fatalf("agent.spool_pressure %v", p.Data)
		}
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// No record, no access: with the collector and NATS away, a session's
// INSERTs run until the 1 MiB spool is full, then Warden refuses each one
// with a PostgreSQL error and the session stays usable. When the collector
// is back the spool drains and INSERTs run again, without a restart. The
// table holds exactly the rows whose db.query events the collector has.
func TestAuditDenyRefusesUnrecordedStatements(t *testing.T) {
	e := newAuditEnv(t, "deny")
	e.StopCollector()

	var ran, refused []int
	for len(refused) == 0 {
		if e.next > 5000 {
			t.Fatal("5000 INSERTs and the 1 MiB spool is still not full")
		}
		r, f := e.inserts(t, 100)
		ran, refused = append(ran, r...), f
	}
	// Once one is refused, so is every later one: the ones that ran are
	// exactly those before it.
	first := refused[0]
	if want := first - 1; len(ran) == 0 || len(ran) != want || ran[len(ran)-1] != want {
		t.Fatalf("ran %d INSERTs (last %d) before the first refused one, %d", len(ran), ran[len(ran)-1], first)
	}
	if r, f := e.inserts(t, 50); len(r) != 0 || len(f) != 50 {
		t.Fatalf("on a full spool, %d more INSERTs ran", len(r))
	}
	refusedCount := e.next - first
	if rows := e.pg.QueryInt("orders", "SELECT count(*) FROM audit_t"); rows != int64(first-1) {
		t.Fatalf("table holds %d rows, want the %d that ran", rows, first-1)
	}
	if m := e.Metrics(); !strings.Contains(m, "warden_spool_max_bytes 1.048576e+06") || !regexp.MustCompile(`warden_spool_used_ratio 0\.9\d*|warden_spool_used_ratio 1\b`).MatchString(m) {
		t.Fatalf("spool gauges of a full spool:\n%s", grepLines(m, "warden_spool"))
	}
	t.Logf("spool full after %d INSERTs; %d refused", first-1, refusedCount)

	// The collector (and NATS) come back; nothing is restarted. The same
	// session retries until its INSERTs run again.
	e.StartCollector()
	e.Eventually("INSERTs run again", func() error {
		r, f := e.inserts(t, 1)
		if len(f) != 0 {
			refusedCount++
			return fmt.Errorf("still refused")
		}
		if len(r) != 1 {
			t.Fatalf("ran %v", r)
		}
		return nil
	})
	if r, f := e.inserts(t, 20); len(r) != 20 || len(f) != 0 {
		t.Fatalf("after recovery %d of 20 INSERTs were refused", len(f))
	}

	e.sentinel(t)
	c := e.counts(t)
	rows := e.pg.QueryInt("orders", "SELECT count(*) FROM audit_t")
	// The invariant: every INSERT the server executed has its db.query
	// event, and no event claims one that did not run.
	if int64(len(c.inserts)) != rows {
		t.Fatalf("table holds %d rows, the collector %d allowed INSERT db.query events", rows, len(c.inserts))
	}
	// Each refused INSERT is a db.query that could not be recorded,
	// counted in agent.loss; nothing else was lost.
	if c.lostQueries != int64(refusedCount) {
		t.Fatalf("agent.loss counts %d db.query events, %d INSERTs were refused", c.lostQueries, refusedCount)
	}
	// Every recorded INSERT ran, so its outcome followed in a db.result,
	// unless that was lost and counted.
	missing := 0
	for _, q := range c.inserts {
		if r := c.results[q.ID]; r == nil {
			missing++
		} else if r.Data["command"] != "INSERT 0 1" {
			t.Fatalf("db.result of %s: %v", q.ID, r.Data)
		}
	}
	if int64(missing) != c.lostResults {
		t.Fatalf("%d INSERT db.query events without a db.result, agent.loss counts %d lost db.result events", missing, c.lostResults)
	}
	c.checkPressure(t)
	t.Logf("%d rows, %d INSERT db.query events; agent.loss: %d db.query (refused), %d db.result", rows, len(c.inserts), c.lostQueries, c.lostResults)
}

// Failing open, INSERTs run past the full spool and agent.loss reports
// exactly what went unrecorded.
func TestAuditAllowRunsAndReportsLosses(t *testing.T) {
	e := newAuditEnv(t, "allow")
	e.StopCollector()

	lost := regexp.MustCompile(`warden_events_lost_total\{reason="spool_full",source="recorder"\} (\d+)`)
	inserted, past := 0, 0
	for past < 2 {
		if e.next > 5000 {
			t.Fatal("5000 INSERTs and the 1 MiB spool is still not full")
		}
		r, f := e.inserts(t, 100)
		if len(r) != 100 || len(f) != 0 {
			t.Fatalf("failing open, %d INSERTs were refused", len(f))
		}
		inserted += len(r)
		if lost.MatchString(e.Metrics()) {
			past++ // two more batches once events are being lost
		}
	}

	e.StartCollector()
	sentinel, sentinels := e.sentinel(t)
	// The sentinel's own result is the last event of the session.
	e.Eventually("the sentinel's db.result", func() error {
		for _, ev := range e.AllEvents(collectorclient.Query{Type: string(event.DBResult), User: "alice"}) {
			if ev.Data["request_id"] == sentinel.ID {
				return nil
			}
		}
		return fmt.Errorf("not at the collector yet")
	})
	c := e.counts(t)
	rows := e.pg.QueryInt("orders", "SELECT count(*) FROM audit_t")
	if rows != int64(inserted) {
		t.Fatalf("table holds %d rows, %d INSERTs ran", rows, inserted)
	}
	if c.lostQueries == 0 {
		t.Fatal("no db.query was lost: the spool never filled")
	}
	// Every statement the session sent ran and made one db.query and one
	// db.result: each is at the collector or counted in agent.loss.
	statements := inserted + sentinels
	if int64(c.queries)+c.lostQueries != int64(statements) {
		t.Fatalf("%d statements ran; the collector has %d db.query events and agent.loss counts %d lost", statements, c.queries, c.lostQueries)
	}
	if int64(c.resultsTotal)+c.lostResults != int64(statements) {
		t.Fatalf("%d statements ran; the collector has %d db.result events and agent.loss counts %d lost", statements, c.resultsTotal, c.lostResults)
	}
	c.checkPressure(t)
	t.Logf("%d INSERTs ran; %d db.query and %d db.result events reached the collector, %d and %d reported lost",
		inserted, c.queries, c.resultsTotal, c.lostQueries, c.lostResults)
}
