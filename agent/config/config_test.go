package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestLoadProductExample(t *testing.T) {
	c, err := Load("testdata/product.yaml")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	want := Config{
		HostID:             "bastion-1",
		OIDC:               OIDC{Issuer: "https://idp.example.com", ClientID: "warden", GroupsClaim: "groups"},
		ProxyListen:        "127.0.0.1:15001",
		Socket:             "/run/warden/agent.sock",
		PolicyFile:         "/etc/warden/policy.yaml",
		NATS:               NATS{URL: "nats://127.0.0.1:4222"},
		SpoolDir:           "/var/lib/warden/spool",
		SpoolMaxBytes:      1 << 30,
		AuditFailure:       "deny",
		KeyFile:            "/var/lib/warden/agent.key",
		CheckpointInterval: "1s",
		MetricsListen:      "127.0.0.1:9464",
		LogLevel:           "info",
		StateDir:           "/var/lib/warden",
		BPFPinDir:          "/sys/fs/bpf/warden",
		ClientTLS:          ClientTLS{Mode: "on"},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("Load:\n got %+v\nwant %+v", c, want)
	}
}

// The shipped example must stay valid, and must agree with Default.
func TestLoadDeployExample(t *testing.T) {
	c, err := Load(filepath.Join("..", "..", "deploy", "examples", "agent.yaml"))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	want := Default()
	want.HostID = "bastion-1"
	want.OIDC.Issuer = "https://idp.example.com"
	want.OIDC.ClientID = "warden"
	// Not a default: without creds the agent connects anonymously, which
	// Warden's servers refuse; the example shows where enroll's go.
	want.NATS.CredsFile = "/etc/warden/nats.creds"
	if !reflect.DeepEqual(c, want) {
		t.Errorf("example differs from the defaults:\n got %+v\nwant %+v", c, want)
	}
}

func TestLoadMinimal(t *testing.T) {
	c, err := Parse([]byte("oidc: {issuer: \"http://127.0.0.1:5556/dex\", client_id: warden}\nmetrics_listen: \"\"\n"), "agent.yaml")
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	host, err := os.Hostname()
	if err != nil {
		t.Skip("no hostname:", err)
	}
	if c.HostID != host {
		t.Errorf("HostID = %q, want the hostname %q", c.HostID, host)
	}
	if c.MetricsListen != "" {
		t.Errorf("MetricsListen = %q, want disabled", c.MetricsListen)
	}
	if c.ProxyListen != Default().ProxyListen || c.LogLevel != "info" {
		t.Errorf("defaults not applied: %+v", c)
	}
}

