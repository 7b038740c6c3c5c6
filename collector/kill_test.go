package collector_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/wardenhq/warden/collector"
	"github.com/wardenhq/warden/collector/ingest"
	cc "github.com/wardenhq/warden/pkg/collectorclient"
	"github.com/wardenhq/warden/pkg/devidp"
	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/pkg/idtoken"
	"github.com/wardenhq/warden/tests/harness"
)

// startIdP serves a dev OIDC issuer on loopback for one test.
func startIdP(t *testing.T) *devidp.IdP {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	idp, err := devidp.New(devidp.Options{Issuer: "http://" + ln.Addr().String(), ClientID: "warden"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); idp.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	return idp
}

// killEnv is a collector with the kill switch on for group "soc", its
// NATS, its IdP and an agent publishing as host bastion-1.
type killEnv struct {
	t     *testing.T
	col   *collector.Collector
	idp   *devidp.IdP
	base  string
	js    jetstream.JetStream
	agent *agent
}

func startKillEnv(t *testing.T, killers []string) *killEnv {
	t.Helper()
	ns := startNATS(t)
	idp := startIdP(t)
	ag := newAgent(t, ns.ClientURL(), "bastion-1")
	ctx, cancel := context.WithCancel(context.Background())
	c, err := collector.New(ctx, collector.Config{
		NATSURL: ns.ClientURL(), StorePath: harness.StoreLocation(t, t.TempDir()), Listen: "127.0.0.1:0",
		Keys: event.StaticKeys{"bastion-1": ag.pub()}, ChainCheck: ingest.ChainFull, Name: "col-1",
		OIDC:    idtoken.Config{Issuer: idp.Issuer(), ClientID: "warden"},
		Readers: []string{"auditors"}, Killers: killers, Logger: zerolog.Nop(),
	})
	if err != nil {
		cancel()
		t.Fatalf("new collector: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("collector run: %v", err)
		}
	})
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return &killEnv{t: t, col: c, idp: idp, base: "http://" + c.APIAddr(), js: js, agent: ag}
}

// client returns an API client carrying a token of sub in groups, or none
// when sub is empty.
func (k *killEnv) client(sub string, groups ...string) *cc.Client {
	k.t.Helper()
	cl, err := cc.New(k.base, nil)
	if err != nil {
		k.t.Fatal(err)
	}
	if sub == "" {
		return cl
	}
	tok, err := k.idp.Issue(devidp.IssueOptions{Sub: sub, Email: sub + "@corp.example", Groups: groups})
	if err != nil {
		k.t.Fatal(err)
	}
	return cl.WithToken(tok)
}

// reader returns an API client carrying a token of a member of the
// collector's readers group.
func (k *killEnv) reader() *cc.Client {
	return k.client("audra", "auditors")
}

// commands reads every message of the command stream.
func (k *killEnv) commands() []*event.Command {
	k.t.Helper()
	ctx := context.Background()
	st, err := k.js.Stream(ctx, event.CommandStreamName)
	if err != nil {
		k.t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		k.t.Fatal(err)
	}
	var out []*event.Command
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			k.t.Fatal(err)
		}
		c, err := event.DecodeCommand(m.Data)
		if err != nil {
			k.t.Fatalf("message %d on %s: %v", seq, m.Subject, err)
		}
		if m.Subject != c.Subject() {
			k.t.Fatalf("command %s on subject %s, want %s", c.ID, m.Subject, c.Subject())
		}
		out = append(out, c)
	}
	return out
}

func status(err error) int {
	var e *cc.Error
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}

