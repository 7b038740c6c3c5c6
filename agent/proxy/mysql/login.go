package mysql

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"

	"github.com/wardenhq/warden/agent/proxy"
	"github.com/wardenhq/warden/pkg/masking"
	"github.com/wardenhq/warden/pkg/mysqlguard"
	"github.com/wardenhq/warden/pkg/policy"
	wire "github.com/wardenhq/warden/pkg/protocol/mysql"
)

// session is one client connection.
type session struct {
	codec  *Codec
	s      *proxy.Stream
	att    *proxy.Attribution
	cr, ur *wire.Reader
	cw, uw *wire.Writer
	masker *masking.Masker

	caps        uint32 // effective capabilities, the same on both hops
	upTLS       bool
	clientTLS   bool
	user, db    string
	sub         string
	upAddr      string
	connID      uint64
	registered  bool
	lx          mysqlguard.Lexing
	stmts       map[uint32]*prepared
	lastStmt    uint32 // the statement prepared last
	serverState uint16

	// mu is held by the command loop from a command's arrival to the end
	// of its response, so the agent's closing words (close.go) never
	// interleave with a response.
	mu          sync.Mutex
	told        bool // the closing words were sent; guarded by mu
	closeReason atomic.Pointer[string]
	ended       chan struct{}
}

// prepared is a statement prepared through Warden.
type prepared struct {
	info   *stmtInfo
	cursor []*wire.Column // the columns of an open cursor, for COM_STMT_FETCH
}

func newSession(p *Codec, s *proxy.Stream) *session {
	ss := &session{
		codec: p, s: s, att: s.Attribution,
		cr: wire.NewReader(s.Client), cw: wire.NewWriter(s.Client),
		ur: wire.NewReader(s.Upstream), uw: wire.NewWriter(s.Upstream),
		masker: s.Guard.Masker(), stmts: map[uint32]*prepared{}, ended: make(chan struct{}),
		upAddr: s.Upstream.RemoteAddr().String(),
	}
	if id := s.Attribution.Identity; id != nil {
		ss.sub = id.Sub
	}
	return ss
}

func (ss *session) close() {
	if ss.registered {
		ss.codec.unregister(ss.upAddr, ss.connID)
	}
}

// fail sends the client an ERR with the next sequence id and returns it
// as an error.
func (ss *session) fail(code uint16, state, msg string) error {
	ss.cw.Write((&wire.ERR{Code: code, State: state, Message: msg}).Encode())
	ss.cw.Flush()
	return errors.New(msg)
}

