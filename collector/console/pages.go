package console

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/wardenhq/warden/agent/recording"
	"github.com/wardenhq/warden/collector/api"
	"github.com/wardenhq/warden/collector/reviews"
	"github.com/wardenhq/warden/collector/store"
	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/pkg/idtoken"
	"github.com/wardenhq/warden/pkg/review"
)

// Page sizes.
const (
	livePage    = 100
	searchPage  = 50
	maxSearch   = 1000
	reviewsPage = 200
)

// filterKeys are the console's filter parameters, in the API's names
// except person (the API's user).
var filterKeys = []string{"type", "person", "host", "target", "since", "until", "after_id", "limit"}

// parseFilter reads the console's filters through the API's parser, so
// both accept and refuse the same things. Empty fields (an empty form
// input) are no filter.
func parseFilter(v url.Values, now time.Time, allowed ...string) (store.Filter, filterView, error) {
	q := url.Values{}
	var names []string
	for _, k := range allowed {
		name := k
		if k == "person" {
			name = "user"
		}
		names = append(names, name)
		if x := strings.TrimSpace(v.Get(k)); x != "" {
			q.Set(name, x)
		}
	}
	fv := filterView{Type: q.Get("type"), Person: q.Get("user"), Host: q.Get("host"), Target: q.Get("target"), Since: q.Get("since"), Until: q.Get("until")}
	f, err := api.ParseFilter(q, now, names...)
	if err != nil {
		// The API names its parameter; the console's form calls it person.
		return f, fv, errors.New(strings.Replace(err.Error(), `"user"`, `"person"`, 1))
	}
	return f, fv, nil
}

// filterQuery is the query string of a filter view (links, the stream).
func filterQuery(fv filterView, extra ...string) url.Values {
	q := url.Values{}
	for k, v := range map[string]string{"type": fv.Type, "person": fv.Person, "host": fv.Host, "target": fv.Target, "since": fv.Since, "until": fv.Until} {
		if v != "" {
			q.Set(k, v)
		}
	}
	for i := 0; i+1 < len(extra); i += 2 {
		q.Set(extra[i], extra[i+1])
	}
	return q
}

// live shows the newest events and streams new ones (live.js).
func (s *Server) live(w http.ResponseWriter, r *http.Request, c *idtoken.Claims) {
	p := s.base(r, c, "Live", "live")
	f, fv, err := parseFilter(r.URL.Query(), s.now(), "type", "person", "host", "target")
	p.Filter = fv
	if err != nil {
		p.Error = err.Error()
		s.render(w, r, http.StatusBadRequest, "live", p)
		return
	}
	// The stream starts after the newest row now, so nothing falls
	// between the page and the stream.
	last, err := s.cfg.Store.LastRowID(r.Context())
	if err != nil {
		s.internal(w, r, c, err)
		return
	}
	f.Limit, f.ByRow, f.Desc = livePage, true, true
	rows, err := s.cfg.Store.Query(r.Context(), f)
	if err != nil {
		s.internal(w, r, c, err)
		return
	}
	for _, row := range rows {
		if row.RowID <= last {
			p.Events = append(p.Events, rowView(row))
		}
	}
	p.Stream = "/live/stream?" + filterQuery(fv, "after", strconv.FormatInt(last, 10)).Encode()
	s.render(w, r, http.StatusOK, "live", p)
}

