package mysql

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/wardenhq/warden/agent/proxy"
	wire "github.com/wardenhq/warden/pkg/protocol/mysql"
)

// requestClose is the session's proxy.Stream.OnClose function. Between
// commands the client is told why at once, in an ERR packet. While a
// command runs, the upstream connection is closed under it, which ends the
// response; the command loop then tells the client, in the response's
// place. Either way it returns once the client has been told, or when ctx
// is done; the proxy then closes both connections.
func (ss *session) requestClose(ctx context.Context, reason string) {
	ss.closeReason.Store(&reason)
	if ss.mu.TryLock() {
		ss.sayClosed(ctx, reason)
		return
	}
	ss.s.Upstream.Close()
	// A server notices a lost client only when it next writes to it: a
	// running statement would run on. Stop it from a connection of its
	// own, as the client's Ctrl-C does, beside telling the client.
	killed := make(chan struct{})
	go func() {
		defer close(killed)
		if err := ss.killRunning(ctx); err != nil {
			ss.s.Log.Warn().Err(err).Msg("running statement not killed on close")
		} else {
			ss.s.Log.Info().Msg("running statement killed on close")
		}
	}()
	defer func() {
		select { // bounded by ctx: killRunning's connection has its deadline
		case <-killed:
		case <-ctx.Done():
		}
	}()
	// The command either fails on the closed connection, and the loop
	// says why in its place, or had just finished: then the loop is idle
	// and the words are Warden's to send.
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ss.ended:
			ss.s.Log.Info().Str("reason", reason).Msg("session closed by the agent while a statement ran")
			return
		case <-ctx.Done():
			return
		case <-tick.C:
			if ss.mu.TryLock() {
				ss.sayClosed(ctx, reason)
				return
			}
		}
	}
}

// sayClosed sends the closing words to an idle client; the caller holds
// mu, which it releases.
func (ss *session) sayClosed(ctx context.Context, reason string) {
	defer ss.mu.Unlock()
	if ss.told {
		return // the command loop already did
	}
	ss.told = true
	if dl, ok := ctx.Deadline(); ok {
		ss.s.Client.SetWriteDeadline(dl)
	}
	ss.cw.Seq = 0
	ss.cw.Write((&wire.ERR{Code: erServerShutdown, State: stateConnectionDone, Message: reason}).Encode())
	if err := ss.cw.Flush(); err != nil {
		ss.s.Log.Debug().Err(err).Msg("closing message not delivered")
	}
	ss.s.Log.Info().Str("reason", reason).Msg("session closed by the agent")
}

// killRunning sends KILL QUERY for this session's upstream connection on a
// connection of its own (over TLS when the target's upstream is), logged
// in with the target's vaulted credential. Without one Warden cannot log
// in: the statement then runs until the server notices the closed
// connection.
func (ss *session) killRunning(ctx context.Context) error {
	creds := ss.att.TargetPolicy.Credentials
	if creds == nil {
		return errors.New("no vaulted credential to log in with")
	}
	conn, err := ss.codec.dial(ctx, "tcp", ss.upAddr)
	if err != nil {
		return fmt.Errorf("dial %s for KILL: %w", ss.upAddr, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	} else {
		conn.SetDeadline(time.Now().Add(time.Second))
	}
	// A session of Warden's own, whose client is nobody.
	k := &session{codec: ss.codec, att: ss.att, upAddr: ss.upAddr,
		s:  &proxy.Stream{Upstream: conn, Attribution: ss.att, Log: ss.s.Log},
		cw: wire.NewWriter(io.Discard), ur: wire.NewReader(conn), uw: wire.NewWriter(conn)}
	_, p, err := k.ur.Next()
	if err != nil {
		return fmt.Errorf("read handshake: %w", err)
	}
	hs, err := wire.ParseHandshake(p)
	if err != nil {
		return err
	}
	up := &wire.HandshakeResponse{MaxPacket: 1 << 24, Charset: hs.Charset,
		Capabilities: hs.Capabilities & (wire.ClientProtocol41 | wire.ClientSecureConnection | wire.ClientLongPassword | wire.ClientTransactions)}
	k.caps = up.Capabilities
	seq := byte(1)
	if tp := ss.att.TargetPolicy; tp.UpstreamTLS().Enabled() {
		k.uw.Seq = 1
		tc, err := upstreamTLS(ctx, conn, tp, wire.SSLRequestFor(up), k.uw)
		if err != nil {
			return fmt.Errorf("TLS for KILL: %w", err)
		}
		k.s.Upstream, k.upTLS = tc, true
		k.ur, k.uw = wire.NewReader(tc), wire.NewWriter(tc)
		up.Capabilities |= wire.ClientSSL
		seq = 2
	}
	if err := k.injectAuth(ctx, hs, up, seq, creds); err != nil {
		return fmt.Errorf("log in for KILL: %w", err)
	}
	k.uw.Seq = 0
	k.uw.Write(append([]byte{wire.ComQuery}, fmt.Sprintf("KILL QUERY %d", ss.connID)...))
	if err := k.uw.Flush(); err != nil {
		return err
	}
	_, p, err = k.ur.Next()
	if err != nil {
		return fmt.Errorf("KILL: %w", err)
	}
	if wire.IsERR(p) {
		e, _ := wire.ParseERR(p, k.caps)
		return fmt.Errorf("KILL refused: %v", e)
	}
	k.uw.Seq = 0
	k.uw.Write([]byte{wire.ComQuit})
	k.uw.Flush()
	return nil
}
