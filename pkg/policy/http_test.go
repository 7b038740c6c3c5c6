package policy

import (
	"strings"
	"testing"
)

// httpEnf is what the HTTP codec declares.
var httpEnf = Enforcement{
	ProtocolHTTP:  {CapMethods, CapPaths, CapUpgrade, CapCommands, CapReview, CapColumnMasking, CapContentMasking, CapCredentials, CapUpstreamTLS, CapHTTPSettings},
	ProtocolHTTPS: {CapMethods, CapPaths, CapUpgrade, CapCommands, CapReview, CapColumnMasking, CapContentMasking, CapCredentials, CapUpstreamTLS, CapHTTPSettings},
}

func TestMatchPath(t *testing.T) {
	tests := []struct {
		pattern, path string
		want          bool
	}{
		{"/admin/**", "/admin", true},
		{"/admin/**", "/admin/", true},
		{"/admin/**", "/admin/x", true},
		{"/admin/**", "/admin/x/y/z", true},
		{"/admin/**", "/administrator", false},
		{"/admin/**", "/", false},
		{"/api/v1/users/*", "/api/v1/users/42", true},
		{"/api/v1/users/*", "/api/v1/users/42/keys", false},
		{"/api/v1/users/*", "/api/v1/users", false},
		{"/api/v1/users/*", "/api/v1/users/", true}, // an empty segment is a segment
		{"/api/*/users", "/api/v2/users", true},
		{"/api/**/keys", "/api/keys", true},
		{"/api/**/keys", "/api/a/b/keys", true},
		{"/api/**/keys", "/api/a/b/keys/x", false},
		{"/files/*.json", "/files/a.json", true},
		{"/files/*.json", "/files/a.jsonx", false},
		{"/files/*.json", "/files/a/b.json", false},
		{"/Admin/**", "/admin/x", false}, // paths are case-sensitive
		{"/exact", "/exact", true},
		{"/exact", "/exact/", false},
		{"/**", "/anything/at/all", true},
	}
	for _, tt := range tests {
		if got := MatchPath(tt.pattern, tt.path); got != tt.want {
			t.Errorf("MatchPath(%q, %q) = %v, want %v", tt.pattern, tt.path, got, tt.want)
		}
	}
}

func TestMatchesHTTP(t *testing.T) {
	m := Match{Methods: []string{"POST", "DELETE"}, Paths: []string{"/admin/**"}}
	for _, tt := range []struct {
		method, path, upgrade string
		want                  bool
	}{
		{"DELETE", "/admin/x", "", true},
		{"delete", "/admin/x", "", true}, // methods ignore case: matching more is the safe error
		{"GET", "/admin/x", "", false},
		{"POST", "/public", "", false},
		{"", "", "", false}, // not an HTTP request
	} {
		if got := m.MatchesHTTP(tt.method, tt.path, tt.upgrade); got != tt.want {
			t.Errorf("MatchesHTTP(%q, %q, %q) = %v, want %v", tt.method, tt.path, tt.upgrade, got, tt.want)
		}
	}
	ws := Match{Upgrade: []string{"websocket"}}
	if ws.MatchesHTTP("GET", "/ws", "") || !ws.MatchesHTTP("GET", "/ws", "websocket") || ws.MatchesHTTP("GET", "/ws", "h2c") {
		t.Error("upgrade condition: want a match only for the named protocol")
	}
	if !(Match{}).MatchesHTTP("", "", "") {
		t.Error("a Match without HTTP conditions must not constrain")
	}
}

