package main

import (
	"context"
	"encoding/json"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/wardenhq/warden/collector/api"
	"github.com/wardenhq/warden/collector/natsembed"
	"github.com/wardenhq/warden/collector/reviews"
	"github.com/wardenhq/warden/collector/store"
	"github.com/wardenhq/warden/pkg/devidp"
	"github.com/wardenhq/warden/pkg/idtoken"
	"github.com/wardenhq/warden/pkg/review"
)

// reviewCLI is a collector API with a running review service (real NATS,
// SQLite, dev IdP and go-oidc verifier) and token files of a few people.
type reviewCLI struct {
	t      *testing.T
	url    string
	svc    *reviews.Service
	tokens map[string]string // sub → token file
}

func newReviewCLI(t *testing.T) *reviewCLI {
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
	idpDone := make(chan struct{})
	go func() { defer close(idpDone); _ = idp.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-idpDone })

	v, err := idtoken.NewVerifier(ctx, idtoken.Config{Issuer: idp.Issuer(), ClientID: "warden"})
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(filepath.Join(t.TempDir(), "events.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ns, err := natsembed.Start(natsembed.Config{Listen: "127.0.0.1:0", StoreDir: t.TempDir(), Logger: zerolog.Nop(), AllowAnonymous: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	svc, err := reviews.New(reviews.Config{Store: st, NATS: nc, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	svcCtx, svcCancel := context.WithCancel(context.Background())
	svcDone := make(chan error, 1)
	go func() { svcDone <- svc.Run(svcCtx) }()
	t.Cleanup(func() { svcCancel(); <-svcDone })
	hs := httptest.NewServer(api.New(api.Config{Store: st, Verifier: v, Readers: []string{"soc"}, Reviews: svc, Logger: zerolog.Nop()}))
	t.Cleanup(hs.Close)

	c := &reviewCLI{t: t, url: hs.URL, svc: svc, tokens: map[string]string{}}
	for sub, groups := range map[string][]string{"bob": {"dba"}, "alice": {"dba"}, "eve": {"engineering"}} {
		tok, err := idp.Issue(devidp.IssueOptions{Sub: sub, Email: sub + "@example.com", Groups: groups})
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), sub+".token")
		if err := os.WriteFile(path, []byte(tok+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		c.tokens[sub] = path
	}
	return c
}

// run runs warden review ARGS as sub and returns the exit code, standard
// output and standard error.
func (c *reviewCLI) run(sub string, args ...string) (int, string, string) {
	c.t.Helper()
	args = append(args, "--collector", c.url)
	if sub != "" {
		args = append(args, "--token-file", c.tokens[sub])
	}
	dir := c.t.TempDir()
	out, err := os.Create(filepath.Join(dir, "stdout"))
	if err != nil {
		c.t.Fatal(err)
	}
	errf, err := os.Create(filepath.Join(dir, "stderr"))
	if err != nil {
		c.t.Fatal(err)
	}
	oldOut, oldErr := os.Stdout, os.Stderr
	os.Stdout, os.Stderr = out, errf
	code := runReview(args)
	os.Stdout, os.Stderr = oldOut, oldErr
	out.Close()
	errf.Close()
	o, _ := os.ReadFile(out.Name())
	e, _ := os.ReadFile(errf.Name())
	return code, string(o), string(e)
}

func TestReviewCLI(t *testing.T) {
	c := newReviewCLI(t)
	r, _, err := c.svc.Open(context.Background(), review.OpenRequest{
		Kind: review.KindStatement, Host: "bastion-1", Requester: review.Person{Sub: "bob", Email: "bob@example.com"},
		Target: "orders-db", Rule: "unbounded-writes", Statement: "DELETE FROM t", Fingerprint: review.Fingerprint("DELETE FROM t"),
		Approvers: []string{"dba"}, Require: review.RequireAny, GrantOnce: true,
	})
	if err != nil {
		t.Fatal(err)
	}

	code, out, stderr := c.run("alice", "list")
	if code != 0 || !strings.HasPrefix(out, "ID ") || !strings.Contains(out, r.ID) || !strings.Contains(out, "DELETE FROM t") || !strings.Contains(out, "bob@example.com") {
		t.Fatalf("alice's list: %d\n%s%s", code, out, stderr)
	}
	if code, out, stderr = c.run("eve", "list"); code != 0 || out != "" || !strings.Contains(stderr, "no pending reviews") {
		t.Fatalf("eve's list: %d %q %q", code, out, stderr)
	}

	// Refusals are one line each, saying what is missing.
	code, out, stderr = c.run("bob", "approve", r.ID)
	if code != 1 || out != "" || strings.Count(stderr, "\n") != 1 ||
		!strings.Contains(stderr, "warden review approve: not allowed (HTTP 403)") || !strings.Contains(stderr, "you requested this review") {
		t.Fatalf("bob approving his own: %d %q %q", code, out, stderr)
	}
	code, _, stderr = c.run("eve", "show", r.ID)
	if code != 1 || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, "HTTP 403") {
		t.Fatalf("eve's show: %d %q", code, stderr)
	}
	garbage := filepath.Join(t.TempDir(), "garbage")
	if err := os.WriteFile(garbage, []byte("eyJhbGciOiJub25lIn0.eyJleHAiOjQxMDI0NDQ4MDB9.x"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, stderr = c.run("", "list", "--token-file", garbage)
	if code != 1 || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, "HTTP 401") || !strings.Contains(stderr, "run warden login") {
		t.Fatalf("a forged token: %d %q", code, stderr)
	}

	code, out, stderr = c.run("alice", "approve", r.ID, "--reason", "checked")
	if code != 0 || !strings.HasPrefix(out, r.ID+" approved: bob@example.com's \"DELETE FROM t\" on orders-db may run once until ") {
		t.Fatalf("alice approving: %d %q %q", code, out, stderr)
	}
	code, out, stderr = c.run("alice", "deny", r.ID)
	if code != 1 || !strings.Contains(stderr, "already approved") {
		t.Fatalf("deny after approval: %d %q %q", code, out, stderr)
	}

	code, out, _ = c.run("bob", "show", r.ID, "--json")
	var got review.Review
	if code != 0 || json.Unmarshal([]byte(out), &got) != nil || got.State != review.Approved {
		t.Fatalf("bob's show --json: %d %q", code, out)
	}
	code, out, _ = c.run("bob", "show", r.ID)
	for _, want := range []string{"review     " + r.ID, "state      approved, grants until", "approvers  dba (require any)", "alice@example.com approved for dba: \"checked\""} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("bob's show lacks %q:\n%s", want, out)
		}
	}
	code, out, _ = c.run("alice", "list", "--state", "all", "--json")
	if code != 0 || strings.Count(out, "\n") != 1 || !strings.Contains(out, `"state":"approved"`) {
		t.Fatalf("list --json: %d %q", code, out)
	}
}

