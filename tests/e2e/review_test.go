package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wardenhq/warden/pkg/collectorclient"
	"github.com/wardenhq/warden/pkg/devidp"
	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/pkg/review"
	"github.com/wardenhq/warden/tests/harness"
	"github.com/wardenhq/warden/tests/testenv"
)

// Reviews (docs/reviews.md): a real psql held by the proxy while people
// decide through the real collector and CLI, and just-in-time access
// opened in the kernel by an approval.

type reviewEnv struct {
	*harness.Env
	pg     *harness.Postgres
	secret string
	// Tokens: bob asks (he is in dba, and still may not decide his own
	// reviews); alice (dba) and sec (security) decide; mallory is outside
	// every approver group; carol is a contractor without plain access.
	bob, alice, sec, mallory, carol string

	hookMu sync.Mutex
	hooks  []map[string]any
}

func newReviewEnv(t *testing.T) *reviewEnv {
	testenv.RequireCommand(t, "psql")
	e := &reviewEnv{Env: harness.NewEnv(t)}
	e.pg = e.StartPostgres()
	e.secret = e.VaultedApp(e.pg)
	e.pg.Exec("orders", "CREATE TABLE t (v int); CREATE TABLE u (v int); ALTER TABLE t OWNER TO app; ALTER TABLE u OWNER TO app")

	// The webhook receiver listens in the test's namespace, where the
	// collector runs.
	ln, err := e.NS.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m map[string]any
		body, _ := io.ReadAll(r.Body)
		if json.Unmarshal(body, &m) == nil {
			e.hookMu.Lock()
			e.hooks = append(e.hooks, m)
			e.hookMu.Unlock()
		}
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	e.StartCollectorWith("--webhook", "http://"+ln.Addr().String()+"/hook")

	e.bob = e.Token(devidp.IssueOptions{Sub: "bob"})
	e.alice = e.Token(devidp.IssueOptions{Sub: "alice", Email: "alice@corp.example", Groups: []string{"dba"}})
	e.sec = e.Token(devidp.IssueOptions{Sub: "sec", Email: "sec@corp.example", Groups: []string{"security"}})
	e.mallory = e.Token(devidp.IssueOptions{Sub: "mallory"})
	e.carol = e.Token(devidp.IssueOptions{Sub: "carol", Email: "carol@contractor.example", Groups: []string{"contractors"}})
	e.StartAgent(fmt.Sprintf(`targets:
  - name: orders-db
    protocol: postgres
    address: 127.0.0.1:%d
    credentials:
      username: app
      password_file: %s
access:
  - groups: [engineering]
    targets: [orders-db]
  - groups: [contractors]
    targets: [orders-db]
    review: { approvers: [dba], grant: 20s }
rules:
  - name: unbounded-writes
    targets: [orders-db]
    when: { statements: [delete], no_where: true }
    action: review
    review: { approvers: [dba, security], require: any, hold: 45s, grant: once }
  - name: quick-updates
    targets: [orders-db]
    when: { statements: [update], no_where: true }
    action: review
    review: { approvers: [dba], hold: 3s, grant: once }
  - name: truncate-needs-both
    targets: [orders-db]
    when: { statements: [truncate] }
    action: review
    review: { approvers: [dba, security], require: all, hold: 45s, grant: once }
`, e.pg.Port, e.secret))
	return e
}

func (e *reviewEnv) conn() string {
	return fmt.Sprintf("host=127.0.0.1 port=%d dbname=orders user=whoever sslmode=disable connect_timeout=10", e.pg.Port)
}

// seed puts n rows in t.
func (e *reviewEnv) seed(n int) {
	e.pg.Exec("orders", fmt.Sprintf("DELETE FROM t; INSERT INTO t SELECT generate_series(1, %d)", n))
}

func (e *reviewEnv) rows(table string) int64 {
	return e.pg.QueryInt("orders", "SELECT count(*) FROM "+table)
}

// asUser runs script in a fresh shell logged in with token.
func (e *reviewEnv) asUser(token, script string) *exec.Cmd {
	return e.Command(harness.Shell{UID: nobody, GID: nobody, Script: fmt.Sprintf(
		"warden login --token-file %s >/dev/null || exit 9\n%s", token, script)})
}

// held is a shell waiting on a statement under review.
type held struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan error
}

func (e *reviewEnv) start(t *testing.T, token, script string) *held {
	t.Helper()
	h := &held{cmd: e.asUser(token, script), out: &syncBuffer{}, done: make(chan error, 1)}
	h.cmd.Stdout, h.cmd.Stderr = h.out, h.out
	if err := h.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { h.done <- h.cmd.Wait() }()
	t.Cleanup(func() {
		h.cmd.Process.Kill()
		<-h.done
	})
	return h
}

