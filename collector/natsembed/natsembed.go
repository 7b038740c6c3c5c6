// Package natsembed runs an in-process NATS server with JetStream for
// single-host Warden setups (and, in tests, as the nodes of a cluster),
// with Warden's JWT trust chain (pkg/natsauth) and optional TLS, and
// declares the WARDEN_EVENTS stream that agents publish to and collectors
// consume from.
package natsembed

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/pkg/natsauth"
)

// StreamName is the JetStream stream that carries every Warden event.
const StreamName = event.StreamName

// StreamSubjects is the subject filter of StreamName.
const StreamSubjects = event.StreamSubjects

// DuplicateWindow is how long JetStream remembers Nats-Msg-Id values. Agents
// set Nats-Msg-Id to the event id, so a spool re-sending an event inside this
// window is dropped by the server instead of reaching the collector twice.
const DuplicateWindow = 2 * time.Minute

// Config configures an embedded server.
type Config struct {
	// Listen is the client address agents and SOC tools connect to,
	// host:port. Port 0 picks a free port (tests).
	Listen string
	// StoreDir is where JetStream keeps its file storage.
	StoreDir string
	// ServerName names the server in logs and cluster metadata.
	ServerName string
	// Logger receives the server's log lines.
	Logger zerolog.Logger
	// Auth is the trust chain the server enforces: only users it issued
	// connect, each with its role's permissions. Required unless
	// AllowAnonymous.
	Auth *natsauth.Authority
	// AllowAnonymous runs the server without authentication. For unit
	// tests of other packages only; the collector never sets it.
	AllowAnonymous bool
	// TLSCert and TLSKey are PEM files; with both, every client must
	// speak TLS (a plain-text client is refused).
	TLSCert, TLSKey string
	// Cluster, if set, makes the server a node of a cluster.
	Cluster *Cluster
}

// Cluster configures a server as one node of a NATS cluster.
type Cluster struct {
	// Name of the cluster, the same on every node.
	Name string
	// Listen is this node's route address, host:port.
	Listen string
	// Routes are the route URLs of the other nodes (nats-route://h:p).
	Routes []string
}

// Server is a running embedded NATS server.
type Server struct {
	ns  *server.Server
	tls bool
	res *server.MemAccResolver // nil without auth
}

// Start starts a NATS server with JetStream file storage and waits until it
// accepts connections.
func Start(cfg Config) (*Server, error) {
	host, portStr, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("natsembed: listen address %q: %w", cfg.Listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("natsembed: listen port %q: %w", portStr, err)
	}
	if port == 0 {
		// nats-server treats 0 as "default port"; -1 means "pick a free one".
		port = server.RANDOM_PORT
	}
	if cfg.StoreDir == "" {
		return nil, errors.New("natsembed: JetStream store directory is empty")
	}
	name := cfg.ServerName
	if name == "" {
		name = "warden-collector"
	}
	opts := &server.Options{
		ServerName:             name,
		Host:                   host,
		Port:                   port,
		JetStream:              true,
		StoreDir:               cfg.StoreDir,
		NoSigs:                 true, // the collector owns signal handling
		DisableJetStreamBanner: true,
	}
	switch {
	case cfg.Auth != nil:
		if err := ApplyAuth(opts, cfg.Auth); err != nil {
			return nil, err
		}
	case !cfg.AllowAnonymous:
		return nil, errors.New("natsembed: no trust chain: the server never runs without authentication")
	}
	if err := applyTLS(opts, cfg.TLSCert, cfg.TLSKey); err != nil {
		return nil, err
	}
	if err := applyCluster(opts, cfg.Cluster); err != nil {
		return nil, err
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("natsembed: new server: %w", err)
	}
	ns.SetLoggerV2(logAdapter{cfg.Logger.With().Str("component", "nats").Logger()}, false, false, false)
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return nil, fmt.Errorf("natsembed: server on %s not ready after 10s", cfg.Listen)
	}
	return &Server{ns: ns, tls: opts.TLSConfig != nil, res: resolverOf(opts)}, nil
}

// ClientURL is the nats:// URL clients use to reach the server (tls://
// when it requires TLS).
func (s *Server) ClientURL() string {
	u := s.ns.ClientURL()
	if rest, ok := strings.CutPrefix(u, "nats://"); ok && s.tls {
		u = "tls://" + rest
	}
	return u
}

// NATS returns the server itself, for in-process connections
// (nats.InProcessServer) and cluster status.
func (s *Server) NATS() *server.Server { return s.ns }

// Shutdown stops the server and waits for it to finish.
func (s *Server) Shutdown() {
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
}

// EnsureStream creates the WARDEN_EVENTS stream if it does not exist. An
// existing stream is left as it is: in a cluster its replica count and limits
// are the operator's choice, not the collector's.
func EnsureStream(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.Stream, error) {
	st, err := js.Stream(ctx, StreamName)
	if err == nil {
		return st, nil
	}
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("look up stream %s: %w", StreamName, err)
	}
	if replicas < 1 {
		replicas = 1
	}
	st, err = js.CreateStream(ctx, jetstream.StreamConfig{
		Name:       StreamName,
		Subjects:   []string{StreamSubjects},
		Storage:    jetstream.FileStorage,
		Retention:  jetstream.LimitsPolicy,
		Duplicates: DuplicateWindow,
		Replicas:   replicas,
	})
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		// Another collector or an agent created it between our two calls.
		return js.Stream(ctx, StreamName)
	}
	if err != nil {
		return nil, fmt.Errorf("create stream %s: %w", StreamName, err)
	}
	return st, nil
}

// logAdapter routes nats-server logging into zerolog.
type logAdapter struct{ l zerolog.Logger }

func (a logAdapter) Noticef(format string, v ...any) { a.l.Info().Msgf(format, v...) }
func (a logAdapter) Warnf(format string, v ...any)   { a.l.Warn().Msgf(format, v...) }
func (a logAdapter) Fatalf(format string, v ...any)  { a.l.Error().Msgf(format, v...) }
func (a logAdapter) Errorf(format string, v ...any)  { a.l.Error().Msgf(format, v...) }
func (a logAdapter) Debugf(format string, v ...any)  { a.l.Debug().Msgf(format, v...) }
func (a logAdapter) Tracef(format string, v ...any)  { a.l.Trace().Msgf(format, v...) }
