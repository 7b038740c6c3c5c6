package proxy

import (
	"crypto/tls"
	"net/netip"

	"github.com/wardenhq/warden/pkg/policy"
)

// Codecs returns a fresh codec for each protocol Warden understands. Every
// one of them can refuse a client with the protocol's own error message, so
// the kernel sends unbound clients of these protocols to the proxy instead
// of failing connect() with EPERM. Protocols without a codec are relayed.
// clientTLS, when not nil, is the TLS offered to clients that ask for it
// (see Postgres.ClientTLS).
func Codecs(clientTLS func(dst netip.Addr) *tls.Config) map[string]Codec {
	return map[string]Codec{
		policy.ProtocolPostgres: &Postgres{ClientTLS: clientTLS},
	}
}
