package console

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/wardenhq/warden/agent/recording"
	"github.com/wardenhq/warden/pkg/event"
)

var rowIDRE = regexp.MustCompile(`data-testid="event-row" data-type="[^"]*" data-event-id="([^"]+)"`)

// rowIDs are the event ids of a page's rows, in order.
func rowIDs(page string) []string {
	var out []string
	for _, m := range rowIDRE.FindAllStringSubmatch(page, -1) {
		out = append(out, m[1])
	}
	return out
}

// Search pages newest first, and the export holds exactly the rows the
// page shows, in both formats.
func TestSearchPagesAndExportsWhatIsShown(t *testing.T) {
	e := newEnv(t)
	b := e.browser()
	b.signIn("alice", "/search")
	base := time.Now().UTC().Add(-time.Hour)
	var want []string
	for i := range 7 {
		ev := &event.Event{Type: event.DBQuery, Time: base.Add(time.Duration(i) * time.Minute), Host: event.Host{ID: "db-host"},
			Identity: &event.Identity{Sub: "bob", Email: "bob@example.com"}, Target: &event.Target{Name: "orders-db"},
			Data: map[string]any{"statement": fmt.Sprintf("=HYPERLINK(%d)", i)}}
		e.insert(ev)
		want = append([]string{ev.ID}, want...) // newest first
	}
	e.insert(&event.Event{Type: event.SSHExec, Host: event.Host{ID: "other"}, Data: map[string]any{"command": "ls"}})

	st, page := b.get("/search?type=db.query&person=bob@example.com&limit=3")
	if st != http.StatusOK {
		t.Fatalf("search: %d\n%s", st, page)
	}
	if got := rowIDs(page); strings.Join(got, ",") != strings.Join(want[:3], ",") {
		t.Fatalf("first page %v, want %v", got, want[:3])
	}
	next := regexp.MustCompile(`data-testid="next-page" href="([^"]+)"`).FindStringSubmatch(page)
	if next == nil {
		t.Fatalf("no next page link:\n%s", page)
	}
	st, page2 := b.get(strings.ReplaceAll(next[1], "&amp;", "&"))
	if got := rowIDs(page2); st != http.StatusOK || strings.Join(got, ",") != strings.Join(want[3:6], ",") {
		t.Fatalf("second page %d %v, want %v", st, got, want[3:6])
	}
	exp := regexp.MustCompile(`data-testid="export-(csv|json)" href="([^"]+)"`).FindAllStringSubmatch(page2, -1)
	if len(exp) != 2 {
		t.Fatalf("export links: %v", exp)
	}
	for _, m := range exp {
		resp, err := b.c.Get(e.base + strings.ReplaceAll(m[2], "&amp;", "&"))
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		switch m[1] {
		case "csv":
			recs, err := csv.NewReader(resp.Body).ReadAll()
			if err != nil || len(recs) == 0 || recs[0][1] != "id" {
				t.Fatalf("CSV: %v %v", recs, err)
			}
			for _, r := range recs[1:] {
				ids = append(ids, r[1])
				if !strings.HasPrefix(r[9], "'=") {
					t.Errorf("CSV cell %q would run as a formula in a spreadsheet", r[9])
				}
			}
		case "json":
			var evs []event.Event
			if err := json.NewDecoder(resp.Body).Decode(&evs); err != nil {
				t.Fatal(err)
			}
			for _, ev := range evs {
				ids = append(ids, ev.ID)
			}
		}
		resp.Body.Close()
		if resp.Header.Get("Content-Disposition") == "" || strings.Join(ids, ",") != strings.Join(want[3:6], ",") {
			t.Errorf("%s export %v, want the page's rows %v", m[1], ids, want[3:6])
		}
	}
	// A bad filter is said on the page, not a blank 500.
	if st, page := b.get("/search?since=yesterday"); st != http.StatusBadRequest || !strings.Contains(page, `since`) {
		t.Fatalf("bad since: %d\n%s", st, page)
	}
	if st, _ := b.get("/search/export?format=xml"); st != http.StatusBadRequest {
		t.Fatalf("export format xml: %d", st)
	}
}

