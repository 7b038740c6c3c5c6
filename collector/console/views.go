package console

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/wardenhq/warden/collector/store"
	"github.com/wardenhq/warden/pkg/event"
)

// timeFormat shows times in UTC, to the second, as auditors compare them
// across hosts.
const timeFormat = "2006-01-02 15:04:05Z"

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(timeFormat)
}

// eventRow is one event as the tables show it. Every field is plain text:
// the templates escape it.
type eventRow struct {
	RowID     int64
	ID        string
	Time      string
	Type      string
	Host      string
	Person    string
	Session   string
	Target    string
	Action    string
	Rule      string
	Reason    string
	Summary   string
	Integrity []string
	// Replay is set on ssh.session events whose session has a recording.
	Replay bool
}

// maxSummary bounds the text a row shows of an event's payload.
const maxSummary = 400

// rowView turns a stored event into a row.
func rowView(row store.Row) eventRow {
	v := eventRow{RowID: row.RowID, ID: row.ID, Time: fmtTime(row.Time), Type: row.Type, Host: row.HostID,
		Session: row.SessionID, Target: row.Target, Integrity: row.Integrity}
	e, err := row.Event()
	if err != nil {
		v.Summary = "(the stored event does not decode: " + err.Error() + ")"
		return v
	}
	v.Person = person(e.Identity)
	if e.Decision != nil {
		v.Action, v.Rule, v.Reason = string(e.Decision.Action), e.Decision.Rule, e.Decision.Reason
	}
	v.Summary = clip(summary(e), maxSummary)
	if e.Type == event.SSHSession {
		if id, _ := e.Data["ssh_session"].(string); id != "" {
			_, rec := e.Data["recording"].(map[string]any)
			v.Replay = rec || e.Data["phase"] == "start"
		}
	}
	return v
}

// person names an identity by email, else subject.
func person(id *event.Identity) string {
	switch {
	case id == nil:
		return ""
	case id.Email != "":
		return id.Email
	}
	return id.Sub
}

// summary is the one line that says what an event is about.
func summary(e *event.Event) string {
	str := func(k string) string { s, _ := e.Data[k].(string); return s }
	switch e.Type {
	case event.DBQuery:
		if s := str("statement"); s != "" {
			return s
		}
		return "(statement not parsed: its text is not recorded)"
	case event.SSHExec:
		return str("command")
	case event.ProcessExec, event.ProcessExit:
		if e.Process != nil {
			if len(e.Process.Args) > 0 {
				return strings.Join(e.Process.Args, " ")
			}
			return e.Process.Binary
		}
	case event.SSHSession:
		return strings.TrimSpace(fmt.Sprintf("%s %s %s", str("phase"), str("ssh_session"), str("remote_user")))
	case event.NetConnect:
		return strings.TrimSpace(str("original_dst") + " " + str("verdict"))
	case event.IntegrityViolation:
		return str("problem") + ": " + str("detail")
	case event.ReviewRequested, event.ReviewDecided:
		s := str("review_id") + " " + str("kind")
		if st := str("statement"); st != "" {
			s += ": " + st
		}
		return s
	}
	if len(e.Data) == 0 {
		return ""
	}
	b, _ := json.Marshal(e.Data)
	return string(b)
}

// clip cuts s to n bytes on a rune boundary.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8Start(s[n]) {
		n--
	}
	return s[:n] + "…"
}

func utf8Start(b byte) bool { return b&0xC0 != 0x80 }

// treeNode is one node of the lineage tree: the person at the root, then
// the login, the process chain oldest first and the event itself.
type treeNode struct {
	TestID   string
	Kind     string
	Label    string
	Detail   string
	Link     string
	Warn     []string
	Children []*treeNode
}

// filterView echoes the filters into the forms.
type filterView struct {
	Type, Person, Host, Target, Since, Until string
}

// sessionRow is a session in the lists and at the top of its page.
type sessionRow struct {
	ID      string
	Person  string
	Name    string
	Host    string
	Login   string
	End     string
	EndType string
	Targets []string
	Flagged []string
}

// replayView is the replay page's player and hash verdict.
type replayView struct {
	EventID    string
	SSHSession string
	Cast       string
	// Status is "hash matches", "hash MISMATCH" or "not verified".
	Status string
	Detail string
	Play   bool
}

// reviewRow is a review in the queue or the history.
type reviewRow struct {
	ID        string
	Kind      string
	State     string
	Asked     string
	Requester string
	Rule      string
	Host      string
	Target    string
	Approvers string
	Created   string
	TimeLeft  string
	Decisions []string
	MayDecide bool
}

// agentRow is an agent on the integrity page.
type agentRow struct {
	Host       string
	Seq        uint64
	Checkpoint string
	Size       uint64
	Age        string
	Stale      bool
	Problems   []string
	Violations int
}

// ago says how long ago t was, coarsely.
func ago(now, t time.Time) string {
	d := now.Sub(t)
	switch {
	case d < 0:
		return "in the future"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm ago", int(d/time.Hour), int(d%time.Hour/time.Minute))
	}
	return fmt.Sprintf("%dd ago", int(d/(24*time.Hour)))
}
