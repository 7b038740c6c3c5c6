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
			p, err := Parse([]byte(tt.yaml), "policy.yaml", pgOnly)
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
		{"ca_file on mysql", credTarget("mysql", "10.0.0.5:3306", "      tls: {mode: verify-full, ca_file: /ca.pem}\n"), []string{
			`policy.yaml:5:5: target "db": credentials: this target is mysql, and no codec enforces credentials on mysql targets`,
			`policy.yaml:8:7: target "db": credentials: tls: this target is mysql, and no codec enforces upstream tls on mysql targets`,
		}},
		{"server_name with require", credTarget("postgres", "10.0.0.5:5432", "      tls: {mode: require, server_name: db.internal}\n"),
			[]string{`policy.yaml:8:28: target "db": credentials: tls: server_name is checked only with mode verify-full, not require`}},
		{"bad server_name", credTarget("postgres", "10.0.0.5:5432", "      tls: {mode: verify-full, server_name: db_1.internal}\n"),
			[]string{`policy.yaml:8:45: target "db": credentials: tls: server_name: invalid host name "db_1.internal"`}},
		{"verify-full on a prefix", credTarget("postgres", "10.0.0.0/24:5432", "      tls: {mode: verify-full}\n"),
			[]string{`policy.yaml:8:12: target "db": credentials: tls: verify-full needs server_name: address 10.0.0.0/24:5432 is a range`}},
		{"unknown placeholder", credTarget("postgres", "10.0.0.5:5432", "      application_name: \"{sub}:{user}\"\n"),
			[]string{`policy.yaml:8:25: target "db": credentials: application_name "{sub}:{user}": unknown placeholder {user} (want {sub}, {email}, {session}, {client})`}},
		{"unknown placeholder and no person", credTarget("postgres", "10.0.0.5:5432", "      application_name: \"warden:{user}:{session}\"\n"), []string{
			`policy.yaml:8:25: target "db": credentials: application_name "warden:{user}:{session}": unknown placeholder {user}`,
			`policy.yaml:8:25: target "db": credentials: application_name "warden:{user}:{session}" names no person: use {sub} or {email}`,
		}},
		{"unbalanced braces", credTarget("postgres", "10.0.0.5:5432", "      application_name: \"a}{sub}{session\"\n"), []string{
			`policy.yaml:8:25: target "db": credentials: application_name "a}{sub}{session": "}" without a matching "{"`,
			`policy.yaml:8:25: target "db": credentials: application_name "a}{sub}{session": "{" without a matching "}"`,
		}},
		{"no person", credTarget("postgres", "10.0.0.5:5432", "      application_name: \"{client} via warden ({session})\"\n"),
			[]string{`policy.yaml:8:25: target "db": credentials: application_name "{client} via warden ({session})" names no person: use {sub} or {email}`}},
		{"a brace typo hides the person", credTarget("postgres", "10.0.0.5:5432", "      application_name: \"{client} {sub\"\n"), []string{
			`policy.yaml:8:25: target "db": credentials: application_name "{client} {sub": "{" without a matching "}"`,
			`policy.yaml:8:25: target "db": credentials: application_name "{client} {sub" names no person`,
		}},
		{"empty application_name", credTarget("postgres", "10.0.0.5:5432", "      application_name: \"\"\n"),
			[]string{`policy.yaml:8:25: target "db": credentials: application_name must not be empty`}},
		{"non-ASCII application_name", credTarget("postgres", "10.0.0.5:5432", "      application_name: \"wärden:{sub}\"\n"),
			[]string{`policy.yaml:8:25: target "db": credentials: application_name "wärden:{sub}": only printable ASCII is allowed`}},
		{"application_name too long", credTarget("postgres", "10.0.0.5:5432", "      application_name: \""+strings.Repeat("x", 64)+"{sub}\"\n"),
			[]string{`policy.yaml:8:25: target "db": credentials: application_name "` + strings.Repeat("x", 64) + `{sub}": the text outside placeholders is 64 bytes; PostgreSQL keeps 63`}},
		{"application_name on ssh", credTarget("ssh", "10.0.0.5:22", "      application_name: \"{sub}\"\n"),
			[]string{`policy.yaml:5:5: target "db": credentials: this target is ssh, and no codec enforces credentials on ssh targets (ssh targets take access only until one does)`}},
		{"unknown credentials key lists new ones", credTarget("postgres", "10.0.0.5:5432", "      app_name: x\n"),
			[]string{`policy.yaml:8:7: target "db": credentials: unknown key "app_name" (want one of username, password_file, tls, application_name, key_file, user_ca_key_file)`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse([]byte(tt.yaml), "policy.yaml", pgOnly)
			if err == nil {
				t.Fatalf("Parse succeeded with %+v, want errors %q", p, tt.want)
			}
			checkErrors(t, err, tt.want)
		})
	}
}

