// Package mysql is the proxy's MySQL and MariaDB codec: it speaks the
// client/server protocol to both sides, checks every statement with a
// MySQL grammar through the stream's Guard (pkg/mysqlguard), masks text
// and binary result rows, injects the target's vaulted credentials, routes
// KILL to the connection it names only for its owner, and records each
// statement through the stream's Audit. Wire code lives in
// pkg/protocol/mysql.
//
// The protocol is strictly one command, then its whole response, so one
// loop carries a session: it reads a command, decides, forwards it (or
// answers with Warden's ERR) and relays the response, masking rows.
package mysql

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/wardenhq/warden/agent/proxy"
	"github.com/wardenhq/warden/pkg/policy"
	wire "github.com/wardenhq/warden/pkg/protocol/mysql"
)

// Options configure the codec.
type Options struct {
	// ClientTLS, when set, gives the TLS configuration for a client that
	// asks for TLS and connected to dst; without it the handshake offers
	// no TLS, and a client that requires it gives up.
	ClientTLS func(dst netip.Addr) *tls.Config
}

// Codec is the MySQL codec. One instance serves every MySQL connection of
// the proxy, which is what lets a KILL, arriving on a connection of its
// own, find whose connection it names.
type Codec struct {
	opts Options

	mu    sync.Mutex
	conns map[connKey]string // upstream connection -> the person's sub

	// dial opens the connection a closing session's KILL QUERY goes on;
	// tests replace it.
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// connKey names an upstream connection: the server's address and the
// connection (thread) id it gave.
type connKey struct {
	addr string
	id   uint64
}

// New returns the MySQL codec.
func New(opts Options) *Codec {
	return &Codec{opts: opts, conns: map[connKey]string{}, dial: (&net.Dialer{}).DialContext}
}

// Enforces implements proxy.Codec.
func (p *Codec) Enforces() []policy.Capability {
	return []policy.Capability{
		policy.CapStatements, policy.CapTables, policy.CapFunctions, policy.CapNoWhere, policy.CapReview,
		policy.CapColumnMasking, policy.CapContentMasking, policy.CapCredentials, policy.CapUpstreamTLS,
	}
}

// Refuse tells the client why it cannot go on, in an ERR packet. Where
// the codec offers TLS, it gives a greeting of its own first, so that a
// client that asks for TLS (as the mariadb and mysql clients do by
// default) reads the reason over TLS from the certificate it may verify,
// instead of an error "whose authenticity cannot be verified". Otherwise
// the ERR comes in the greeting's place, which every client prints.
func (p *Codec) Refuse(ctx context.Context, client net.Conn, att *proxy.Attribution) error {
	client.SetDeadline(time.Now().Add(30 * time.Second))
	refusal := (&wire.ERR{Code: erAccessDenied, State: "28000", Message: att.Decision.Reason}).Encode()
	w := wire.NewWriter(client)
	cfg := p.clientTLS(att)
	if cfg == nil {
		w.WriteSeq(0, refusal)
		return w.Flush()
	}
	sc, err := scramble()
	if err != nil {
		return err
	}
	hs := &wire.Handshake{ServerVersion: "5.5.5-10.11.0-warden", AuthData: sc, Charset: 45, Status: wire.StatusAutocommit,
		AuthPlugin: wire.PluginNative, Capabilities: wire.ClientLongPassword | wire.ClientProtocol41 | wire.ClientSecureConnection |
			wire.ClientPluginAuth | wire.ClientSSL | wire.ClientConnectWithDB | wire.ClientTransactions}
	w.WriteSeq(0, hs.Encode())
	if err := w.Flush(); err != nil {
		return err
	}
	r := wire.NewReader(client)
	seq, pkt, err := r.Next()
	if err != nil {
		return fmt.Errorf("read client response: %w", err)
	}
	if resp, err := wire.ParseHandshakeResponse(pkt); err == nil && resp.SSLRequest {
		tc := tls.Server(&prefixConn{Conn: client, pre: r.Detach()}, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			return fmt.Errorf("client TLS handshake: %w", err)
		}
		w, r = wire.NewWriter(tc), wire.NewReader(tc)
		if seq, _, err = r.Next(); err != nil {
			return fmt.Errorf("read client response: %w", err)
		}
	}
	w.WriteSeq(seq+1, refusal)
	return w.Flush()
}

// MySQL error codes Warden answers with.
const (
	erAccessDenied      = 1045 // ER_ACCESS_DENIED_ERROR: login refused
	erSpecificAccess    = 1227 // ER_SPECIFIC_ACCESS_DENIED_ERROR: statement refused
	erParse             = 1064 // ER_PARSE_ERROR
	erNotSupported      = 1235 // ER_NOT_SUPPORTED_YET: commands Warden refuses
	erCannotConnect     = 1429 // ER_CONNECT_TO_FOREIGN_DATA_SOURCE: the target is unusable (clients take 2xxx codes from a server for a malformed packet)
	erServerShutdown    = 1053 // ER_SERVER_SHUTDOWN: the agent ended the session
	erUnrecorded        = 1021 // ER_DISK_FULL-like: the audit cannot record
	erUnknownComError   = 1047 // ER_UNKNOWN_COM_ERROR
	stateAccess         = "42000"
	stateConnectionDone = "08S01"
)

// register records that the upstream connection (addr, id) is sub's.
func (p *Codec) register(addr string, id uint64, sub string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.conns[connKey{addr, id}] = sub
}

func (p *Codec) unregister(addr string, id uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.conns, connKey{addr, id})
}