func TestReviewCLIArguments(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
	}{
		{nil, 2},
		{[]string{"nod"}, 2},
		{[]string{"list", "--state", "open"}, 2},
		{[]string{"list", "--kind", "ssh"}, 2},
		{[]string{"list", "extra"}, 2},
		{[]string{"show"}, 2},
		{[]string{"show", "R-1"}, 2},
		{[]string{"approve", "R-01ARZ3NDEKTSV4RRFFQ69G5FAV", "R-01ARZ3NDEKTSV4RRFFQ69G5FAV"}, 2},
		{[]string{"deny", "--reason"}, 2},
		{[]string{"help"}, 0},
	} {
		devnull, _ := os.Open(os.DevNull)
		oldOut, oldErr := os.Stdout, os.Stderr
		os.Stdout, os.Stderr = devnull, devnull
		code := runReview(tc.args)
		os.Stdout, os.Stderr = oldOut, oldErr
		devnull.Close()
		if code != tc.code {
			t.Errorf("warden review %q: exit %d, want %d", tc.args, code, tc.code)
		}
	}
}

func TestDecisionSummary(t *testing.T) {
	now := time.Date(2026, 12, 2, 7, 0, 0, 0, time.UTC)
	until := now.Add(time.Hour)
	r := &review.Review{ID: "R-X", Kind: review.KindStatement, State: review.Pending, Requester: review.Person{Sub: "bob"},
		Target: "orders-db", Statement: "DELETE FROM t", Approvers: []string{"dba", "security"}, Require: review.RequireAll,
		Decisions: []review.Decision{{By: review.Person{Sub: "alice"}, Approve: true, For: []string{"dba"}}}}
	if got := decisionSummary(r, now); !strings.Contains(got, "counts for dba; still pending (require all: needs security too)") {
		t.Errorf("pending: %q", got)
	}
	r.State = review.Denied
	if got := decisionSummary(r, now); got != `R-X denied: bob's "DELETE FROM t" on orders-db` {
		t.Errorf("denied: %q", got)
	}
	r.Kind, r.State, r.GrantFor, r.GrantUntil = review.KindAccess, review.Approved, review.Duration(time.Hour), &until
	if got := decisionSummary(r, now); !strings.HasPrefix(got, "R-X approved: 1h0m0s of access to orders-db for bob is granted until ") || !strings.HasSuffix(got, "(1h0m0s)") {
		t.Errorf("access approved: %q", got)
	}
}
