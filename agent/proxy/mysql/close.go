package mysql

import (
	"context"

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
		if dl, ok := ctx.Deadline(); ok {
			ss.s.Client.SetWriteDeadline(dl)
		}
		ss.cw.Seq = 0
		ss.cw.Write((&wire.ERR{Code: erServerShutdown, State: stateConnectionDone, Message: reason}).Encode())
		if err := ss.cw.Flush(); err != nil {
			ss.s.Log.Debug().Err(err).Msg("closing message not delivered")
		}
		ss.mu.Unlock()
		ss.s.Log.Info().Str("reason", reason).Msg("session closed by the agent")
		return
	}
	ss.s.Upstream.Close()
	select {
	case <-ss.ended:
	case <-ctx.Done():
	}
	ss.s.Log.Info().Str("reason", reason).Msg("session closed by the agent while a statement ran")
}
