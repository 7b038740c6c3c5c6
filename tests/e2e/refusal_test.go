package e2e

import (
	"fmt"
	"strings"
	"testing"

	"github.com/wardenhq/warden/agent/daemon"
	"github.com/wardenhq/warden/pkg/collectorclient"
	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/tests/harness"
	"github.com/wardenhq/warden/tests/testenv"
)

// An unbound psql is sent to the proxy, which answers with PostgreSQL's own
// ErrorResponse carrying the reason and the fix; the server never sees a
// byte.
func TestUnboundPsqlGetsPostgresError(t *testing.T) {
	testenv.RequireCommand(t, "psql")
	e := &identityEnv{Env: harness.NewEnv(t)}
	e.target = e.Serve("tcp4", "127.0.0.1:0")
	e.StartAgent(fmt.Sprintf(`targets:
  - name: orders-db
    protocol: postgres
    address: 127.0.0.1:%d
access:
  - groups: [engineering]
    targets: [orders-db]
`, e.target.Port()))
	for _, sslmode := range []string{"disable", "prefer"} {
		out := e.refused(t, harness.Shell{UID: nobody, GID: nobody, Script: fmt.Sprintf(
			`psql "host=127.0.0.1 port=%d user=app dbname=orders sslmode=%s connect_timeout=10" -c 'select 1'`, e.target.Port(), sslmode)},
			daemon.MsgUnbound)
		if !strings.Contains(out, "FATAL") {
			t.Fatalf("not a PostgreSQL error:\n%s", out)
		}
	}
	ev := e.WaitEvent(collectorclient.Query{Type: string(event.NetConnect), Target: "orders-db"}, "refused connect", func(ev *event.Event) bool {
		return ev.Decision != nil && ev.Decision.Action == event.Deny
	})
	if ev.Identity != nil || ev.Decision.Reason != daemon.MsgUnbound || ev.Process == nil || ev.Process.Binary == "" {
		t.Fatalf("event %+v decision %+v process %+v", ev.Identity, ev.Decision, ev.Process)
	}
}
