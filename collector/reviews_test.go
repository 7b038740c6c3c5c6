package collector_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/wardenhq/warden/collector"
	"github.com/wardenhq/warden/collector/reviews"
	cc "github.com/wardenhq/warden/pkg/collectorclient"
	"github.com/wardenhq/warden/pkg/devidp"
	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/pkg/idtoken"
	"github.com/wardenhq/warden/pkg/review"
	"github.com/wardenhq/warden/tests/harness"
)

// A review through the whole collector: an agent opens it over NATS, the
// webhook hears of it, an approver decides it through the API, and the
// agent and the webhook hear of the decision.
func TestReviewThroughCollector(t *testing.T) {
	hooks := make(chan reviews.WebhookPayload, 4)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var p reviews.WebhookPayload
		if err := json.NewDecoder(r.Body).Decode(&p); err != nil {
			t.Errorf("webhook body: %v", err)
		}
		hooks <- p
	}))
	defer hook.Close()

	ns := startNATS(t)
	idp := startIdP(t)
	ctx, cancel := context.WithCancel(context.Background())
	c, err := collector.New(ctx, collector.Config{
		OIDC: idtoken.Config{Issuer: idp.Issuer(), ClientID: "warden"}, Readers: []string{"soc"},
		NATSURL: ns.ClientURL(), StorePath: harness.StoreLocation(t, t.TempDir()), Listen: "127.0.0.1:0",
		Keys: event.StaticKeys{}, Name: "col-1", Webhook: hook.URL + "/hook", Logger: zerolog.Nop(),
	})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("collector run: %v", err)
		}
	}()
	<-c.Reviews().Ready()

	agent, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer agent.Close()
	updates, err := agent.SubscribeSync(review.HostUpdates("bastion-1"))
	if err != nil {
		t.Fatal(err)
	}
	req, _ := json.Marshal(review.OpenRequest{
		Kind: review.KindStatement, Host: "bastion-1", Requester: review.Person{Sub: "bob", Email: "bob@example.com"},
		Target: "orders-db", Rule: "unbounded-writes", Statement: "DELETE FROM t", Fingerprint: review.Fingerprint("DELETE FROM t"),
		Approvers: []string{"dba"}, Require: review.RequireAny, GrantOnce: true,
	})
	m, err := agent.Request(review.SubjectOpen, req, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var rep review.Reply
	if err := json.Unmarshal(m.Data, &rep); err != nil || rep.Error != "" || rep.Review == nil {
		t.Fatalf("open: %s (%v)", m.Data, err)
	}
	id := rep.Review.ID
	if p := <-hooks; p.Event != reviews.EventRequested || p.Review.ID != id {
		t.Fatalf("first webhook: %+v", p)
	}

	cl, err := cc.New("http://"+c.APIAddr(), nil)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := idp.Issue(devidp.IssueOptions{Sub: "alice", Email: "alice@example.com", Groups: []string{"dba"}})
	if err != nil {
		t.Fatal(err)
	}
	alice := cl.WithToken(tok)
	pending, err := alice.Reviews(context.Background(), cc.ReviewQuery{})
	if err != nil || len(pending) != 1 || pending[0].ID != id {
		t.Fatalf("alice's pending list: %v %v", pending, err)
	}
	got, err := alice.Approve(context.Background(), id, "fine")
	if err != nil || got.State != review.Approved {
		t.Fatalf("approve: %v %v", got, err)
	}
	for {
		m, err := updates.NextMsg(10 * time.Second)
		if err != nil {
			t.Fatalf("the agent heard of no approval: %v", err)
		}
		var r review.Review
		if err := json.Unmarshal(m.Data, &r); err != nil {
			t.Fatal(err)
		}
		if r.ID == id && r.State == review.Approved {
			break
		}
	}
	if p := <-hooks; p.Event != reviews.EventDecided || !strings.Contains(p.Text, "approved by alice@example.com") {
		t.Fatalf("second webhook: %+v", p)
	}
}

func TestNewRefusesBadWebhook(t *testing.T) {
	ns := startNATS(t)
	idp := startIdP(t)
	_, err := collector.New(context.Background(), collector.Config{
		OIDC:    idtoken.Config{Issuer: idp.Issuer(), ClientID: "warden"},
		NATSURL: ns.ClientURL(), StorePath: harness.StoreLocation(t, t.TempDir()), Listen: "127.0.0.1:0",
		Keys: event.StaticKeys{}, Webhook: "slack.example.com/hook", Logger: zerolog.Nop(),
	})
	if err == nil || !strings.Contains(err.Error(), "--webhook") {
		t.Fatalf("a webhook without a scheme: %v", err)
	}
}

// A New that fails after dialling NATS (here: the API port is taken)
// returns its error and releases the connection; the connection's close
// handler must not touch the Collector New did not return.
func TestNewFailsCleanlyAfterNATS(t *testing.T) {
	ns := startNATS(t)
	idp := startIdP(t)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	_, err = collector.New(context.Background(), collector.Config{
		OIDC:    idtoken.Config{Issuer: idp.Issuer(), ClientID: "warden"},
		NATSURL: ns.ClientURL(), StorePath: harness.StoreLocation(t, t.TempDir()), Listen: taken.Addr().String(),
		Keys: event.StaticKeys{}, Logger: zerolog.Nop(),
	})
	if err == nil || !strings.Contains(err.Error(), "--listen") {
		t.Fatalf("API port taken: %v", err)
	}
}
