package collector_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/wardenhq/warden/collector/ingest"
	cc "github.com/wardenhq/warden/pkg/collectorclient"
	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/tests/harness"
)

var (
	alice = &event.Identity{Sub: "alice", Email: "alice@example.com", Name: "Alice", Groups: []string{"engineering"}, Issuer: "https://idp.test", SessionID: "sess-alice"}
	bob   = &event.Identity{Sub: "bob", Email: "bob@example.com", Groups: []string{"dba"}, Issuer: "https://idp.test", SessionID: "sess-bob"}
)

func TestEndToEnd(t *testing.T) {
	ns := startNATS(t)
	ag := newAgent(t, ns.ClientURL(), "bastion-1")
	col := startCollector(t, ns.ClientURL(), harness.StoreLocation(t, t.TempDir()),
		event.StaticKeys{"bastion-1": ag.pub()}, "warden-collector", ingest.ChainFull, 0)
	ctx := context.Background()

	// alice logs in; sshd -> bash -> psql; psql queries orders-db.
	login := ag.send(ag.newEvent(event.SessionLogin, alice))
	sshd := &event.Process{ExecID: "exec-sshd", PID: 100, UID: 0, Binary: "/usr/sbin/sshd", Args: []string{"sshd:", "alice"}}
	bash := &event.Process{ExecID: "exec-bash", PID: 200, UID: 1000, Binary: "/bin/bash", Args: []string{"-l"}, ParentExecID: "exec-sshd"}
	psql := &event.Process{ExecID: "exec-psql", PID: 300, UID: 1000, Binary: "/usr/bin/psql", Args: []string{"-h", "10.0.0.5", "orders"}, ParentExecID: "exec-bash"}
	for _, p := range []*event.Process{sshd, bash, psql} {
		e := ag.newEvent(event.ProcessExec, alice)
		e.Process = p // no ancestors array: lineage must walk parent_exec_id
		ag.send(e)
	}
	q := ag.newEvent(event.DBQuery, alice)
	q.Process = &event.Process{ExecID: psql.ExecID, PID: psql.PID, UID: psql.UID, Binary: psql.Binary, Args: psql.Args, ParentExecID: bash.ExecID,
		Ancestors: []event.Ancestor{
			{ExecID: bash.ExecID, PID: bash.PID, UID: bash.UID, Binary: bash.Binary},
			{ExecID: sshd.ExecID, PID: sshd.PID, UID: sshd.UID, Binary: sshd.Binary, Args: sshd.Args},
		}}
	q.Target = &event.Target{Name: "orders-db", Protocol: "postgres", Address: "10.0.0.5:5432"}
	q.Decision = &event.Decision{Action: event.Allow, Rule: "default"}
	q.Data = map[string]any{"statement": "SELECT 1"}
	ag.send(q)
	ag.send(ag.newEvent(event.SessionLogin, bob))
	conn := ag.newEvent(event.NetConnect, bob)
	conn.Target = &event.Target{Name: "redis-cache", Protocol: "redis", Address: "10.0.0.7:6379"}
	ag.send(conn)
	logout := ag.send(ag.newEvent(event.SessionLogout, alice))
	waitCount(t, col.Store(), 8)

	t.Run("filters", func(t *testing.T) {
		got, integ := allEvents(t, col.client, cc.Query{Type: "db.query"})
		if len(got) != 1 || got[0].ID != q.ID || len(integ) != 0 {
			t.Fatalf("type=db.query: got %v integrity %v", ids(got), integ)
		}
		byUser, _ := allEvents(t, col.client, cc.Query{User: "alice"})
		byEmail, _ := allEvents(t, col.client, cc.Query{User: "alice@example.com"})
		if len(byUser) != 6 || !slices.Equal(ids(byUser), ids(byEmail)) {
			t.Fatalf("user=alice: %d events, by email %d", len(byUser), len(byEmail))
		}
		got, _ = allEvents(t, col.client, cc.Query{Target: "redis-cache"})
		if len(got) != 1 || got[0].ID != conn.ID {
			t.Fatalf("target=redis-cache: %v", ids(got))
		}
		got, _ = allEvents(t, col.client, cc.Query{Since: time.Now().Add(time.Hour)})
		if len(got) != 0 {
			t.Fatalf("since=future: %d events", len(got))
		}
		got, _ = allEvents(t, col.client, cc.Query{Since: login.Time, Until: logout.Time})
		if len(got) != 7 { // until is exclusive
			t.Fatalf("since..until: %d events, want 7", len(got))
		}
		paged, _ := allEvents(t, col.client, cc.Query{Limit: 3})
		if len(paged) != 8 || !slices.IsSortedFunc(ids(paged), strings.Compare) {
			t.Fatalf("paging by 3: %d events", len(paged))
		}
		desc, err := col.client.Events(ctx, cc.Query{Limit: 1, Desc: true})
		if err != nil || len(desc.Events) != 1 || !strings.Contains(string(desc.Events[0]), logout.ID) {
			t.Fatalf("order=desc limit=1: %v %v", desc, err)
		}
		raw, err := col.client.Event(ctx, q.ID)
		if err != nil {
			t.Fatal(err)
		}
		var back event.Event
		if err := json.Unmarshal(raw, &back); err != nil || back.ComputeHash() != q.Hash {
			t.Fatalf("GET /v1/events/{id}: stored event does not re-verify: %v", err)
		}
		if _, err := col.client.Event(ctx, ulid.Make().String()); !cc.IsNotFound(err) {
			t.Fatalf("unknown id: %v, want 404", err)
		}
	})

	t.Run("bad params", func(t *testing.T) {
		for _, tc := range []struct{ query, param string }{
			{"limit=abc", "limit"},
			{"limit=0", "limit"},
			{"users=alice", "users"},
			{"since=yesterday", "since"},
			{"after_id=nope", "after_id"},
			{"type=DROP%20TABLE", "type"},
			{"order=sideways", "order"},
			{"since=1h&until=2h", "until"},
		} {
			req, _ := http.NewRequest(http.MethodGet, col.base+"/v1/events?"+tc.query, nil)
			req.Header.Set("Authorization", "Bearer "+col.token)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var eb cc.ErrorBody
			if resp.StatusCode != 400 || json.Unmarshal(body, &eb) != nil || !strings.Contains(eb.Error, `"`+tc.param+`"`) {
				t.Errorf("%s: HTTP %d %s; want 400 naming %q", tc.query, resp.StatusCode, body, tc.param)
			}
		}
	})

	t.Run("lineage by event id", func(t *testing.T) {
		l, err := col.client.Lineage(ctx, q.ID)
		if err != nil {
			t.Fatal(err)
		}
		checkAliceChain(t, l)
		var sb strings.Builder
		if err := cc.WriteLineage(&sb, l); err != nil {
			t.Fatal(err)
		}
		out := sb.String()
		for _, want := range []string{"identity: alice <alice@example.com>", "session: sess-alice, login", "└─ pid 100 uid 0 /usr/sbin/sshd", "      └─ pid 300 uid 1000 /usr/bin/psql -h 10.0.0.5 orders", "event: db.query"} {
			if !strings.Contains(out, want) {
				t.Errorf("lineage tree lacks %q:\n%s", want, out)
			}
		}
	})

	t.Run("lineage by exec id", func(t *testing.T) {
		l, err := col.client.Lineage(ctx, "exec-psql")
		if err != nil {
			t.Fatal(err)
		}
		var e event.Event
		if err := json.Unmarshal(l.Event, &e); err != nil || e.Type != event.ProcessExec {
			t.Fatalf("lineage of exec id resolved to %s (%v), want its process.exec", e.Type, err)
		}
		checkAliceChain(t, l) // rebuilt from parent_exec_id links
		if _, err := col.client.Lineage(ctx, "exec-nope"); !cc.IsNotFound(err) {
			t.Fatalf("unknown exec id: %v, want 404", err)
		}
	})

	t.Run("sessions", func(t *testing.T) {
		ss, err := col.client.Sessions(ctx, cc.SessionQuery{Since: "1h"})
		if err != nil {
			t.Fatal(err)
		}
		if len(ss) != 2 || ss[0].SessionID != "sess-bob" || ss[1].SessionID != "sess-alice" {
			t.Fatalf("sessions: %+v", ss)
		}
		a, b := ss[1], ss[0]
		if a.Sub != "alice" || a.Login == nil || !a.Login.Equal(login.Time) || a.End == nil || a.EndType != "session.logout" || !slices.Equal(a.Targets, []string{"orders-db"}) {
			t.Errorf("alice's session: %+v", a)
		}
		if b.End != nil || !slices.Equal(b.Targets, []string{"redis-cache"}) {
			t.Errorf("bob's session: %+v", b)
		}
		only, err := col.client.Sessions(ctx, cc.SessionQuery{User: "bob@example.com"})
		if err != nil || len(only) != 1 || only[0].Sub != "bob" {
			t.Fatalf("sessions user=bob: %+v %v", only, err)
		}
	})

	t.Run("follow", func(t *testing.T) {
		fctx, cancel := context.WithCancel(ctx)
		defer cancel()
		got := make(chan event.Event, 4)
		errc := make(chan error, 1)
		// Connected once GET /v1/follow answered: a probe event proves it.
		go func() {
			errc <- col.client.Follow(fctx, cc.Query{Type: "redis.command"}, func(raw json.RawMessage) error {
				var e event.Event
				if err := json.Unmarshal(raw, &e); err != nil {
					return err
				}
				got <- e
				return nil
			})
		}()
		var first *event.Event
		// Publish until the follower sees one: it may connect after the
		// first publication, and "new events" means after it connected.
		for first == nil {
			e := ag.newEvent(event.RedisCommand, bob)
			e.Data = map[string]any{"command": "GET k"}
			ag.send(e)
			ag.send(ag.newEvent(event.NetConnect, bob)) // filtered out
			select {
			case g := <-got:
				first = &g
			case err := <-errc:
				t.Fatalf("follow ended: %v", err)
			case <-time.After(500 * time.Millisecond):
			}
		}
		if first.Type != event.RedisCommand {
			t.Fatalf("follow type filter let %s through", first.Type)
		}
	})

	h, err := col.client.Health(ctx)
	if err != nil || h.Status != "ok" || h.Ingest.Violations != 0 || h.Ingest.Stored < 8 {
		t.Fatalf("healthz: %+v %v", h, err)
	}
}

func checkAliceChain(t *testing.T, l *cc.Lineage) {
	t.Helper()
	if l.Identity == nil || l.Identity.Sub != "alice" {
		t.Fatalf("identity: %+v", l.Identity)
	}
	if l.Login == nil || l.Login.SessionID != "sess-alice" {
		t.Errorf("login: %+v", l.Login)
	}
	var bins []string
	for _, s := range l.Chain {
		bins = append(bins, s.Binary)
		if s.ExecEventID == "" || s.ExecTime == nil {
			t.Errorf("step %s not enriched from its process.exec", s.ExecID)
		}
	}
	if want := []string{"/usr/sbin/sshd", "/bin/bash", "/usr/bin/psql"}; !slices.Equal(bins, want) {
		t.Fatalf("chain %v, want %v (oldest first)", bins, want)
	}
	if got := l.Chain[0].Args; !slices.Equal(got, []string{"sshd:", "alice"}) {
		t.Errorf("sshd args %v", got)
	}
}
