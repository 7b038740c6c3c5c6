package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/wardenhq/warden/pkg/devidp"
	"github.com/wardenhq/warden/tests/harness"
)

// Every collector command refuses, in one line and with a non-zero exit,
// a caller the collector does not accept: no token, an expired one, one
// for another audience or issuer (401), or a verified person outside the
// groups the call needs (403). The real collector, dev IdP and CLI.
func TestCollectorRefusalsThroughCLI(t *testing.T) {
	e := newIdentityEnv(t)
	tokens := []struct {
		name, file, want string
	}{
		{"no token", "", "warden: no ID token: run warden login, or pass --token-file PATH"},
		{"expired", e.Token(devidp.IssueOptions{Sub: harness.ReaderSub, TTL: -time.Minute}), "warden: your ID token expired at "},
		{"another audience", e.Token(devidp.IssueOptions{Sub: harness.ReaderSub, Audience: []string{"grafana"}}),
			`the collector refused your ID token (HTTP 401): ID token refused: token audience [grafana] does not include client id "warden"`},
		{"another issuer", e.Token(devidp.IssueOptions{Sub: harness.ReaderSub, Issuer: "http://127.0.0.1:1"}),
			`the collector refused your ID token (HTTP 401): ID token refused: token issuer "http://127.0.0.1:1" is not the configured issuer`},
		{"not a reader", e.Token(devidp.IssueOptions{Sub: "alice"}), "not allowed (HTTP 403): alice may not "},
	}
	commands := [][]string{
		{"events", "--limit", "1"},
		{"lineage", "01J00000000000000000000000"},
		{"sessions"},
		{"locks"},
		{"sessions", "kill", "--user", "bob", "--reason", "e2e"},
		{"review", "list", "--state", "all"},
	}
	for _, args := range commands {
		for _, tc := range tokens {
			if tc.name == "not a reader" && args[0] == "review" {
				continue // anyone verified may list their own reviews
			}
			out, err := e.WardenEnv([]string{"WARDEN_TOKEN_FILE=" + tc.file}, args...)
			if err == nil || strings.Count(out, "\n") != 1 || !strings.Contains(out, tc.want) || strings.Contains(out, "{") {
				t.Errorf("warden %s with %s: %v\n%s\nwant one line with %q", strings.Join(args, " "), tc.name, err, out, tc.want)
			}
		}
	}
	// The same reader's token passes, so the refusals above are the
	// tokens', not the commands'.
	if out, err := e.Warden("events", "--limit", "1"); err != nil {
		t.Fatalf("reader: %v\n%s", err, out)
	}
}

// warden login caches the verified token, private to its user, and the
// collector commands of that user use it until warden logout.
func TestLoginCachesTokenForCollector(t *testing.T) {
	e := newIdentityEnv(t)
	sam := e.Token(devidp.IssueOptions{Sub: harness.ReaderSub})
	out := e.MustRun(harness.Shell{UID: nobody, GID: nobody, Script: fmt.Sprintf(`
export WARDEN_COLLECTOR=http://%s
warden login --token-file %s >/dev/null
stat -c 'cache=%%a %%u dir=' "$XDG_CACHE_HOME/warden/id_token" | tr -d '\n'; stat -c '%%a' "$XDG_CACHE_HOME/warden"
warden locks >/dev/null && echo read=ok
warden logout >/dev/null
test -e "$XDG_CACHE_HOME/warden/id_token" && echo cache=kept
warden locks || echo after-logout=refused`, harness.CollectorAddr, sam)})
	for _, want := range []string{fmt.Sprintf("cache=600 %d dir=700", nobody), "read=ok", "warden: no ID token: run warden login", "after-logout=refused"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "cache=kept") {
		t.Errorf("warden logout left the token cached:\n%s", out)
	}
}