func TestParseHTTP(t *testing.T) {
	src := `targets:
  - name: api
    protocol: https
    address: api.internal:443
    tls: {mode: verify-full, ca_file: /etc/warden/api-ca.pem}
    credentials: {header: authorization, value_file: /etc/warden/secrets/api}
    http: {max_body: 8MiB}
  - name: web
    protocol: http
    address: 10.0.0.7:80
rules:
  - name: no-admin-writes
    targets: [api, web]
    when: {methods: [post, PUT, DELETE], paths: ["/admin/**", "/api/v1/users/*"]}
    action: deny
  - name: ws
    targets: [web]
    when: {paths: ["/ws"], upgrade: [WebSocket]}
    action: allow
`
	p, err := Parse([]byte(src), "policy.yaml", httpEnf)
	if err != nil {
		t.Fatal(err)
	}
	api, _ := p.Target("api")
	if api.Credentials == nil || api.Credentials.Header != "Authorization" || api.Credentials.ValueFile != "/etc/warden/secrets/api" {
		t.Errorf("credentials = %+v", api.Credentials)
	}
	if got := api.HTTPSettings().MaxBody; got != 8<<20 {
		t.Errorf("max_body = %d", got)
	}
	web, _ := p.Target("web")
	if got := web.HTTPSettings().MaxBody; got != DefaultMaxBody {
		t.Errorf("default max_body = %d", got)
	}
	if got := strings.Join(p.Rules[0].When.Methods, ","); got != "POST,PUT,DELETE" {
		t.Errorf("methods = %s", got)
	}
	if got := strings.Join(p.Rules[1].When.Upgrade, ","); got != "websocket" {
		t.Errorf("upgrade = %s", got)
	}
}

func TestParseHTTPErrors(t *testing.T) {
	tests := []struct {
		name, yaml string
		enf        Enforcement
		want       []string
	}{
		{"ambiguous path pattern", tgt("http", "10.0.0.5:80", "rules:\n  - {name: r, targets: [t], when: {paths: [\"/a/%2F\", \"/a/../b\", \"admin\", \"/a/x**\", \"/a;b\"]}, action: deny}\n"), httpEnf, []string{
			`paths: "/a/%2F" must be a decoded path`,
			`paths: "/a/../b" must not contain . or .. segments`,
			`paths: "admin" must start with /`,
			`paths: "/a/x**" ** must be a whole segment`,
			`paths: "/a;b" must be a decoded path`,
		}},
		{"bad method", tgt("http", "10.0.0.5:80", "rules:\n  - {name: r, targets: [t], when: {methods: [\"GET POST\"]}, action: deny}\n"), httpEnf,
			[]string{`methods: "GET POST" is not an HTTP method`}},
		{"paths without a codec", tgt("http", "10.0.0.5:80", "rules:\n  - {name: r, targets: [t], when: {paths: [/a]}, action: deny}\n"), pgOnly,
			[]string{`no codec enforces paths on http targets`}},
		{"paths on postgres", tgt("postgres", "10.0.0.5:5432", "rules:\n  - {name: r, targets: [t], when: {paths: [/a]}, action: deny}\n"), pgOnly,
			[]string{`no codec enforces paths on postgres targets`}},
		{"reserved credential header", tgt("http", "10.0.0.5:80", "    credentials: {header: X-Warden-User, value_file: /s}\n"), httpEnf,
			[]string{`header "X-Warden-User": X-Warden-* headers are Warden's own`}},
		{"framing credential header", tgt("http", "10.0.0.5:80", "    credentials: {header: content-length, value_file: /s}\n"), httpEnf,
			[]string{`frames or routes the request`}},
		{"relative value_file", tgt("http", "10.0.0.5:80", "    credentials: {header: Authorization, value_file: s}\n"), httpEnf,
			[]string{`value_file "s" must be an absolute path`}},
		{"https downgraded upstream", tgt("https", "10.0.0.5:443", "    tls: {mode: disable}\n"), httpEnf,
			[]string{`an https target speaks TLS upstream; tls mode disable is not allowed`}},
		{"http block on postgres", tgt("postgres", "10.0.0.5:5432", "    http: {max_body: 1MiB}\n"), pgOnly,
			[]string{`only http and https targets have an http block`}},
		{"max_body too large", tgt("http", "10.0.0.5:80", "    http: {max_body: 1GiB}\n"), httpEnf,
			[]string{`max_body "1GiB" is not a size`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml), "policy.yaml", tt.enf)
			if err == nil {
				t.Fatalf("Parse succeeded, want errors %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not contain %q:\n%v", w, err)
				}
			}
		})
	}
}
