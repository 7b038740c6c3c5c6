package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/wardenhq/warden/pkg/collectorclient"
	"github.com/wardenhq/warden/pkg/devidp"
	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/tests/harness"
)

// Values the Redis tests store and must never see through Warden, nor in
// any event.
const (
	redisEmail = "carol.secret@example.com"
	redisCard  = "4111111111111111"
)

// redisEnv is an agent protecting a real redis-server 7 as target cache,
// with the vaulted ACL user app injected, FLUSHALL, FLUSHDB and CONFIG SET
// denied, and user:*:email keys and card numbers masked.
type redisEnv struct {
	*harness.Env
	rd     *harness.Redis
	alice  string // token file
	client string // the go-redis client binary
}

func newRedisEnv(t *testing.T) *redisEnv {
	e := &redisEnv{Env: harness.NewEnv(t)}
	e.rd = e.StartRedis()
	secret := filepath.Join(e.Dir, "cache.secret")
	if err := os.WriteFile(secret, []byte(harness.RedisAppPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.StartAgent(fmt.Sprintf(`targets:
  - name: cache
    protocol: redis
    address: %s
    credentials:
      username: %s
      password_file: %s
access:
  - groups: [engineering]
    targets: [cache]
rules:
  - name: no-flush
    targets: [cache]
    when: { commands: [flushall, flushdb, "config set"] }
    action: deny
masking:
  - name: pii
    targets: [cache]
    keys: ["user:*:email"]
    detectors: [credit_card]
`, e.rd.Addr(), harness.RedisAppUser, secret))
	e.alice = e.Token(devidp.IssueOptions{Sub: "alice"})
	e.client = harness.TestClient(t, "redisclient")
	return e
}

// sh runs script as an unprivileged user logged in as alice and returns
// its output whatever the exit status.
func (e *redisEnv) sh(t *testing.T, script string) string {
	t.Helper()
	out, _ := e.Run(harness.Shell{UID: nobody, GID: nobody, Script: fmt.Sprintf(
		"warden login --token-file %s >/dev/null || { echo LOGIN-FAILED; exit 9; }\n%s", e.alice, script)})
	if strings.Contains(out, "LOGIN-FAILED") {
		t.Fatalf("login failed:\n%s", out)
	}
	return out
}

// cli is redis-cli to the target: no password anywhere.
func (e *redisEnv) cli() string { return fmt.Sprintf("redis-cli -h 127.0.0.1 -p %d", e.rd.Port) }

func TestRedisL7(t *testing.T) {
	e := newRedisEnv(t)
	e.rd.MustAdmin("SET", "user:1:email", redisEmail)
	e.rd.MustAdmin("SET", "note:1", "paid with "+redisCard)
	e.rd.MustAdmin("SET", "survivor", "still here")
	// A FLUSHALL or FLUSHDB that ran would take these with it.
	survives := func(t *testing.T) {
		t.Helper()
		if got := e.rd.MustAdmin("EXISTS", "user:1:email", "note:1", "survivor"); got != "3" {
			t.Fatalf("keys did not survive: %s of 3 left", got)
		}
	}

	t.Run("AUTH injected", func(t *testing.T) {
		// The server requires a login: without one it refuses.
		out, _ := exec.Command("nsenter", "--net="+e.NS.Path, "--", "redis-cli", "-h", "127.0.0.1", "-p", fmt.Sprint(e.rd.Port), "GET", "survivor").CombinedOutput()
		if !strings.Contains(string(out), "NOAUTH") {
			t.Fatalf("redis-server does not require a login:\n%s", out)
		}
		out2 := e.sh(t, e.cli()+" ACL WHOAMI; "+e.cli()+" GET survivor; "+e.cli()+" AUTH whatever-i-type")
		if !strings.Contains(out2, harness.RedisAppUser+"\n") || !strings.Contains(out2, "still here") || !strings.Contains(out2, "OK") {
			t.Fatalf("no password typed, yet not logged in as %s:\n%s", harness.RedisAppUser, out2)
		}
	})

	t.Run("no login refused in Redis terms", func(t *testing.T) {
		out, _ := e.Run(harness.Shell{UID: nobody, GID: nobody, Script: e.cli() + " GET survivor"})
		if !strings.Contains(out, "NOPERM warden: no verified identity") || strings.Contains(out, "still here") {
			t.Fatalf("a client without a login:\n%s", out)
		}
	})

	t.Run("FLUSHALL denied", func(t *testing.T) {
		out := e.sh(t, e.cli()+" FLUSHALL; "+e.cli()+" FLUSHDB; "+e.cli()+" CONFIG SET maxmemory 1")
		for _, want := range []string{`NOPERM warden: FLUSHALL denied by rule "no-flush"`, `NOPERM warden: FLUSHDB denied by rule "no-flush"`,
			`NOPERM warden: CONFIG SET denied by rule "no-flush"`} {
			if !strings.Contains(out, want) {
				t.Fatalf("want %q in:\n%s", want, out)
			}
		}
		survives(t)
		if got := e.rd.MustAdmin("CONFIG", "GET", "maxmemory"); !strings.HasSuffix(got, "\n0") {
			t.Fatalf("CONFIG SET ran: %q", got)
		}
	})

	t.Run("FLUSHALL inside MULTI", func(t *testing.T) {
		out := e.sh(t, fmt.Sprintf(`printf 'MULTI\nSET tx:a 1\nFLUSHALL\nEXEC\n' | %s`, e.cli()))
		if !strings.Contains(out, `NOPERM warden: FLUSHALL denied`) || !strings.Contains(out, "EXECABORT") {
			t.Fatalf("FLUSHALL queued in MULTI not refused:\n%s", out)
		}
		survives(t)
		if got := e.rd.MustAdmin("EXISTS", "tx:a"); got != "0" {
			t.Fatal("the doomed transaction's SET ran")
		}
	})

	t.Run("pipelined FLUSHALL", func(t *testing.T) {
		// Three inline commands in one write, over bash's own socket.
		out := e.sh(t, fmt.Sprintf(`exec 3<>/dev/tcp/127.0.0.1/%d
printf 'SET pipe:0 zero\r\nFLUSHALL\r\nGET pipe:0\r\n' >&3
timeout 3 cat <&3`, e.rd.Port))
		if !strings.Contains(out, "+OK\r\n-NOPERM warden: FLUSHALL denied") || !strings.Contains(out, "$4\r\nzero\r\n") {
			t.Fatalf("pipelined inline commands:\n%q", out)
		}
		survives(t)
		out = e.sh(t, fmt.Sprintf("%s 127.0.0.1:%d pipeline", e.client, e.rd.Port))
		for _, want := range []string{"pipe-set: OK", `pipe-flushall: error: NOPERM warden: FLUSHALL denied by rule "no-flush"`, "pipe-get: x",
			"tx: error: EXECABORT"} {
			if !strings.Contains(out, want) {
				t.Fatalf("go-redis: want %q in:\n%s", want, out)
			}
		}
		survives(t)
		if got := e.rd.MustAdmin("EXISTS", "tx:1"); got != "0" {
			t.Fatal("go-redis's doomed transaction ran its SET")
		}
	})

	t.Run("EVAL flushall", func(t *testing.T) {
		out := e.sh(t, e.cli()+` EVAL "redis.call('flushall')" 0; `+e.cli()+` FUNCTION FLUSH`)
		if !strings.Contains(out, "NOPERM warden: EVAL denied: a script can run any command out of Warden's sight") ||
			!strings.Contains(out, `(rule "no-flush"); a rule must allow scripting explicitly`) ||
			!strings.Contains(out, "NOPERM warden: FUNCTION FLUSH denied") {
			t.Fatalf("scripting not refused:\n%s", out)
		}
		survives(t)
	})

	t.Run("masking", func(t *testing.T) {
		out := e.sh(t, e.cli()+" GET user:1:email; "+e.cli()+" GET note:1; "+e.cli()+" MGET survivor user:1:email")
		if strings.Contains(out, redisEmail) || strings.Contains(out, redisCard) {
			t.Fatalf("unmasked value reached the client:\n%s", out)
		}
		for _, want := range []string{"****\n", "paid with [masked:credit_card]", "still here\n****"} {
			if !strings.Contains(out, want) {
				t.Fatalf("want %q in:\n%s", want, out)
			}
		}
	})

	t.Run("Pub/Sub", func(t *testing.T) {
		cmd := e.Command(harness.Shell{UID: nobody, GID: nobody, Script: fmt.Sprintf(
			"warden login --token-file %s >/dev/null || exit 9\ntimeout 6 %s SUBSCRIBE news", e.alice, e.cli())})
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Publish until the subscriber has heard (it subscribes once
		// logged in), then let its timeout end it.
		e.Eventually("a subscriber", func() error {
			if n := e.rd.MustAdmin("PUBLISH", "news", "paid with "+redisCard); n != "1" {
				return fmt.Errorf("%s subscribers", n)
			}
			return nil
		})
		cmd.Wait()
		if !strings.Contains(out.String(), "subscribe\nnews\n1") || !strings.Contains(out.String(), "message\nnews\npaid with [masked:credit_card]") ||
			strings.Contains(out.String(), redisCard) {
			t.Fatalf("subscriber saw:\n%s", out.String())
		}
	})

	t.Run("go-redis", func(t *testing.T) {
		// go-redis asks for RESP3 first and falls back on NOPROTO.
		out := e.sh(t, fmt.Sprintf("%s 127.0.0.1:%d basic", e.client, e.rd.Port))
		for _, want := range []string{"whoami: app", "set: OK", "get: v1", "email: ****", "eval: error: NOPERM warden: EVAL denied"} {
			if !strings.Contains(out, want) {
				t.Fatalf("want %q in:\n%s", want, out)
			}
		}
		survives(t)
	})

	t.Run("redis.command events", func(t *testing.T) {
		q := collectorclient.Query{Type: string(event.RedisCommand), Target: "cache", Limit: 1000}
		denied := e.WaitEvent(q, "FLUSHALL denied", func(ev *event.Event) bool {
			return ev.Data["command"] == "FLUSHALL" && ev.Decision != nil && ev.Decision.Action == event.Deny && ev.Decision.Rule == "no-flush"
		})
		if denied.Identity == nil || denied.Identity.Sub != "alice" {
			t.Fatalf("denial not attributed to alice: %+v", denied.Identity)
		}
		get := e.WaitEvent(q, "GET user:1:email", func(ev *event.Event) bool {
			k, _ := ev.Data["keys"].([]any)
			return ev.Data["command"] == "GET" && len(k) == 1 && k[0] == "user:1:email"
		})
		if fmt.Sprint(get.Data["arg_count"]) != "1" {
			t.Fatalf("GET's arg_count: %v", get.Data)
		}
		e.WaitEvent(q, "CONFIG SET", func(ev *event.Event) bool {
			return ev.Data["command"] == "CONFIG" && ev.Data["subcommand"] == "SET" && fmt.Sprint(ev.Data["arg_count"]) == "3"
		})
		e.WaitEvent(q, "EVAL refused as scripting", func(ev *event.Event) bool {
			return ev.Data["command"] == "EVAL" && ev.Decision != nil && ev.Decision.Rule == "scripting"
		})
		conformsToSchema(t, e.Events(q))
		// Never values: no password, script, or stored value in any
		// event's data. (The process's own command lines are recorded,
		// as for every event, and hold the test's scripts.)
		for _, ev := range e.Events(q) {
			b, _ := json.Marshal(ev.Data)
			for _, secret := range []string{"whatever-i-type", "flushall')", "zero", `"v1"`, harness.RedisAppPassword} {
				if strings.Contains(string(b), secret) {
					t.Fatalf("event holds the value %q: %s", secret, b)
				}
			}
		}
	})
}

// conformsToSchema checks events, as the collector returns them, against
// the event schema in force.
func conformsToSchema(t *testing.T, evs []event.Event) {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(event.JSONSchema))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource(event.JSONSchemaID, doc); err != nil {
		t.Fatal(err)
	}
	sch, err := c.Compile(event.JSONSchemaID)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs {
		b, _ := json.Marshal(ev)
		v, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err == nil {
			err = sch.Validate(v)
		}
		if err != nil {
			t.Errorf("%s event does not conform to the schema: %v\n%s", ev.Type, err, b)
		}
	}
}