// owner returns whose connection (addr, id) is, and whether Warden knows
// it at all.
func (p *Codec) owner(addr string, id uint64) (string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	sub, ok := p.conns[connKey{addr, id}]
	return sub, ok
}

// Serve carries one allowed connection: the login, then commands until
// either side closes.
func (p *Codec) Serve(ctx context.Context, s *proxy.Stream) error {
	deadline := time.Now().Add(30 * time.Second)
	s.Client.SetDeadline(deadline)
	s.Upstream.SetDeadline(deadline)
	ss := newSession(p, s)
	defer ss.close()
	if err := ss.login(ctx); err != nil {
		return fmt.Errorf("mysql login: %w", err)
	}
	s.Client.SetDeadline(time.Time{})
	ss.s.Upstream.SetDeadline(time.Time{})
	return ss.run(ctx)
}

// clientTLS is the TLS offered to a client, nil for none.
func (p *Codec) clientTLS(att *proxy.Attribution) *tls.Config {
	if p.opts.ClientTLS == nil {
		return nil
	}
	return p.opts.ClientTLS(att.Kernel.OrigDst.Addr())
}

// upstreamTLS switches conn to TLS as the target demands, after the
// SSLRequest the server expects; never a fallback to plain TCP.
func upstreamTLS(ctx context.Context, conn net.Conn, tp policy.Target, req []byte, w *wire.Writer) (*tls.Conn, error) {
	cfg, err := proxy.UpstreamTLSConfig(tp)
	if err != nil {
		return nil, err
	}
	if err := w.Write(req); err != nil {
		return nil, err
	}
	if err := w.Flush(); err != nil {
		return nil, fmt.Errorf("send SSLRequest: %w", err)
	}
	tc := tls.Client(conn, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("TLS handshake: %w", err)
	}
	return tc, nil
}

// password reads the vaulted password: at each connection, so a rotated
// file takes effect without a reload.
func password(c *policy.Credentials) (string, error) {
	b, err := os.ReadFile(c.PasswordFile)
	if err != nil {
		return "", err
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

// scramble returns a fresh 20-byte scramble of printable bytes, as
// servers make them (some clients stop at a NUL).
func scramble() ([]byte, error) {
	b := make([]byte, 20)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("scramble: %w", err)
	}
	for i := range b {
		b[i] = 0x21 + b[i]%0x5e
	}
	return b, nil
}

// capsNeverForwarded are capabilities Warden takes out of both
// handshakes: compression (Warden must read the packets), LOCAL INFILE
// (the server could then read files from the bastion), query attributes
// and optional metadata (they change COM_QUERY and result-set formats
// Warden reads), and multi-factor authentication.
const capsNeverForwarded = wire.ClientCompress | wire.ClientLocalFiles | wire.ClientZstdCompression |
	wire.ClientQueryAttributes | wire.ClientOptionalMetadata | wire.ClientMultiFactorAuth |
	wire.ClientCapabilityExt | wire.ClientSSLVerifyServer | wire.ClientRememberOptions

// answer computes the vaulted credential's answer to a plugin's scramble.
// An unknown plugin gets mysql_native_password's, which the server may
// follow with an AuthSwitchRequest to one Warden knows.
func answer(plugin string, data []byte, pw string, upstreamTLS bool) ([]byte, error) {
	switch plugin {
	case wire.PluginCachingSHA2:
		return wire.CachingSHA2Password(data, pw), nil
	case wire.PluginEd25519:
		return wire.Ed25519Password(data, pw)
	case wire.PluginClear:
		if !upstreamTLS {
			return nil, errors.New("the target asks for the password in clear text over a connection without TLS")
		}
		return append([]byte(pw), 0), nil
	case wire.PluginSHA256:
		if upstreamTLS {
			return append([]byte(pw), 0), nil
		}
		return []byte{1}, nil // ask for the server's public key
	}
	return wire.NativePassword(data, pw), nil
}
