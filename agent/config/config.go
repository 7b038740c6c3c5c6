// Package config loads the wardend configuration file,
// /etc/warden/agent.yaml.
//
// Every key is optional except oidc.issuer and oidc.client_id; Default lists
// the values used for the rest. Unknown keys are errors, with the line they
// are on, because a misspelt key would otherwise silently fall back to a
// default.
package config

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/wardenhq/warden/agent/spool"
	"github.com/wardenhq/warden/pkg/idtoken"
	"github.com/wardenhq/warden/pkg/yamlpos"
)

// DefaultPath is where wardend looks for its configuration unless told
// otherwise with --config.
const DefaultPath = "/etc/warden/agent.yaml"

// Config is the agent configuration.
type Config struct {
	// HostID names this host in events. Load defaults it to the hostname.
	HostID string
	// OIDC says which identity provider's tokens wardend accepts.
	OIDC OIDC
	// CgroupRoot is the cgroup v2 directory the BPF programs attach to; ""
	// means the cgroup2 mount found in /proc/self/mountinfo. Tests point it
	// at a subtree.
	CgroupRoot string
	// ProxyListen is the IP:port of the L7 proxy. The kernel rewrites
	// connections to privileged targets to this address.
	ProxyListen string
	// Socket is the unix socket the warden CLI talks to.
	Socket string
	// PolicyFile is the policy wardend enforces and watches for changes.
	PolicyFile string
	// NATS says where events are published.
	NATS NATS
	// SpoolDir holds events not yet acknowledged by NATS.
	SpoolDir string
	// SpoolMaxBytes bounds the spool. When it is full, events are lost
	// and, under AuditFailure deny, requests are refused.
	SpoolMaxBytes int64
	// AuditFailure says what the proxy does with a request (a statement,
	// a connection) it cannot record: AuditDeny refuses it, AuditAllow
	// lets it through and the loss is reported in an agent.loss event.
	AuditFailure string
	// KeyFile is the agent's ed25519 key for signing checkpoints.
	KeyFile string
	// CheckpointInterval is how often the agent signs a checkpoint of its
	// Merkle log when events were sealed since the last one: the window in
	// which root on the bastion could still rewrite what it recorded
	// (docs/integrity.md). A Go duration, 100ms to 1m; default 1s.
	CheckpointInterval string
	// MetricsListen is the host:port of the Prometheus endpoint; ""
	// disables it.
	MetricsListen string
	// Pprof serves Go's profiling endpoints (/debug/pprof/) on the
	// metrics listener. Off by default: any local user of a bastion can
	// reach a loopback listener, and goroutine dumps, CPU profiles and
	// traces expose the agent's memory and timing.
	Pprof bool
	// LogLevel is one of trace, debug, info, warn, error.
	LogLevel string
	// StateDir holds state that must survive a restart, such as the
	// bindings of sessions to identities.
	StateDir string
	// BPFPinDir is where the BPF maps and links are pinned so enforcement
	// and bindings survive a restart. If it is not on a bpffs, wardend
	// mounts a private bpffs instance there.
	BPFPinDir string
	// ClientTLS configures the TLS the proxy offers clients that ask for
	// it (PostgreSQL's SSLRequest).
	ClientTLS ClientTLS
}

// ClientTLS configures the TLS the proxy offers clients.
type ClientTLS struct {
	// Mode is "on" (answer TLS requests with a certificate from the
	// agent's own authority) or "off" (decline them).
	Mode string
	// CACert and CAKey are the authority's certificate and key. Empty
	// means client-ca.crt and client-ca.key in StateDir; wardend creates
	// them if neither exists.
	CACert, CAKey string
}

// ClientTLS modes.
const (
	ClientTLSOn  = "on"
	ClientTLSOff = "off"
)

// AuditFailure values.
const (
	// AuditDeny refuses what cannot be recorded: no record, no access.
	AuditDeny = "deny"
	// AuditAllow lets it run unrecorded; the loss is counted and reported.
	AuditAllow = "allow"
)

// MinSpoolMaxBytes is the smallest spool_max_bytes: below it the spool's
// segments (a quarter of the bound each) are too small to be useful.
const MinSpoolMaxBytes = 1 << 20

// PublicClientCA is where wardend publishes the client TLS authority's
// certificate for users to trust: client-ca.crt beside the control socket.
func (c Config) PublicClientCA() string {
	return filepath.Join(filepath.Dir(c.Socket), "client-ca.crt")
}

