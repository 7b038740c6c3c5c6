package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/wardenhq/warden/pkg/collectorclient"
	"github.com/wardenhq/warden/pkg/devidp"
	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/pkg/natsauth"
	"github.com/wardenhq/warden/tests/harness"
)

// cli runs the warden CLI inside the test's namespace against the
// collector.
func (e *identityEnv) cli(t *testing.T, args ...string) string {
	t.Helper()
	cmd := e.WardenCmd(args...) // a reader's token
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("warden %s: %v\n%s%s", strings.Join(args, " "), err, out.String(), stderr.String())
	}
	return out.String()
}

func decodeLines(t *testing.T, out string) []event.Event {
	t.Helper()
	var evs []event.Event
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		var ev event.Event
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("not an event: %q: %v", line, err)
		}
		evs = append(evs, ev)
	}
	return evs
}

// A bound session's login and connection reach the collector, and the CLI
// shows them with identity, process and lineage.
func TestEventsAndLineageThroughCLI(t *testing.T) {
	e := newIdentityEnv(t)
	alice := e.Token(devidp.IssueOptions{Sub: "alice"})
	out := e.MustRun(harness.Shell{UID: nobody, GID: nobody, Script: e.login(alice) + talk("127.0.0.1", e.target.Port())})
	pid := regexpInt(t, out, "reply=echo:pid=")

	var login, connect *event.Event
	e.Eventually("alice's events via 'warden events'", func() error {
		login, connect = nil, nil
		for _, ev := range decodeLines(t, e.cli(t, "events", "--user", "alice", "--json")) {
			switch {
			case ev.Type == event.SessionLogin:
				login = &ev
			case ev.Type == event.NetConnect && ev.Process != nil && int(ev.Process.PID) == pid:
				connect = &ev
			}
		}
		if login == nil || connect == nil {
			return fmt.Errorf("login %v, connect %v", login != nil, connect != nil)
		}
		return nil
	})
	for _, ev := range []*event.Event{login, connect} {
		if ev.Identity == nil || ev.Identity.Sub != "alice" || ev.Process == nil || ev.Process.ExecID == "" || ev.Schema != event.Schema || ev.Sig != "" || ev.Hash == "" {
			t.Fatalf("%s lacks identity, process or hash: %+v", ev.Type, ev)
		}
	}
	// Each is covered by a checkpoint the agent signed: warden verify
	// proves it with the host's pinned key.
	for _, ev := range []*event.Event{login, connect} {
		e.Eventually("warden verify "+string(ev.Type), func() error {
			out, err := e.Warden("verify", "--key", agentPubKey(e.Env), ev.ID)
			if err != nil || !strings.Contains(out, "OK ") {
				return fmt.Errorf("warden verify %s: %v\n%s", ev.ID, err, out)
			}
			return nil
		})
	}
	lineage := e.cli(t, "lineage", connect.ID)
	for _, want := range []string{"alice", fmt.Sprintf("pid %d", pid), "bash", connect.Process.ExecID} {
		if !strings.Contains(lineage, want) {
			t.Fatalf("lineage lacks %q:\n%s", want, lineage)
		}
	}
	// By exec id, too.
	if byExec := e.cli(t, "lineage", connect.Process.ExecID); !strings.Contains(byExec, "alice") {
		t.Fatalf("lineage by exec id:\n%s", byExec)
	}

	// A forged copy published straight into NATS with the agent's own
	// creds (root on the bastion can read them) is flagged, and the CLI
	// shows the integrity event.
	raw, err := e.Collector.Event(context.Background(), connect.ID)
	if err != nil {
		t.Fatal(err)
	}
	tampered := bytes.Replace(raw, []byte(`"sub":"alice"`), []byte(`"sub":"mallory"`), 1)
	nc, err := nats.Connect("nats://"+harness.NATSAddr, nats.SetCustomDialer(nsDialer{e.Env}),
		nats.UserCredentials(e.AgentCreds), nats.CustomInboxPrefix(natsauth.InboxPrefix(natsauth.RoleAgent, harness.HostID)))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	msg := nats.NewMsg(event.SubjectPrefix + event.HostToken(harness.HostID) + ".net.connect")
	msg.Data = tampered
	msg.Header.Set(nats.MsgIdHdr, "tamper-"+connect.ID)
	js, err := nc.JetStream()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.PublishMsg(msg); err != nil {
		t.Fatal(err)
	}
	e.Eventually("integrity event in 'warden events'", func() error {
		out := e.cli(t, "events", "--type", string(event.IntegrityViolation))
		if !strings.Contains(out, "integrity.violation") {
			return fmt.Errorf("not yet:\n%s", out)
		}
		return nil
	})
}

