package collectorclient

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/wardenhq/warden/pkg/event"
)

// Text renderings used by the warden CLI. They live here, next to the wire
// types, so that they are tested without building the CLI.

// EventHeader is the header line of the event table.
const EventHeader = "TIME                      TYPE                 USER                 HOST             TARGET           DETAIL"

// FormatEvent renders one event as a table row. problems, when not empty,
// marks the row as failed verification.
func FormatEvent(raw json.RawMessage, problems []string) string {
	var e event.Event
	if err := json.Unmarshal(raw, &e); err != nil {
		return fmt.Sprintf("%-25s %s", "?", "undecodable event: "+err.Error())
	}
	user := "-"
	if e.Identity != nil {
		user = e.Identity.Sub
		if e.Identity.Email != "" {
			user = e.Identity.Email
		}
	}
	target := "-"
	if e.Target != nil && e.Target.Name != "" {
		target = e.Target.Name
	}
	detail := eventDetail(&e)
	if len(problems) > 0 {
		detail = "!! INTEGRITY " + strings.Join(problems, ",") + " !! " + detail
	}
	return fmt.Sprintf("%-25s %-20s %-20s %-16s %-16s %s",
		e.Time.UTC().Format("2006-01-02T15:04:05.000Z"), clip(string(e.Type), 20), clip(user, 20),
		clip(e.Host.ID, 16), clip(target, 16), detail)
}

// eventDetail picks the most telling part of an event for a one-line view.
func eventDetail(e *event.Event) string {
	var parts []string
	if e.Decision != nil {
		d := string(e.Decision.Action)
		if e.Decision.Rule != "" {
			d += " (" + e.Decision.Rule + ")"
		}
		parts = append(parts, d)
	}
	// Type-specific payload keys, in order of interest (docs/events.md).
	for _, k := range []string{"problem", "statement", "query", "command", "rows", "masked_columns", "error", "method", "path", "detail", "reason", "count"} {
		if v, ok := e.Data[k]; ok {
			parts = append(parts, fmt.Sprintf("%s=%v", k, v))
		}
	}
	if len(parts) == 0 && e.Process != nil {
		parts = append(parts, strings.TrimSpace(e.Process.Binary+" "+strings.Join(e.Process.Args, " ")))
	}
	return clip(strings.Join(parts, " "), 160)
}

func clip(s string, n int) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}

// WriteLineage renders a lineage as an indented tree: the identity first,
// then the processes from the oldest ancestor down to the process itself.
func WriteLineage(w io.Writer, l *Lineage) error {
	var b strings.Builder
	if l.Identity == nil {
		b.WriteString("identity: none (unattributed)\n")
	} else {
		id := l.Identity
		who := id.Sub
		if id.Email != "" {
			who += " <" + id.Email + ">"
		}
		if id.Name != "" {
			who += " (" + id.Name + ")"
		}
		fmt.Fprintf(&b, "identity: %s\n", who)
		if len(id.Groups) > 0 {
			fmt.Fprintf(&b, "  groups:  %s\n", strings.Join(id.Groups, ", "))
		}
		if id.Issuer != "" {
			fmt.Fprintf(&b, "  issuer:  %s\n", id.Issuer)
		}
		sess := id.SessionID
		if sess == "" {
			sess = "-"
		}
		if l.Login != nil {
			fmt.Fprintf(&b, "  session: %s, login %s (event %s)\n", sess, l.Login.Time.UTC().Format(time.RFC3339), l.Login.EventID)
		} else {
			fmt.Fprintf(&b, "  session: %s, login not recorded\n", sess)
		}
	}
	if l.Host.ID != "" {
		fmt.Fprintf(&b, "host: %s\n", l.Host.ID)
	}
	for i, s := range l.Chain {
		indent := strings.Repeat("   ", i)
		cmd := strings.TrimSpace(s.Binary + " " + strings.Join(quoteArgs(s.Args), " "))
		line := fmt.Sprintf("%s└─ pid %d uid %d %s", indent, s.PID, s.UID, cmd)
		if s.ExecTime != nil {
			line += "  [exec " + s.ExecTime.UTC().Format(time.RFC3339) + "]"
		}
		if s.ExecID != "" {
			line += "  exec_id=" + s.ExecID
		}
		b.WriteString(line + "\n")
	}
	if len(l.Chain) == 0 {
		b.WriteString("(no process information)\n")
	}
	if len(l.Event) > 0 {
		var e event.Event
		if json.Unmarshal(l.Event, &e) == nil {
			fmt.Fprintf(&b, "%sevent: %s %s at %s", strings.Repeat("   ", len(l.Chain)), e.Type, e.ID, e.Time.UTC().Format(time.RFC3339Nano))
			if d := eventDetail(&e); d != "" {
				b.WriteString("  " + d)
			}
			b.WriteString("\n")
		}
	}
	if len(l.Integrity) > 0 {
		fmt.Fprintf(&b, "WARNING: this event failed verification: %s\n", strings.Join(l.Integrity, ", "))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// quoteArgs quotes arguments that would otherwise read ambiguously.
func quoteArgs(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " \t\n\"'") {
			a = fmt.Sprintf("%q", a)
		}
		out[i] = a
	}
	return out
}

// WriteSessions renders sessions as a table, in the given order.
func WriteSessions(w io.Writer, sessions []Session) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%-20s %-24s %-16s %-28s %-30s %s\n", "LOGIN", "USER", "HOST", "SESSION", "END", "TARGETS")
	for _, s := range sessions {
		login := "?"
		if s.Login != nil {
			login = s.Login.UTC().Format("2006-01-02T15:04:05Z")
		}
		user := s.Sub
		if s.Email != "" {
			user = s.Email
		}
		end := "active"
		if s.End != nil {
			end = strings.TrimPrefix(s.EndType, "session.") + " " + s.End.UTC().Format("2006-01-02T15:04:05Z")
		}
		targets := append([]string(nil), s.Targets...)
		sort.Strings(targets)
		t := strings.Join(targets, ",")
		if t == "" {
			t = "-"
		}
		if len(s.Flagged) > 0 {
			t += "  !! INTEGRITY: " + strings.Join(s.Flagged, ",")
		}
		fmt.Fprintf(&b, "%-20s %-24s %-16s %-28s %-30s %s\n", login, clip(user, 24), clip(s.HostID, 16), clip(s.SessionID, 28), end, t)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