// ClientCAFiles returns the client TLS authority's certificate and key
// paths, with the defaults in StateDir filled in.
func (c Config) ClientCAFiles() (cert, key string) {
	cert, key = c.ClientTLS.CACert, c.ClientTLS.CAKey
	if cert == "" {
		cert = filepath.Join(c.StateDir, "client-ca.crt")
	}
	if key == "" {
		key = filepath.Join(c.StateDir, "client-ca.key")
	}
	return cert, key
}

// OIDC configures verification of ID tokens.
type OIDC struct {
	// Issuer is the IdP's issuer URL, exactly as in its tokens' iss claim.
	Issuer string
	// ClientID is the audience tokens must be issued for.
	ClientID string
	// GroupsClaim names the claim that holds the user's groups.
	GroupsClaim string
	// CAFile is a PEM bundle to trust for the IdP instead of the system
	// roots; "" uses the system roots.
	CAFile string
}

// NATS configures the agent's NATS connections (events, commands,
// reviews, recordings).
type NATS struct {
	// URL is the NATS server, or a comma-separated list of servers.
	URL string
	// CredsFile is the user creds file (JWT and nkey seed) written by
	// warden-collector enroll for this host; "" connects without
	// credentials, which a Warden NATS server refuses.
	CredsFile string
	// TLS configures TLS to the NATS servers.
	TLS NATSTLS
}

// NATSTLS is the agent's TLS towards NATS.
type NATSTLS struct {
	// CAFile is a PEM bundle trusted for the servers' certificates
	// instead of the system roots; setting it turns TLS on.
	CAFile string
	// CertFile and KeyFile are a client certificate, for servers that
	// verify clients (set both or neither).
	CertFile, KeyFile string
}

// Default returns the configuration used for every key the file leaves
// out. HostID is empty here; Load fills it from the hostname.
func Default() Config {
	return Config{
		OIDC:               OIDC{GroupsClaim: "groups"},
		ProxyListen:        "127.0.0.1:15001",
		Socket:             "/run/warden/agent.sock",
		PolicyFile:         "/etc/warden/policy.yaml",
		NATS:               NATS{URL: "nats://127.0.0.1:4222"},
		SpoolDir:           "/var/lib/warden/spool",
		SpoolMaxBytes:      spool.DefaultMaxBytes,
		AuditFailure:       AuditDeny,
		KeyFile:            "/var/lib/warden/agent.key",
		CheckpointInterval: "1s",
		MetricsListen:      "127.0.0.1:9464",
		LogLevel:           "info",
		StateDir:           "/var/lib/warden",
		BPFPinDir:          "/sys/fs/bpf/warden",
		ClientTLS:          ClientTLS{Mode: ClientTLSOn},
	}
}

// CheckpointEvery is CheckpointInterval as a duration (validated by Load).
func (c Config) CheckpointEvery() time.Duration {
	d, _ := time.ParseDuration(c.CheckpointInterval)
	return d
}

// Load reads the configuration at path over the defaults, fills in HostID
// from the hostname if the file leaves it empty, and validates the result.
// Errors name the file and, where they can, the line and column.
func Load(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("agent config: %w", err)
	}
	return Parse(data, path)
}

// Parse is Load for data already read; source names it in errors.
func Parse(data []byte, source string) (Config, error) {
	c := Default()
	d := decoder{source: source}
	d.decode(data, &c)
	if c.HostID == "" {
		h, err := os.Hostname()
		if err != nil {
			return Config{}, fmt.Errorf("%s: host_id is not set and the hostname is unavailable: %w", source, err)
		}
		c.HostID = h
	}
	if !d.broken {
		// Validate even after unknown-key errors: "isuer" misspelt is
		// clearer next to "oidc.issuer is required".
		for _, p := range c.problems() {
			d.problem(p.key, p.msg)
		}
	}
	if len(d.errs) > 0 {
		// File order, so the operator can fix them top to bottom; errors
		// about defaults (line 0) come first.
		slices.SortStableFunc(d.errs, func(a, b posError) int { return cmp.Compare(a.line, b.line) })
		errs := make([]error, len(d.errs))
		for i, e := range d.errs {
			errs[i] = e.err
		}
		return Config{}, errors.Join(errs...)
	}
	return c, nil
}