// agentPubKey is the path of the test agent's public key file.
func agentPubKey(e *harness.Env) string { return filepath.Join(e.Dir, "keys", "agent.pub") }

// coveredByCheckpoint fetches an event's proof bundle and verifies it
// with the agent's key: the v2 meaning of "signed".
func coveredByCheckpoint(e *harness.Env, id string) error {
	b, err := e.Collector.Proof(context.Background(), id)
	if err != nil {
		return err
	}
	pub, err := os.ReadFile(agentPubKey(e))
	if err != nil {
		return err
	}
	vkey, err := event.ParseVerifierKey(string(pub), harness.HostID)
	if err != nil {
		return err
	}
	_, err = b.Verify(vkey)
	return err
}

type nsDialer struct{ e *harness.Env }

func (d nsDialer) Dial(network, addr string) (net.Conn, error) {
	return d.e.NS.DialContext(context.Background(), network, addr)
}

// With NATS down the agent spools; killed and restarted it resumes from
// the spool; when NATS returns the collector holds every event exactly
// once and the chain verifies across the crash.
func TestOutageLosesAndDuplicatesNothing(t *testing.T) {
	e := newIdentityEnv(t)
	alice := e.Token(devidp.IssueOptions{Sub: "alice"})
	e.StopCollector()

	const n = 25
	script := e.login(alice) + fmt.Sprintf(`for i in $(seq %d); do ( %s ) || exit 1; done`, n, talk("127.0.0.1", e.target.Port()))
	out := e.MustRun(harness.Shell{UID: nobody, GID: nobody, Script: script})
	if got := strings.Count(out, "reply=echo:"); got != n {
		t.Fatalf("%d of %d connections went through:\n%s", got, n, out)
	}

	e.Agent().Kill() // SIGKILL: no clean shutdown, no flush
	e.RestartAgent()
	e.StartCollector()

	q := collectorclient.Query{Type: string(event.NetConnect), User: "alice", Limit: 1000}
	// The restarted agent's agent.start is published after everything
	// spooled before the crash, in chain order: once it is stored, all
	// earlier events must be.
	e.Eventually("restarted agent's events stored", func() error {
		if n := len(e.Events(collectorclient.Query{Type: string(event.AgentStart), Limit: 10})); n < 2 {
			return fmt.Errorf("%d agent.start events", n)
		}
		return nil
	})
	evs := e.Events(q)
	ids := map[string]bool{}
	for _, ev := range evs {
		ids[ev.ID] = true
	}
	if len(evs) != n || len(ids) != n {
		t.Fatalf("collector holds %d net.connect events (%d distinct), want exactly %d", len(evs), len(ids), n)
	}
	if bad := e.Events(collectorclient.Query{Type: string(event.IntegrityViolation), Limit: 100}); len(bad) != 0 {
		t.Fatalf("integrity violations after the outage: %+v", bad)
	}
	// The Merkle tree stayed consistent across the crash: events from
	// before and after it prove against the newest checkpoint.
	for _, ev := range []event.Event{evs[0], evs[len(evs)-1]} {
		e.Eventually("event seq "+fmt.Sprint(ev.Seq)+" covered", func() error { return coveredByCheckpoint(e.Env, ev.ID) })
	}
}
