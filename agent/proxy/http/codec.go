// Package http is the proxy's HTTP codec, for http and https targets. It
// serves the client with the standard library's HTTP server (HTTP/1.1,
// and HTTP/2 when a TLS client negotiates it) and forwards allowed
// requests with httputil.ReverseProxy; it parses no HTTP itself.
//
// Each request's path is made canonical (pkg/protocol/http) and matched,
// with its method, by the stream's Guard; ambiguous paths and smuggling
// attempts are refused with 400 before anything reaches the target, and
// denials get 403 with a JSON body. Allowed requests go on without the
// client's X-Warden-* headers and with Warden's own (who, and a short
// lived JWT saying so), the target's injected credential, and responses
// come back masked. Every request is recorded (http.request before it is
// forwarded, http.response after).
package http

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	stdlog "log"
	"net"
	nethttp "net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/wardenhq/warden/agent/proxy"
	"github.com/wardenhq/warden/pkg/policy"
)

// Options configure the codec.
type Options struct {
	// ClientTLS gives the TLS configuration for a client of an https
	// target that connected to dst: certificates from the agent's client
	// authority, for the name the client asked for. Without it, https
	// targets refuse every connection.
	ClientTLS func(dst netip.Addr) *tls.Config
	// Identity signs the X-Warden-Identity token; without it the header
	// is not sent (X-Warden-User and X-Warden-Groups still are).
	Identity *Signer
}

// Codec is the HTTP codec.
type Codec struct {
	opts Options
}

// New returns the HTTP codec.
func New(opts Options) *Codec { return &Codec{opts: opts} }

// Enforces implements proxy.Codec.
func (c *Codec) Enforces() []policy.Capability {
	return []policy.Capability{
		policy.CapMethods, policy.CapPaths, policy.CapUpgrade, policy.CapCommands, policy.CapReview,
		policy.CapColumnMasking, policy.CapContentMasking, policy.CapCredentials, policy.CapUpstreamTLS,
		policy.CapHTTPSettings,
	}
}

// handshakeTimeout bounds how long a client may take to send its first
// request (and TLS handshake): a client that says nothing must not pin a
// handler.
const handshakeTimeout = 30 * time.Second

// idleTimeout closes a keep-alive connection with no request for this
// long.
const idleTimeout = 5 * time.Minute

// Refuse answers every request on the connection with 403 and the
// decision's reason in a JSON body, then closes it.
func (c *Codec) Refuse(ctx context.Context, client net.Conn, att *proxy.Attribution) error {
	conn, err := c.clientConn(ctx, client, att)
	if err != nil {
		return err
	}
	h := nethttp.HandlerFunc(func(w nethttp.ResponseWriter, r *nethttp.Request) {
		w.Header().Set("Connection", "close")
		writeJSON(w, nethttp.StatusForbidden, denial{Error: att.Decision.Reason, Rule: att.Decision.Rule})
	})
	return serveConn(ctx, conn, h, zerolog.Nop())
}

// clientConn is the connection as the client speaks HTTP on it: TLS for
// https targets, terminated with a certificate from the client authority.
func (c *Codec) clientConn(ctx context.Context, client net.Conn, att *proxy.Attribution) (net.Conn, error) {
	if att.Target.Protocol != policy.ProtocolHTTPS {
		return client, nil
	}
	if c.opts.ClientTLS == nil {
		return nil, errors.New("https target, but the agent's client TLS is off (client_tls.mode)")
	}
	cfg := c.opts.ClientTLS(att.Kernel.OrigDst.Addr()).Clone()
	cfg.NextProtos = []string{"h2", "http/1.1"}
	tc := tls.Server(client, cfg)
	hctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		return nil, fmt.Errorf("client TLS handshake: %w", err)
	}
	return tc, nil
}

