package postgres

import (
	"context"
	"crypto/tls"
	"net"

	"github.com/wardenhq/warden/agent/proxy"
	"github.com/wardenhq/warden/pkg/policy"
	pgwire "github.com/wardenhq/warden/pkg/protocol/postgres"
)

// upstreamTLS switches conn to TLS as target's tls (or credentials.tls)
// demands, before anything of the login or a cancel crosses it. It never
// falls back to plain TCP: the policy asked for TLS so that the injected
// login cannot be seen or intercepted.
func upstreamTLS(ctx context.Context, conn net.Conn, target policy.Target) (*tls.Conn, error) {
	// PostgreSQL 17 checks the ALPN protocol name when a client offers
	// one; older servers ignore it.
	cfg, err := proxy.UpstreamTLSConfig(target, "postgresql")
	if err != nil {
		return nil, err
	}
	return pgwire.RequestTLS(ctx, conn, cfg)
}