// Validate checks c as Load does. Use it after overriding values, for
// example from command-line flags.
func (c Config) Validate() error {
	var errs []error
	for _, p := range c.problems() {
		errs = append(errs, fmt.Errorf("%s %s", p.key, p.msg))
	}
	return errors.Join(errs...)
}

// problem is a validation failure of the key at the dotted path key.
type problem struct{ key, msg string }

var logLevels = []string{"trace", "debug", "info", "warn", "error"}

func (c Config) problems() []problem {
	var ps []problem
	add := func(key, format string, args ...any) {
		ps = append(ps, problem{key, fmt.Sprintf(format, args...)})
	}
	if c.HostID == "" || strings.ContainsFunc(c.HostID, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		add("host_id", "%q must be non-empty with no spaces or control characters", c.HostID)
	}
	if err := checkIssuer(c.OIDC.Issuer); err != nil {
		add("oidc.issuer", "%v", err)
	}
	if c.OIDC.ClientID == "" {
		add("oidc.client_id", "is required: tokens are only accepted if issued for this client")
	}
	if c.OIDC.GroupsClaim == "" {
		add("oidc.groups_claim", "must not be empty")
	}
	if err := checkProxyListen(c.ProxyListen); err != nil {
		add("proxy_listen", "%v", err)
	}
	if c.MetricsListen != "" {
		if err := checkListen(c.MetricsListen); err != nil {
			add("metrics_listen", "%v", err)
		}
	}
	if err := checkNATS(c.NATS.URL); err != nil {
		add("nats.url", "%v", err)
	}
	if (c.NATS.TLS.CertFile == "") != (c.NATS.TLS.KeyFile == "") {
		add("nats.tls.key_file", "and nats.tls.cert_file must be set together, or both left out")
	}
	if c.ClientTLS.Mode != ClientTLSOn && c.ClientTLS.Mode != ClientTLSOff {
		add("client_tls.mode", "%q is not %s or %s", c.ClientTLS.Mode, ClientTLSOn, ClientTLSOff)
	}
	if (c.ClientTLS.CACert == "") != (c.ClientTLS.CAKey == "") {
		add("client_tls.ca_key", "and client_tls.ca_cert must be set together, or both left out for the defaults in state_dir")
	}
	if c.AuditFailure != AuditDeny && c.AuditFailure != AuditAllow {
		add("audit_failure", "%q is not %s or %s", c.AuditFailure, AuditDeny, AuditAllow)
	}
	if d, err := time.ParseDuration(c.CheckpointInterval); err != nil || d < 100*time.Millisecond || d > time.Minute {
		add("checkpoint_interval", "%q is not a duration from 100ms to 1m", c.CheckpointInterval)
	}
	if c.SpoolMaxBytes < MinSpoolMaxBytes {
		add("spool_max_bytes", "%d is below the minimum of %d (1MiB)", c.SpoolMaxBytes, MinSpoolMaxBytes)
	}
	if !slices.Contains(logLevels, c.LogLevel) {
		add("log_level", "%q is not one of %s", c.LogLevel, strings.Join(logLevels, ", "))
	}
	paths := []struct {
		key, val string
		optional bool
	}{
		{"socket", c.Socket, false},
		{"policy_file", c.PolicyFile, false},
		{"spool_dir", c.SpoolDir, false},
		{"key_file", c.KeyFile, false},
		{"state_dir", c.StateDir, false},
		{"bpf_pin_dir", c.BPFPinDir, false},
		{"cgroup_root", c.CgroupRoot, true},
		{"oidc.ca_file", c.OIDC.CAFile, true},
		{"client_tls.ca_cert", c.ClientTLS.CACert, true},
		{"client_tls.ca_key", c.ClientTLS.CAKey, true},
		{"nats.creds_file", c.NATS.CredsFile, true},
		{"nats.tls.ca_file", c.NATS.TLS.CAFile, true},
		{"nats.tls.cert_file", c.NATS.TLS.CertFile, true},
		{"nats.tls.key_file", c.NATS.TLS.KeyFile, true},
	}
	for _, p := range paths {
		switch {
		case p.val == "" && p.optional:
		case p.val == "":
			add(p.key, "must not be empty")
		case !filepath.IsAbs(p.val):
			// wardend runs from /, so a relative path would silently
			// depend on the working directory.
			add(p.key, "%q must be an absolute path", p.val)
		}
	}
	return ps
}

