package e2e

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/wardenhq/warden/pkg/collectorclient"
	"github.com/wardenhq/warden/pkg/devidp"
	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/tests/harness"
)

// TestRDP runs the real FreeRDP client (xfreerdp, on a virtual display)
// through the kernel redirect to a real xrdp server, as two targets: desk
// (the default require_nla: true) and desk-open (require_nla: false,
// max_duration: 4s), which is the same server behind a second port. xrdp
// does not implement CredSSP, so every session it accepts is TLS without
// NLA: desk refuses them all, desk-open lets them through for 4 seconds.
func TestRDP(t *testing.T) {
	e := harness.NewEnv(t)
	srv := e.StartXRDP()
	openPort := e.Forward(srv.Addr())
	x := e.StartXvfb()
	e.StartAgent(fmt.Sprintf(`targets:
  - name: desk
    protocol: rdp
    address: %s
  - name: desk-open
    protocol: rdp
    address: 127.0.0.1:%d
    rdp: { require_nla: false, max_duration: 4s }
access:
  - groups: [engineering]
    targets: [desk, desk-open]
  - groups: [contractors]
    targets: [desk-open]
    review: { approvers: [engineering], grant: 1m }
`, srv.Addr(), openPort))
	alice := e.Token(devidp.IssueOptions{Sub: "alice"})
	carol := e.Token(devidp.IssueOptions{Sub: "carol", Email: "carol@contractor.example", Groups: []string{"contractors"}})
	// xfreerdp under timeout: 124 means the session was still open when
	// the test gave up on it.
	rdpAs := func(t *testing.T, token string, port int, flags string) string {
		t.Helper()
		out, _ := e.Run(harness.Shell{UID: nobody, GID: nobody, Script: fmt.Sprintf(`warden login --token-file %s >/dev/null || exit 9
export DISPLAY=%s
start=$(date +%%s)
timeout 60 xfreerdp /v:127.0.0.1:%d /u:carol /cert:ignore %s </dev/null
echo "rc=$? took=$(( $(date +%%s) - start ))"`, token, x.Display, port, flags)})
		return out
	}
	rdp := func(t *testing.T, port int, flags string) string { return rdpAs(t, alice, port, flags) }
	q := collectorclient.Query{Type: string(event.RDPSession), Limit: 1000}

	t.Run("max_duration disconnects", func(t *testing.T) {
		out := rdp(t, openPort, "/sec:tls")
		m := regexp.MustCompile(`rc=(\d+) took=(\d+)`).FindStringSubmatch(out)
		if m == nil || m[1] == "124" || m[1] == "9" {
			t.Fatalf("the session was not ended by max_duration:\n%s", out)
		}
		if took, _ := strconv.Atoi(m[2]); took > 40 {
			t.Fatalf("the session ended after %ss, long past max_duration:\n%s", m[2], out)
		}
		start := e.WaitEvent(q, "desk-open start", func(ev *event.Event) bool {
			return ev.Target != nil && ev.Target.Name == "desk-open" && ev.Data["phase"] == "start"
		})
		if start.Data["client_asserted_cookie"] != "carol" || start.Data["selected_protocol"] != "ssl" || start.Data["recorded"] != false ||
			start.Decision == nil || start.Decision.Action != event.Allow || start.Identity == nil || start.Identity.Sub != "alice" {
			t.Fatalf("start event: %+v %+v", start.Decision, start.Data)
		}
		end := e.WaitEvent(q, "desk-open end", func(ev *event.Event) bool {
			return ev.Target != nil && ev.Target.Name == "desk-open" && ev.Data["phase"] == "end"
		})
		if end.Data["end_reason"] != "max_duration" || rdpNumber(end.Data["duration_ms"]) < 4000 {
			t.Fatalf("end event: %+v", end.Data)
		}
		for _, k := range []string{"bytes_from_client", "bytes_from_server"} {
			if rdpNumber(end.Data[k]) < 1000 {
				t.Fatalf("%s = %v: the TLS session did not cross", k, end.Data[k])
			}
		}
		conformsToSchema(t, []event.Event{*start, *end})
		if !strings.Contains(srv.Log(), "TLS connection established") {
			t.Fatalf("xrdp saw no TLS session:\n%s", srv.Log())
		}
	})

	t.Run("require_nla refuses a TLS-only client", func(t *testing.T) {
		out := rdp(t, srv.Port, "/sec:tls")
		if !strings.Contains(out, "HYBRID_REQUIRED_BY_SERVER") {
			t.Fatalf("FreeRDP did not get the negotiation failure:\n%s", out)
		}
		e.WaitEvent(q, "desk refused (client)", func(ev *event.Event) bool {
			return ev.Target != nil && ev.Target.Name == "desk" && ev.Decision != nil && ev.Decision.Action == event.Deny &&
				ev.Decision.Rule == "require_nla" && strings.Contains(ev.Decision.Reason, "the client offered only ssl") &&
				ev.Data["client_asserted_cookie"] == "carol"
		})
	})

	t.Run("require_nla refuses a server that does not select NLA", func(t *testing.T) {
		// FreeRDP offers NLA, TLS and RDP; xrdp picks TLS.
		out := rdp(t, srv.Port, "/p:not-used")
		if !strings.Contains(out, "HYBRID_REQUIRED_BY_SERVER") {
			t.Fatalf("FreeRDP did not get the negotiation failure:\n%s", out)
		}
		ev := e.WaitEvent(q, "desk refused (server)", func(ev *event.Event) bool {
			return ev.Target != nil && ev.Target.Name == "desk" && ev.Decision != nil && ev.Decision.Rule == "require_nla" &&
				strings.Contains(ev.Decision.Reason, "the server selected ssl")
		})
		req, _ := ev.Data["requested_protocols"].([]any)
		if len(req) < 2 || fmt.Sprint(req) != "[ssl hybrid]" && !strings.Contains(fmt.Sprint(req), "hybrid") {
			t.Fatalf("requested protocols: %v", ev.Data)
		}
	})

	t.Run("just-in-time access", func(t *testing.T) {
		// carol (contractors) reaches desk-open only inside an approved
		// window: her connect() is refused in the kernel before it.
		if out := rdpAs(t, carol, openPort, "/sec:tls"); !strings.Contains(out, "rc=") || strings.Contains(out, "rc=124") {
			t.Fatalf("carol before any review:\n%s", out)
		}
		e.WaitEvent(collectorclient.Query{Type: string(event.NetConnect), User: "carol"}, "carol's connect refused", func(ev *event.Event) bool {
			return ev.Decision != nil && ev.Decision.Action == event.Deny
		})
		if evs := e.Events(collectorclient.Query{Type: string(event.RDPSession), User: "carol"}); len(evs) != 0 {
			t.Fatalf("carol had an RDP session before any review: %+v", evs[0].Data)
		}
		out, _ := e.Run(harness.Shell{UID: nobody, GID: nobody, Script: fmt.Sprintf(
			"warden login --token-file %s >/dev/null && warden access request desk-open --reason 'rdp incident' --for 1m", carol)})
		id := regexp.MustCompile(`R-[0-9A-Z]{26}`).FindString(out)
		if id == "" {
			t.Fatalf("warden access request:\n%s", out)
		}
		if out, err := e.WardenEnv([]string{"WARDEN_TOKEN_FILE=" + alice}, "review", "approve", id, "--reason", "go ahead"); err != nil {
			t.Fatalf("warden review approve: %v\n%s", err, out)
		}
		e.Eventually("carol's RDP session inside the window", func() error {
			rdpAs(t, carol, openPort, "/sec:tls")
			for _, ev := range e.Events(collectorclient.Query{Type: string(event.RDPSession), User: "carol"}) {
				if ev.Data["phase"] == "end" && ev.Data["end_reason"] == "max_duration" {
					return nil
				}
			}
			return fmt.Errorf("no RDP session of carol's ended by max_duration yet")
		})
	})
}

// rdpNumber reads a JSON number from event data, however it was decoded.
func rdpNumber(v any) float64 {
	f, err := strconv.ParseFloat(fmt.Sprint(v), 64)
	if err != nil {
		return -1
	}
	return f
}
