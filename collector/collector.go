// Package collector assembles warden-collector: an optional embedded NATS
// server, the JetStream ingester that verifies and stores events, and the
// HTTP query API, which serves only people with a verified OIDC ID token
// (over TLS when given a certificate).
package collector

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	stdlog "log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/wardenhq/warden/agent/recording"
	"github.com/wardenhq/warden/collector/api"
	"github.com/wardenhq/warden/collector/console"
	"github.com/wardenhq/warden/collector/ingest"
	"github.com/wardenhq/warden/collector/natsembed"
	"github.com/wardenhq/warden/collector/reviews"
	"github.com/wardenhq/warden/collector/store"
	"github.com/wardenhq/warden/pkg/collectorclient"
	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/pkg/idtoken"
	"github.com/wardenhq/warden/pkg/natsauth"
)

// Defaults of the warden-collector flags.
const (
	DefaultStore      = "/var/lib/warden/collector/events.db"
	DefaultListen     = "127.0.0.1:8181"
	DefaultNATSListen = "127.0.0.1:4222"
	DefaultNATSStore  = "/var/lib/warden/collector/nats"
	DefaultNATSAuth   = "/var/lib/warden/collector/nats-auth"
	DefaultAgentKeys  = "/etc/warden/agent-keys"
	DefaultConsumer   = "warden-collector"
)

// Config configures a Collector.
type Config struct {
	// EmbeddedNATS starts an in-process NATS server; otherwise NATSURL is
	// dialled.
	EmbeddedNATS bool
	NATSURL      string
	NATSListen   string
	NATSStore    string
	// NATSAuthDir holds the NATS trust chain (pkg/natsauth) the embedded
	// server enforces, created on first start; warden-collector enroll
	// issues agents' creds from it.
	NATSAuthDir string
	// NATSCreds is the collector's creds file for NATSURL (made by
	// warden-collector collector-creds).
	NATSCreds string
	// NATSTLSCA is a PEM bundle trusted for NATSURL's servers.
	NATSTLSCA string
	// NATSTLSCert and NATSTLSKey: with EmbeddedNATS, the embedded
	// server's certificate (every client must then use TLS); otherwise
	// the collector's client certificate.
	NATSTLSCert, NATSTLSKey string
	// StorePath is the event store: a SQLite database file, or a
	// postgres:// URL (several collectors may share one).
	StorePath string
	// Retain, if positive, deletes events older than this (in batches,
	// every RetainEvery; see store.Retain).
	Retain time.Duration
	// Listen is the API address; port 0 picks a free one.
	Listen string
	// AgentKeysDir holds "<host_id>.pub" files. Keys, when set, is used
	// instead (tests).
	AgentKeysDir string
	Keys         event.KeyRing
	Consumer     string
	// FilterSubject restricts the consumer (sharding by subject).
	FilterSubject string
	ChainCheck    ingest.ChainCheck
	BatchSize     int
	// StreamReplicas is the replica count used if the collector creates
	// the stream (3 on a 3-node cluster); an existing stream is kept.
	StreamReplicas int
	// ActiveStandby makes collectors sharing Consumer (and one
	// PostgreSQL store) take turns: only the holder of the ingest lease
	// consumes; another takes over when it stops renewing (lease.go).
	ActiveStandby bool
	// LeaseTTL is how long a lease outlives its last renewal; default
	// DefaultLeaseTTL.
	LeaseTTL time.Duration
	// Name identifies this collector in the violations it raises; default
	// the hostname.
	Name string
	// OIDC verifies the ID token every API call carries. Required: the
	// API never serves unauthenticated, so New refuses a Config without
	// an issuer and a client id.
	OIDC idtoken.Config
	// Readers are the groups allowed to read events, lineage, sessions
	// and locks; empty means nobody.
	Readers []string
	// Killers are the groups allowed to kill sessions and lock people;
	// empty means nobody.
	Killers []string
	// TLSCert and TLSKey are PEM files; with both, the API is served over
	// TLS. One without the other is an error.
	TLSCert, TLSKey string
	// ConsoleURL is the web console's public base URL, where the IdP
	// sends browsers back after sign-in (+ /auth/callback). Default: the
	// API's URL (a listener on every address is named 127.0.0.1).
	ConsoleURL string
	// Webhook, if set, receives each review request and decision (POST,
	// JSON, Slack-compatible).
	Webhook string
	Logger  zerolog.Logger
}

