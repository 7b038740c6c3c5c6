package postgres

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// codeAdminShutdown is the SQLSTATE of a session the agent ends (57P01
// admin_shutdown, what pg_terminate_backend gives): drivers treat it as
// the end of the connection, not as a failed statement to retry.
const codeAdminShutdown = "57P01"

// closeRequest is the agent's request to end a session (proxy.Stream.End),
// handed to run; done is closed once the session has ended.
type closeRequest struct {
	ctx    context.Context
	reason string
	done   chan struct{}
}

// requestClose is the session's proxy.Stream.OnClose function: it asks run
// to end the session and waits until it has, or until ctx is done. A
// session already ending on its own needs nothing.
func (ss *pgSession) requestClose(ctx context.Context, reason string) {
	req := closeRequest{ctx: ctx, reason: reason, done: make(chan struct{})}
	select {
	case ss.closing <- req:
	case <-ss.ended:
		return
	case <-ctx.Done():
		return
	}
	select {
	case <-req.done:
	case <-ctx.Done():
	}
}

// closeFor ends the session in PostgreSQL's terms, in this order:
//
//  1. The upstream connection closes first, so nothing more the client
//     sends reaches the server, and the upstream loop (which owns writes
//     to the client) returns.
//  2. A statement in flight is cancelled with a CancelRequest carrying the
//     backend's own key: a server notices a lost client only when it next
//     writes to it (or every client_connection_check_interval), so a
//     running query would otherwise run on.
//  3. The client reads an ErrorResponse FATAL with the reason, then its
//     connection closes.
//
// Each step is bounded by req.ctx; once it is done the client's
// connection closes without the message.
func (ss *pgSession) closeFor(req closeRequest, clientc, upc <-chan error) error {
	defer close(req.done)
	ctx := req.ctx
	// A statement held for review is withdrawn: the client loop must not
	// wait out the hold before the session can end.
	ss.cancelHold()
	ss.s.Upstream.Close()
	upDone := false
	select {
	case <-upc:
		upDone = true
	case <-ctx.Done():
	}
	if !ss.q.empty() {
		if err := ss.cancelRunning(ctx); err != nil {
			ss.s.Log.Warn().Err(err).Msg("running statement not cancelled on close")
		} else {
			ss.s.Log.Info().Msg("running statement cancelled on close")
		}
	}
	if upDone && ctx.Err() == nil {
		if dl, ok := ctx.Deadline(); ok {
			ss.s.Client.SetWriteDeadline(dl)
		}
		ss.cwMu.Lock()
		ss.cw.Send(&pgproto3.ErrorResponse{Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: codeAdminShutdown, Message: req.reason})
		if err := ss.cw.Flush(); err != nil {
			ss.s.Log.Debug().Err(err).Msg("closing message not delivered")
		}
		ss.cwMu.Unlock()
	}
	ss.s.Client.Close()
	if !upDone {
		<-upc // unblocked by the client's close
	}
	<-clientc
	ss.s.Log.Info().Str("reason", req.reason).Msg("session closed by the agent")
	return nil
}

// cancelRunning sends the server a CancelRequest for this session's
// backend, on a connection of its own (over TLS when the target's upstream
// is), and waits for the server to close it, which it does once it has
// signalled the backend.
func (ss *pgSession) cancelRunning(ctx context.Context) error {
	if ss.key == nil {
		return fmt.Errorf("no backend key")
	}
	p := ss.codec
	p.mu.Lock()
	up, ok := p.cancels[cancelKey{ss.key.ProcessID, string(ss.key.SecretKey)}]
	p.mu.Unlock()
	if !ok {
		return fmt.Errorf("backend key not registered")
	}
	conn, err := p.dial(ctx, "tcp", up.addr)
	if err != nil {
		return fmt.Errorf("dial %s for cancel: %w", up.addr, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	} else {
		conn.SetDeadline(time.Now().Add(time.Second))
	}
	if tp := up.target; tp.UpstreamTLS().Enabled() {
		tc, err := upstreamTLS(ctx, conn, tp)
		if err != nil {
			return fmt.Errorf("TLS for cancel: %w", err)
		}
		conn = tc
	}
	buf, err := (&pgproto3.CancelRequest{ProcessID: up.pid, SecretKey: up.secret}).Encode(nil)
	if err != nil {
		return fmt.Errorf("encode cancel: %w", err)
	}
	if _, err := conn.Write(buf); err != nil {
		return fmt.Errorf("send cancel: %w", err)
	}
	// The server answers a CancelRequest by closing the connection.
	io.Copy(io.Discard, conn)
	return nil
}