// stream serves the live page's Server-Sent Events: each new matching
// event as the row the page shows, rendered (and escaped) here. The id
// of each message is the event's row, so a reconnecting EventSource
// resumes where it stopped (Last-Event-ID). The stream ends when the
// session does.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, c *idtoken.Claims) {
	ctx := r.Context()
	f, _, err := parseFilter(r.URL.Query(), s.now(), "type", "person", "host", "target")
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	after := r.Header.Get("Last-Event-ID")
	if after == "" {
		after = r.URL.Query().Get("after")
	}
	if after != "" {
		if f.AfterRow, err = strconv.ParseInt(after, 10, 64); err != nil || f.AfterRow < 0 {
			http.Error(w, fmt.Sprintf("after %q: want a row number", after), http.StatusBadRequest)
			return
		}
	} else if f.AfterRow, err = s.cfg.Store.LastRowID(ctx); err != nil {
		s.log.Error().Err(err).Msg("live stream")
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	// A stream lasts as long as its session: it ends at the session's
	// expiry, and at once when the session is signed out.
	if sess := s.sessions.lookup(r); sess != nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, sess.expires)
		defer cancel()
		var cancelCause context.CancelCauseFunc
		ctx, cancelCause = context.WithCancelCause(ctx)
		defer cancelCause(nil)
		go func() {
			select {
			case <-sess.done:
				cancelCause(errSessionEnded)
			case <-ctx.Done():
			}
		}()
	}
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte("retry: 3000\n\n"))
	_ = rc.Flush()
	t := s.pages["live"]
	err = s.cfg.API.Follow(ctx, f, func(rows []store.Row) error {
		var b bytes.Buffer
		for _, row := range rows {
			var html bytes.Buffer
			if err := t.ExecuteTemplate(&html, "event-row", rowView(row)); err != nil {
				return err
			}
			fmt.Fprintf(&b, "id: %d\nevent: event\n", row.RowID)
			for line := range strings.SplitSeq(strings.TrimSpace(html.String()), "\n") {
				fmt.Fprintf(&b, "data: %s\n", strings.TrimRight(line, "\r"))
			}
			b.WriteString("\n")
		}
		if _, err := w.Write(b.Bytes()); err != nil {
			return err
		}
		return rc.Flush()
	}, func() error {
		if _, err := w.Write([]byte(": keep-alive\n\n")); err != nil {
			return err
		}
		return rc.Flush()
	})
	if ctx.Err() != nil && r.Context().Err() == nil {
		_, _ = w.Write([]byte("event: expired\ndata: your session ended: reload to sign in again\n\n"))
		_ = rc.Flush()
		return
	}
	if err != nil && r.Context().Err() == nil {
		s.log.Debug().Err(err).Msg("live stream ended")
	}
}

// errSessionEnded ends a live stream whose session was signed out.
var errSessionEnded = errors.New("the session ended")

// errBadQuery marks a search the person got wrong (400, said on the page).
var errBadQuery = errors.New("bad query")

// searchRows runs the search page's query: newest first, a page at a
// time (after_id is the last id of the previous page).
func (s *Server) searchRows(r *http.Request) (store.Filter, filterView, []store.Row, error) {
	f, fv, err := parseFilter(r.URL.Query(), s.now(), filterKeys...)
	if err != nil {
		return f, fv, nil, fmt.Errorf("%w: %w", errBadQuery, err)
	}
	if r.URL.Query().Get("limit") == "" {
		f.Limit = searchPage
	}
	if f.Limit > maxSearch {
		return f, fv, nil, fmt.Errorf("%w: limit %d: at most %d rows a page", errBadQuery, f.Limit, maxSearch)
	}
	f.Desc = true
	rows, err := s.cfg.Store.Query(r.Context(), f)
	return f, fv, rows, err
}

// search is the search page: a time range and filters, paged.
func (s *Server) search(w http.ResponseWriter, r *http.Request, c *idtoken.Claims) {
	p := s.base(r, c, "Search", "search")
	f, fv, rows, err := s.searchRows(r)
	p.Filter = fv
	if errors.Is(err, errBadQuery) {
		p.Error = err.Error()
		s.render(w, r, http.StatusBadRequest, "search", p)
		return
	}
	if err != nil {
		s.internal(w, r, c, err)
		return
	}
	for _, row := range rows {
		p.Events = append(p.Events, rowView(row))
	}
	// Export the page shown: the same query, the same after_id and limit.
	q := r.URL.Query()
	q.Set("limit", strconv.Itoa(f.Limit))
	for k := range q {
		if !slices.Contains(filterKeys, k) || q.Get(k) == "" {
			q.Del(k)
		}
	}
	q.Set("format", "csv")
	p.ExportCSV = "/search/export?" + q.Encode()
	q.Set("format", "json")
	p.ExportJSON = "/search/export?" + q.Encode()
	p.FirstPage = "/search?" + filterQuery(fv, "limit", strconv.Itoa(f.Limit)).Encode()
	if len(rows) == f.Limit {
		next := filterQuery(fv, "after_id", rows[len(rows)-1].ID, "limit", strconv.Itoa(f.Limit))
		p.NextPage = "/search?" + next.Encode()
	}
	s.render(w, r, http.StatusOK, "search", p)
}