// The live page shows matching stored events and streams new ones that
// match its filters, and only those.
func TestLiveFiltersAndStream(t *testing.T) {
	e := newEnv(t)
	b := e.browser()
	b.signIn("alice", "/live")
	old := &event.Event{Type: event.DBQuery, Host: event.Host{ID: "h1"}, Target: &event.Target{Name: "orders-db"}, Data: map[string]any{"statement": "SELECT 1"}}
	e.insert(old, &event.Event{Type: event.SSHExec, Host: event.Host{ID: "h1"}, Data: map[string]any{"command": "uptime"}})
	st, page := b.get("/live?type=db.query&host=h1&person=&target=")
	if st != http.StatusOK || strings.Join(rowIDs(page), ",") != old.ID {
		t.Fatalf("live with filters: %d %v, want only %s", st, rowIDs(page), old.ID)
	}
	stream := regexp.MustCompile(`data-stream="([^"]+)"`).FindStringSubmatch(page)
	if stream == nil {
		t.Fatal("no data-stream on the live page")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.base+strings.ReplaceAll(stream[1], "&amp;", "&"), nil)
	resp, err := b.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	other := &event.Event{Type: event.SSHExec, Host: event.Host{ID: "h1"}, Data: map[string]any{"command": "whoami"}}
	match := &event.Event{Type: event.DBQuery, Host: event.Host{ID: "h1"}, Decision: &event.Decision{Action: event.Deny, Rule: "no-drop"},
		Data: map[string]any{"statement": "DROP TABLE orders"}}
	e.insert(other)
	e.insert(match)
	msg := readSSE(t, resp.Body, "event")
	if !strings.Contains(msg, `data-event-id="`+match.ID+`"`) || !strings.Contains(msg, "DROP TABLE orders") || !strings.Contains(msg, `data-type="db.query"`) {
		t.Fatalf("first streamed row is not the matching denial:\n%s", msg)
	}
}

// The replay page says whether the recording matches its event's hash,
// plays it when it does, and refuses to play it when it does not.
func TestReplayHashVerdict(t *testing.T) {
	e := newEnv(t)
	b := e.browser()
	b.signIn("alice", "/live")
	w := recording.NewWriter(e.recs, "ssh-A", recording.Header{Width: 80, Height: 24}, recording.WriterOptions{ChunkSize: 32})
	w.Output([]byte("hello-warden from a recorded shell\r\n"))
	sum, err := w.Close()
	if err != nil {
		t.Fatal(err)
	}
	end := &event.Event{Type: event.SSHSession, Host: event.Host{ID: "h"}, Target: &event.Target{Name: "app-1"},
		Data: event.SSHSessionData{Phase: "end", SSHSession: "ssh-A", Recording: sum.Object, RecordingSHA256: sum.SHA256, RecordingBytes: sum.Bytes}.Data()}
	e.insert(end)
	st, page := b.get("/replay/" + end.ID)
	if st != http.StatusOK || !strings.Contains(page, `<span data-testid="replay-hash">hash matches</span>`) || !strings.Contains(page, `data-testid="replay-player"`) {
		t.Fatalf("replay: %d\n%s", st, page)
	}
	if st, cast := b.get("/replay/" + end.ID + "/cast"); st != http.StatusOK || !strings.Contains(cast, "hello-warden") {
		t.Fatalf("cast: %d %q", st, cast)
	}
	// The live row of the session's end links to the replay.
	if _, page := b.get("/live"); !strings.Contains(page, `data-testid="replay-link" href="/replay/`+end.ID+`"`) {
		t.Fatalf("no replay link on the live row:\n%s", page)
	}
	// One changed byte in the object store.
	b0, err := e.recs.Get(context.Background(), recording.ChunkName("ssh-A", 1))
	if err != nil {
		t.Fatal(err)
	}
	b0[0] ^= 0x20
	if err := e.recs.Put(context.Background(), recording.ChunkName("ssh-A", 1), b0); err != nil {
		t.Fatal(err)
	}
	st, page = b.get("/replay/" + end.ID)
	if st != http.StatusOK || !strings.Contains(page, `<span data-testid="replay-hash">hash MISMATCH</span>`) || strings.Contains(page, `data-testid="replay-player"`) {
		t.Fatalf("tampered replay: %d\n%s", st, page)
	}
	if st, cast := b.get("/replay/" + end.ID + "/cast"); st != http.StatusConflict || strings.Contains(cast, "hello-warden") {
		t.Fatalf("tampered cast: %d %q", st, cast)
	}
}

