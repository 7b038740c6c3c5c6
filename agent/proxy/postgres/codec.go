// Package postgres is the proxy's PostgreSQL codec: it speaks the v3
// protocol to both sides, checks every statement with PostgreSQL's own
// parser through the stream's Guard, masks results, injects the target's
// vaulted credentials, routes cancel requests and records each statement
// through the stream's Audit. Pure wire code lives in pkg/protocol/postgres.
package postgres

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/wardenhq/warden/agent/proxy"
	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/pkg/masking"
	"github.com/wardenhq/warden/pkg/policy"
	pgwire "github.com/wardenhq/warden/pkg/protocol/postgres"
	"github.com/wardenhq/warden/pkg/sqlguard"
)

// Options configure the codec.
type Options struct {
	// ClientTLS, when set, gives the TLS configuration for a client that
	// asks for TLS and connected to dst; without it, such requests are
	// declined and the client goes on in the clear (or gives up, if it
	// requires TLS). The agent reads the protocol either way.
	ClientTLS func(dst netip.Addr) *tls.Config
}

// Codec is the PostgreSQL codec. One instance serves every PostgreSQL
// connection of the proxy, which is what lets a cancel request, arriving
// on a connection of its own, find the session it cancels.
type Codec struct {
	opts Options

	mu      sync.Mutex
	cancels map[cancelKey]cancelTarget

	// dial opens the connection a closing session's CancelRequest goes
	// on; tests replace it.
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// New returns the PostgreSQL codec.
func New(opts Options) *Codec {
	return &Codec{opts: opts, cancels: map[cancelKey]cancelTarget{}, dial: (&net.Dialer{}).DialContext}
}

// Enforces implements proxy.Codec: statement rules (kinds, tables,
// functions, no_where), review, column and content masking of results,
// injected credentials and upstream TLS.
func (p *Codec) Enforces() []policy.Capability {
	return []policy.Capability{
		policy.CapStatements, policy.CapTables, policy.CapFunctions, policy.CapNoWhere, policy.CapReview,
		policy.CapColumnMasking, policy.CapContentMasking, policy.CapCredentials, policy.CapUpstreamTLS,
	}
}

// cancelKey is the BackendKeyData Warden gave a client: the backend's own
// pid and a secret of Warden's.
type cancelKey struct {
	pid    uint32
	secret string
}

// cancelTarget is the upstream backend a client key stands for.
type cancelTarget struct {
	addr   string
	pid    uint32
	secret []byte
	sub    string // only the same person may cancel
	// target is the session's target entry, whose upstream TLS the
	// cancel connection to the same server follows.
	target policy.Target
	// session is the proxy's session, whose statement held for review a
	// cancel withdraws instead of reaching the server.
	session *pgSession
}

// Refuse answers the client's startup with a FATAL ErrorResponse, over TLS
// if the client asks for it and the codec offers it, so that a client that
// requires TLS still sees why.
func (p *Codec) Refuse(ctx context.Context, client net.Conn, att *proxy.Attribution) error {
	// A client that never sends its startup packet must not pin the handler.
	client.SetDeadline(time.Now().Add(30 * time.Second))
	return pgwire.RefuseStartup(ctx, client, att.Decision.Reason, p.clientTLS(att))
}

// Serve carries one allowed connection: startup and authentication, then
// statements until either side closes.
func (p *Codec) Serve(ctx context.Context, s *proxy.Stream) error {
	s.Client.SetDeadline(time.Now().Add(30 * time.Second))
	conn, cr, msg, err := pgwire.Negotiate(ctx, s.Client, p.clientTLS(s.Attribution))
	if err != nil {
		return fmt.Errorf("postgres startup: %w", err)
	}
	s.Client = conn
	var startup *pgproto3.StartupMessage
	switch m := msg.(type) {
	case *pgproto3.CancelRequest:
		return p.cancel(ctx, s, m)
	case *pgproto3.StartupMessage:
		startup = m
	default:
		return fmt.Errorf("postgres startup: unexpected %T", msg)
	}
	sess, err := newPGSession(p, s, cr, pgwire.NewWriter(conn))
	if err != nil {
		return err
	}
	defer sess.close()
	if err := sess.startup(ctx, startup); err != nil {
		return err
	}
	s.Client.SetDeadline(time.Time{})
	return sess.run(ctx)
}

// clientTLS is the TLS offered to a client, nil for none.
//
// None for a target without credentials that is reached over TLS: there
// the client logs in itself, and a SCRAM client on TLS that is not offered
// channel binding says so in its first message, which a server on TLS
// rejects as a downgrade; the proof covers that message, so the proxy
// cannot change it. In the clear, the client's SCRAM passes unchanged.
func (p *Codec) clientTLS(att *proxy.Attribution) *tls.Config {
	if p.opts.ClientTLS == nil {
		return nil
	}
	if tp := att.TargetPolicy; tp.Credentials == nil && tp.UpstreamTLS().Enabled() {
		return nil
	}
	return p.opts.ClientTLS(att.Kernel.OrigDst.Addr())
}

// register gives the client the upstream backend's own process id, so that
// what a driver reports matches pg_backend_pid() and pg_stat_activity and
// pg_terminate_backend(pid) ends the right session, with a secret of
// Warden's: the backend's secret never reaches the client, and a cancel
// must come through Warden, which routes it by (pid, its secret).
func (p *Codec) register(up cancelTarget) (pgproto3.BackendKeyData, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		secret := make([]byte, max(len(up.secret), 4))
		if _, err := rand.Read(secret); err != nil {
			return pgproto3.BackendKeyData{}, fmt.Errorf("backend key: %w", err)
		}
		key := cancelKey{up.pid, string(secret)}
		if _, taken := p.cancels[key]; taken {
			continue // the same pid on another server, and the same secret
		}
		p.cancels[key] = up
		return pgproto3.BackendKeyData{ProcessID: up.pid, SecretKey: secret}, nil
	}
}