func (h *held) wait(t *testing.T, within time.Duration) string {
	t.Helper()
	select {
	case <-h.done:
		h.done <- nil // for the cleanup
		return h.out.String()
	case <-time.After(within):
		t.Fatalf("still waiting after %s:\n%s", within, h.out.String())
	}
	return ""
}

// reviews lists reviews through the CLI with token's identity.
func (e *reviewEnv) reviews(t *testing.T, token, state string) []review.Review {
	t.Helper()
	out, err := e.WardenEnv([]string{"WARDEN_TOKEN_FILE=" + token}, "review", "list", "--state", state, "--json")
	if err != nil {
		t.Fatalf("warden review list: %v\n%s", err, out)
	}
	// One JSON review per line.
	var rs []review.Review
	dec := json.NewDecoder(strings.NewReader(out))
	for dec.More() {
		var r review.Review
		if err := dec.Decode(&r); err != nil {
			t.Fatalf("warden review list --json: %v\n%s", err, out)
		}
		rs = append(rs, r)
	}
	return rs
}

// pending waits for sub's pending review under rule and returns it.
func (e *reviewEnv) pending(t *testing.T, sub, rule string, not ...string) review.Review {
	t.Helper()
	var found review.Review
	e.Eventually("pending review of "+rule, func() error {
		for _, r := range e.reviews(t, e.ReaderToken, "pending") {
			if r.Requester.Sub == sub && r.Rule == rule && !contains(not, r.ID) {
				found = r
				return nil
			}
		}
		return fmt.Errorf("no pending %s review of %s", rule, sub)
	})
	return found
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

func (e *reviewEnv) decide(t *testing.T, token, verb, id, reason string) (string, error) {
	t.Helper()
	return e.WardenEnv([]string{"WARDEN_TOKEN_FILE=" + token}, "review", verb, id, "--reason", reason)
}

func (e *reviewEnv) mustDecide(t *testing.T, token, verb, id, reason string) {
	t.Helper()
	if out, err := e.decide(t, token, verb, id, reason); err != nil {
		t.Fatalf("warden review %s %s: %v\n%s", verb, id, err, out)
	}
}

func TestReviews(t *testing.T) {
	e := newReviewEnv(t)
	deleteAll := fmt.Sprintf("psql %q -v ON_ERROR_STOP=1 -c 'DELETE FROM t'", e.conn())

	t.Run("approve in time", func(t *testing.T) {
		e.seed(3)
		h := e.start(t, e.bob, deleteAll)
		r := e.pending(t, "bob", "unbounded-writes")
		if r.Statement == "" || r.Fingerprint == "" || r.Host != harness.HostID {
			t.Errorf("review %+v", r)
		}
		e.Eventually("the hold notice", func() error {
			if out := h.out.String(); !strings.Contains(out, fmt.Sprintf(`warden: review %s required by rule "unbounded-writes"; waiting up to 45s (approve: warden review approve %s)`, r.ID, r.ID)) {
				return fmt.Errorf("psql printed %q", out)
			}
			return nil
		})
		// Bob is in dba, and still may not decide his own review.
		out, err := e.decide(t, e.bob, "approve", r.ID, "mine")
		t.Logf("bob approving his own review: %s", out)
		if err == nil || strings.Count(strings.TrimSpace(out), "\n") != 0 || !strings.Contains(out, "403") || !strings.Contains(out, "you requested this review") {
			t.Errorf("bob approving his own review: %v\n%s", err, out)
		}
		// Mallory is in no approver group.
		out, err = e.decide(t, e.mallory, "approve", r.ID, "sure")
		t.Logf("mallory approving: %s", out)
		if err == nil || strings.Count(strings.TrimSpace(out), "\n") != 0 || !strings.Contains(out, "403") || !strings.Contains(out, "not a member of dba, security") {
			t.Errorf("mallory approving: %v\n%s", err, out)
		}
		if n := e.rows("t"); n != 3 {
			t.Fatalf("%d rows before the approval", n)
		}
		e.mustDecide(t, e.alice, "approve", r.ID, "cleanup ok")
		out = h.wait(t, 20*time.Second)
		t.Logf("bob's psql:\n%s", out)
		if !strings.Contains(out, "DELETE 3") {
			t.Fatalf("psql after approval:\n%s", out)
		}
		if n := e.rows("t"); n != 0 {
			t.Fatalf("%d rows after the approved DELETE", n)
		}
	})

	t.Run("extended protocol (pgx)", func(t *testing.T) {
		e.seed(3)
		h := e.start(t, e.bob, fmt.Sprintf("%s %q review", harness.TestClient(t, "pgxclient"), e.conn()))
		r := e.pending(t, "bob", "unbounded-writes")
		e.mustDecide(t, e.alice, "approve", r.ID, "ok")
		out := h.wait(t, 20*time.Second)
		t.Logf("pgx:\n%s", out)
		// Approved at Parse, run once; the prepared statement run again
		// is refused: the approval was for one run.
		if !strings.Contains(out, "prepare: ok") || !strings.Contains(out, "first: DELETE 3 ok") || !strings.Contains(out, "second:  42501 warden: review "+r.ID+" approved one run of this statement, and it has run") {
			t.Fatalf("pgx output:\n%s", out)
		}
	})

	t.Run("deny", func(t *testing.T) {
		e.seed(3)
		h := e.start(t, e.bob, deleteAll)
		r := e.pending(t, "bob", "unbounded-writes")
		e.mustDecide(t, e.alice, "deny", r.ID, "not during business hours")
		out := h.wait(t, 20*time.Second)
		if !strings.Contains(out, fmt.Sprintf("warden: review %s denied by alice@corp.example: not during business hours", r.ID)) {
			t.Fatalf("psql after denial:\n%s", out)
		}
		if n := e.rows("t"); n != 3 {
			t.Fatalf("%d rows after the denied DELETE", n)
		}
	})

	t.Run("hold expires, a late approval runs it once", func(t *testing.T) {
		e.seed(3)
		update := fmt.Sprintf("psql %q -v ON_ERROR_STOP=1 -c 'UPDATE t SET v = v + 100'", e.conn())
		out := e.start(t, e.bob, update).wait(t, 30*time.Second)
		r := e.pending(t, "bob", "quick-updates")
		if !strings.Contains(out, "not approved in time") || !strings.Contains(out, "DETAIL:  review "+r.ID) || !strings.Contains(out, "HINT:  Re-run the statement") {
			t.Fatalf("psql after the hold:\n%s", out)
		}
		if got := e.pg.QueryInt("orders", "SELECT max(v) FROM t"); got != 3 {
			t.Fatalf("max(v) = %d after the refused UPDATE", got)
		}
		e.mustDecide(t, e.alice, "approve", r.ID, "late but fine")
		if out := e.start(t, e.bob, update).wait(t, 30*time.Second); !strings.Contains(out, "UPDATE 3") {
			t.Fatalf("re-run after the late approval:\n%s", out)
		}
		// Once: the next run waits for a review of its own.
		out = e.start(t, e.bob, update).wait(t, 30*time.Second)
		if !strings.Contains(out, "not approved in time") || strings.Contains(out, r.ID) {
			t.Fatalf("second re-run:\n%s", out)
		}
		if got := e.pg.QueryInt("orders", "SELECT max(v) FROM t"); got != 103 {
			t.Fatalf("max(v) = %d: the UPDATE ran other than exactly once", got)
		}
	})

	t.Run("require all", func(t *testing.T) {
		e.pg.Exec("orders", "INSERT INTO u VALUES (1), (2)")
		h := e.start(t, e.bob, fmt.Sprintf("psql %q -v ON_ERROR_STOP=1 -c 'TRUNCATE u'", e.conn()))
		r := e.pending(t, "bob", "truncate-needs-both")
		e.mustDecide(t, e.alice, "approve", r.ID, "dba ok")
		time.Sleep(time.Second)
		if st := e.pending(t, "bob", "truncate-needs-both"); st.ID != r.ID {
			t.Fatalf("after one group's approval: %+v", st)
		}
		if n := e.rows("u"); n != 2 {
			t.Fatalf("TRUNCATE ran with one approval of two")
		}
		e.mustDecide(t, e.sec, "approve", r.ID, "security ok")
		if out := h.wait(t, 20*time.Second); !strings.Contains(out, "TRUNCATE TABLE") {
			t.Fatalf("psql after both approvals:\n%s", out)
		}
	})

	t.Run("explicit transaction is refused at once", func(t *testing.T) {
		e.seed(3)
		start := time.Now()
		out := e.start(t, e.bob, fmt.Sprintf("printf 'BEGIN;\\nDELETE FROM t;\\nROLLBACK;\\n' | psql %q", e.conn())).wait(t, 20*time.Second)
		if !strings.Contains(out, "cannot wait inside a transaction") || time.Since(start) > 15*time.Second {
			t.Fatalf("psql in a transaction (%s):\n%s", time.Since(start), out)
		}
		if n := e.rows("t"); n != 3 {
			t.Fatalf("%d rows", n)
		}
	})

	t.Run("ctrl-c while held", func(t *testing.T) {
		e.seed(3)
		// psql sends a CancelRequest on SIGINT, as on Ctrl-C.
		h := e.start(t, e.bob, deleteAll+" & p=$!\nsleep 3\nkill -INT $p\nwait $p")
		out := h.wait(t, 30*time.Second)
		if !strings.Contains(out, "canceling statement due to user request") {
			t.Fatalf("psql after Ctrl-C:\n%s", out)
		}
		if n := e.rows("t"); n != 3 {
			t.Fatalf("%d rows", n)
		}
	})

	t.Run("just-in-time access", func(t *testing.T) {
		psql := fmt.Sprintf("psql %q -tAc 'SELECT 42'", e.conn())
		if out := e.start(t, e.carol, psql).wait(t, 30*time.Second); !strings.Contains(out, "Operation not permitted") {
			t.Fatalf("carol before any review:\n%s", out)
		}
		out := e.start(t, e.carol, "warden access request orders-db --reason 'incident 4711' --for 20s").wait(t, 30*time.Second)
		t.Logf("warden access request:\n%s", out)
		r := e.pending(t, "carol", review.AccessRule)
		if !strings.Contains(out, r.ID) || r.Reason != "incident 4711" {
			t.Fatalf("access request printed:\n%s\nreview %+v", out, r)
		}
		// A refused connect() names the pending review.
		e.start(t, e.carol, psql).wait(t, 30*time.Second)
		e.WaitEvent(collectorclient.Query{Type: string(event.NetConnect), User: "carol"}, "denial naming the review", func(ev *event.Event) bool {
			return ev.Data["review_id"] == r.ID
		})
		e.mustDecide(t, e.alice, "approve", r.ID, "go ahead")
		e.Eventually("carol connects", func() error {
			if out := e.start(t, e.carol, psql).wait(t, 30*time.Second); strings.TrimSpace(out) != "42" {
				return fmt.Errorf("psql: %s", out)
			}
			return nil
		})
		e.Eventually("the window closes", func() error {
			if out := e.start(t, e.carol, psql).wait(t, 30*time.Second); !strings.Contains(out, "Operation not permitted") {
				return fmt.Errorf("psql: %s", out)
			}
			return nil
		})
		ev := e.WaitEvent(collectorclient.Query{Type: string(event.ReviewDecided), User: "carol"}, "review.decided", func(ev *event.Event) bool {
			return ev.Data["review_id"] == r.ID && ev.Data["outcome"] == "approved"
		})
		e.Eventually("review.decided covered by a checkpoint", func() error { return coveredByCheckpoint(e.Env, ev.ID) })
		e.WaitEvent(collectorclient.Query{Type: string(event.ReviewRequested), User: "carol"}, "review.requested", func(ev *event.Event) bool {
			return ev.Data["review_id"] == r.ID
		})
		out, err := e.Warden("events", "--type", "review.decided")
		if err != nil || !strings.Contains(out, "review.decided") {
			t.Errorf("warden events --type review.decided: %v\n%s", err, out)
		}
	})

	t.Run("webhook", func(t *testing.T) {
		e.Eventually("webhook deliveries", func() error {
			e.hookMu.Lock()
			defer e.hookMu.Unlock()
			var requested, decided bool
			for _, h := range e.hooks {
				text, _ := h["text"].(string)
				switch h["event"] {
				case "review.requested":
					requested = requested || text != ""
				case "review.decided":
					decided = decided || text != ""
				}
			}
			if !requested || !decided {
				return fmt.Errorf("webhook got %d posts, requested %v, decided %v", len(e.hooks), requested, decided)
			}
			return nil
		})
	})

	t.Run("collector down", func(t *testing.T) {
		e.seed(3)
		e.StopCollector()
		defer e.StartCollectorWith()
		start := time.Now()
		out := e.start(t, e.bob, deleteAll).wait(t, 30*time.Second)
		if !strings.Contains(out, "warden: review service unreachable") || time.Since(start) > 20*time.Second {
			t.Fatalf("psql with the collector down (%s):\n%s", time.Since(start), out)
		}
		if n := e.rows("t"); n != 3 {
			t.Fatalf("%d rows", n)
		}
	})
}
