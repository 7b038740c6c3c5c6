package collector_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"
	"github.com/rs/zerolog"

	"github.com/wardenhq/warden/collector"
	"github.com/wardenhq/warden/collector/ingest"
	"github.com/wardenhq/warden/collector/natsembed"
	"github.com/wardenhq/warden/collector/store"
	"github.com/wardenhq/warden/pkg/collectorclient"
	"github.com/wardenhq/warden/pkg/devidp"
	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/pkg/idtoken"
)

// startNATS runs a real embedded NATS server with JetStream for one test.
func startNATS(t *testing.T) *natsembed.Server {
	t.Helper()
	ns, err := natsembed.Start(natsembed.Config{Listen: "127.0.0.1:0", StoreDir: t.TempDir(), Logger: zerolog.Nop(), AllowAnonymous: true})
	if err != nil {
		t.Fatalf("start NATS: %v", err)
	}
	t.Cleanup(ns.Shutdown)
	return ns
}

// running is a collector started by a test.
type running struct {
	*collector.Collector
	client *collectorclient.Client // carries a reader's token
	base   string
	token  string // the reader's ID token
	stop   func() // cancels and waits for Run to return
}

func startCollector(t *testing.T, natsURL, storePath string, keys event.KeyRing, consumer string, chain ingest.ChainCheck, batch int) *running {
	t.Helper()
	idp := startIdP(t)
	token, err := idp.Issue(devidp.IssueOptions{Sub: "audra", Groups: []string{"auditors"}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c, err := collector.New(ctx, collector.Config{
		OIDC:       idtoken.Config{Issuer: idp.Issuer(), ClientID: "warden"},
		Readers:    []string{"auditors"},
		NATSURL:    natsURL,
		StorePath:  storePath,
		Listen:     "127.0.0.1:0",
		Keys:       keys,
		Consumer:   consumer,
		ChainCheck: chain,
		BatchSize:  batch,
		Name:       "test-" + filepath.Base(storePath),
		Logger:     zerolog.Nop(),
	})
	if err != nil {
		cancel()
		t.Fatalf("new collector: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("collector run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	base := "http://" + c.APIAddr()
	cl, err := collectorclient.New(base, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &running{Collector: c, client: cl.WithToken(token), base: base, token: token, stop: stop}
}

// agent is a test publisher: one host's signing key and chain, publishing
// the way agent/publish does (subject per type, Nats-Msg-Id = event id).
type agent struct {
	t      *testing.T
	hostID string
	priv   ed25519.PrivateKey
	signer *event.Signer
	js     jetstream.JetStream
}

func newAgent(t *testing.T, natsURL, hostID string) *agent {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatalf("agent connect: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := natsembed.EnsureStream(context.Background(), js, 1); err != nil {
		t.Fatal(err)
	}
	return &agent{t: t, hostID: hostID, priv: priv, signer: event.NewSigner(priv, 0, ""), js: js}
}

func (a *agent) pub() ed25519.PublicKey { return a.priv.Public().(ed25519.PublicKey) }

// newEvent returns an unsealed event of this agent's host.
func (a *agent) newEvent(typ event.Type, id *event.Identity) *event.Event {
	return &event.Event{
		Schema:   event.SchemaV1, // signed one by one; see checkpoint_test.go for v2
		ID:       ulid.Make().String(),
		Time:     time.Now().UTC(),
		Type:     typ,
		Host:     event.Host{ID: a.hostID, Name: a.hostID},
		Identity: id,
	}
}

// seal signs e into the chain without publishing it.
func (a *agent) seal(e *event.Event) []byte {
	a.signer.Seal(e)
	if e.Hash == "" {
		a.t.Fatalf("seal %s failed", e.ID)
	}
	b, err := json.Marshal(e)
	if err != nil {
		a.t.Fatal(err)
	}
	return b
}

// send seals and publishes e.
func (a *agent) send(e *event.Event) *event.Event {
	a.publishRaw(e.Subject(), e.ID, a.seal(e))
	return e
}

func (a *agent) publishRaw(subject, msgID string, data []byte) {
	a.t.Helper()
	m := nats.NewMsg(subject)
	m.Data = data
	if msgID != "" {
		m.Header.Set(nats.MsgIdHdr, msgID)
	}
	if _, err := a.js.PublishMsg(context.Background(), m); err != nil {
		a.t.Fatalf("publish on %s: %v", subject, err)
	}
}

// waitFor polls cond until it holds; the deadline only guards against a
// hung test, it is not a performance threshold.
func waitFor(t *testing.T, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ok, err := cond()
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitCount waits until the store holds n rows.
func waitCount(t *testing.T, st *store.Store, n int64) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d stored rows", n), func() (bool, error) {
		c, err := st.Count(context.Background())
		if c > n {
			return false, fmt.Errorf("store holds %d rows, want %d", c, n)
		}
		return c == n, err
	})
}

// allEvents pages through GET /v1/events with q.
func allEvents(t *testing.T, cl *collectorclient.Client, q collectorclient.Query) ([]event.Event, map[string][]string) {
	t.Helper()
	var out []event.Event
	integ := map[string][]string{}
	for {
		page, err := cl.Events(context.Background(), q)
		if err != nil {
			t.Fatalf("events %+v: %v", q, err)
		}
		for _, raw := range page.Events {
			var e event.Event
			if err := json.Unmarshal(raw, &e); err != nil {
				t.Fatal(err)
			}
			out = append(out, e)
		}
		for k, v := range page.Integrity {
			integ[k] = v
		}
		if page.NextAfterID == "" {
			return out, integ
		}
		q.AfterID = page.NextAfterID
	}
}

func ids(es []event.Event) []string {
	out := make([]string, len(es))
	for i := range es {
		out[i] = es[i].ID
	}
	return out
}
