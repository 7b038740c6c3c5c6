package commands

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"
	"github.com/rs/zerolog"

	"github.com/wardenhq/warden/agent/lifetime"
	"github.com/wardenhq/warden/collector/natsembed"
	"github.com/wardenhq/warden/pkg/event"
)

// fakeHandler records what it is asked to do.
type fakeHandler struct {
	mu    sync.Mutex
	calls []string // "kill session:<id>", "kill sub:<sub>", "lock <sub> <until>"
	fail  int      // fail this many calls first
}

func (h *fakeHandler) record(s string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.fail > 0 {
		h.fail--
		return errors.New("handler failure")
	}
	h.calls = append(h.calls, s)
	return nil
}

func (h *fakeHandler) Kill(_ context.Context, req lifetime.KillRequest) (lifetime.KillReport, error) {
	if req.Lock != 0 {
		return lifetime.KillReport{}, h.record(fmt.Sprintf("kill sub:%s by %s: %s, lock %s", req.Sub, req.By, req.Reason, req.Lock))
	}
	if req.SessionID != "" {
		return lifetime.KillReport{Sessions: []string{req.SessionID}}, h.record("kill session:" + req.SessionID + " by " + req.By + ": " + req.Reason)
	}
	return lifetime.KillReport{}, h.record("kill sub:" + req.Sub + " by " + req.By + ": " + req.Reason)
}

func (h *fakeHandler) Lock(_ context.Context, sub string, until time.Time, reason, by string) error {
	return h.record(fmt.Sprintf("lock %s until %s by %s: %s", sub, until.UTC().Format(time.RFC3339), by, reason))
}

func (h *fakeHandler) Locks() []lifetime.Lock { return nil }

func (h *fakeHandler) Calls() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.calls...)
}

type env struct {
	t   *testing.T
	ns  *natsembed.Server
	url string
	js  jetstream.JetStream
}

func newEnv(t *testing.T) *env {
	t.Helper()
	dir := t.TempDir()
	ns, err := natsembed.Start(natsembed.Config{Listen: "127.0.0.1:0", StoreDir: dir, Logger: zerolog.Nop(), AllowAnonymous: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	e := &env{t: t, ns: ns, url: ns.ClientURL()}
	e.js = e.connect()
	if _, err := natsembed.EnsureCommandStream(context.Background(), e.js, 1); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) connect() jetstream.JetStream {
	e.t.Helper()
	nc, err := nats.Connect(e.url)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		e.t.Fatal(err)
	}
	return js
}

func (e *env) publish(c *event.Command) {
	e.t.Helper()
	if err := (natsembed.CommandPublisher{JS: e.js}).Publish(context.Background(), c); err != nil {
		e.t.Fatal(err)
	}
}

// publishRaw publishes bytes that need not be a valid command.
func (e *env) publishRaw(subject string, data []byte) {
	e.t.Helper()
	if _, err := e.js.Publish(context.Background(), subject, data); err != nil {
		e.t.Fatal(err)
	}
}

var issued = time.Date(2026, 12, 2, 1, 0, 0, 0, time.UTC)

func kill(host, session, sub string) *event.Command {
	return &event.Command{Schema: event.CommandSchema, ID: ulid.Make().String(), Kind: event.KindKill, Issued: issued,
		By: "sam", Reason: "intrusion", Host: host, SessionID: session, Sub: sub}
}

func lock(host, sub string, d time.Duration) *event.Command {
	return &event.Command{Schema: event.CommandSchema, ID: ulid.Make().String(), Kind: event.KindLock, Issued: issued,
		By: "sam", Reason: "intrusion", Host: host, Sub: sub, Until: issued.Add(d)}
}

// running is a started Subscriber.
type running struct {
	*Subscriber
	stop func()
}

func (e *env) start(h lifetime.Handler, host string, now time.Time) *running {
	e.t.Helper()
	s, err := New(Config{URL: e.url, HostID: host, Handler: h, Retry: 20 * time.Millisecond, Now: func() time.Time { return now }, Logger: zerolog.Nop()})
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				e.t.Errorf("run: %v", err)
			}
		})
	}
	e.t.Cleanup(stop)
	return &running{Subscriber: s, stop: stop}
}

// waitSynced waits for Synced; the deadline only guards against a hang.
func waitSynced(t *testing.T, s *running) {
	t.Helper()
	select {
	case <-s.Synced():
	case <-time.After(30 * time.Second):
		t.Fatal("never synced")
	}
}