// Serve carries one allowed connection until either side closes it.
func (c *Codec) Serve(ctx context.Context, s *proxy.Stream) error {
	conn, err := c.clientConn(ctx, s.Client, s.Attribution)
	if err != nil {
		return err
	}
	st, err := newStream(c, s)
	if err != nil {
		return err
	}
	defer st.close()
	return serveConn(ctx, conn, st, s.Log)
}

// denial is the JSON body of a refused request.
type denial struct {
	Error  string `json:"error"`
	Rule   string `json:"rule"`
	Review string `json:"review,omitempty"`
}

func writeJSON(w nethttp.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// serveConn serves HTTP on the one connection conn with h until the
// connection ends or ctx is done. HTTP/1 connections are screened for
// smuggling first (see screen); an HTTP/2 connection (a TLS client that
// negotiated h2) has no such ambiguity, as its frames carry lengths.
func serveConn(ctx context.Context, conn net.Conn, h nethttp.Handler, log zerolog.Logger) error {
	var sc *screen
	served := conn
	if tc, ok := conn.(*tls.Conn); !ok || tc.ConnectionState().NegotiatedProtocol != "h2" {
		var err error
		if sc, served, err = newScreen(conn); err != nil {
			return err
		}
	}
	ln := newOneConnListener(served)
	var handlers sync.WaitGroup
	srv := &nethttp.Server{
		Handler: nethttp.HandlerFunc(func(w nethttp.ResponseWriter, r *nethttp.Request) {
			handlers.Add(1)
			defer handlers.Done()
			if sc != nil {
				if rf := sc.refused(r.Header.Get(refusalHeader)); rf != nil {
					r = r.WithContext(context.WithValue(r.Context(), refusalKey{}, rf))
				}
			}
			h.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: handshakeTimeout,
		ErrorLog:          debugLog(log),
		IdleTimeout:       idleTimeout,
		ConnState: func(_ net.Conn, cs nethttp.ConnState) {
			if cs == nethttp.StateClosed || cs == nethttp.StateHijacked {
				ln.Close()
			}
		},
		BaseContext: func(net.Listener) context.Context { return ctx },
	}
	if sc == nil {
		// net/http speaks h2 on a *tls.Conn that negotiated it, when
		// its TLS configuration offers h2.
		srv.TLSConfig = &tls.Config{NextProtos: []string{"h2", "http/1.1"}}
	}
	stop := context.AfterFunc(ctx, func() {
		srv.Close()
		served.Close()
	})
	defer stop()
	err := srv.Serve(ln)
	// Serve returns once the connection ended (or was hijacked, by an
	// upgrade); the handlers, an upgrade's relay among them, may still
	// be running.
	handlers.Wait()
	served.Close()
	conn.Close()
	if sc != nil {
		sc.wait()
	}
	if errors.Is(err, net.ErrClosed) || errors.Is(err, nethttp.ErrServerClosed) {
		return nil
	}
	return err
}

// refusalKey carries a screen's refusal in a request's context.
type refusalKey struct{}

// oneConnListener hands out one connection, then blocks until closed.
type oneConnListener struct {
	conn net.Conn
	mu   sync.Mutex
	used bool
	done chan struct{}
	once sync.Once
}

func newOneConnListener(c net.Conn) *oneConnListener {
	return &oneConnListener{conn: c, done: make(chan struct{})}
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	if !l.used {
		l.used = true
		l.mu.Unlock()
		return l.conn, nil
	}
	l.mu.Unlock()
	<-l.done
	return nil, net.ErrClosed
}

func (l *oneConnListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *oneConnListener) Addr() net.Addr { return l.conn.LocalAddr() }

// debugLog routes the standard library's HTTP log lines (a client's bad
// request, a failed handshake) to the stream's log, at debug level: they
// are about one client, and never carry its headers.
func debugLog(l zerolog.Logger) *stdlog.Logger {
	return stdlog.New(logWriter{l}, "", 0)
}

type logWriter struct{ l zerolog.Logger }

func (w logWriter) Write(p []byte) (int, error) {
	w.l.Debug().Msg(strings.TrimSpace(string(p)))
	return len(p), nil
}
