package proxy

import (
	"context"
	"net"
	"time"

	"github.com/wardenhq/warden/pkg/protocol/postgres"
)

// Postgres is the PostgreSQL codec. It refuses with a real ErrorResponse;
// allowed connections are relayed until the L7 codec lands.
type Postgres struct{}

// Refuse answers the client's startup with a FATAL ErrorResponse.
func (*Postgres) Refuse(ctx context.Context, client net.Conn, reason string) error {
	// A client that never sends its startup packet must not pin the handler.
	client.SetDeadline(time.Now().Add(30 * time.Second))
	return postgres.RefuseStartup(client, reason)
}

// Serve relays the connection.
func (*Postgres) Serve(ctx context.Context, s *Stream) error { return Pipe(s.Client, s.Upstream) }