func (p *Codec) unregister(key pgproto3.BackendKeyData) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.cancels, cancelKey{key.ProcessID, string(key.SecretKey)})
}

// cancel forwards a CancelRequest to the backend it names, translated to
// that backend's own key. Unknown keys and other people's sessions get
// nothing, as a server answers a bad cancel: by closing. For a target with
// upstream TLS the request goes over TLS too (servers accept a
// CancelRequest after SSLRequest), so the backend's key does not cross the
// network in the clear.
func (p *Codec) cancel(ctx context.Context, s *proxy.Stream, m *pgproto3.CancelRequest) error {
	p.mu.Lock()
	up, ok := p.cancels[cancelKey{m.ProcessID, string(m.SecretKey)}]
	p.mu.Unlock()
	sub := ""
	if s.Attribution.Identity != nil {
		sub = s.Attribution.Identity.Sub
	}
	if !ok || up.sub != sub {
		s.Log.Info().Bool("known_key", ok).Msg("cancel request refused")
		return nil
	}
	if up.session != nil && up.session.cancelHold() {
		s.Log.Info().Msg("cancel request withdrew a statement held for review")
		return nil
	}
	conn := s.Upstream
	if conn.RemoteAddr().String() != up.addr {
		var err error
		conn, err = net.DialTimeout("tcp", up.addr, 10*time.Second)
		if err != nil {
			return fmt.Errorf("dial for cancel: %w", err)
		}
		defer conn.Close()
	}
	if tp := up.target; tp.UpstreamTLS().Enabled() {
		tc, err := upstreamTLS(ctx, conn, tp)
		if err != nil {
			return fmt.Errorf("TLS for cancel: %w", err)
		}
		conn = tc
	}
	req := &pgproto3.CancelRequest{ProcessID: up.pid, SecretKey: up.secret}
	buf, err := req.Encode(nil)
	if err != nil {
		return fmt.Errorf("encode cancel: %w", err)
	}
	if _, err := conn.Write(buf); err != nil {
		return fmt.Errorf("send cancel: %w", err)
	}
	s.Log.Info().Msg("cancel request forwarded")
	return nil
}