// csvColumns are the export's columns, those of the search table.
var csvColumns = []string{"time", "id", "type", "host", "person", "session", "target", "action", "rule", "summary", "integrity"}

// export downloads exactly the rows the search page shows for the same
// query: CSV of the table's columns, or JSON of the events as stored.
func (s *Server) export(w http.ResponseWriter, r *http.Request, c *idtoken.Claims) {
	format := r.URL.Query().Get("format")
	if format != "csv" && format != "json" {
		s.errorPageAs(w, r, c, http.StatusBadRequest, fmt.Sprintf("format %q: want csv or json", format))
		return
	}
	q := r.URL.Query()
	q.Del("format")
	r.URL.RawQuery = q.Encode()
	_, _, rows, err := s.searchRows(r)
	if errors.Is(err, errBadQuery) {
		s.errorPageAs(w, r, c, http.StatusBadRequest, err.Error())
		return
	}
	if err != nil {
		s.internal(w, r, c, err)
		return
	}
	name := "warden-events-" + s.now().UTC().Format("20060102T150405Z")
	w.Header().Set("Cache-Control", "no-store")
	if format == "json" {
		out := make([]json.RawMessage, 0, len(rows))
		for _, row := range rows {
			out = append(out, row.Raw)
		}
		b, err := json.MarshalIndent(out, "", "  ")
		if err != nil {
			s.internal(w, r, c, err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Disposition", `attachment; filename="`+name+`.json"`)
		_, _ = w.Write(append(b, '\n'))
		return
	}
	var b bytes.Buffer
	cw := csv.NewWriter(&b)
	_ = cw.Write(csvColumns)
	for _, row := range rows {
		v := rowView(row)
		_ = cw.Write([]string{v.Time, v.ID, v.Type, v.Host, v.Person, v.Session, v.Target, v.Action, v.Rule, csvSafe(v.Summary), strings.Join(v.Integrity, " ")})
	}
	cw.Flush()
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="`+name+`.csv"`)
	_, _ = w.Write(b.Bytes())
}

// csvSafe keeps a spreadsheet from running event content as a formula
// (CSV injection): a cell starting with = + - @ or a tab gets a leading
// apostrophe.
func csvSafe(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}

// sessionList lists sessions, per person and per host.
func (s *Server) sessionList(w http.ResponseWriter, r *http.Request, c *idtoken.Claims) {
	p := s.base(r, c, "Sessions", "sessions")
	q := r.URL.Query()
	if !q.Has("since") {
		// Grouping reads every session event of the window: bound it by
		// default (the form shows it and takes a longer one).
		q.Set("since", defaultSessionsSince)
	}
	f, fv, err := parseFilter(q, s.now(), "person", "host", "since")
	p.Filter = fv
	if err != nil {
		p.Error = err.Error()
		s.render(w, r, http.StatusBadRequest, "sessions", p)
		return
	}
	list, err := s.cfg.API.Sessions(r.Context(), f)
	if err != nil {
		s.internal(w, r, c, err)
		return
	}
	for _, ss := range list.Sessions {
		row := sessionRow{ID: ss.SessionID, Person: ss.Email, Name: ss.Name, Host: ss.HostID, EndType: ss.EndType, Targets: ss.Targets, Flagged: ss.Flagged}
		if row.Person == "" {
			row.Person = ss.Sub
		}
		if ss.Login != nil {
			row.Login = fmtTime(*ss.Login)
		}
		if ss.End != nil {
			row.End = fmtTime(*ss.End)
		}
		p.SessionList = append(p.SessionList, row)
	}
	s.render(w, r, http.StatusOK, "sessions", p)
}

// defaultSessionsSince is the sessions page's window when none is asked.
const defaultSessionsSince = "7d"

// maxTimeline bounds a session page.
const maxTimeline = 5000

// sessionPage is one session's timeline: login, connects, statements
// with their decisions, SSH commands, execs, and its end.
func (s *Server) sessionPage(w http.ResponseWriter, r *http.Request, c *idtoken.Claims) {
	id := r.PathValue("id")
	p := s.base(r, c, "Session "+id, "sessions")
	rows, err := s.cfg.Store.Query(r.Context(), store.Filter{SessionID: id, Limit: maxTimeline})
	if err != nil {
		s.internal(w, r, c, err)
		return
	}
	if len(rows) == 0 {
		s.errorPageAs(w, r, c, http.StatusNotFound, fmt.Sprintf("No events of session %q.", id))
		return
	}
	sr := &sessionRow{ID: id}
	for _, row := range rows {
		v := rowView(row)
		if sr.Person == "" {
			sr.Person, sr.Host = v.Person, v.Host
		}
		switch event.Type(row.Type) {
		case event.SessionLogin:
			sr.Login = v.Time
		case event.SessionLogout, event.SessionExpired, event.SessionKilled:
			sr.End, sr.EndType = v.Time, row.Type
		}
		p.Events = append(p.Events, v)
	}
	if len(rows) == maxTimeline {
		p.Error = fmt.Sprintf("Only the first %d events of this session are shown.", maxTimeline)
	}
	p.Session = sr
	s.render(w, r, http.StatusOK, "session", p)
}

// lineage shows an event's process tree up to the person.
func (s *Server) lineage(w http.ResponseWriter, r *http.Request, c *idtoken.Claims) {
	id := r.PathValue("id")
	l, err := s.cfg.API.Lineage(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		s.errorPageAs(w, r, c, http.StatusNotFound, fmt.Sprintf("No event or exec id %q.", id))
		return
	}
	if err != nil {
		s.internal(w, r, c, err)
		return
	}
	p := s.base(r, c, "Lineage", "")
	root := &treeNode{TestID: "lineage-person", Kind: "person", Label: "unattributed (no verified person)"}
	if l.Identity != nil {
		root.Label = person(l.Identity)
		root.Detail = strings.TrimSpace(fmt.Sprintf("%s · sub %s · groups %s · issuer %s", l.Identity.Name, l.Identity.Sub, strings.Join(l.Identity.Groups, ", "), l.Identity.Issuer))
	}
	at := root
	if l.Login != nil {
		n := &treeNode{Kind: "login", Label: "login " + fmtTime(l.Login.Time), Detail: "session " + l.Login.SessionID + " on " + l.Login.HostID,
			Link: "/sessions/" + url.PathEscape(l.Login.SessionID)}
		at.Children = append(at.Children, n)
		at = n
	}
	for _, st := range l.Chain {
		label := st.Binary
		if label == "" {
			label = "(process not seen)"
		}
		n := &treeNode{Kind: "process", Label: label, Detail: fmt.Sprintf("pid %d · uid %d · exec %s", st.PID, st.UID, st.ExecID)}
		if len(st.Args) > 0 {
			n.Detail = strings.Join(st.Args, " ") + " · " + n.Detail
		}
		if st.ExecTime != nil {
			n.Detail += " · " + fmtTime(*st.ExecTime)
		}
		at.Children = append(at.Children, n)
		at = n
	}
	var row store.Row
	if len(l.Event) > 0 {
		row.Raw = l.Event
		if e, err := row.Event(); err == nil {
			row.ID, row.Time, row.Type, row.HostID = e.ID, e.Time, string(e.Type), e.Host.ID
			if e.Target != nil {
				row.Target = e.Target.Name
			}
		}
		row.Integrity = l.Integrity
		v := rowView(row)
		n := &treeNode{Kind: "event", Label: v.Type + " " + v.Summary, Detail: strings.TrimSpace(v.Time + " · " + v.Host + " " + v.Target + " " + v.Action + " " + v.Rule), Warn: v.Integrity}
		at.Children = append(at.Children, n)
	}
	p.Tree = root
	s.render(w, r, http.StatusOK, "lineage", p)
}

// sshSessionOf finds the SSH session (the recording's name) an event
// belongs to: its data.ssh_session.
func (s *Server) sshSessionOf(ctx context.Context, id string) (string, error) {
	row, err := s.cfg.Store.Get(ctx, id)
	if err != nil {
		return "", err
	}
	e, err := row.Event()
	if err != nil {
		return "", err
	}
	sid, _ := e.Data["ssh_session"].(string)
	if sid == "" {
		return "", fmt.Errorf("event %s (%s) belongs to no SSH session: %w", id, e.Type, store.ErrNotFound)
	}
	return sid, nil
}

// replay shows an SSH session's recording in asciinema-player, and
// whether it matches the hash of its ssh.session end event. A recording
// that does not match is not played, as the API does not serve it.
func (s *Server) replay(w http.ResponseWriter, r *http.Request, c *idtoken.Claims) {
	id := r.PathValue("id")
	sid, err := s.sshSessionOf(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		s.errorPageAs(w, r, c, http.StatusNotFound, fmt.Sprintf("No SSH session for event %q.", id))
		return
	}
	if err != nil {
		s.internal(w, r, c, err)
		return
	}
	p := s.base(r, c, "Replay "+sid, "")
	rv := &replayView{EventID: id, SSHSession: sid, Cast: "/replay/" + url.PathEscape(id) + "/cast"}
	rec, err := s.cfg.API.Recording(r.Context(), sid, true)
	switch {
	case errors.Is(err, api.ErrRecordingMismatch):
		rv.Status, rv.Detail = "hash MISMATCH", err.Error()
	case errors.Is(err, recording.ErrNotFound), errors.Is(err, api.ErrNoRecordings):
		s.errorPageAs(w, r, c, http.StatusNotFound, err.Error())
		return
	case err != nil:
		s.internal(w, r, c, err)
		return
	case rec.EndEventID == "":
		rv.Status, rv.Play = "not verified", true
		rv.Detail = "no ssh.session end event yet (the session is still running, or its agent stopped): this is what was stored so far"
	default:
		rv.Status, rv.Play = "hash matches", true
		rv.Detail = "sha256 " + rec.SHA256 + " as recorded by event " + rec.EndEventID
	}
	p.Replay = rv
	s.render(w, r, http.StatusOK, "replay", p)
}

// cast serves the recording for the player, checked as on the page.
func (s *Server) cast(w http.ResponseWriter, r *http.Request, _ *idtoken.Claims) {
	sid, err := s.sshSessionOf(r.Context(), r.PathValue("id"))
	if err != nil {
		http.Error(w, "no such SSH session", http.StatusNotFound)
		return
	}
	rec, err := s.cfg.API.Recording(r.Context(), sid, true)
	switch {
	case errors.Is(err, api.ErrRecordingMismatch):
		http.Error(w, err.Error(), http.StatusConflict)
		return
	case err != nil:
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "application/x-asciicast")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(rec.Data)
}

// reviews is the queue of pending reviews the person may see, and the
// decided ones as history. Approve and Deny are enabled only for the
// rule's approvers; the server checks again on POST.
func (s *Server) reviews(w http.ResponseWriter, r *http.Request, c *idtoken.Claims) {
	p := s.base(r, c, "Reviews", "reviews")
	ctx := r.Context()
	pending, err := s.cfg.API.ListReviews(ctx, c, reviews.Query{States: []review.State{review.Pending}, Limit: reviewsPage})
	if err == nil {
		var done []review.Review
		done, err = s.cfg.API.ListReviews(ctx, c, reviews.Query{States: []review.State{review.Approved, review.Denied, review.Expired}, Limit: reviewsPage})
		for i := range done {
			p.History = append(p.History, s.reviewView(c, &done[i]))
		}
	}
	if errors.Is(err, api.ErrNoReviews) {
		s.errorPageAs(w, r, c, http.StatusServiceUnavailable, err.Error())
		return
	}
	if err != nil {
		s.internal(w, r, c, err)
		return
	}
	for i := range pending {
		p.Pending = append(p.Pending, s.reviewView(c, &pending[i]))
	}
	if msg := r.URL.Query().Get("done"); msg != "" {
		p.Notice = clip(msg, 200) // the outcome of the decision just made, as text
	}
	s.render(w, r, http.StatusOK, "reviews", p)
}

func (s *Server) reviewView(c *idtoken.Claims, rv *review.Review) reviewRow {
	v := reviewRow{ID: rv.ID, Kind: string(rv.Kind), State: string(rv.State), Requester: rv.Requester.Name(), Rule: rv.Rule,
		Host: rv.Host, Target: rv.Target, Approvers: strings.Join(rv.Approvers, ", ") + " (" + string(rv.Require) + ")",
		Created: fmtTime(rv.CreatedAt), MayDecide: api.MayDecide(c, rv)}
	switch {
	case rv.Statement != "":
		v.Asked = rv.Statement
	case rv.Kind == review.KindAccess:
		v.Asked = "access to " + rv.Target
		if rv.Reason != "" {
			v.Asked += ": " + rv.Reason
		}
	}
	if rv.State == review.Pending {
		if left := rv.ExpiresAt.Sub(s.now()); left > 0 {
			v.TimeLeft = left.Truncate(time.Second).String()
		} else {
			v.TimeLeft = "expired"
		}
	}
	for _, d := range rv.Decisions {
		verb := "denied"
		if d.Approve {
			verb = "approved"
		}
		t := fmt.Sprintf("%s %s by %s", fmtTime(d.At), verb, d.By.Name())
		if d.Reason != "" {
			t += ": " + d.Reason
		}
		v.Decisions = append(v.Decisions, t)
	}
	return v
}

// decide approves or denies a review: CSRF-checked by signed, and
// authorized by the API's review code (403 outside the approvers).
func (s *Server) decide(w http.ResponseWriter, r *http.Request, c *idtoken.Claims, approve bool) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBody)
	reason := strings.TrimSpace(r.PostFormValue("reason"))
	id := r.PathValue("id")
	rv, err := s.cfg.API.DecideReview(r.Context(), c, id, approve, reason)
	if err != nil {
		st := api.ReviewStatus(err)
		if st == http.StatusInternalServerError {
			s.internal(w, r, c, err)
			return
		}
		s.errorPageAs(w, r, c, st, err.Error())
		return
	}
	msg := fmt.Sprintf("%s is now %s.", rv.ID, rv.State)
	if rv.State == review.Pending {
		msg = fmt.Sprintf("Your decision on %s is recorded; it waits for the other approver groups.", rv.ID)
	}
	http.Redirect(w, r, "/reviews?done="+url.QueryEscape(msg), http.StatusSeeOther)
}

// staleAfter is when a checkpoint's age is flagged: agents sign one
// every checkpoint_interval (a minute by default).
const staleAfter = 5 * time.Minute

// maxViolations bounds the violations the integrity page lists.
const maxViolations = 200

// integrity shows, per agent, its chain head, its last checkpoint and its
// age, and every integrity.violation, newest first.
func (s *Server) integrity(w http.ResponseWriter, r *http.Request, c *idtoken.Claims) {
	ctx := r.Context()
	p := s.base(r, c, "Integrity", "integrity")
	heads, err := s.cfg.Store.ChainHeads(ctx)
	if err != nil {
		s.internal(w, r, c, err)
		return
	}
	viol, err := s.cfg.Store.Query(ctx, store.Filter{Types: []string{string(event.IntegrityViolation)}, Desc: true, Limit: maxViolations})
	if err != nil {
		s.internal(w, r, c, err)
		return
	}
	byHost := map[string]int{}
	for _, row := range viol {
		v := rowView(row)
		if e, err := row.Event(); err == nil {
			if h, _ := e.Data["host_id"].(string); h != "" {
				v.Host = h
			}
		}
		byHost[v.Host]++
		p.Violations = append(p.Violations, v)
	}
	now := s.now()
	for _, h := range heads {
		a := agentRow{Host: h.HostID, Seq: h.Seq, Violations: byHost[h.HostID]}
		cps, err := s.cfg.Store.Checkpoints(ctx, h.HostID, 1)
		if err != nil {
			s.internal(w, r, c, err)
			return
		}
		if len(cps) > 0 {
			cp := cps[0]
			a.Checkpoint, a.Size, a.Age = fmtTime(cp.Time), cp.Size, ago(now, cp.Time)
			a.Stale = now.Sub(cp.Time) > staleAfter
			a.Problems = cp.Integrity
		} else {
			a.Age, a.Stale = "no checkpoint yet", true
		}
		p.Agents = append(p.Agents, a)
	}
	slices.SortFunc(p.Agents, func(a, b agentRow) int { return strings.Compare(a.Host, b.Host) })
	s.render(w, r, http.StatusOK, "integrity", p)
}
