// Package redis is the proxy's Redis codec. It reads every command the
// client sends (RESP2 multibulk and inline, pipelined or not), checks it
// through the stream's Guard by command and subcommand, records it, and
// sends it on in the multibulk form, so the server runs exactly what was
// checked. It answers the client's AUTH itself and logs in upstream with
// the target's vaulted ACL user, and masks replies: whole replies to
// commands that read a key matching a masking entry's keys patterns, and
// whatever a detector finds in bulk strings. Pure wire code lives in
// pkg/protocol/redis.
//
// RESP3 is not spoken: HELLO 3 is answered with -NOPROTO, which every
// client takes as "fall back to RESP2".
package redis

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/wardenhq/warden/agent/proxy"
	"github.com/wardenhq/warden/pkg/policy"
	resp "github.com/wardenhq/warden/pkg/protocol/redis"
)

// Codec is the Redis codec. It holds no state of its own: each connection
// is a session of its own.
type Codec struct{}

// New returns the Redis codec.
func New() *Codec { return &Codec{} }

// Enforces implements proxy.Codec: command and subcommand rules (with
// scripting as a class), review, key and content masking of replies,
// injected credentials and upstream TLS.
func (*Codec) Enforces() []policy.Capability {
	return []policy.Capability{
		policy.CapCommands, policy.CapReview, policy.CapContentMasking, policy.CapKeyMasking,
		policy.CapCredentials, policy.CapUpstreamTLS,
	}
}

// startupTimeout bounds how long a client may take to send its first
// command to a refused connection, and how long the upstream login takes.
const startupTimeout = 30 * time.Second

// Refuse answers the client's commands with the reason, as a -NOPERM
// error that redis-cli and every client library show as is, then closes.
// Redis has no greeting, so nothing can be said before the client speaks;
// and libraries send a few commands of their own first (go-redis: HELLO,
// CLIENT SETINFO) and ignore their errors, so the first few commands all
// get the reason, for the one the person typed to show it.
func (*Codec) Refuse(ctx context.Context, client net.Conn, att *proxy.Attribution) error {
	client.SetDeadline(time.Now().Add(startupTimeout))
	r := resp.NewReader(client)
	msg := resp.AppendReply(nil, resp.Error("NOPERM "+att.Decision.Reason))
	for range refusedCommands {
		if _, err := r.ReadCommand(); err != nil {
			var pe *resp.ProtocolError
			if !errors.As(err, &pe) {
				return nil // the client gave up
			}
			_, err := client.Write(msg)
			return err
		}
		if _, err := client.Write(msg); err != nil {
			return err
		}
	}
	return nil
}

// refusedCommands is how many commands of a refused client get the
// reason before the connection closes.
const refusedCommands = 8

// Serve logs in upstream, then carries commands and replies until either
// side closes.
func (c *Codec) Serve(ctx context.Context, s *proxy.Stream) error {
	ss := newSession(s)
	if err := ss.login(ctx); err != nil {
		// Redis has no greeting: tell the client on its first command.
		s.Client.SetDeadline(time.Now().Add(startupTimeout))
		if _, rerr := ss.cr.ReadCommand(); rerr == nil {
			s.Client.Write(resp.AppendReply(nil, resp.Error("ERR "+err.Error())))
		}
		return err
	}
	return ss.run(ctx)
}

// login secures the upstream hop if the target says so, and logs in with
// the vaulted credentials when the target has them. The error is worded
// for the client; details go to the agent's log.
func (ss *session) login(ctx context.Context) error {
	att := ss.s.Attribution
	tp := att.TargetPolicy
	ss.s.Upstream.SetDeadline(time.Now().Add(startupTimeout))
	defer ss.s.Upstream.SetDeadline(time.Time{})
	if tp.UpstreamTLS().Enabled() {
		cfg, err := proxy.UpstreamTLSConfig(tp)
		if err == nil {
			tc := tlsClient(ss.s.Upstream, cfg)
			if err = tc.HandshakeContext(ctx); err == nil {
				ss.s.Upstream = tc
				ss.ur, ss.uw = resp.NewReader(tc), bufio.NewWriterSize(tc, 16<<10)
			}
		}
		if err != nil {
			ss.s.Log.Warn().Err(err).Msg("upstream TLS failed")
			return fmt.Errorf("warden: cannot open a verified TLS connection to target %s: %v; tell the Warden administrator", att.Target.Name, err)
		}
	}
	if tp.Credentials == nil {
		return nil
	}
	auth, err := ss.vaultedAuth()
	if err != nil {
		return err
	}
	ss.uw.Write(resp.AppendCommand(nil, auth))
	if err := ss.uw.Flush(); err != nil {
		return fmt.Errorf("warden: target %s closed the connection during login", att.Target.Name)
	}
	rep, err := ss.ur.ReadReply()
	if err != nil {
		return fmt.Errorf("warden: target %s closed the connection during login", att.Target.Name)
	}
	if rep.Kind != resp.KindStatus {
		// The server's words may name the account; the log may keep
		// them, the client gets the fact.
		ss.s.Log.Warn().Str("reply", string(rep.Str)).Msg("upstream login refused")
		return fmt.Errorf("warden: login to target %s with the vaulted credential failed; tell the Warden administrator", att.Target.Name)
	}
	return nil
}

// vaultedAuth is the AUTH command for the target's credentials, with the
// password read from its file now, so that a rotated password takes
// effect on the next connection.
func (ss *session) vaultedAuth() ([][]byte, error) {
	att := ss.s.Attribution
	creds := att.TargetPolicy.Credentials
	b, err := os.ReadFile(creds.PasswordFile)
	if err != nil {
		ss.s.Log.Error().Err(err).Msg("credential file unreadable")
		return nil, fmt.Errorf("warden: credentials for target %s are unavailable; tell the Warden administrator", att.Target.Name)
	}
	password := strings.TrimRight(string(b), "\r\n")
	return [][]byte{[]byte("AUTH"), []byte(creds.Username), []byte(password)}, nil
}

// relogin logs in again with the vaulted credentials, mid-session; the
// server's answer is not the client's.
func (ss *session) relogin() error {
	auth, err := ss.vaultedAuth()
	if err != nil {
		return err
	}
	return ss.forward(auth, &pending{swallow: true})
}