// pgSession is one client connection.
type pgSession struct {
	codec  *Codec
	s      *proxy.Stream
	att    *proxy.Attribution
	cr, ur *pgwire.Reader
	cw, uw *pgwire.Writer
	masker *masking.Masker // the guard's; nil when nothing is masked

	user, database string // upstream login, for events
	key            *pgproto3.BackendKeyData
	nonce          string // marks statements Warden substitutes

	q opQueue

	// closing carries the agent's request to end the session (see
	// close.go); ended is closed once run returns.
	closing chan closeRequest
	ended   chan struct{}

	// taint holds result column names derived from masked columns in this
	// session (aliases in SELECTs, prepared statements, cursors, views it
	// created). Written by the client loop, read by the upstream loop.
	taintMu sync.Mutex
	taint   map[string]bool

	// Client loop state.
	stmts     map[string]*stmtInfo // prepared statements by name
	portals   map[string]*stmtInfo // portals by name
	described map[string]bool      // portals whose shape the upstream loop will know

	// Upstream loop state.
	shapes map[string][]masking.Field // portal shapes from Describe
	// rowValues and rowOut are maskRow's buffers, reused row after row:
	// the writer copies a row before the next one is read.
	rowValues [][]byte
	rowOut    []byte

	// The server's reports of the settings that change how it reads a
	// text (see noteParameter). Set by the upstream side, read by the
	// client loop; false until the server has reported them.
	conformingStrings atomic.Bool // standard_conforming_strings = on
	asciiSafeEncoding atomic.Bool // see sqlguard.ASCIISafeEncoding

	// txStatus is the server's last ReadyForQuery status: 'I' idle, 'T'
	// in a transaction, 'E' in a failed one. Set by the upstream loop.
	txStatus atomic.Uint32
	// cwMu serialises writes to the client: the upstream loop's, and the
	// client loop's review notices while it holds a statement.
	cwMu sync.Mutex
	// holdCancel ends the review hold in progress; nil when none is.
	holdMu     sync.Mutex
	holdCancel context.CancelFunc
}

// noteParameter follows the server's ParameterStatus reports of the
// settings that change how it splits a text into tokens (see
// sqlguard.Misread). The server reports both at login and on every change.
func (ss *pgSession) noteParameter(body []byte) {
	var p pgproto3.ParameterStatus
	if p.Decode(body) != nil {
		return
	}
	switch p.Name {
	case "standard_conforming_strings":
		ss.conformingStrings.Store(p.Value == "on")
	case "client_encoding":
		ss.asciiSafeEncoding.Store(sqlguard.ASCIISafeEncoding(p.Value))
	}
}

// lexing is how the server will read the next text. The server reports a
// changed setting before its ReadyForQuery, so with nothing in flight the
// reports are current; with something in flight, that something may be
// changing them, and nothing is assumed.
func (ss *pgSession) lexing() sqlguard.Lexing {
	if !ss.q.empty() {
		return sqlguard.Lexing{}
	}
	return sqlguard.Lexing{ConformingStrings: ss.conformingStrings.Load(), ASCIISafeEncoding: ss.asciiSafeEncoding.Load()}
}

// stmtInfo is the analysis of what one Query or Parse carried.
type stmtInfo struct {
	stmt     *sqlguard.Statement // nil for an empty query
	rule     string              // an allow rule that matched, for the record
	derived  sqlguard.Outputs
	extended bool
	// review names the review that approved the statement. A prepared
	// statement it approved may be executed once: the approval was for
	// one run, not for a handle to run it at will.
	review   string
	executed bool
}

func newPGSession(p *Codec, s *proxy.Stream, cr *pgwire.Reader, cw *pgwire.Writer) (*pgSession, error) {
	att := s.Attribution
	sess := &pgSession{
		codec: p, s: s, att: att, cr: cr, cw: cw,
		ur: pgwire.NewReader(s.Upstream), uw: pgwire.NewWriter(s.Upstream),
		taint: map[string]bool{}, stmts: map[string]*stmtInfo{}, portals: map[string]*stmtInfo{},
		described: map[string]bool{}, shapes: map[string][]masking.Field{},
	}
	sess.txStatus.Store('I')
	sess.masker = s.Guard.Masker()
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("session nonce: %w", err)
	}
	sess.nonce = fmt.Sprintf("warden_denied_%x", b)
	return sess, nil
}

func (ss *pgSession) close() {
	if ss.key != nil {
		ss.codec.unregister(*ss.key)
	}
}

// fatal sends a FATAL error to the client during startup.
func (ss *pgSession) fatal(code, msg string) error {
	ss.cw.Send(&pgproto3.ErrorResponse{Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: code, Message: msg})
	ss.cw.Flush()
	return errors.New(msg)
}

// applicationName ties the database session to the person behind it, so
// pg_stat_activity and the server's logs show who is really connected,
// beside the name the client gave (client). The target's
// credentials.application_name template shapes it; without one (or without
// credentials) it is policy.DefaultApplicationName.
func (ss *pgSession) applicationName(client string) string {
	v := policy.ApplicationNameValues{Session: ss.att.SessionID, Client: client}
	if ss.att.Identity != nil {
		v.Sub, v.Email = ss.att.Identity.Sub, ss.att.Identity.Email
	}
	template := ""
	if c := ss.att.TargetPolicy.Credentials; c != nil {
		template = c.ApplicationName
	}
	return policy.ExpandApplicationName(template, v)
}

