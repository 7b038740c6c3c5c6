package guard

import (
	"testing"

	"github.com/wardenhq/warden/pkg/policy"
)

// HTTP conditions through Evaluate: method and path together, an
// exception ahead of a broader rule, and no match for other protocols'
// requests.
func TestEvaluateHTTP(t *testing.T) {
	rules := []policy.Rule{
		{Name: "health-ok", When: policy.Match{Methods: []string{"DELETE"}, Paths: []string{"/admin/cache"}}, Action: policy.Allow},
		{Name: "no-admin-writes", When: policy.Match{Methods: []string{"POST", "DELETE"}, Paths: []string{"/admin/**"}}, Action: policy.Deny},
		{Name: "sockets", When: policy.Match{Paths: []string{"/ws"}, Upgrade: []string{"websocket"}}, Action: policy.Allow},
	}
	http := func(method, path, upgrade string) Request {
		return Request{Commands: []string{method}, Method: method, Path: path, Upgrade: upgrade}
	}
	for _, tt := range []struct {
		req    Request
		action policy.Action
		rule   string
	}{
		{http("DELETE", "/admin/x", ""), policy.Deny, "no-admin-writes"},
		{http("delete", "/admin/x/y", ""), policy.Deny, "no-admin-writes"},
		{http("DELETE", "/admin/cache", ""), policy.Allow, "health-ok"},
		{http("GET", "/admin/x", ""), policy.Allow, ""},
		{http("GET", "/ws", "websocket"), policy.Allow, "sockets"},
		{http("GET", "/ws", ""), policy.Allow, ""},
		{Request{Kinds: []string{"delete"}, Commands: []string{"DELETE"}}, policy.Allow, ""}, // not HTTP: no path
	} {
		v := Evaluate(rules, nil, []Request{tt.req})
		if v.Action != tt.action || v.Rule != tt.rule {
			t.Errorf("%+v: %s %q, want %s %q", tt.req, v.Action, v.Rule, tt.action, tt.rule)
		}
	}
}