func TestKillRefusals(t *testing.T) {
	k := startKillEnv(t, []string{"soc"})
	ctx := context.Background()
	valid := cc.KillRequest{User: "alice", Reason: "intrusion"}
	for _, tc := range []struct {
		name   string
		client *cc.Client
		req    cc.KillRequest
		want   int
	}{
		{"no token", k.client(""), valid, http.StatusUnauthorized},
		{"outside killers", k.client("mallory", "contractors", "engineering"), valid, http.StatusForbidden},
		{"no groups", k.client("mallory"), valid, http.StatusForbidden},
		{"no reason", k.client("sam", "soc"), cc.KillRequest{User: "alice"}, http.StatusBadRequest},
		{"blank reason", k.client("sam", "soc"), cc.KillRequest{User: "alice", Reason: "  "}, http.StatusBadRequest},
		{"nobody", k.client("sam", "soc"), cc.KillRequest{Reason: "x"}, http.StatusBadRequest},
		{"both", k.client("sam", "soc"), cc.KillRequest{User: "alice", SessionID: "s1", Reason: "x"}, http.StatusBadRequest},
		{"bad lock", k.client("sam", "soc"), cc.KillRequest{User: "alice", Reason: "x", Lock: "soon"}, http.StatusBadRequest},
		{"negative lock", k.client("sam", "soc"), cc.KillRequest{User: "alice", Reason: "x", Lock: "-1h"}, http.StatusBadRequest},
		{"lock too long", k.client("sam", "soc"), cc.KillRequest{User: "alice", Reason: "x", Lock: "1000h"}, http.StatusBadRequest},
		{"bad host", k.client("sam", "soc"), cc.KillRequest{User: "alice", Reason: "x", Host: "a\nb"}, http.StatusBadRequest},
		{"unknown session", k.client("sam", "soc"), cc.KillRequest{SessionID: "nope", Reason: "x"}, http.StatusNotFound},
	} {
		_, err := tc.client.Kill(ctx, tc.req)
		if got := status(err); got != tc.want {
			t.Errorf("%s: got %v (status %d), want status %d", tc.name, err, got, tc.want)
		}
	}
	// A forged token is refused as a token, not as a role.
	cl := k.client("").WithToken("eyJhbGciOiJub25lIn0.eyJzdWIiOiJzYW0ifQ.")
	if _, err := cl.Kill(ctx, valid); status(err) != http.StatusUnauthorized {
		t.Errorf("unsigned token: %v", err)
	}
	if cmds := k.commands(); len(cmds) != 0 {
		t.Fatalf("refused requests published %d commands", len(cmds))
	}
	evs, _ := allEvents(t, k.reader(), cc.Query{Type: string(event.CommandKill), Limit: 100})
	if len(evs) != 0 {
		t.Fatalf("refused requests recorded %d kills", len(evs))
	}
}

func TestKillDisabledWithoutKillers(t *testing.T) {
	k := startKillEnv(t, nil)
	_, err := k.client("sam", "soc").Kill(context.Background(), cc.KillRequest{User: "alice", Reason: "x"})
	if status(err) != http.StatusForbidden || !strings.Contains(err.Error(), "--killers") {
		t.Fatalf("kill without --killers: %v", err)
	}
}