func TestLoadValid(t *testing.T) {
	const oidc = "oidc: {issuer: https://idp.example.com, client_id: warden}\n"
	tests := []struct {
		name, yaml string
		check      func(Config) bool
	}{
		{"http issuer on localhost", "oidc: {issuer: \"http://localhost:8080\", client_id: w}\n",
			func(c Config) bool { return c.OIDC.Issuer == "http://localhost:8080" }},
		{"http issuer on ::1", "oidc: {issuer: \"http://[::1]:8080/realms/x\", client_id: w}\n", nil},
		{"http issuer on 127.0.0.2", "oidc: {issuer: \"http://127.0.0.2/\", client_id: w}\n", nil},
		{"ca file null", "oidc: {issuer: https://i.example, client_id: w, ca_file: }\n",
			func(c Config) bool { return c.OIDC.CAFile == "" }},
		{"ca file", "oidc: {issuer: https://i.example, client_id: w, ca_file: /etc/warden/idp-ca.pem}\n",
			func(c Config) bool { return c.OIDC.CAFile == "/etc/warden/idp-ca.pem" }},
		{"nats cluster", oidc + "nats: {url: \"nats://a:4222, tls://b:4222\"}\n",
			func(c Config) bool { return c.NATS.URL == "nats://a:4222, tls://b:4222" }},
		{"nats null keeps default", oidc + "nats:\n", func(c Config) bool { return c.NATS.URL == Default().NATS.URL }},
		{"nats creds and tls", oidc + "nats:\n  url: tls://n1:4222\n  creds_file: /etc/warden/nats.creds\n  tls: {ca_file: /etc/warden/ca.pem, cert_file: /etc/warden/c.pem, key_file: /etc/warden/c.key}\n",
			func(c Config) bool {
				return c.NATS.CredsFile == "/etc/warden/nats.creds" && c.NATS.TLS == NATSTLS{CAFile: "/etc/warden/ca.pem", CertFile: "/etc/warden/c.pem", KeyFile: "/etc/warden/c.key"}
			}},
		{"metrics on all interfaces", oidc + "metrics_listen: \":9464\"\n", func(c Config) bool { return c.MetricsListen == ":9464" }},
		{"ipv6 proxy", oidc + "proxy_listen: \"[::1]:15001\"\n", func(c Config) bool { return c.ProxyListen == "[::1]:15001" }},
		{"cgroup subtree", oidc + "cgroup_root: /sys/fs/cgroup/unified/warden-test\n",
			func(c Config) bool { return c.CgroupRoot == "/sys/fs/cgroup/unified/warden-test" }},
		{"log level", oidc + "log_level: debug\n", func(c Config) bool { return c.LogLevel == "debug" }},
		{"audit fails open", oidc + "audit_failure: allow\n", func(c Config) bool { return c.AuditFailure == AuditAllow }},
		{"audit fails closed by default", oidc, func(c Config) bool { return c.AuditFailure == AuditDeny }},
		{"spool size in bytes", oidc + "spool_max_bytes: 1048576\n", func(c Config) bool { return c.SpoolMaxBytes == 1<<20 }},
		{"checkpoint interval", oidc + "checkpoint_interval: 250ms\n", func(c Config) bool { return c.CheckpointEvery() == 250*time.Millisecond }},
		{"pprof off by default", oidc, func(c Config) bool { return !c.Pprof }},
		{"pprof on", oidc + "pprof: true\n", func(c Config) bool { return c.Pprof }},
		{"pprof off", oidc + "pprof: false\n", func(c Config) bool { return !c.Pprof }},
		{"spool size in MiB", oidc + "spool_max_bytes: 512MiB\n", func(c Config) bool { return c.SpoolMaxBytes == 512<<20 }},
		{"spool size in GiB, spaced", oidc + "spool_max_bytes: \"2 GiB\"\n", func(c Config) bool { return c.SpoolMaxBytes == 2<<30 }},
		{"spool size default", oidc, func(c Config) bool { return c.SpoolMaxBytes == 1<<30 }},
		{"comments only around", "# header\n" + oidc + "# footer\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.yaml), "agent.yaml")
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if tt.check != nil && !tt.check(c) {
				t.Errorf("unexpected config %+v", c)
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	const oidc = "oidc:\n  issuer: https://idp.example.com\n  client_id: warden\n" // lines 1-3
	tests := []struct {
		name, yaml string
		want       []string // each in its own error line, in order, and nothing else
	}{
		{"empty file", "", []string{
			`agent.yaml: oidc.issuer is required`,
			`agent.yaml: oidc.client_id is required`,
		}},
		{"checkpoint interval too long", oidc + "checkpoint_interval: 5m\n", []string{
			`agent.yaml:4:22: checkpoint_interval "5m" is not a duration from 100ms to 1m`,
		}},
		{"unknown key", oidc + "hots_id: b1\n", []string{
			`agent.yaml:4:1: unknown key "hots_id" (want one of audit_failure, bpf_pin_dir, cgroup_root, checkpoint_interval, client_tls, host_id,`,
		}},
		{"unknown nested key", "oidc:\n  isuer: https://idp.example.com\n  client_id: warden\n", []string{
			`agent.yaml: oidc.issuer is required`,
			`agent.yaml:2:3: unknown key "oidc.isuer" (want one of ca_file, client_id, groups_claim, issuer)`,
		}},
		{"repeated key", oidc + "socket: /a\nsocket: /b\n", []string{
			`agent.yaml:5:1: key "socket" is repeated (first at line 4)`,
		}},
		{"list for string", oidc + "socket: [/a]\n", []string{`agent.yaml:4:9: socket: want a string`}},
		{"scalar for mapping", oidc + "nats: nats://x:4222\n", []string{`agent.yaml:4:7: nats: want a mapping of keys`}},
		{"root not a mapping", "- a\n", []string{`agent.yaml:1:1: configuration: want a mapping of keys`}},
		{"syntax", "oidc:\n  issuer: [x\n", []string{`agent.yaml:2: invalid YAML`}},
		{"syntax: block", "oidc:\n  - issuer\n  client_id: w\n", []string{`agent.yaml:2: invalid YAML: did not find expected '-' indicator`}},
		{"syntax: tab", "oidc:\n\tissuer: x\n", []string{`agent.yaml:2: invalid YAML: found character that cannot start any token`}},
		{"two documents", oidc + "---\nhost_id: x\n", []string{`agent.yaml: more than one YAML document`}},
		{"client tls mode", oidc + "client_tls:\n  mode: yes\n", []string{`agent.yaml:5:9: client_tls.mode "yes" is not on or off`}},
		{"client tls half set", oidc + "client_tls:\n  ca_cert: /etc/warden/ca.crt\n", []string{
			`agent.yaml: client_tls.ca_key and client_tls.ca_cert must be set together`,
		}},
		{"client tls relative", oidc + "client_tls:\n  ca_cert: ca.crt\n  ca_key: ca.key\n", []string{
			`agent.yaml:5:12: client_tls.ca_cert "ca.crt" must be an absolute path`,
			`agent.yaml:6:11: client_tls.ca_key "ca.key" must be an absolute path`,
		}},
		{"http issuer", "oidc:\n  issuer: http://idp.example.com\n  client_id: warden\n", []string{
			`agent.yaml:2:11: oidc.issuer "http://idp.example.com" must use https: the token signing keys are fetched from the issuer`,
		}},
		{"issuer not a url", "oidc:\n  issuer: idp.example.com\n  client_id: warden\n", []string{
			`agent.yaml:2:11: oidc.issuer "idp.example.com" is not an absolute URL`,
		}},
		{"issuer with query", "oidc:\n  issuer: https://idp.example.com/?x=1\n  client_id: warden\n", []string{
			`agent.yaml:2:11: oidc.issuer "https://idp.example.com/?x=1": an issuer URL has no query`,
		}},
		{"issuer ftp", "oidc:\n  issuer: ftp://idp.example.com\n  client_id: warden\n", []string{
			`agent.yaml:2:11: oidc.issuer "ftp://idp.example.com" must use https`,
		}},
		{"empty client id", "oidc:\n  issuer: https://idp.example.com\n  client_id: \"\"\n", []string{
			`agent.yaml:3:14: oidc.client_id is required`,
		}},
		{"empty groups claim", oidc + "  groups_claim: \"\"\n", []string{`agent.yaml:4:17: oidc.groups_claim must not be empty`}},
		{"relative ca file", oidc + "  ca_file: ca.pem\n", []string{`agent.yaml:4:12: oidc.ca_file "ca.pem" must be an absolute path`}},
		{"relative socket", oidc + "socket: run/agent.sock\n", []string{`agent.yaml:4:9: socket "run/agent.sock" must be an absolute path`}},
		{"empty policy file", oidc + "policy_file: \"\"\n", []string{`agent.yaml:4:14: policy_file must not be empty`}},
		{"relative cgroup root", oidc + "cgroup_root: sys/fs/cgroup\n", []string{`agent.yaml:4:14: cgroup_root "sys/fs/cgroup" must be an absolute path`}},
		{"proxy not ip:port", oidc + "proxy_listen: localhost:15001\n", []string{`agent.yaml:4:15: proxy_listen "localhost:15001" is not IP:port`}},
		{"proxy wildcard", oidc + "proxy_listen: 0.0.0.0:15001\n", []string{`agent.yaml:4:15: proxy_listen "0.0.0.0:15001": the kernel redirects connections to this address`}},
		{"proxy port 0", oidc + "proxy_listen: 127.0.0.1:0\n", []string{`agent.yaml:4:15: proxy_listen "127.0.0.1:0": port must be from 1 to 65535`}},
		{"metrics no port", oidc + "metrics_listen: 127.0.0.1\n", []string{`agent.yaml:4:17: metrics_listen "127.0.0.1" is not host:port`}},
		{"metrics bad port", oidc + "metrics_listen: 127.0.0.1:http\n", []string{`agent.yaml:4:17: metrics_listen "127.0.0.1:http": port must be a number`}},
		{"nats bad scheme", oidc + "nats:\n  url: http://127.0.0.1:4222\n", []string{`agent.yaml:5:8: nats.url each comma-separated server must be a URL with scheme nats, tls, ws, wss`}},
		{"nats empty", oidc + "nats:\n  url: \"\"\n", []string{`agent.yaml:5:8: nats.url is required`}},
		{"nats relative creds", oidc + "nats:\n  creds_file: nats.creds\n", []string{`agent.yaml:5:15: nats.creds_file "nats.creds" must be an absolute path`}},
		{"nats cert without key", oidc + "nats:\n  tls: {cert_file: /etc/warden/c.pem}\n", []string{`agent.yaml: nats.tls.key_file and nats.tls.cert_file must be set together, or both left out`}},
		{"nats unknown key", oidc + "nats:\n  password: x\n", []string{`agent.yaml:5:3: unknown key "nats.password" (want one of creds_file, tls, url)`}},
		{"log level", oidc + "log_level: verbose\n", []string{`agent.yaml:4:12: log_level "verbose" is not one of trace, debug, info, warn, error`}},
		{"audit failure", oidc + "audit_failure: warn\n", []string{`agent.yaml:4:16: audit_failure "warn" is not deny or allow`}},
		{"audit failure empty", oidc + "audit_failure:\n", []string{`agent.yaml:4:15: audit_failure "" is not deny or allow`}},
		{"spool too small", oidc + "spool_max_bytes: 64KiB\n", []string{`agent.yaml:4:18: spool_max_bytes 65536 is below the minimum of 1048576`}},
		{"spool zero", oidc + "spool_max_bytes: 0\n", []string{`agent.yaml:4:18: spool_max_bytes 0 is below the minimum`}},
		{"pprof yes", oidc + "pprof: yes\n", []string{`agent.yaml:4:8: pprof: want true or false`}},
		{"pprof quoted", oidc + "pprof: \"true\"\n", []string{`agent.yaml:4:8: pprof: want true or false`}},
		{"spool decimal unit", oidc + "spool_max_bytes: 1GB\n", []string{`agent.yaml:4:18: spool_max_bytes: "1GB" is not a size: want a number of bytes, optionally with a unit KiB, MiB, GiB or TiB`}},
		{"spool negative", oidc + "spool_max_bytes: -1\n", []string{`agent.yaml:4:18: spool_max_bytes: "-1" is not a size`}},
		{"spool float", oidc + "spool_max_bytes: 1.5GiB\n", []string{`agent.yaml:4:18: spool_max_bytes: "1.5GiB" is not a size`}},
		{"spool hex", oidc + "spool_max_bytes: 0x100000\n", []string{`agent.yaml:4:18: spool_max_bytes: "0x100000" is not a size`}},
		{"spool overflow", oidc + "spool_max_bytes: 9000000TiB\n", []string{`agent.yaml:4:18: spool_max_bytes: "9000000TiB" is too large`}},
		{"spool null", oidc + "spool_max_bytes:\n", []string{`agent.yaml:4:17: spool_max_bytes: want a number of bytes`}},
		{"spool list", oidc + "spool_max_bytes: [1]\n", []string{`agent.yaml:4:18: spool_max_bytes: want a number of bytes`}},
		{"host id with space", oidc + "host_id: bastion 1\n", []string{`agent.yaml:4:10: host_id "bastion 1" must be non-empty with no spaces`}},
		{"several at once", "oidc:\n  issuer: http://idp.example.com\nsocket: x\nlog_level: loud\nextra: 1\n", []string{
			`agent.yaml: oidc.client_id is required`,
			`agent.yaml:2:11: oidc.issuer "http://idp.example.com" must use https`,
			`agent.yaml:3:9: socket "x" must be an absolute path`,
			`agent.yaml:4:12: log_level "loud"`,
			`agent.yaml:5:1: unknown key "extra"`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml), "agent.yaml")
			if err == nil {
				t.Fatalf("Parse succeeded, want %q", tt.want)
			}
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != len(tt.want) {
				t.Fatalf("got %d errors, want %d:\n%v", len(lines), len(tt.want), err)
			}
			for i, w := range tt.want {
				if !strings.Contains(lines[i], w) {
					t.Errorf("error %d = %q\n        want it to contain %q", i, lines[i], w)
				}
			}
		})
	}
}

func TestLoadDoesNotEchoNATSPassword(t *testing.T) {
	doc := "oidc: {issuer: https://i.example, client_id: w}\nnats: {url: \"http://user:s3cret@nats:4222\"}\n"
	_, err := Parse([]byte(doc), "agent.yaml")
	if err == nil {
		t.Fatal("Parse succeeded")
	}
	if strings.Contains(err.Error(), "s3cret") {
		t.Errorf("error reveals the password: %v", err)
	}
}

func TestLoadMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.yaml")
	_, err := Load(path)
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), path) {
		t.Errorf("Load(missing) = %v, want a not-exist error naming %s", err, path)
	}
}

func TestValidate(t *testing.T) {
	c := Default()
	c.HostID = "h"
	c.OIDC.Issuer = "https://idp.example.com"
	c.OIDC.ClientID = "warden"
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate(defaults + required) = %v", err)
	}
	c.Socket = "agent.sock" // as if overridden by a flag
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), `socket "agent.sock" must be an absolute path`) {
		t.Errorf("Validate = %v", err)
	}
	if err := Default().Validate(); err == nil || !strings.Contains(err.Error(), "oidc.issuer is required") {
		t.Errorf("Validate(Default()) = %v, want the required keys reported", err)
	}
}