func TestExpandApplicationName(t *testing.T) {
	v := ApplicationNameValues{Sub: "alice", Email: "alice@example.com", Session: "01J0SESSION", Client: "psql"}
	r := strings.Repeat
	sub53 := r("s", 53)
	tests := []struct {
		name, template string
		v              ApplicationNameValues
		want           string
	}{
		{"default", "", v, "psql [warden:alice]"},
		{"default without a client name", "", ApplicationNameValues{Sub: "alice"}, "[warden:alice]"},
		{"all placeholders", "{email} {sub} {session} {client}!", v, "alice@example.com alice 01J0SESSION psql!"},
		{"missing values", "{sub}/{email}/{session}/{client}", ApplicationNameValues{}, "unknown/unknown/unknown/"},
		{"client cannot imitate the person", "", ApplicationNameValues{Sub: "mallory", Client: "job [warden:alice]"}, "job (warden:alice) [warden:mallory]"},
		{"spaces trimmed", "  {client} {sub}  ", ApplicationNameValues{Sub: "alice"}, "alice"},
		{"non-ASCII replaced", "{client} {sub}", ApplicationNameValues{Sub: "jürgen\n", Client: "t\x00ol"}, "t?ol j??rgen?"},
		// 63 bytes: the client's name gives way to the person.
		{"client shortened first", "", ApplicationNameValues{Sub: "alice", Client: r("c", 100)},
			r("c", 48) + " [warden:alice]"},
		{"client cut away leaves no space", "", ApplicationNameValues{Sub: sub53, Client: "psql"},
			"[warden:" + sub53 + "]"},
		{"then the session", "{client}{sub}:{session}", ApplicationNameValues{Sub: r("s", 40), Session: r("S", 30), Client: "psql"},
			r("s", 40) + ":" + r("S", 22)},
		{"then email, when sub names the person", "[{email} {sub}]", ApplicationNameValues{Sub: r("s", 30), Email: r("e", 40) + "@x"},
			"[" + r("e", 30) + " " + r("s", 30) + "]"},
		{"then the template's text", "warden:{sub}:{session}", ApplicationNameValues{Sub: r("s", 60), Session: "S"},
			"war" + r("s", 60)},
		{"email alone is the person", "{client} {email}", ApplicationNameValues{Email: r("e", 58) + "@x.io", Client: "psql"},
			r("e", 58) + "@x.io"},
		{"sub longer than the limit is cut", "", ApplicationNameValues{Sub: r("s", 70), Client: "psql"},
			r("s", 63)},
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
	p, err := Parse([]byte(doc), "policy.yaml", pgOnly)
	if err != nil {
		t.Fatal(err)
	}
	tg := p.Targets[0]
	if want := (UpstreamTLS{Mode: TLSVerifyFull, CAFile: "/ca.pem"}); tg.UpstreamTLS() != want || tg.Credentials != nil {
		t.Fatalf("target tls %+v, credentials %+v", tg.UpstreamTLS(), tg.Credentials)
	}
	// credentials.tls is still honoured.
	p, err = Parse([]byte(credTarget("postgres", "10.0.0.5:5432", "      tls: {mode: require}\n")), "policy.yaml", pgOnly)
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
			`policy.yaml:5:5: target "db": tls: this target is tcp, and no codec enforces upstream tls on tcp targets`},
		{"mysql", "targets:\n  - name: db\n    protocol: mysql\n    address: 10.0.0.5:3306\n    tls: {mode: require}\n",
			`policy.yaml:5:5: target "db": tls: this target is mysql, and no codec enforces upstream tls on mysql targets`},
		{"bad mode", "targets:\n  - name: db\n    protocol: postgres\n    address: 10.0.0.5:5432\n    tls: {mode: prefer}\n",
			`policy.yaml:5:17: target "db": tls: mode "prefer" is not one of disable, require, verify-full`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml), "policy.yaml", pgOnly)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want it to contain %q", err, tt.want)
			}
		})
	}
}