// checkIssuer requires https, except on loopback, where plain http is what
// a local test IdP serves and nothing can intercept it.
func checkIssuer(s string) error {
	if s == "" {
		return errors.New("is required: the URL of the OIDC identity provider")
	}
	return idtoken.CheckIssuerURL(s)
}

// checkProxyListen requires a concrete IP, because the BPF programs rewrite
// connections to exactly this address; "0.0.0.0" or a name cannot be a
// destination.
func checkProxyListen(s string) error {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return fmt.Errorf("%q is not IP:port (for example 127.0.0.1:15001)", s)
	}
	if ap.Addr().IsUnspecified() || ap.Addr().Zone() != "" {
		return fmt.Errorf("%q: the kernel redirects connections to this address, so it must be a concrete IP, not a wildcard or zoned address", s)
	}
	if ap.Port() == 0 {
		return fmt.Errorf("%q: port must be from 1 to 65535", s)
	}
	return nil
}

// checkListen accepts anything net.Listen would, with an explicit port.
func checkListen(s string) error {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %v", s, err)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return fmt.Errorf("%q: port must be a number from 1 to 65535", s)
	}
	return nil
}

var natsSchemes = []string{"nats", "tls", "ws", "wss"}

func checkNATS(s string) error {
	if s == "" {
		return errors.New("is required: events that are never published are an audit gap")
	}
	for _, part := range strings.Split(s, ",") {
		u, err := url.Parse(strings.TrimSpace(part))
		if err != nil || u.Host == "" || !slices.Contains(natsSchemes, u.Scheme) {
			// Do not echo the value: a NATS URL may carry a password.
			return fmt.Errorf("each comma-separated server must be a URL with scheme %s and a host", strings.Join(natsSchemes, ", "))
		}
	}
	return nil
}

// decoder reads the YAML onto a Config, recording the position of every key
// so that validation errors can point at it.
type decoder struct {
	source string
	errs   []posError
	broken bool                  // the YAML did not parse as a mapping, so values are unknown
	pos    map[string]*yaml.Node // dotted key -> value node
}

// posError is an error and the line it is about, for sorting.
type posError struct {
	line int
	err  error
}

func (d *decoder) errorf(n *yaml.Node, format string, args ...any) {
	d.add(n.Line, fmt.Errorf("%s:%d:%d: %s", d.source, n.Line, n.Column, fmt.Sprintf(format, args...)))
}

func (d *decoder) add(line int, err error) { d.errs = append(d.errs, posError{line, err}) }

// problem records a validation problem with the key's position if the file
// set it, or with the file name alone if the value is a default.
func (d *decoder) problem(key, msg string) {
	if n, ok := d.pos[key]; ok {
		d.errorf(n, "%s %s", key, msg)
		return
	}
	d.add(0, fmt.Errorf("%s: %s %s", d.source, key, msg))
}

func (d *decoder) syntaxError(err error) {
	line, msg := yamlpos.SyntaxError(err)
	if line == 0 {
		d.add(0, fmt.Errorf("%s: invalid YAML: %s", d.source, msg))
		return
	}
	d.add(line, fmt.Errorf("%s:%d: invalid YAML: %s", d.source, line, msg))
}

func (d *decoder) decode(data []byte, c *Config) {
	d.pos = make(map[string]*yaml.Node)
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return // an empty file means all defaults; validation says what is missing
		}
		d.broken = true
		d.syntaxError(err)
		return
	}
	if err := dec.Decode(new(yaml.Node)); !errors.Is(err, io.EOF) {
		d.broken = true
		d.add(0, fmt.Errorf("%s: more than one YAML document", d.source))
		return
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return // a file of only comments
	}
	if root.Kind != yaml.MappingNode {
		d.broken = true
	}
	d.mapping(root, "", map[string]any{
		"host_id":     &c.HostID,
		"cgroup_root": &c.CgroupRoot,
		"oidc": map[string]any{
			"issuer":       &c.OIDC.Issuer,
			"client_id":    &c.OIDC.ClientID,
			"groups_claim": &c.OIDC.GroupsClaim,
			"ca_file":      &c.OIDC.CAFile,
		},
		"proxy_listen": &c.ProxyListen,
		"socket":       &c.Socket,
		"policy_file":  &c.PolicyFile,
		"nats": map[string]any{
			"url":        &c.NATS.URL,
			"creds_file": &c.NATS.CredsFile,
			"tls": map[string]any{
				"ca_file":   &c.NATS.TLS.CAFile,
				"cert_file": &c.NATS.TLS.CertFile,
				"key_file":  &c.NATS.TLS.KeyFile,
			},
		},
		"spool_dir":           &c.SpoolDir,
		"spool_max_bytes":     &c.SpoolMaxBytes,
		"audit_failure":       &c.AuditFailure,
		"key_file":            &c.KeyFile,
		"checkpoint_interval": &c.CheckpointInterval,
		"metrics_listen":      &c.MetricsListen,
		"pprof":               &c.Pprof,
		"log_level":           &c.LogLevel,
		"state_dir":           &c.StateDir,
		"bpf_pin_dir":         &c.BPFPinDir,
		"client_tls": map[string]any{
			"mode":    &c.ClientTLS.Mode,
			"ca_cert": &c.ClientTLS.CACert,
			"ca_key":  &c.ClientTLS.CAKey,
		},
	})
}