// secureUpstream switches the upstream connection to TLS when the target
// asks for it (tls, or credentials.tls), before anything of the login
// crosses it. On failure the client gets a FATAL error naming the target;
// the details (certificate errors, the CA file) go to the agent's log and
// into the message, as none of them is secret.
func (ss *pgSession) secureUpstream(ctx context.Context) error {
	tp := ss.att.TargetPolicy
	up := tp.UpstreamTLS()
	if !up.Enabled() {
		return nil
	}
	tc, err := upstreamTLS(ctx, ss.s.Upstream, tp)
	if err != nil {
		ss.s.Log.Warn().Err(err).Str("tls_mode", string(up.Mode)).Msg("upstream TLS failed")
		return ss.fatal(codeCannotConnect, fmt.Sprintf("warden: cannot open a verified TLS connection to target %s (%s): %v; tell the Warden administrator",
			ss.att.Target.Name, up.Mode, err))
	}
	ss.s.Upstream = tc
	ss.ur, ss.uw = pgwire.NewReader(tc), pgwire.NewWriter(tc)
	return nil
}

// codeCannotConnect is SQLSTATE 08001,
// sqlclient_unable_to_establish_sqlconnection.
const codeCannotConnect = "08001"

// startup logs in upstream and brings the client to its first
// ReadyForQuery.
func (ss *pgSession) startup(ctx context.Context, m *pgproto3.StartupMessage) error {
	if v, ok := m.Parameters["replication"]; ok && !isFalse(v) {
		// Replication streams data past statement checks and masking.
		return ss.fatal(pgwire.CodeInsufficientPrivilege, "warden: replication connections are not allowed through the proxy")
	}
	if err := ss.secureUpstream(ctx); err != nil {
		return err
	}
	params := make(map[string]string, len(m.Parameters)+1)
	for k, v := range m.Parameters {
		params[k] = v
	}
	params["application_name"] = ss.applicationName(m.Parameters["application_name"])
	creds := ss.att.TargetPolicy.Credentials
	var password string
	if creds != nil {
		b, err := os.ReadFile(creds.PasswordFile)
		if err != nil {
			ss.s.Log.Error().Err(err).Msg("credential file unreadable")
			return ss.fatal(pgwire.CodeInvalidAuthorization, fmt.Sprintf("warden: credentials for target %s are unavailable; tell the Warden administrator", ss.att.Target.Name))
		}
		password = strings.TrimRight(string(b), "\r\n")
		params["user"] = creds.Username
	}
	ss.user, ss.database = params["user"], params["database"]
	if ss.database == "" {
		ss.database = ss.user
	}
	if err := ss.uw.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: params}); err != nil {
		return err
	}
	if err := ss.uw.Flush(); err != nil {
		return fmt.Errorf("upstream startup: %w", err)
	}
	var scram *pgwire.SCRAM
	for {
		typ, body, err := ss.ur.Next()
		if err != nil {
			return ss.fatal("08006", fmt.Sprintf("warden: target %s closed the connection during login", ss.att.Target.Name))
		}
		switch typ {
		case 'R':
			if len(body) < 4 {
				return fmt.Errorf("short authentication message")
			}
			authType := binary.BigEndian.Uint32(body)
			if creds == nil {
				if err := ss.passAuth(typ, body, authType); err != nil {
					return err
				}
				continue
			}
			switch authType {
			case pgwire.AuthOK: // the client never saw a challenge
				ss.cw.Send(&pgproto3.AuthenticationOk{})
			case pgwire.AuthCleartextPassword:
				ss.uw.Send(&pgproto3.PasswordMessage{Password: password})
			case pgwire.AuthMD5Password:
				var salt [4]byte
				copy(salt[:], body[4:])
				ss.uw.Send(&pgproto3.PasswordMessage{Password: pgwire.MD5Password(creds.Username, password, salt)})
			case pgwire.AuthSASL:
				var sasl pgproto3.AuthenticationSASL
				if err := sasl.Decode(body); err != nil {
					return fmt.Errorf("decode SASL offer: %w", err)
				}
				ok := false
				for _, mech := range sasl.AuthMechanisms {
					ok = ok || mech == pgwire.SCRAMMechanism
				}
				if !ok {
					return ss.fatal(pgwire.CodeInvalidAuthorization, "warden: target offers no SASL mechanism Warden supports (want SCRAM-SHA-256)")
				}
				if scram, err = pgwire.NewSCRAM(password); err != nil {
					return err
				}
				ss.uw.Send(&pgproto3.SASLInitialResponse{AuthMechanism: pgwire.SCRAMMechanism, Data: scram.ClientFirst()})
			case pgwire.AuthSASLContinue:
				if scram == nil {
					return errors.New("SASL continue without SASL")
				}
				final, err := scram.ClientFinal(body[4:])
				if err != nil {
					return ss.fatal(pgwire.CodeInvalidAuthorization, "warden: upstream login failed: "+err.Error())
				}
				ss.uw.Send(&pgproto3.SASLResponse{Data: final})
			case pgwire.AuthSASLFinal:
				if scram == nil || scram.Verify(body[4:]) != nil {
					return ss.fatal(pgwire.CodeInvalidAuthorization, "warden: the target could not prove it knows the credential")
				}
			default:
				return ss.fatal(pgwire.CodeInvalidAuthorization, fmt.Sprintf("warden: target asks for authentication method %d, which credential injection does not support", authType))
			}
			if err := ss.uw.Flush(); err != nil {
				return err
			}
		case 'K':
			var k pgproto3.BackendKeyData
			if err := k.Decode(body); err != nil {
				return fmt.Errorf("decode BackendKeyData: %w", err)
			}
			sub := ""
			if ss.att.Identity != nil {
				sub = ss.att.Identity.Sub
			}
			mine, err := ss.codec.register(cancelTarget{addr: ss.s.Upstream.RemoteAddr().String(), pid: k.ProcessID, secret: k.SecretKey, sub: sub, target: ss.att.TargetPolicy, session: ss})
			if err != nil {
				return err
			}
			ss.key = &mine
			ss.cw.Send(&mine)
		case 'E':
			var e pgproto3.ErrorResponse
			if err := e.Decode(body); err == nil && creds != nil {
				// The upstream account is Warden's business, not the
				// user's: say what failed without naming it.
				e = pgproto3.ErrorResponse{Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: e.Code,
					Message: fmt.Sprintf("warden: login to target %s with the vaulted credential failed (%s); tell the Warden administrator", ss.att.Target.Name, e.Code)}
				ss.cw.Send(&e)
			} else {
				ss.cw.Raw(typ, body)
			}
			ss.cw.Flush()
			return errors.New("upstream refused the login")
		case 'Z':
			ss.cw.Raw(typ, body)
			return ss.cw.Flush()
		default: // ParameterStatus, NoticeResponse, NegotiateProtocolVersion
			if typ == 'S' {
				ss.noteParameter(body)
			}
			ss.cw.Raw(typ, body)
		}
	}
}