// Sessions per person and per host, and a session's timeline from login
// to logout.
func TestSessionsAndTimeline(t *testing.T) {
	e := newEnv(t)
	b := e.browser()
	b.signIn("alice", "/sessions")
	bob := &event.Identity{Sub: "bob", Email: "bob@example.com", SessionID: "S-bob"}
	carol := &event.Identity{Sub: "carol", Email: "carol@example.com", SessionID: "S-carol"}
	t0 := time.Now().UTC().Add(-10 * time.Minute)
	e.insert(
		&event.Event{Type: event.SessionLogin, Time: t0, Host: event.Host{ID: "bastion-1"}, Identity: bob},
		&event.Event{Type: event.NetConnect, Time: t0.Add(time.Second), Host: event.Host{ID: "bastion-1"}, Identity: bob, Target: &event.Target{Name: "orders-db"}, Data: map[string]any{"original_dst": "10.0.0.5:5432", "verdict": "redirect"}},
		&event.Event{Type: event.DBQuery, Time: t0.Add(2 * time.Second), Host: event.Host{ID: "bastion-1"}, Identity: bob, Target: &event.Target{Name: "orders-db"}, Decision: &event.Decision{Action: event.Deny, Rule: "no-drop"}, Data: map[string]any{"statement": "DROP TABLE orders"}},
		&event.Event{Type: event.SessionLogout, Time: t0.Add(3 * time.Second), Host: event.Host{ID: "bastion-1"}, Identity: bob},
		&event.Event{Type: event.SessionLogin, Time: t0.Add(time.Minute), Host: event.Host{ID: "bastion-2"}, Identity: carol},
	)
	_, page := b.get("/sessions?person=bob@example.com")
	if !strings.Contains(page, `data-session-id="S-bob"`) || strings.Contains(page, `data-session-id="S-carol"`) {
		t.Fatalf("sessions of bob:\n%s", page)
	}
	_, page = b.get("/sessions?host=bastion-2")
	if strings.Contains(page, `data-session-id="S-bob"`) || !strings.Contains(page, `data-session-id="S-carol"`) {
		t.Fatalf("sessions on bastion-2:\n%s", page)
	}
	st, page := b.get("/sessions/S-bob")
	types := regexp.MustCompile(`data-testid="event-row" data-type="([^"]+)"`).FindAllStringSubmatch(page, -1)
	var got []string
	for _, m := range types {
		got = append(got, m[1])
	}
	if st != http.StatusOK || strings.Join(got, " ") != "session.login net.connect db.query session.logout" || !strings.Contains(page, "deny") {
		t.Fatalf("timeline %d %v:\n%s", st, got, page)
	}
	if st, _ := b.get("/sessions/nope"); st != http.StatusNotFound {
		t.Fatalf("unknown session: %d", st)
	}
}

// The integrity page lists every agent and its violations prominently.
func TestIntegrityShowsViolations(t *testing.T) {
	e := newEnv(t)
	b := e.browser()
	b.signIn("alice", "/integrity")
	if _, page := b.get("/integrity"); strings.Contains(page, `data-testid="violation"`) || !strings.Contains(page, "No integrity violations") {
		t.Fatalf("clean store:\n%s", page)
	}
	v := &event.Event{Type: event.IntegrityViolation, Host: event.Host{ID: "bastion-1"},
		Data: map[string]any{"problem": "bad_hash", "detail": "event 01X was modified after it was sealed", "host_id": "bastion-1", "seq": 7}}
	e.insert(v)
	st, page := b.get("/integrity")
	if st != http.StatusOK || !strings.Contains(page, `data-testid="violations-alarm"`) ||
		!strings.Contains(page, `data-testid="violation" data-host="bastion-1" data-event-id="`+v.ID+`"`) || !strings.Contains(page, "bad_hash: event 01X was modified") {
		t.Fatalf("integrity with a violation: %d\n%s", st, page)
	}
}

// Every script and style sheet the pages name is embedded and served
// with a type the browser runs under nosniff, without a session.
func TestAssetsServed(t *testing.T) {
	e := newEnv(t)
	for path, typ := range map[string]string{
		"/static/console.js":              "text/javascript",
		"/static/replay.js":               "text/javascript",
		"/static/asciinema-player.min.js": "text/javascript",
		"/static/console.css":             "text/css",
		"/static/asciinema-player.css":    "text/css",
	} {
		resp, err := http.Get(e.base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), typ) {
			t.Errorf("GET %s: %d %q, want 200 %s", path, resp.StatusCode, resp.Header.Get("Content-Type"), typ)
		}
	}
	// And the templates name no other file.
	entries, err := templateFS.ReadDir("templates")
	if err != nil {
		t.Fatal(err)
	}
	ref := regexp.MustCompile(`(?:src|href)="/static/([^"]+)"`)
	for _, en := range entries {
		b, _ := templateFS.ReadFile("templates/" + en.Name())
		for _, m := range ref.FindAllStringSubmatch(string(b), -1) {
			if _, err := distFS.Open("web/dist/" + m[1]); err != nil {
				t.Errorf("%s names /static/%s, which web/dist lacks", en.Name(), m[1])
			}
		}
	}
}
