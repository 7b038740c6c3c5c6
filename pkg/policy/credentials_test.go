package policy

import (
	"strings"
	"testing"
)

// credTarget is a postgres target whose credentials block ends with extra,
// indented under credentials; extra's first line is line 8.
func credTarget(protocol, address, extra string) string {
	return "targets:\n  - name: db\n    protocol: " + protocol + "\n    address: " + address +
		"\n    credentials:\n      username: app\n      password_file: /etc/warden/secrets/db\n" + extra
}

func TestParseCredentialsTLSAndApplicationName(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		want    UpstreamTLS
		appName string
		sni     string
	}{
		{"defaults", credTarget("postgres", "10.0.0.5:5432", ""), UpstreamTLS{}, "", "10.0.0.5"},
		{"disable", credTarget("postgres", "10.0.0.5:5432", "      tls: {mode: disable}\n"), UpstreamTLS{Mode: TLSDisable}, "", "10.0.0.5"},
		{"require with CA", credTarget("postgres", "10.0.0.5:5432", "      tls:\n        mode: require\n        ca_file: /etc/warden/ca.pem\n"),
			UpstreamTLS{Mode: TLSRequire, CAFile: "/etc/warden/ca.pem"}, "", "10.0.0.5"},
		{"verify-full on a name", credTarget("postgres", "db.internal:5432", "      tls: {mode: verify-full}\n"),
			UpstreamTLS{Mode: TLSVerifyFull}, "", "db.internal"},
		{"verify-full with server_name", credTarget("postgres", "10.0.0.0/24:5432", "      tls: {mode: verify-full, ca_file: /ca.pem, server_name: pg.example.com}\n      application_name: \"{email} via warden ({session})\"\n"),
			UpstreamTLS{Mode: TLSVerifyFull, CAFile: "/ca.pem", ServerName: "pg.example.com"}, "{email} via warden ({session})", "pg.example.com"},
		{"verify-full IPv6", credTarget("postgres", `"[2001:db8::5]:5432"`, "      tls: {mode: verify-full}\n"),
			UpstreamTLS{Mode: TLSVerifyFull}, "", "2001:db8::5"},
		{"server_name may be an IP", credTarget("postgres", "db.internal:5432", "      tls: {mode: verify-full, server_name: 10.1.2.3}\n"),
			UpstreamTLS{Mode: TLSVerifyFull, ServerName: "10.1.2.3"}, "", "10.1.2.3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse([]byte(tt.yaml), "policy.yaml")
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			c := p.Targets[0].Credentials
			if c.TLS != tt.want {
				t.Errorf("TLS = %+v, want %+v", c.TLS, tt.want)
			}
			if c.ApplicationName != tt.appName {
				t.Errorf("ApplicationName = %q, want %q", c.ApplicationName, tt.appName)
			}
			if got := p.Targets[0].TLSServerName(); got != tt.sni {
				t.Errorf("TLSServerName = %q, want %q", got, tt.sni)
			}
			if got := c.TLS.Enabled(); got != (tt.want.Mode == TLSRequire || tt.want.Mode == TLSVerifyFull) {
				t.Errorf("Enabled = %v", got)
			}
		})
	}
}

func TestParseCredentialsErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{"unknown tls key", credTarget("postgres", "10.0.0.5:5432", "      tls:\n        mode: require\n        sslmode: verify-full\n"),
			[]string{`policy.yaml:10:9: target "db": credentials: tls: unknown key "sslmode" (want one of mode, ca_file, server_name)`}},
		{"bad mode", credTarget("postgres", "10.0.0.5:5432", "      tls: {mode: prefer}\n"),
			[]string{`policy.yaml:8:19: target "db": credentials: tls: mode "prefer" is not one of disable, require, verify-full`}},
		{"mode missing", credTarget("postgres", "10.0.0.5:5432", "      tls:\n        ca_file: /ca.pem\n"),
			[]string{`policy.yaml:9:9: target "db": credentials: tls: missing required key "mode"`}},
		{"tls not a mapping", credTarget("postgres", "10.0.0.5:5432", "      tls: verify-full\n"),
			[]string{`policy.yaml:8:12: target "db": credentials: tls: want a mapping, got "verify-full"`}},
		{"relative ca_file", credTarget("postgres", "10.0.0.5:5432", "      tls: {mode: verify-full, ca_file: certs/ca.pem}\n"),
			[]string{`policy.yaml:8:41: target "db": credentials: tls: ca_file "certs/ca.pem" must be an absolute path`}},
		{"ca_file with disable", credTarget("postgres", "10.0.0.5:5432", "      tls: {mode: disable, ca_file: /ca.pem}\n"),
			[]string{`policy.yaml:8:28: target "db": credentials: tls: ca_file has no effect with mode disable`}},
		{"ca_file on mysql", credTarget("mysql", "10.0.0.5:3306", "      tls: {mode: verify-full, ca_file: /ca.pem}\n"),
			[]string{`policy.yaml:8:7: target "db": credentials: tls is implemented for postgres targets only; this target is mysql`}},
		{"server_name with require", credTarget("postgres", "10.0.0.5:5432", "      tls: {mode: require, server_name: db.internal}\n"),
			[]string{`policy.yaml:8:28: target "db": credentials: tls: server_name is checked only with mode verify-full, not require`}},
		{"bad server_name", credTarget("postgres", "10.0.0.5:5432", "      tls: {mode: verify-full, server_name: db_1.internal}\n"),
			[]string{`policy.yaml:8:45: target "db": credentials: tls: server_name: invalid host name "db_1.internal"`}},
		{"verify-full on a prefix", credTarget("postgres", "10.0.0.0/24:5432", "      tls: {mode: verify-full}\n"),
			[]string{`policy.yaml:8:12: target "db": credentials: tls: verify-full needs server_name: address 10.0.0.0/24:5432 is a range`}},
		{"unknown placeholder", credTarget("postgres", "10.0.0.5:5432", "      application_name: \"warden:{user}:{session}\"\n"),
			[]string{`policy.yaml:8:25: target "db": credentials: application_name "warden:{user}:{session}": unknown placeholder {user} (want {sub}, {email}, {session})`}},
		{"unbalanced braces", credTarget("postgres", "10.0.0.5:5432", "      application_name: \"a}{sub{session}\"\n"), []string{
			`policy.yaml:8:25: target "db": credentials: application_name "a}{sub{session}": "}" without a matching "{"`,
			`policy.yaml:8:25: target "db": credentials: application_name "a}{sub{session}": "{" without a matching "}"`,
		}},
		{"empty application_name", credTarget("postgres", "10.0.0.5:5432", "      application_name: \"\"\n"),
			[]string{`policy.yaml:8:25: target "db": credentials: application_name must not be empty`}},
		{"non-ASCII application_name", credTarget("postgres", "10.0.0.5:5432", "      application_name: \"wärden:{sub}\"\n"),
			[]string{`policy.yaml:8:25: target "db": credentials: application_name "wärden:{sub}": only printable ASCII is allowed`}},
		{"application_name too long", credTarget("postgres", "10.0.0.5:5432", "      application_name: \""+strings.Repeat("x", 64)+"{sub}\"\n"),
			[]string{`policy.yaml:8:25: target "db": credentials: application_name "` + strings.Repeat("x", 64) + `{sub}": the text outside placeholders is 64 bytes; PostgreSQL keeps 63`}},
		{"application_name on ssh", credTarget("ssh", "10.0.0.5:22", "      application_name: \"{sub}\"\n"),
			[]string{`policy.yaml:8:7: target "db": credentials: application_name is implemented for postgres targets only; this target is ssh`}},
		{"unknown credentials key lists new ones", credTarget("postgres", "10.0.0.5:5432", "      app_name: x\n"),
			[]string{`policy.yaml:8:7: target "db": credentials: unknown key "app_name" (want one of username, password_file, tls, application_name)`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse([]byte(tt.yaml), "policy.yaml")
			if err == nil {
				t.Fatalf("Parse succeeded with %+v, want errors %q", p, tt.want)
			}
			checkErrors(t, err, tt.want)
		})
	}
}