// passAuth relays one step of the client's own authentication exchange.
//
// SCRAM with channel binding (SCRAM-SHA-256-PLUS) binds the login to one
// TLS session, and the client's ends at the agent while the server's
// starts there: the offer is taken out, and the client uses plain SCRAM.
// A client that demands channel binding (channel_binding=require) then
// refuses, as it should, since no binding can span the proxy.
func (ss *pgSession) passAuth(typ byte, body []byte, authType uint32) error {
	if authType == pgwire.AuthSASL {
		var sasl pgproto3.AuthenticationSASL
		if err := sasl.Decode(body); err != nil {
			return fmt.Errorf("decode SASL offer: %w", err)
		}
		sasl.AuthMechanisms = slices.DeleteFunc(sasl.AuthMechanisms, func(m string) bool { return strings.HasSuffix(m, "-PLUS") })
		if len(sasl.AuthMechanisms) == 0 {
			return ss.fatal(pgwire.CodeInvalidAuthorization, fmt.Sprintf("warden: target %s offers only SCRAM with channel binding, which cannot pass through the proxy", ss.att.Target.Name))
		}
		ss.cw.Send(&sasl)
	} else {
		ss.cw.Raw(typ, body)
	}
	if err := ss.cw.Flush(); err != nil {
		return err
	}
	switch authType {
	case pgwire.AuthOK, pgwire.AuthSASLFinal: // nothing to answer
		return nil
	}
	ctyp, cbody, err := ss.cr.Next()
	if err != nil {
		return fmt.Errorf("client authentication: %w", err)
	}
	if ctyp != 'p' {
		return fmt.Errorf("client sent %q during authentication", ctyp)
	}
	ss.uw.Raw(ctyp, cbody)
	return ss.uw.Flush()
}

func isFalse(v string) bool {
	switch strings.ToLower(v) {
	case "false", "off", "0", "no", "":
		return true
	}
	return false
}

