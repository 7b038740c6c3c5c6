package natsembed_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/wardenhq/warden/agent/recording"
	"github.com/wardenhq/warden/collector/natsembed"
	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/pkg/natsauth"
	"github.com/wardenhq/warden/pkg/review"
)

// secured is a real NATS server with Warden's trust chain and TLS.
type secured struct {
	t    *testing.T
	dir  string
	auth *natsauth.Authority
	ns   *natsembed.Server
	ca   string // PEM file of the server certificate (self-signed)
}

func startSecured(t *testing.T) *secured {
	t.Helper()
	dir := t.TempDir()
	auth, err := natsauth.Open(filepath.Join(dir, "auth"))
	if err != nil {
		t.Fatal(err)
	}
	cert, key := selfSigned(t, dir)
	ns, err := natsembed.Start(natsembed.Config{Listen: "127.0.0.1:0", StoreDir: filepath.Join(dir, "js"), Logger: zerolog.Nop(),
		Auth: auth, TLSCert: cert, TLSKey: key})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	s := &secured{t: t, dir: dir, auth: auth, ns: ns, ca: cert}
	// The collector's streams, as it declares them at start.
	col := s.connect(natsauth.RoleCollector, "col-1", nil)
	js, err := jetstream.New(col)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := natsembed.EnsureStream(context.Background(), js, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := natsembed.EnsureCommandStream(context.Background(), js, 1); err != nil {
		t.Fatal(err)
	}
	return s
}

// selfSigned writes a certificate for 127.0.0.1 and its key.
func selfSigned(t *testing.T, dir string) (string, string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "nats"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	cert, key := filepath.Join(dir, "nats.crt"), filepath.Join(dir, "nats.key")
	if err := os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// creds issues a user and writes its creds file.
func (s *secured) creds(r natsauth.Role, name string) string {
	s.t.Helper()
	b, _, err := s.auth.Issue(r, name, "")
	if err != nil {
		s.t.Fatal(err)
	}
	path := filepath.Join(s.dir, string(r)+"-"+name+".creds")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		s.t.Fatal(err)
	}
	return path
}

// violations collects the asynchronous errors the server sends a client.
type violations struct {
	mu   sync.Mutex
	errs []error
}

func (v *violations) handler(_ *nats.Conn, _ *nats.Subscription, err error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.errs = append(v.errs, err)
}

// wait returns the first permissions violation naming subject, waiting a
// while for it to arrive.
func (v *violations) wait(subject string) error {
	for range 100 {
		v.mu.Lock()
		for _, err := range v.errs {
			if strings.Contains(err.Error(), "Permissions Violation") && strings.Contains(err.Error(), subject) {
				v.mu.Unlock()
				return err
			}
		}
		v.mu.Unlock()
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// connect dials the server over TLS as a new user of role r; v, if not
// nil, collects the server's asynchronous errors.
func (s *secured) connect(r natsauth.Role, name string, v *violations) *nats.Conn {
	s.t.Helper()
	opts := []nats.Option{nats.UserCredentials(s.creds(r, name)), nats.RootCAs(s.ca),
		nats.CustomInboxPrefix(natsauth.InboxPrefix(r, name))}
	if v != nil {
		opts = append(opts, nats.ErrorHandler(v.handler))
	}
	nc, err := nats.Connect(s.ns.ClientURL(), opts...)
	if err != nil {
		s.t.Fatalf("connect as %s %s: %v", r, name, err)
	}
	s.t.Cleanup(nc.Close)
	return nc
}

// lastOn returns the data of the last message of the events stream on
// subject, or nil.
func (s *secured) lastOn(subject string) []byte {
	s.t.Helper()
	js, err := jetstream.New(s.connect(natsauth.RoleCollector, "col-check", nil))
	if err != nil {
		s.t.Fatal(err)
	}
	st, err := js.Stream(context.Background(), event.StreamName)
	if err != nil {
		s.t.Fatal(err)
	}
	m, err := st.GetLastMsgForSubject(context.Background(), subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil
	}
	if err != nil {
		s.t.Fatal(err)
	}
	return m.Data
}

func TestAnonymousRefused(t *testing.T) {
	s := startSecured(t)
	nc, err := nats.Connect(s.ns.ClientURL(), nats.RootCAs(s.ca))
	if err == nil {
		nc.Close()
		t.Fatal("a client without creds connected")
	}
	if !errors.Is(err, nats.ErrAuthorization) && !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Fatalf("anonymous client: %v; want an authorization violation", err)
	}
}

func TestPlainTextRefused(t *testing.T) {
	s := startSecured(t)
	// nats.go upgrades to TLS on its own when the server asks, so speak
	// the protocol in plain text by hand, as a client without TLS would.
	c, err := net.Dial("tcp", strings.TrimPrefix(s.ns.ClientURL(), "tls://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	info, err := r.ReadString('\n')
	if err != nil || !strings.Contains(info, `"tls_required":true`) {
		t.Fatalf("INFO %q (%v); want tls_required", info, err)
	}
	if _, err := c.Write([]byte("CONNECT {\"verbose\":false,\"pedantic\":false,\"tls_required\":false}\r\nPING\r\n")); err != nil {
		t.Fatal(err)
	}
	rest, _ := io.ReadAll(r) // until the server closes the connection
	if strings.Contains(string(rest), "PONG") {
		t.Fatalf("a plain-text client was answered: %q", rest)
	}
}

func TestRevokedAgentRefused(t *testing.T) {
	dir := t.TempDir()
	auth, err := natsauth.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := auth.Issue(natsauth.RoleAgent, "bastion-1", "")
	if err != nil {
		t.Fatal(err)
	}
	creds := filepath.Join(dir, "b1.creds")
	if err := os.WriteFile(creds, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := auth.Revoke(natsauth.RoleAgent, "bastion-1", false); err != nil {
		t.Fatal(err)
	}
	// A server started after the revocation, from the same directory.
	reopened, err := natsauth.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	ns, err := natsembed.Start(natsembed.Config{Listen: "127.0.0.1:0", StoreDir: t.TempDir(), Logger: zerolog.Nop(), Auth: reopened})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Shutdown()
	if nc, err := nats.Connect(ns.ClientURL(), nats.UserCredentials(creds)); err == nil {
		nc.Close()
		t.Fatal("revoked creds connected")
	}
	// Creds issued after the revocation work.
	b, _, err = reopened.Issue(natsauth.RoleAgent, "bastion-1", "")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(creds, b, 0o600); err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(ns.ClientURL(), nats.UserCredentials(creds))
	if err != nil {
		t.Fatalf("creds issued after the revocation: %v", err)
	}
	nc.Close()
}

func TestAgentPermissions(t *testing.T) {
	s := startSecured(t)
	var v violations
	agent := s.connect(natsauth.RoleAgent, "bastion-1", &v)

	t.Run("cannot subscribe to the events", func(t *testing.T) {
		if _, err := agent.SubscribeSync(event.StreamSubjects); err != nil {
			t.Fatal(err)
		}
		agent.Flush()
		if v.wait("Subscription to \""+event.StreamSubjects+"\"") == nil {
			t.Fatalf("no permissions violation for subscribing to %s; got %v", event.StreamSubjects, v.errs)
		}
	})
	t.Run("cannot read the stream through JetStream", func(t *testing.T) {
		js, err := jetstream.New(agent)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if _, err := js.CreateOrUpdateConsumer(ctx, event.StreamName, jetstream.ConsumerConfig{Durable: "snoop", AckPolicy: jetstream.AckExplicitPolicy}); err == nil {
			t.Fatal("an agent created a consumer on the events stream")
		}
	})
	t.Run("cannot publish as another host", func(t *testing.T) {
		other := event.SubjectPrefix + event.HostToken("bastion-2") + ".db.query"
		if err := agent.Publish(other, []byte("forged")); err != nil {
			t.Fatal(err)
		}
		agent.Flush()
		if v.wait("Publish to \""+other+"\"") == nil {
			t.Fatalf("no permissions violation for publishing on %s", other)
		}
		js, _ := jetstream.New(agent)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if _, err := js.Publish(ctx, other, []byte("forged")); err == nil {
			t.Fatal("JetStream acknowledged a publish as another host")
		}
		if got := s.lastOn(other); got != nil {
			t.Fatalf("the stream holds %q on %s", got, other)
		}
	})
	t.Run("publishes its own events", func(t *testing.T) {
		own := event.SubjectPrefix + event.HostToken("bastion-1") + ".db.query"
		js, _ := jetstream.New(agent)
		if _, err := js.Publish(context.Background(), own, []byte("mine")); err != nil {
			t.Fatalf("publish on %s: %v", own, err)
		}
		if got := s.lastOn(own); string(got) != "mine" {
			t.Fatalf("stream on %s: %q", own, got)
		}
	})
	t.Run("cannot read another host's review updates", func(t *testing.T) {
		if _, err := agent.SubscribeSync(review.HostUpdates("bastion-2")); err != nil {
			t.Fatal(err)
		}
		agent.Flush()
		if v.wait(review.HostUpdates("bastion-2")) == nil {
			t.Fatal("no permissions violation for another host's review updates")
		}
	})
	t.Run("binds its own command consumer only", func(t *testing.T) {
		js, _ := jetstream.New(agent)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		own := jetstream.ConsumerConfig{Durable: event.CommandConsumer("bastion-1"), AckPolicy: jetstream.AckExplicitPolicy,
			FilterSubjects: []string{event.CommandSubject("bastion-1"), event.CommandSubjectAll}}
		if _, err := js.CreateOrUpdateConsumer(ctx, event.CommandStreamName, own); err != nil {
			t.Fatalf("own command consumer: %v", err)
		}
		ctx2, cancel2 := context.WithTimeout(context.Background(), time.Second)
		defer cancel2()
		other := own
		other.Durable = event.CommandConsumer("bastion-2")
		if _, err := js.CreateOrUpdateConsumer(ctx2, event.CommandStreamName, other); err == nil {
			t.Fatal("an agent bound another host's command consumer")
		}
	})
	t.Run("stores recordings", func(t *testing.T) {
		st := recording.NewNATSStore(mustJS(t, agent))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := st.Put(ctx, "rec-1/chunk-0", []byte("cast")); err != nil {
			t.Fatalf("put a recording chunk: %v", err)
		}
	})
}

func TestAgentReviewRequestReply(t *testing.T) {
	s := startSecured(t)
	col := s.connect(natsauth.RoleCollector, "col-1", nil)
	sub, err := col.QueueSubscribe("warden.review.>", "warden-collector", func(m *nats.Msg) { m.Respond([]byte("ok")) })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	col.Flush()
	agent := s.connect(natsauth.RoleAgent, "bastion-1", nil)
	for _, subj := range []string{review.SubjectOpen, review.SubjectUse, review.SubjectGet, review.SubjectGrants} {
		m, err := agent.Request(subj, []byte("{}"), 5*time.Second)
		if err != nil || string(m.Data) != "ok" {
			t.Fatalf("request on %s: %v", subj, err)
		}
	}
	// The collector's update for the agent's host reaches it.
	upd, err := agent.SubscribeSync(review.HostUpdates("bastion-1"))
	if err != nil {
		t.Fatal(err)
	}
	agent.Flush()
	if err := col.Publish(review.UpdateSubject("bastion-1", "R-1"), []byte("u")); err != nil {
		t.Fatal(err)
	}
	if _, err := upd.NextMsg(5 * time.Second); err != nil {
		t.Fatalf("review update: %v", err)
	}
}

func TestSOCReadOnly(t *testing.T) {
	s := startSecured(t)
	var v violations
	soc := s.connect(natsauth.RoleSOC, "sam", &v)
	tail, err := soc.SubscribeSync(event.StreamSubjects)
	if err != nil {
		t.Fatal(err)
	}
	soc.Flush()
	agent := s.connect(natsauth.RoleAgent, "bastion-1", nil)
	own := event.SubjectPrefix + event.HostToken("bastion-1") + ".agent.start"
	if _, err := mustJS(t, agent).Publish(context.Background(), own, []byte("e1")); err != nil {
		t.Fatal(err)
	}
	if m, err := tail.NextMsg(5 * time.Second); err != nil || string(m.Data) != "e1" {
		t.Fatalf("SOC tail: %v", err)
	}

	// Its own durable consumer, read from the start.
	js := mustJS(t, soc)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cons, err := js.CreateOrUpdateConsumer(ctx, event.StreamName, jetstream.ConsumerConfig{Durable: "sam", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatalf("SOC durable consumer: %v", err)
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for m := range batch.Messages() {
		if err := m.Ack(); err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != 1 {
		t.Fatalf("SOC consumer fetched %d events, want 1 (%v)", n, batch.Error())
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), time.Second)
	defer cancel2()
	if _, err := js.CreateOrUpdateConsumer(ctx2, event.StreamName, jetstream.ConsumerConfig{Durable: "col", AckPolicy: jetstream.AckExplicitPolicy}); err == nil {
		t.Fatal("a SOC user created a consumer named after someone else")
	}

	// It publishes nothing: events, commands, review requests or updates.
	for _, subj := range []string{own, event.CommandSubjectAll, review.SubjectOpen, review.UpdateSubject("bastion-1", "R-1")} {
		if err := soc.Publish(subj, []byte("x")); err != nil {
			t.Fatal(err)
		}
		soc.Flush()
		if v.wait("Publish to \""+subj+"\"") == nil {
			t.Fatalf("no permissions violation for a SOC publish on %s", subj)
		}
	}
	if got := s.lastOn(own); string(got) != "e1" {
		t.Fatalf("stream on %s after the SOC's publish: %q", own, got)
	}
}

func mustJS(t *testing.T, nc *nats.Conn) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// Rotation: a bastion enrolled again holds two valid creds until the
// previous ones are revoked; then only the new ones connect.
func TestRotationRevokesPreviousOnly(t *testing.T) {
	dir := t.TempDir()
	auth, err := natsauth.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string) string {
		b, _, err := auth.Issue(natsauth.RoleAgent, "bastion-1", "")
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	oldCreds, newCreds := write("old.creds"), write("new.creds")
	_, keys, err := auth.Revoke(natsauth.RoleAgent, "bastion-1", true)
	if err != nil || len(keys) != 1 {
		t.Fatalf("revoke previous: %v %v", keys, err)
	}
	reopened, err := natsauth.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	ns, err := natsembed.Start(natsembed.Config{Listen: "127.0.0.1:0", StoreDir: t.TempDir(), Logger: zerolog.Nop(), Auth: reopened})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Shutdown()
	if nc, err := nats.Connect(ns.ClientURL(), nats.UserCredentials(oldCreds)); err == nil {
		nc.Close()
		t.Fatal("the previous creds connected after their revocation")
	}
	nc, err := nats.Connect(ns.ClientURL(), nats.UserCredentials(newCreds))
	if err != nil {
		t.Fatalf("the current creds: %v", err)
	}
	nc.Close()
}

// A revocation reaches a running server through ReloadAuth: the revoked
// agent is disconnected and cannot come back; others stay.
func TestRevocationAppliesLive(t *testing.T) {
	s := startSecured(t)
	revoked := make(chan struct{})
	agentCreds := s.creds(natsauth.RoleAgent, "bastion-1")
	agent, err := nats.Connect(s.ns.ClientURL(), nats.UserCredentials(agentCreds), nats.RootCAs(s.ca), nats.NoReconnect(), nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}),
		nats.ClosedHandler(func(*nats.Conn) { close(revoked) }))
	if err != nil {
		t.Fatal(err)
	}
	defer agent.Close()
	other := s.connect(natsauth.RoleAgent, "bastion-2", nil)
	if _, _, err := s.auth.Revoke(natsauth.RoleAgent, "bastion-1", false); err != nil {
		t.Fatal(err)
	}
	if err := s.ns.ReloadAuth(s.auth); err != nil {
		t.Fatal(err)
	}
	select {
	case <-revoked:
	case <-time.After(10 * time.Second):
		t.Fatal("the revoked agent is still connected")
	}
	if nc, err := nats.Connect(s.ns.ClientURL(), nats.UserCredentials(agentCreds), nats.RootCAs(s.ca)); err == nil {
		nc.Close()
		t.Fatal("revoked creds connected again")
	}
	if err := other.Flush(); err != nil || !other.IsConnected() {
		t.Fatalf("another host's agent lost its connection: %v", err)
	}
}