func TestKillUserWithLock(t *testing.T) {
	k := startKillEnv(t, []string{"admins", "soc"})
	ctx := context.Background()
	before := time.Now().UTC()
	res, err := k.client("sam", "soc").Kill(ctx, cc.KillRequest{User: "alice", Reason: " intrusion seen in the stream ", Lock: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Sub != "alice" || res.Host != "" || res.SessionID != "" || res.Lock == nil {
		t.Fatalf("result %+v", res)
	}
	if d := res.Lock.Until.Sub(res.Lock.Issued); d != time.Hour {
		t.Fatalf("lock lasts %s", d)
	}
	cmds := k.commands()
	if len(cmds) != 2 {
		t.Fatalf("%d commands published, want lock and kill", len(cmds))
	}
	lock, kill := cmds[0], cmds[1]
	if lock.Kind != event.KindLock || lock.Sub != "alice" || lock.Host != "" || lock.ID != res.Lock.ID || lock.By != "sam" || lock.Reason != "intrusion seen in the stream" {
		t.Fatalf("first command %+v, want alice's lock on every host", lock)
	}
	if kill.Kind != event.KindKill || kill.Sub != "alice" || kill.SessionID != "" || kill.Subject() != event.CommandSubjectAll ||
		kill.ID != res.KillID || kill.ByEmail != "sam@corp.example" || time.Duration(kill.Lock) != time.Hour || kill.Issued.Before(before) {
		t.Fatalf("second command %+v, want alice's kill on every host", kill)
	}

	// Both are recorded as events of the requester, with the command as data.
	for _, want := range []*event.Command{kill, lock} {
		raw, err := k.reader().Event(ctx, want.ID)
		if err != nil {
			t.Fatalf("event of command %s: %v", want.ID, err)
		}
		s := string(raw)
		for _, part := range []string{`"sub":"sam"`, `"id":"col-1"`, `"reason":"intrusion seen in the stream"`, `"kind":"` + string(want.Kind) + `"`} {
			if !strings.Contains(s, part) {
				t.Errorf("event of %s lacks %s: %s", want.Kind, part, s)
			}
		}
	}
	evs, _ := allEvents(t, k.reader(), cc.Query{User: "sam", Limit: 100})
	if len(evs) != 2 || evs[0].Type != event.CommandKill && evs[0].Type != event.CommandLock {
		t.Fatalf("sam's events: %+v", evs)
	}

	locks, err := k.reader().Locks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(locks) != 1 || locks[0].ID != lock.ID || locks[0].Sub != "alice" || !locks[0].Until.Equal(lock.Until) || locks[0].By != "sam" {
		t.Fatalf("locks %+v", locks)
	}
	// A kill without a lock adds no lock.
	if _, err := k.client("sam", "admins").Kill(ctx, cc.KillRequest{User: "bob", Host: "bastion-2", Reason: "x"}); err != nil {
		t.Fatal(err)
	}
	if locks, _ := k.reader().Locks(ctx); len(locks) != 1 {
		t.Fatalf("locks after a kill without lock: %+v", locks)
	}
	cmds = k.commands()
	if last := cmds[len(cmds)-1]; last.Host != "bastion-2" || last.Subject() != "warden.commands.bastion-2" {
		t.Fatalf("kill with --host went to %q", last.Subject())
	}
}

func TestKillSessionGoesToItsHost(t *testing.T) {
	k := startKillEnv(t, []string{"soc"})
	ctx := context.Background()
	id := &event.Identity{Sub: "alice", Email: "alice@corp.example", Groups: []string{"engineering"}, Issuer: k.idp.Issuer(), SessionID: "sess-1"}
	login := k.agent.send(k.agent.newEvent(event.SessionLogin, id))
	waitFor(t, "login stored", func() (bool, error) {
		_, err := k.col.Store().Get(ctx, login.ID)
		return err == nil, nil
	})
	sam := k.client("sam", "soc")
	if _, err := sam.Kill(ctx, cc.KillRequest{SessionID: "sess-1", Host: "elsewhere", Reason: "x"}); status(err) != http.StatusBadRequest {
		t.Fatalf("session on another host: %v", err)
	}
	res, err := sam.Kill(ctx, cc.KillRequest{SessionID: "sess-1", Reason: "x", Lock: "10m"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Sub != "alice" || res.Host != "bastion-1" || res.SessionID != "sess-1" {
		t.Fatalf("result %+v", res)
	}
	cmds := k.commands()
	if len(cmds) != 2 {
		t.Fatalf("%d commands", len(cmds))
	}
	// The lock is the person's, on every host: --host was not given.
	if l := cmds[0]; l.Kind != event.KindLock || l.Sub != "alice" || l.Subject() != event.CommandSubjectAll {
		t.Fatalf("lock %+v", l)
	}
	if c := cmds[1]; c.Kind != event.KindKill || c.SessionID != "sess-1" || c.Sub != "" || c.Subject() != "warden.commands.bastion-1" {
		t.Fatalf("kill %+v", c)
	}

	// The agent's session.killed ends the session in the sessions list.
	killed := k.agent.newEvent(event.SessionKilled, id)
	killed.Data = map[string]any{"by": "sam", "reason": "x", "sessions": []any{"sess-1"}}
	k.agent.send(killed)
	waitFor(t, "session.killed stored", func() (bool, error) {
		_, err := k.col.Store().Get(ctx, killed.ID)
		return err == nil, nil
	})
	ss, err := k.reader().Sessions(ctx, cc.SessionQuery{Since: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	if len(ss) != 1 || ss[0].SessionID != "sess-1" || ss[0].EndType != string(event.SessionKilled) || ss[0].End == nil {
		t.Fatalf("sessions %+v", ss)
	}
}