// run carries the session until one side ends it. The client loop owns
// writes upstream; the upstream loop owns writes to the client, so that
// Warden's own answers (denials) stay in order with the server's: they are
// produced by the server itself, from a statement Warden substitutes, and
// rewritten on the way back.
func (ss *pgSession) run(ctx context.Context) error {
	clientc, upc := make(chan error, 1), make(chan error, 1)
	ss.closing, ss.ended = make(chan closeRequest), make(chan struct{})
	defer close(ss.ended)
	ss.s.OnClose(ss.requestClose)
	defer ss.s.OnClose(nil)
	go func() { clientc <- ss.clientLoop(ctx) }()
	go func() { upc <- ss.upstreamLoop() }()
	var err error
	rest := upc // the loop still running once one has ended
	select {
	case req := <-ss.closing:
		return ss.closeFor(req, clientc, upc)
	case err = <-clientc:
	case err = <-upc:
		rest = clientc
	}
	// Whichever side ended first, end the other: closing both conns
	// unblocks the loop still reading.
	ss.s.Client.Close()
	ss.s.Upstream.Close()
	err2 := <-rest
	if isClosed(err) {
		err = nil
	}
	if isClosed(err2) {
		err2 = nil
	}
	return errors.Join(err, err2)
}

func isClosed(err error) bool {
	return err == nil || errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrDeadlineExceeded) ||
		strings.Contains(err.Error(), "EOF") || strings.Contains(err.Error(), "connection reset")
}

// deniedError is the ErrorResponse for a refused statement. It names the
// rule, so the user knows what stopped them and whom to ask.
func deniedError(action policy.Action, rule, kind, reason string) *pgproto3.ErrorResponse {
	what := strings.ToUpper(kind)
	if what == "" {
		what = "statement"
	}
	e := &pgproto3.ErrorResponse{Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: pgwire.CodeInsufficientPrivilege}
	switch {
	case rule == "parse":
		e.Code = "42601"
		e.Message = "warden: statement refused: " + reason
		e.Hint = "Warden parses every statement with PostgreSQL's parser and refuses what it cannot read."
	case action == policy.Review:
		e.Message = fmt.Sprintf("warden: %s requires review (rule %q)", what, rule)
		e.Hint = "Statements under this rule need a reviewer's approval; ask a database administrator to run it or to review it."
	case rule == ruleEscapes:
		e.Message = fmt.Sprintf("warden: %s denied by rule %q: %s", what, rule, reason)
		e.Hint = "Warden must read each statement as the server will: use E'...' strings for escapes, standard_conforming_strings = on and client_encoding UTF8."
	default:
		e.Message = fmt.Sprintf("warden: %s denied by rule %q", what, rule)
		e.Hint = "Ask a database administrator, or the owner of the Warden policy, if you need this."
	}
	return e
}

// SQLSTATEs for a statement the audit log cannot record: 53100 disk_full
// when the spool is full (it clears once the collector drains it), 58030
// io_error otherwise.
const (
	codeDiskFull = "53100"
	codeIOError  = "58030"
)

// unrecordedError is the client's error for a statement refused because
// the audit log cannot record it. The session stays usable: the client
// may retry once recording works again.
func unrecordedError(err error) *pgproto3.ErrorResponse {
	e := &pgproto3.ErrorResponse{Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: codeIOError,
		Message: "warden: the audit log cannot record this statement; refusing",
		Hint:    "Warden runs no statement it cannot record. Retry later; if it persists, tell the Warden administrator."}
	var u *proxy.UnrecordedError
	if errors.As(err, &u) {
		e.Message = fmt.Sprintf("warden: the audit log cannot record this statement (%s); refusing", u.Cause)
		if u.Full {
			e.Code = codeDiskFull
		}
	}
	return e
}

// request records a statement with the decision on it, before it is
// forwarded. info is nil for a request Warden could not parse.
func (ss *pgSession) request(info *stmtInfo, dec event.Decision) (proxy.Receipt, error) {
	q := event.Query{Database: ss.database, DBUser: ss.user}
	if info != nil && info.stmt != nil {
		q.Statement, q.Fingerprint, q.Kind, q.Tables = info.stmt.Normalized, info.stmt.Fingerprint, info.stmt.Kind(), info.stmt.Tables
		q.Protocol = "simple"
		if info.extended {
			q.Protocol = "extended"
		}
	}
	return ss.s.Audit.Request(event.DBQuery, dec, q)
}