func TestExpandApplicationName(t *testing.T) {
	v := ApplicationNameValues{Sub: "alice", Email: "alice@example.com", Session: "01J0SESSION"}
	tests := []struct {
		name, template string
		v              ApplicationNameValues
		want           string
	}{
		{"default", "", v, "warden:alice:01J0SESSION"},
		{"all placeholders", "{email} {sub} {session}!", v, "alice@example.com alice 01J0SESSION!"},
		{"missing values", "{sub}/{email}", ApplicationNameValues{}, "unknown/unknown"},
		{"non-ASCII replaced", "{sub}", ApplicationNameValues{Sub: "jürgen\n"}, "j??rgen?"},
		{"truncated to 63 bytes", "warden:{sub}:{session}", ApplicationNameValues{Sub: strings.Repeat("s", 60), Session: "S"},
			"warden:" + strings.Repeat("s", 56)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ExpandApplicationName(tt.template, tt.v)
			if got != tt.want {
				t.Errorf("ExpandApplicationName(%q) = %q, want %q", tt.template, got, tt.want)
			}
			if len(got) > MaxApplicationNameLen {
				t.Errorf("result is %d bytes", len(got))
			}
		})
	}
}

// tls may sit on the target itself, for targets without credentials
// (the client's own login then passes through, over TLS).
func TestParseTargetTLS(t *testing.T) {
	doc := "targets:\n  - name: db\n    protocol: postgres\n    address: db.internal:5432\n    tls: {mode: verify-full, ca_file: /ca.pem}\n"
	p, err := Parse([]byte(doc), "policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	tg := p.Targets[0]
	if want := (UpstreamTLS{Mode: TLSVerifyFull, CAFile: "/ca.pem"}); tg.UpstreamTLS() != want || tg.Credentials != nil {
		t.Fatalf("target tls %+v, credentials %+v", tg.UpstreamTLS(), tg.Credentials)
	}
	// credentials.tls is still honoured.
	p, err = Parse([]byte(credTarget("postgres", "10.0.0.5:5432", "      tls: {mode: require}\n")), "policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Targets[0].UpstreamTLS(); got.Mode != TLSRequire {
		t.Fatalf("credentials.tls not honoured: %+v", got)
	}

	for _, tt := range []struct{ name, yaml, want string }{
		{"both", credTarget("postgres", "10.0.0.5:5432", "      tls: {mode: require}\n") + "    tls: {mode: require}\n",
			`target "db": tls is set both here and under credentials; keep one`},
		{"tcp", "targets:\n  - name: db\n    protocol: tcp\n    address: 10.0.0.5:5432\n    tls: {mode: require}\n",
			`policy.yaml:5:5: target "db": tls: tcp targets are forwarded as raw bytes`},
		{"mysql", "targets:\n  - name: db\n    protocol: mysql\n    address: 10.0.0.5:3306\n    tls: {mode: require}\n",
			`policy.yaml:5:5: target "db": tls is implemented for postgres targets only; this target is mysql`},
		{"bad mode", "targets:\n  - name: db\n    protocol: postgres\n    address: 10.0.0.5:5432\n    tls: {mode: prefer}\n",
			`policy.yaml:5:17: target "db": tls: mode "prefer" is not one of disable, require, verify-full`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml), "policy.yaml")
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want it to contain %q", err, tt.want)
			}
		})
	}
}