// Collector is a running collector.
type Collector struct {
	cfg Config
	log zerolog.Logger
	ns  *natsembed.Server // nil with an external NATS
	nc  *nats.Conn
	st  *store.Store
	// ing is the running ingester: set by New, or with ActiveStandby
	// while this collector holds the lease.
	ing      atomic.Pointer[ingest.Ingester]
	ingCfg   ingest.Config
	stream   jetstream.Stream
	leaseKV  jetstream.KeyValue
	leaseRev uint64 // revision of the lease key this collector holds
	rev      *reviews.Service
	ln       net.Listener
	tls      bool
	srv      *http.Server
	// consoleURL is the web console's public base URL.
	consoleURL string
	notifier   *api.Notifier
	// reqCtx is the base context of API requests; cancelling it ends
	// follow streams, which http.Server.Shutdown alone would wait for.
	reqCtx    context.Context
	reqCancel context.CancelFunc
	ncClosed  chan struct{}
}

// New opens the store, starts or dials NATS, declares the stream and binds
// the API listener. Nothing is consumed or served until Run.
func New(ctx context.Context, cfg Config) (c *Collector, err error) {
	if cfg.Consumer == "" {
		cfg.Consumer = DefaultConsumer
	}
	if cfg.Name == "" {
		cfg.Name, _ = os.Hostname()
	}
	// Configuration mistakes of the API first, before anything is opened
	// or started: they are the operator's to fix, and cheap to report.
	if cfg.OIDC.Issuer == "" || cfg.OIDC.ClientID == "" {
		return nil, errors.New("the API needs --oidc-issuer and --oidc-client-id: it serves only people with a verified OIDC ID token, never anonymous callers")
	}
	tlsCfg, err := apiTLS(cfg.TLSCert, cfg.TLSKey)
	if err != nil {
		return nil, err
	}
	if err := reviews.CheckWebhook(cfg.Webhook); err != nil {
		return nil, err
	}
	verifier, err := idtoken.NewVerifier(ctx, cfg.OIDC)
	if err != nil {
		return nil, fmt.Errorf("API token verifier: %w", err)
	}
	if err := verifier.Discover(ctx); err != nil {
		// Not fatal: the IdP may start after the collector; calls get
		// 503 until it answers.
		cfg.Logger.Warn().Err(err).Msg("identity provider not reachable yet; API calls wait for it")
	}
	c = &Collector{cfg: cfg, log: cfg.Logger, notifier: api.NewNotifier(), ncClosed: make(chan struct{})}
	c.reqCtx, c.reqCancel = context.WithCancel(context.Background())
	// Not c: every failure returns nil for it, and what was acquired so
	// far must still be released.
	self := c
	defer func() {
		if err != nil {
			self.close()
		}
	}()

	keys := cfg.Keys
	if keys == nil {
		if keys, err = ingest.NewDirKeyRing(cfg.AgentKeysDir, cfg.Logger); err != nil {
			return nil, fmt.Errorf("agent keys (--agent-keys %s): %w", cfg.AgentKeysDir, err)
		}
	}
	if c.st, err = store.Open(cfg.StorePath); err != nil {
		return nil, err
	}

	url := cfg.NATSURL
	var natsOpts []nats.Option
	if cfg.EmbeddedNATS {
		if natsOpts, err = c.startEmbedded(); err != nil {
			return nil, err
		}
		url = c.ns.ClientURL()
	} else if natsOpts, err = clientNATSOptions(cfg); err != nil {
		return nil, err
	}
	if url == "" {
		return nil, errors.New("no NATS: give --nats-url or --embedded-nats")
	}
	natsOpts = append(natsOpts,
		nats.Name("warden-collector "+cfg.Name),
		nats.MaxReconnects(-1),
		// self, not c: a failed New has set c to nil by the time the
		// deferred close drains the connection and this handler runs.
		nats.ClosedHandler(func(*nats.Conn) { close(self.ncClosed) }),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			self.log.Warn().Err(err).Msg("NATS disconnected")
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			self.log.Info().Str("url", nc.ConnectedUrlRedacted()).Msg("NATS reconnected")
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			self.log.Error().Err(err).Msg("NATS error")
		}))
	c.nc, err = nats.Connect(url, natsOpts...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w", url, err)
	}
	js, err := jetstream.New(c.nc)
	if err != nil {
		return nil, fmt.Errorf("JetStream: %w", err)
	}
	var stream jetstream.Stream
	if err := whileClusterForms(ctx, c.log, func() (err error) {
		if stream, err = natsembed.EnsureStream(ctx, js, cfg.StreamReplicas); err != nil {
			return err
		}
		_, err = natsembed.EnsureCommandStream(ctx, js, cfg.StreamReplicas)
		return err
	}); err != nil {
		return nil, err
	}
	kill := api.KillConfig{Killers: cfg.Killers, Commands: natsembed.CommandPublisher{JS: js}, Collector: cfg.Name}
	c.stream = stream
	c.ingCfg = ingest.Config{
		Stream: stream, Consumer: cfg.Consumer, FilterSubject: cfg.FilterSubject,
		Store: c.st, Keys: keys, ChainCheck: cfg.ChainCheck, BatchSize: cfg.BatchSize,
		Name: cfg.Name, Logger: cfg.Logger, OnStored: c.notifier.Notify,
	}
	if cfg.ActiveStandby {
		// The ingester is made when the lease is won: it resumes the
		// verifier from the store as the previous holder left it.
		if c.leaseKV, err = leaseBucket(ctx, js, cfg); err != nil {
			return nil, err
		}
	} else {
		ing, err := ingest.New(ctx, c.ingCfg)
		if err != nil {
			return nil, err
		}
		c.ing.Store(ing)
	}
	if c.rev, err = reviews.New(reviews.Config{Store: c.st, NATS: c.nc, Webhook: cfg.Webhook, Logger: cfg.Logger}); err != nil {
		return nil, err
	}
	if c.ln, err = net.Listen("tcp", cfg.Listen); err != nil {
		return nil, fmt.Errorf("API listen (--listen %s): %w", cfg.Listen, err)
	}
	if tlsCfg != nil {
		c.ln, c.tls = tls.NewListener(c.ln, tlsCfg), true
	}
	c.consoleURL = cfg.ConsoleURL
	if c.consoleURL == "" {
		c.consoleURL = defaultConsoleURL(c.ln.Addr(), c.tls)
	}
	// The console and the API share one session store: the API accepts
	// the console's cookie, and its roles decide what the console shows.
	sessions := console.NewSessions(c.tls, c.consoleURL, nil)
	apiSrv := api.New(api.Config{Store: c.st, Notifier: c.notifier, Stats: c.ingestStats, Verifier: verifier, Sessions: sessions,
		Readers: cfg.Readers, Kill: kill, Reviews: c.rev, Logger: cfg.Logger, Recordings: recording.NewNATSStore(js), Keys: keys})
	con, err := console.New(console.Config{API: apiSrv, Store: c.st, Sessions: sessions, Verifier: verifier,
		ClientID: cfg.OIDC.ClientID, URL: c.consoleURL, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	c.srv = &http.Server{
		Handler: con,
		// No write timeout: /v1/follow streams for as long as the client
		// stays. Header and idle timeouts still bound slow or idle clients.
		ReadHeaderTimeout: 10 * time.Second,
		// TLS handshake failures and the like go to the structured log,
		// not to a bare stderr line.
		ErrorLog:    stdlog.New(cfg.Logger.With().Str("component", "api").Logger(), "", 0),
		IdleTimeout: 2 * time.Minute,
		BaseContext: func(net.Listener) context.Context { return c.reqCtx },
	}
	return c, nil
}

// ConsoleURL is the web console's base URL (sign in there).
func (c *Collector) ConsoleURL() string { return c.consoleURL }

// defaultConsoleURL names the console after its listener; a listener on
// every address is named by the loopback address, which is right on the
// collector's own machine and otherwise needs --console-url.
func defaultConsoleURL(addr net.Addr, tls bool) string {
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		host, port = addr.String(), ""
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
		if ip.To4() == nil {
			host = "::1"
		}
	}
	scheme := "http"
	if tls {
		scheme = "https"
	}
	if port == "" {
		return scheme + "://" + host
	}
	return scheme + "://" + net.JoinHostPort(host, port)
}