// mapping decodes n according to schema, whose values are *string for a
// string key, *int64 for a size in bytes, *bool for true or false, or a
// nested schema for a mapping key. prefix is the dotted path of n.
func (d *decoder) mapping(n *yaml.Node, prefix string, schema map[string]any) {
	for n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind != yaml.MappingNode {
		d.errorf(n, "%s: want a mapping of keys", cmp.Or(strings.TrimSuffix(prefix, "."), "configuration"))
		return
	}
	known := make([]string, 0, len(schema))
	for k := range schema {
		known = append(known, k)
	}
	slices.Sort(known)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		for v.Kind == yaml.AliasNode {
			v = v.Alias
		}
		key := prefix + k.Value
		target, ok := schema[k.Value]
		if !ok {
			d.errorf(k, "unknown key %q (want one of %s)", key, strings.Join(known, ", "))
			continue
		}
		if _, dup := d.pos[key]; dup {
			d.errorf(k, "key %q is repeated (first at line %d)", key, d.pos[key].Line)
			continue
		}
		d.pos[key] = v
		switch t := target.(type) {
		case *string:
			switch {
			case v.Kind == yaml.ScalarNode && v.Tag == "!!null":
				*t = "" // "key:" with no value, as for ca_file in the documented example
			case v.Kind == yaml.ScalarNode:
				*t = v.Value
			default:
				d.errorf(v, "%s: want a string", key)
			}
		case *bool:
			// Only YAML's true and false: "yes" or "1" may mean
			// something else to the author, and this turns things on.
			if v.Kind != yaml.ScalarNode || v.Tag != "!!bool" || (v.Value != "true" && v.Value != "false") {
				d.errorf(v, "%s: want true or false", key)
				continue
			}
			*t = v.Value == "true"
		case *int64:
			n, err := parseSize(v)
			if err != nil {
				d.errorf(v, "%s: %v", key, err)
				continue
			}
			*t = n
		case map[string]any:
			if v.Kind == yaml.ScalarNode && v.Tag == "!!null" {
				continue // "nats:" with nothing under it: defaults
			}
			d.mapping(v, key+".", t)
		}
	}
}

// sizeUnits are the suffixes a size may carry. Only binary units: "GB"
// would be ambiguous.
var sizeUnits = []struct {
	suffix string
	mult   int64
}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}}

// parseSize reads a size in bytes: a decimal integer, optionally followed
// by KiB, MiB, GiB or TiB ("1073741824", "1GiB", "512 MiB").
func parseSize(v *yaml.Node) (int64, error) {
	const want = "want a number of bytes, optionally with a unit KiB, MiB, GiB or TiB (for example 1GiB)"
	if v.Kind != yaml.ScalarNode || v.Tag == "!!null" {
		return 0, errors.New(want)
	}
	bad := fmt.Errorf("%q is not a size: %s", v.Value, want)
	num, mult := strings.TrimSpace(v.Value), int64(1)
	for _, u := range sizeUnits {
		if rest, ok := strings.CutSuffix(num, u.suffix); ok {
			num, mult = strings.TrimSpace(rest), u.mult
			break
		}
	}
	// Decimal digits only: no sign, no 0x, no 1e9, no 1_000.
	if num == "" || strings.ContainsFunc(num, func(r rune) bool { return r < '0' || r > '9' }) {
		return 0, bad
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("%q is too large", v.Value)
	}
	return n * mult, nil
}
