// Package codecs lists the protocol codecs the agent's proxy speaks. It is
// the one place a new codec is registered: add its folder under
// agent/proxy/, then one line below.
package codecs

import (
	"crypto/tls"
	"net/netip"

	"github.com/wardenhq/warden/agent/proxy"
	httpcodec "github.com/wardenhq/warden/agent/proxy/http"
	"github.com/wardenhq/warden/agent/proxy/mysql"
	"github.com/wardenhq/warden/agent/proxy/postgres"
	"github.com/wardenhq/warden/agent/proxy/rdp"
	"github.com/wardenhq/warden/agent/proxy/redis"
	"github.com/wardenhq/warden/agent/proxy/ssh"
	"github.com/wardenhq/warden/agent/recording"
	"github.com/wardenhq/warden/pkg/policy"
)

// Options configure the codecs. The zero value is what offline policy
// validation (wardend check-policy) uses: capabilities do not depend on it.
type Options struct {
	// ClientTLS, when not nil, gives the TLS offered to a client that asks
	// for it and connected to dst.
	ClientTLS func(dst netip.Addr) *tls.Config
	// HTTPIdentity signs the identity tokens the HTTP codec sends
	// services (X-Warden-Identity); nil sends none.
	HTTPIdentity *httpcodec.Signer
	// SSHHostCA signs the host certificates SSH clients see, and
	// Recordings stores SSH session recordings (see agent/proxy/ssh).
	SSHHostCA  *ssh.HostCA
	Recordings recording.Store
}

// New returns the registry of every codec. Protocols without a line here
// are relayed as bytes, and their targets take access rules only.
func New(opts Options) *proxy.Registry {
	r := proxy.NewRegistry(proxy.Relay{})
	r.Register(policy.ProtocolPostgres, postgres.New(postgres.Options{ClientTLS: opts.ClientTLS}))
	r.Register(policy.ProtocolMySQL, mysql.New(mysql.Options{ClientTLS: opts.ClientTLS}))
	r.Register(policy.ProtocolRedis, redis.New())
	r.Register(policy.ProtocolRDP, rdp.New())
	httpc := httpcodec.New(httpcodec.Options{ClientTLS: opts.ClientTLS, Identity: opts.HTTPIdentity})
	r.Register(policy.ProtocolHTTP, httpc)
	r.Register(policy.ProtocolHTTPS, httpc)
	r.Register(policy.ProtocolSSH, ssh.New(ssh.Options{HostCA: opts.SSHHostCA, Recordings: opts.Recordings}))
	return r
}