func waitCalls(t *testing.T, h *fakeHandler, n int) []string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c := h.Calls()
		if len(c) > n {
			t.Fatalf("%d calls, want %d: %q", len(c), n, c)
		}
		if len(c) == n {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %d calls: %q", n, c)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestOfflineDeliveryInOrderOnce(t *testing.T) {
	e := newEnv(t)
	now := issued.Add(time.Minute)
	h := &fakeHandler{}
	// First start creates the durable consumer; then the agent goes away.
	s := e.start(h, "bastion-1", now)
	waitSynced(t, s)
	s.stop()

	e.publish(lock("", "alice", time.Hour))
	e.publish(kill("", "", "alice"))
	e.publish(kill("bastion-1", "sess-1", ""))
	e.publish(kill("bastion-2", "sess-2", "")) // another host's
	e.publish(lock("bastion-2", "bob", time.Hour))

	h2 := &fakeHandler{}
	s2 := e.start(h2, "bastion-1", now)
	waitSynced(t, s2)
	// Synced means the backlog was applied, without waiting any further.
	want := []string{
		"lock alice until 2026-12-02T02:00:00Z by sam: intrusion",
		"kill sub:alice by sam: intrusion",
		"kill session:sess-1 by sam: intrusion",
	}
	got := h2.Calls()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("applied at sync %q, want %q", got, want)
	}
	// Live commands still arrive after the backlog.
	e.publish(kill("bastion-1", "sess-3", ""))
	got = waitCalls(t, h2, 4)
	if got[3] != "kill session:sess-3 by sam: intrusion" {
		t.Fatalf("live command %q", got[3])
	}
	s2.stop()
	// Acked: a restart applies nothing again.
	h3 := &fakeHandler{}
	s3 := e.start(h3, "bastion-1", now)
	waitSynced(t, s3)
	if c := h3.Calls(); len(c) != 0 {
		t.Fatalf("restart re-applied %q", c)
	}
	if st := s2.Stats(); st.Applied != 4 || st.Invalid != 0 || st.Expired != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestNewHostGetsLocksInForceButNotOldKills(t *testing.T) {
	e := newEnv(t)
	e.publish(lock("", "alice", 2*time.Hour))    // in force at now
	e.publish(lock("", "carol", 10*time.Minute)) // over by now
	e.publish(kill("", "", "alice"))             // issued 90 min before now
	now := issued.Add(90 * time.Minute)
	h := &fakeHandler{}
	s := e.start(h, "new-host", now)
	waitSynced(t, s)
	got := h.Calls()
	if len(got) != 1 || got[0] != "lock alice until 2026-12-02T03:00:00Z by sam: intrusion" {
		t.Fatalf("a new host applied %q", got)
	}
	if st := s.Stats(); st.Expired != 2 || st.Applied != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestKillCarriesWhatIsLeftOfItsLock(t *testing.T) {
	e := newEnv(t)
	k := kill("", "", "alice")
	k.Lock = event.Duration(time.Hour)
	e.publish(k)
	h := &fakeHandler{}
	s := e.start(h, "bastion-1", issued.Add(20*time.Minute)) // delivered late
	waitSynced(t, s)
	if got := h.Calls(); len(got) != 1 || got[0] != "kill sub:alice by sam: intrusion, lock 40m0s" {
		t.Fatalf("calls %q", got)
	}
}

func TestInvalidMessagesAreDropped(t *testing.T) {
	e := newEnv(t)
	h := &fakeHandler{}
	e.publishRaw(event.CommandSubject("bastion-1"), []byte(`{"schema":"warden.command/v1","kind":"reboot"}`))
	e.publishRaw(event.CommandSubjectAll, []byte(`not json`))
	e.publish(kill("bastion-1", "sess-1", ""))
	s := e.start(h, "bastion-1", issued)
	waitSynced(t, s)
	if got := h.Calls(); len(got) != 1 || got[0] != "kill session:sess-1 by sam: intrusion" {
		t.Fatalf("calls %q", got)
	}
	if st := s.Stats(); st.Invalid != 2 {
		t.Fatalf("stats %+v", st)
	}
}

func TestHandlerFailureIsRetried(t *testing.T) {
	e := newEnv(t)
	h := &fakeHandler{fail: 2}
	s := e.start(h, "bastion-1", issued)
	waitSynced(t, s)
	e.publish(kill("bastion-1", "sess-1", ""))
	e.publish(kill("bastion-1", "sess-2", ""))
	got := waitCalls(t, h, 2)
	// The failed command is retried before the next one: order holds.
	if got[0] != "kill session:sess-1 by sam: intrusion" || got[1] != "kill session:sess-2 by sam: intrusion" {
		t.Fatalf("calls %q", got)
	}
	if st := s.Stats(); st.Failed != 2 || st.Applied != 2 {
		t.Fatalf("stats %+v", st)
	}
}

func TestSurvivesNATSRestart(t *testing.T) {
	dir := t.TempDir()
	ns, err := natsembed.Start(natsembed.Config{Listen: "127.0.0.1:0", StoreDir: dir, Logger: zerolog.Nop(), AllowAnonymous: true})
	if err != nil {
		t.Fatal(err)
	}
	url := ns.ClientURL()
	e := &env{t: t, ns: ns, url: url}
	e.js = e.connect()
	if _, err := natsembed.EnsureCommandStream(context.Background(), e.js, 1); err != nil {
		t.Fatal(err)
	}
	h := &fakeHandler{}
	s := e.start(h, "bastion-1", issued)
	waitSynced(t, s)
	ns.Shutdown()

	// The server comes back on the same port with the same storage.
	listen := url[len("nats://"):]
	var ns2 *natsembed.Server
	for i := 0; ; i++ {
		ns2, err = natsembed.Start(natsembed.Config{Listen: listen, StoreDir: dir, Logger: zerolog.Nop(), AllowAnonymous: true})
		if err == nil {
			break
		}
		if i == 100 {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Cleanup(ns2.Shutdown)
	e.ns = ns2
	e.js = e.connect()
	e.publish(kill("bastion-1", "sess-9", ""))
	if got := waitCalls(t, h, 1); got[0] != "kill session:sess-9 by sam: intrusion" {
		t.Fatalf("calls %q", got)
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	h := &fakeHandler{}
	for name, cfg := range map[string]Config{
		"no handler": {URL: "nats://x", HostID: "h"},
		"no url":     {HostID: "h", Handler: h},
		"host ctl":   {URL: "nats://x", HostID: "a\nb", Handler: h},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestDottedHostID(t *testing.T) {
	e := newEnv(t)
	e.publish(kill("bastion-1.corp.example", "sess-1", ""))
	e.publish(kill("bastion-1", "sess-2", "")) // a different host
	h := &fakeHandler{}
	s := e.start(h, "bastion-1.corp.example", issued)
	waitSynced(t, s)
	if got := h.Calls(); len(got) != 1 || got[0] != "kill session:sess-1 by sam: intrusion" {
		t.Fatalf("calls %q", got)
	}
}