// APIAddr is the address the API listens on.
func (c *Collector) APIAddr() string { return c.ln.Addr().String() }

// APIURL is the API's base URL: https when it serves TLS.
func (c *Collector) APIURL() string {
	if c.tls {
		return "https://" + c.APIAddr()
	}
	return "http://" + c.APIAddr()
}

// apiTLS loads the API's certificate, or returns nil for plain HTTP
// when neither file is given.
func apiTLS(certFile, keyFile string) (*tls.Config, error) {
	switch {
	case certFile == "" && keyFile == "":
		return nil, nil
	case certFile == "":
		return nil, errors.New("--api-tls-key needs --api-tls-cert: give both to serve the API over TLS")
	case keyFile == "":
		return nil, errors.New("--api-tls-cert needs --api-tls-key: give both to serve the API over TLS")
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("API TLS (--api-tls-cert %s, --api-tls-key %s): %w", certFile, keyFile, err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// NATSURL is the URL of the NATS server in use (embedded or dialled).
// With the embedded server that is the server's client URL: the
// collector itself connects in process.
func (c *Collector) NATSURL() string {
	if c.ns != nil {
		return c.ns.ClientURL()
	}
	return c.nc.ConnectedUrl()
}

// Store returns the event store (tests and benchmarks read it directly).
func (c *Collector) Store() *store.Store { return c.st }

// Ingester returns the ingester, for its counters.
// With ActiveStandby it is nil while another collector holds the lease.
func (c *Collector) Ingester() *ingest.Ingester { return c.ing.Load() }

// ingestStats are the running ingester's counters, or a standby's.
func (c *Collector) ingestStats() collectorclient.IngestStats {
	if in := c.ing.Load(); in != nil {
		return in.Stats()
	}
	return collectorclient.IngestStats{Consumer: c.cfg.Consumer, ChainCheck: string(c.cfg.ChainCheck), LastError: "standby: another collector holds the ingest lease"}
}

// Reviews returns the review service.
func (c *Collector) Reviews() *reviews.Service { return c.rev }

// Run ingests and serves until ctx is cancelled, then shuts down: the API
// stops taking requests, the ingester naks what it has not stored, and NATS
// and the store are closed. It returns the first error that stopped it.
func (c *Collector) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	const parts = 5 // ingester, API, review service, retention, revocations
	errc := make(chan error, parts)
	go func() { errc <- c.retain(ctx) }()
	go func() { errc <- c.watchRevocations(ctx) }()
	go func() {
		var err error
		if c.cfg.ActiveStandby {
			err = c.runStandby(ctx)
		} else {
			err = c.ing.Load().Run(ctx)
		}
		if err != nil && ctx.Err() != nil && errors.Is(err, context.Canceled) {
			// Stopped while it was still binding its consumer: a stop,
			// not a failure.
			err = nil
		}
		if err != nil {
			err = fmt.Errorf("ingest: %w", err)
		}
		errc <- err
	}()
	go func() {
		c.log.Info().Str("url", c.APIURL()).Msg("API listening")
		err := c.srv.Serve(c.ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		} else if err != nil {
			err = fmt.Errorf("API: %w", err)
		}
		errc <- err
	}()
	go func() {
		err := c.rev.Run(ctx)
		if err != nil {
			err = fmt.Errorf("reviews: %w", err)
		}
		errc <- err
	}()

	var first error
	received := 0
	select {
	case <-ctx.Done():
	case first = <-errc:
		// One part stopped on its own; stop the others too.
		received++
	}
	cancel()
	c.reqCancel()
	shutCtx, shutCancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer shutCancel()
	if err := c.srv.Shutdown(shutCtx); err != nil {
		c.log.Warn().Err(err).Msg("API shutdown")
		_ = c.srv.Close()
	}
	for ; received < parts; received++ {
		if err := <-errc; err != nil && first == nil {
			first = err
		}
	}
	c.close()
	return first
}

// close releases everything New acquired, in reverse order.
func (c *Collector) close() {
	c.reqCancel()
	if c.ln != nil {
		_ = c.ln.Close()
	}
	if c.nc != nil {
		// Drain flushes pending acks before closing.
		if err := c.nc.Drain(); err != nil {
			c.nc.Close()
		}
		<-c.ncClosed
	}
	if c.ns != nil {
		c.ns.Shutdown()
	}
	if c.st != nil {
		_ = c.st.Close()
	}
}

// startEmbedded starts the embedded NATS server with the trust chain of
// NATSAuthDir (made on first start) and returns the options of the
// collector's own in-process connection: a collector user issued now.
func (c *Collector) startEmbedded() ([]nats.Option, error) {
	cfg := c.cfg
	auth, err := natsauth.Open(cfg.NATSAuthDir)
	if err != nil {
		return nil, fmt.Errorf("NATS trust chain (--nats-auth %s): %w", cfg.NATSAuthDir, err)
	}
	if c.ns, err = natsembed.Start(natsembed.Config{Listen: cfg.NATSListen, StoreDir: cfg.NATSStore, ServerName: cfg.Name,
		Logger: cfg.Logger, Auth: auth, TLSCert: cfg.NATSTLSCert, TLSKey: cfg.NATSTLSKey}); err != nil {
		return nil, err
	}
	c.log.Info().Str("url", c.ns.ClientURL()).Str("store", cfg.NATSStore).Str("auth", cfg.NATSAuthDir).
		Bool("tls", cfg.NATSTLSCert != "").Msg("embedded NATS server started")
	name := natsName(cfg.Name)
	creds, _, err := auth.Issue(natsauth.RoleCollector, name, "")
	if err != nil {
		return nil, err
	}
	tok, err := jwt.ParseDecoratedJWT(creds)
	if err != nil {
		return nil, err
	}
	kp, err := jwt.ParseDecoratedNKey(creds)
	if err != nil {
		return nil, err
	}
	seed, err := kp.Seed()
	if err != nil {
		return nil, err
	}
	return []nats.Option{
		// In process: no socket, so no TLS to configure for ourselves.
		nats.InProcessServer(c.ns.NATS()),
		nats.UserJWTAndSeed(tok, string(seed)),
		nats.CustomInboxPrefix(natsauth.InboxPrefix(natsauth.RoleCollector, name)),
	}, nil
}

// clientNATSOptions are the options for an external NATS: the creds of
// --nats-creds (whose collector name sets the inbox) and TLS.
func clientNATSOptions(cfg Config) ([]nats.Option, error) {
	var opts []nats.Option
	if cfg.NATSCreds != "" {
		b, err := os.ReadFile(cfg.NATSCreds)
		if err != nil {
			return nil, fmt.Errorf("--nats-creds: %w", err)
		}
		tok, err := jwt.ParseDecoratedJWT(b)
		if err != nil {
			return nil, fmt.Errorf("--nats-creds %s: not a NATS creds file: %w", cfg.NATSCreds, err)
		}
		uc, err := jwt.DecodeUserClaims(tok)
		if err != nil {
			return nil, fmt.Errorf("--nats-creds %s: %w", cfg.NATSCreds, err)
		}
		name, ok := strings.CutPrefix(uc.Name, string(natsauth.RoleCollector)+":")
		if !ok {
			return nil, fmt.Errorf("--nats-creds %s are the creds of %q, not of a collector: make them with warden-collector collector-creds NAME", cfg.NATSCreds, uc.Name)
		}
		opts = append(opts, nats.UserCredentials(cfg.NATSCreds), nats.CustomInboxPrefix(natsauth.InboxPrefix(natsauth.RoleCollector, name)))
	}
	if cfg.NATSTLSCA != "" {
		opts = append(opts, nats.RootCAs(cfg.NATSTLSCA))
	}
	if cfg.NATSTLSCert != "" || cfg.NATSTLSKey != "" {
		opts = append(opts, nats.ClientCert(cfg.NATSTLSCert, cfg.NATSTLSKey))
	}
	return opts, nil
}

// natsName turns a collector name (a hostname, often) into a NATS user
// name: characters natsauth does not take become '_'.
func natsName(s string) string {
	b := []byte(s)
	for i, ch := range b {
		if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '-' || ch == '_') {
			b[i] = '_'
		}
	}
	if len(b) == 0 {
		return "collector"
	}
	if len(b) > 64 {
		b = b[:64]
	}
	return string(b)
}

// RetainEvery is how often the collector applies Config.Retain.
const RetainEvery = time.Hour

// retain deletes expired events now and every RetainEvery until ctx ends.
// A failed pass is logged and retried at the next one: retention is not
// worth stopping ingestion for.
func (c *Collector) retain(ctx context.Context) error {
	if c.cfg.Retain <= 0 {
		// Nothing to do, but Run takes a part that returns for a
		// failure: wait like the others.
		<-ctx.Done()
		return nil
	}
	t := time.NewTicker(RetainEvery)
	defer t.Stop()
	for {
		cutoff := time.Now().Add(-c.cfg.Retain)
		n, err := c.st.Retain(ctx, cutoff, 0)
		if err != nil && ctx.Err() == nil {
			c.log.Error().Err(err).Int("deleted", n).Time("cutoff", cutoff).Msg("retention pass failed")
		} else if n > 0 {
			c.log.Info().Int("deleted", n).Time("cutoff", cutoff).Msg("retention: deleted expired events")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// RevocationCheckEvery is how often a collector with the embedded server
// looks for a new account JWT (warden-collector revoke rewrites it).
const RevocationCheckEvery = 2 * time.Second

// watchRevocations applies revocations to the embedded server while it
// runs: when the account JWT in NATSAuthDir changes, the trust chain is
// read again and the server disconnects and refuses the revoked users.
func (c *Collector) watchRevocations(ctx context.Context) error {
	if c.ns == nil {
		<-ctx.Done() // an external NATS: its operators reload it
		return nil
	}
	path := filepath.Join(c.cfg.NATSAuthDir, "account.jwt")
	mtime := func() time.Time {
		fi, err := os.Stat(path)
		if err != nil {
			return time.Time{}
		}
		return fi.ModTime()
	}
	seen := mtime()
	t := time.NewTicker(RevocationCheckEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		m := mtime()
		if m.Equal(seen) {
			continue
		}
		seen = m
		auth, err := natsauth.Open(c.cfg.NATSAuthDir)
		if err == nil {
			err = c.ns.ReloadAuth(auth)
		}
		if err != nil {
			c.log.Error().Err(err).Str("file", path).Msg("NATS account changed but could not be applied; revocations wait for a restart")
			continue
		}
		c.log.Info().Str("file", path).Msg("NATS account reloaded: revocations applied")
	}
}

// clusterSettle bounds how long New waits for a JetStream cluster that is
// still forming.
const clusterSettle = 60 * time.Second

// whileClusterForms runs step until it succeeds, and retries it while the
// JetStream cluster is still forming: no meta leader yet, or fewer peers
// joined than the streams' replicas need. A collector started together
// with its NATS cluster (one boot, one systemd target) then waits for it
// instead of exiting. Any other error, or one that outlasts
// clusterSettle, is returned.
func whileClusterForms(ctx context.Context, log zerolog.Logger, step func() error) error {
	deadline := time.Now().Add(clusterSettle)
	backoff := 200 * time.Millisecond
	for {
		err := step()
		if err == nil || !clusterForming(err) || time.Now().After(deadline) {
			return err
		}
		log.Warn().Err(err).Dur("retry_in", backoff).Msg("JetStream cluster not ready yet; waiting for it")
		select {
		case <-ctx.Done():
			return err
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 2*time.Second)
	}
}

// JetStream's error codes for a cluster that cannot place or serve a
// request yet (nats-server's JSClusterNoPeersErrF and
// JSClusterNotAvailErr).
const (
	codeNoSuitablePeers     = 10005
	codeClusterNotAvailable = 10008
)

// clusterForming reports whether err is one a forming cluster answers.
func clusterForming(err error) bool {
	var jsErr jetstream.JetStreamError
	if errors.As(err, &jsErr) && jsErr.APIError() != nil {
		switch jsErr.APIError().ErrorCode {
		case codeNoSuitablePeers, codeClusterNotAvailable:
			return true
		}
	}
	return errors.Is(err, nats.ErrNoResponders)
}
