package proxy

import "github.com/wardenhq/warden/pkg/policy"

// Codecs returns a fresh codec for each protocol Warden understands. Every
// one of them can refuse a client with the protocol's own error message, so
// the kernel sends unbound clients of these protocols to the proxy instead
// of failing connect() with EPERM. Protocols without a codec are relayed.
func Codecs() map[string]Codec {
	return map[string]Codec{
		policy.ProtocolPostgres: &Postgres{},
	}
}