// personName is what the server sees of the person behind the session, as
// the connection attribute "warden": the target's
// credentials.application_name template, as for PostgreSQL's
// application_name.
func (ss *session) personName(client string) string {
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

// login takes the server's handshake, presents the client with Warden's,
// and logs in upstream: with the vaulted credential when the target has
// one (the client's own answer is ignored: the person comes from the
// kernel binding), else by relaying the client's own authentication.
func (ss *session) login(ctx context.Context) error {
	_, p, err := ss.ur.Next()
	if err != nil {
		return fmt.Errorf("read server handshake: %w", err)
	}
	hs, err := wire.ParseHandshake(p)
	if err != nil {
		var e *wire.ERR
		if errors.As(err, &e) {
			// The server refuses the connection itself: pass it on.
			ss.cw.WriteSeq(0, p)
			ss.cw.Flush()
		}
		return err
	}
	if hs.Capabilities&wire.ClientProtocol41 == 0 || hs.Capabilities&wire.ClientSecureConnection == 0 {
		return ss.failAt(0, erCannotConnect, "08004", fmt.Sprintf("warden: target %s speaks a MySQL protocol older than 4.1", ss.att.Target.Name))
	}
	ss.lx.Server = mysqlguard.ParseServerVersion(hs.ServerVersion)
	ss.connID = uint64(hs.ConnectionID)
	creds := ss.att.TargetPolicy.Credentials
	tlsCfg := ss.codec.clientTLS(ss.att)

	// What the client sees: the server's handshake, less what Warden
	// does not forward, with TLS as Warden offers it and, with injected
	// credentials, Warden's own scramble for the answer it ignores.
	ch := *hs
	ch.Capabilities &^= capsNeverForwarded | wire.ClientSSL
	ch.MariaDBCaps = 0
	ch.Capabilities |= wire.ClientLongPassword // no MariaDB extended capabilities
	if tlsCfg != nil {
		ch.Capabilities |= wire.ClientSSL
	}
	if creds != nil {
		if ch.AuthData, err = scramble(); err != nil {
			return err
		}
		ch.AuthPlugin = wire.PluginNative
		ch.Capabilities |= wire.ClientPluginAuth
	}
	if err := ss.cw.WriteSeq(0, ch.Encode()); err != nil {
		return err
	}
	if err := ss.cw.Flush(); err != nil {
		return fmt.Errorf("send handshake: %w", err)
	}
	cseq, p, err := ss.cr.Next()
	if err != nil {
		return fmt.Errorf("read client handshake response: %w", err)
	}
	resp, err := wire.ParseHandshakeResponse(p)
	if err != nil {
		return err
	}
	if resp.SSLRequest {
		if tlsCfg == nil {
			return errors.New("client asked for TLS, which was not offered")
		}
		tc := tls.Server(&prefixConn{Conn: ss.s.Client, pre: ss.cr.Detach()}, tlsCfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			return fmt.Errorf("client TLS handshake: %w", err)
		}
		ss.s.Client, ss.clientTLS = tc, true
		ss.cr, ss.cw = wire.NewReader(tc), wire.NewWriter(tc)
		if cseq, p, err = ss.cr.Next(); err != nil {
			return fmt.Errorf("read client handshake response: %w", err)
		}
		if resp, err = wire.ParseHandshakeResponse(p); err != nil {
			return err
		}
		if resp.SSLRequest {
			return errors.New("second SSLRequest")
		}
	}
	ss.cw.Seq = cseq + 1

	// Upstream: TLS first when the target asks for it, then the login.
	up := *resp
	up.Capabilities = resp.Capabilities & ch.Capabilities &^ (capsNeverForwarded | wire.ClientSSL)
	up.Capabilities |= wire.ClientLongPassword
	up.MariaDBCaps = 0
	ss.caps = up.Capabilities
	upSeq := byte(1)
	if tp := ss.att.TargetPolicy; tp.UpstreamTLS().Enabled() {
		if hs.Capabilities&wire.ClientSSL == 0 {
			return ss.fail(erCannotConnect, "08004", fmt.Sprintf("warden: target %s does not offer TLS, which the policy requires for it; tell the Warden administrator", ss.att.Target.Name))
		}
		ss.uw.Seq = 1
		tc, err := upstreamTLS(ctx, ss.s.Upstream, tp, wire.SSLRequestFor(&up), ss.uw)
		if err != nil {
			ss.s.Log.Warn().Err(err).Msg("upstream TLS failed")
			return ss.fail(erCannotConnect, "08004", fmt.Sprintf("warden: cannot open a verified TLS connection to target %s: %v; tell the Warden administrator", ss.att.Target.Name, err))
		}
		ss.s.Upstream, ss.upTLS = tc, true
		ss.ur, ss.uw = wire.NewReader(tc), wire.NewWriter(tc)
		up.Capabilities |= wire.ClientSSL
		upSeq = 2
	}
	if hs.Capabilities&wire.ClientConnectAttrs != 0 {
		client := ""
		for _, a := range resp.Attrs {
			if a.Key == "program_name" {
				client = a.Value
			}
		}
		up.Capabilities |= wire.ClientConnectAttrs
		up.Attrs = append(append([]wire.Attr(nil), resp.Attrs...), wire.Attr{Key: "warden", Value: ss.personName(client)})
	}
	ss.db = resp.Database
	if creds == nil {
		ss.user = resp.User
		if err := ss.uw.WriteSeq(upSeq, up.Encode()); err != nil {
			return err
		}
		if err := ss.uw.Flush(); err != nil {
			return err
		}
		err = ss.relayAuth(cseq-upSeq, hs.AuthData)
	} else {
		ss.user = creds.Username
		err = ss.injectAuth(ctx, hs, &up, upSeq, creds)
	}
	if err != nil {
		return err
	}
	ss.codec.register(ss.upAddr, ss.connID, ss.sub)
	ss.registered = true
	return ss.readLexing()
}

// failAt is fail with an explicit sequence id.
func (ss *session) failAt(seq byte, code uint16, state, msg string) error {
	ss.cw.Seq = seq
	return ss.fail(code, state, msg)
}

// injectAuth logs in upstream with the vaulted credential, following the
// server's plugin and its switches, then tells the client its login
// succeeded.
func (ss *session) injectAuth(ctx context.Context, hs *wire.Handshake, up *wire.HandshakeResponse, seq byte, creds *policy.Credentials) error {
	pw, err := password(creds)
	if err != nil {
		ss.s.Log.Error().Err(err).Msg("credential file unreadable")
		return ss.fail(erAccessDenied, "28000", fmt.Sprintf("warden: credentials for target %s are unavailable; tell the Warden administrator", ss.att.Target.Name))
	}
	plugin, data := hs.AuthPlugin, hs.AuthData
	if plugin == "" {
		plugin = wire.PluginNative
	}
	up.User = creds.Username
	up.Capabilities |= hs.Capabilities & (wire.ClientPluginAuth | wire.ClientPluginAuthLenenc)
	up.AuthPlugin = plugin
	if up.AuthResponse, err = answer(plugin, data, pw, ss.upTLS); err != nil {
		return ss.fail(erAccessDenied, "28000", fmt.Sprintf("warden: cannot log in to target %s: %v", ss.att.Target.Name, err))
	}
	if err := ss.uw.WriteSeq(seq, up.Encode()); err != nil {
		return err
	}
	if err := ss.uw.Flush(); err != nil {
		return err
	}
	for {
		s, p, err := ss.ur.Next()
		if err != nil || len(p) == 0 {
			return ss.fail(erCannotConnect, stateConnectionDone, fmt.Sprintf("warden: target %s closed the connection during login", ss.att.Target.Name))
		}
		ss.uw.Seq = s + 1
		var reply []byte
		switch p[0] {
		case wire.HeaderOK:
			if ok, err := wire.ParseOK(p, ss.caps); err == nil {
				ss.serverState = ok.Status
			}
			ss.cw.Write(p)
			return ss.cw.Flush()
		case wire.HeaderERR:
			e, _ := wire.ParseERR(p, ss.caps)
			code := uint16(0)
			if e != nil {
				code = e.Code
			}
			// The upstream account is Warden's business, not the
			// user's: say what failed without naming it.
			return ss.fail(erAccessDenied, "28000", fmt.Sprintf("warden: login to target %s with the vaulted credential failed (error %d); tell the Warden administrator", ss.att.Target.Name, code))
		case wire.HeaderEOF:
			sw, err := wire.ParseAuthSwitch(p)
			if err != nil {
				return err
			}
			plugin, data = sw.Plugin, sw.Data
			if reply, err = answer(plugin, data, pw, ss.upTLS); err != nil {
				return ss.fail(erAccessDenied, "28000", fmt.Sprintf("warden: cannot log in to target %s: %v", ss.att.Target.Name, err))
			}
		case wire.HeaderAuthMore:
			more := p[1:]
			switch {
			case len(more) == 1 && more[0] == wire.SHA2FastAuthOK:
				continue // the OK follows
			case len(more) == 1 && more[0] == wire.SHA2FullAuth:
				if ss.upTLS {
					reply = append([]byte(pw), 0)
				} else {
					reply = []byte{wire.SHA2RequestPublicKey}
				}
			case bytes.HasPrefix(more, []byte("-----BEGIN")):
				if reply, err = wire.EncryptPassword(more, data, pw); err != nil {
					return ss.fail(erAccessDenied, "28000", fmt.Sprintf("warden: cannot log in to target %s: %v", ss.att.Target.Name, err))
				}
			default:
				return ss.fail(erAccessDenied, "28000", fmt.Sprintf("warden: target %s asks for authentication data credential injection does not support", ss.att.Target.Name))
			}
		default:
			return fmt.Errorf("unexpected packet 0x%02x during login", p[0])
		}
		if err := ss.uw.Write(reply); err != nil {
			return err
		}
		if err := ss.uw.Flush(); err != nil {
			return err
		}
	}
}

// relayAuth carries the client's own authentication to the server and
// back, sequence ids shifted by delta (the client's hop may have had an
// SSLRequest the server's did not, or the other way round).
//
// A password in clear text never crosses a hop without TLS on Warden's
// account. When the client's hop is TLS and the server's is not:
// caching_sha2_password's full authentication has the client send its
// password over its TLS, and Warden sends it on encrypted with the
// server's RSA key, as a client without TLS would; mysql_clear_password
// is refused.
func (ss *session) relayAuth(delta byte, scramble []byte) error {
	for {
		s, p, err := ss.ur.Next()
		if err != nil || len(p) == 0 {
			return ss.fail(erCannotConnect, stateConnectionDone, fmt.Sprintf("warden: target %s closed the connection during login", ss.att.Target.Name))
		}
		ss.cw.Seq = s + delta
		switch p[0] {
		case wire.HeaderOK:
			if ok, err := wire.ParseOK(p, ss.caps); err == nil {
				ss.serverState = ok.Status
			}
			ss.cw.Write(p)
			return ss.cw.Flush()
		case wire.HeaderERR:
			ss.cw.Write(p)
			ss.cw.Flush()
			return errors.New("upstream refused the login")
		case wire.HeaderEOF:
			sw, err := wire.ParseAuthSwitch(p)
			if err != nil {
				return err
			}
			if sw.Plugin == wire.PluginClear && !ss.upTLS {
				return ss.fail(erAccessDenied, "28000", fmt.Sprintf("warden: target %s asks for the password in clear text, and the hop to it has no TLS", ss.att.Target.Name))
			}
			scramble = sw.Data
		case wire.HeaderAuthMore:
			if len(p) == 2 && p[1] == wire.SHA2FastAuthOK {
				ss.cw.Write(p)
				if err := ss.cw.Flush(); err != nil {
					return err
				}
				continue // no answer: the OK follows
			}
			if len(p) == 2 && p[1] == wire.SHA2FullAuth && ss.clientTLS && !ss.upTLS {
				d, err := ss.fullAuthForClient(p, s, scramble)
				if err != nil {
					return err
				}
				delta = d
				continue
			}
		default:
			return fmt.Errorf("unexpected packet 0x%02x during login", p[0])
		}
		ss.cw.Write(p)
		if err := ss.cw.Flush(); err != nil {
			return err
		}
		cs, cp, err := ss.cr.Next()
		if err != nil {
			return fmt.Errorf("client authentication: %w", err)
		}
		ss.uw.Seq = cs - delta
		ss.uw.Write(cp)
		if err := ss.uw.Flush(); err != nil {
			return err
		}
	}
}

// fullAuthForClient carries caching_sha2_password's full authentication
// for a client on TLS to a server without: the client sends its password
// in clear over its TLS, and Warden sends it on encrypted with the
// server's RSA public key. It returns the new difference between the
// client's sequence ids and the server's.
func (ss *session) fullAuthForClient(p []byte, seq byte, scramble []byte) (byte, error) {
	ss.cw.Write(p)
	if err := ss.cw.Flush(); err != nil {
		return 0, err
	}
	cs, cp, err := ss.cr.Next()
	if err != nil {
		return 0, fmt.Errorf("client authentication: %w", err)
	}
	defer clear(cp)
	ss.uw.Seq = seq + 1
	ss.uw.Write([]byte{wire.SHA2RequestPublicKey})
	if err := ss.uw.Flush(); err != nil {
		return 0, err
	}
	ks, kp, err := ss.ur.Next()
	if err != nil || len(kp) < 2 || kp[0] != wire.HeaderAuthMore {
		return 0, ss.fail(erAccessDenied, "28000", fmt.Sprintf("warden: target %s sent no public key for the password exchange", ss.att.Target.Name))
	}
	enc, err := wire.EncryptPassword(kp[1:], scramble, string(bytes.TrimSuffix(cp, []byte{0})))
	if err != nil {
		return 0, ss.fail(erAccessDenied, "28000", fmt.Sprintf("warden: cannot encrypt the password for target %s: %v", ss.att.Target.Name, err))
	}
	ss.uw.Seq = ks + 1
	ss.uw.Write(enc)
	if err := ss.uw.Flush(); err != nil {
		return 0, err
	}
	// The server's next packet (ks+2) answers the client's (cs).
	return cs + 1 - (ks + 2), nil
}

// readLexing asks the server how it reads texts in this session: its
// sql_mode (backslashes, double quotes) and client character set. It runs
// between commands, when the connection is Warden's alone; on any failure
// the settings stay unknown, which refuses ambiguous texts.
func (ss *session) readLexing() error {
	ss.lx.ModeKnown, ss.lx.ASCIISafeCharset = false, false
	ss.uw.Seq = 0
	ss.uw.Write(append([]byte{wire.ComQuery}, "SELECT @@SESSION.sql_mode, @@SESSION.character_set_client"...))
	if err := ss.uw.Flush(); err != nil {
		return err
	}
	var row [][]byte
	_, p, err := ss.ur.Next()
	if err != nil {
		return err
	}
	if wire.IsERR(p) || p[0] == wire.HeaderOK {
		return nil
	}
	n, err := wire.ColumnCount(p)
	if err != nil {
		return err
	}
	for i := uint64(0); i < n; i++ {
		if _, _, err := ss.ur.Next(); err != nil {
			return err
		}
	}
	if ss.caps&wire.ClientDeprecateEOF == 0 {
		if _, _, err := ss.ur.Next(); err != nil {
			return err
		}
	}
	for {
		_, p, err := ss.ur.Next()
		if err != nil {
			return err
		}
		if wire.IsEOF(p) || wire.IsERR(p) {
			break
		}
		if row, err = wire.DecodeTextRow(p, int(n)); err != nil {
			return err
		}
	}
	if len(row) == 2 && row[0] != nil && row[1] != nil {
		ss.lx.ParseSQLMode(string(row[0]))
		ss.lx.ASCIISafeCharset = mysqlguard.ASCIISafeCharset(string(row[1]))
	}
	return nil
}

// prefixConn reads pre before what is left on its connection: the start of
// a TLS handshake that was read along with the packet before it.
type prefixConn struct {
	net.Conn
	pre []byte
}

func (c *prefixConn) Read(b []byte) (int, error) {
	if len(c.pre) > 0 {
		n := copy(b, c.pre)
		c.pre = c.pre[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}
