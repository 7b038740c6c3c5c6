package mysql

import (
	"context"
	"time"

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
