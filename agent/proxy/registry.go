package proxy

import (
	"fmt"
	"slices"

	"github.com/wardenhq/warden/pkg/policy"
)

// Registry maps target protocols to the codecs that speak them. It is built
// once (see package codecs) and handed both to the proxy, which picks a
// stream's codec from it, and to policy validation, which rejects whatever
// the target's codec does not enforce.
type Registry struct {
	codecs map[string]Codec
	relay  Codec
}

// NewRegistry returns a registry whose protocols without a codec are
// relayed by relay: access control and net.connect events only.
func NewRegistry(relay Codec) *Registry {
	return &Registry{codecs: map[string]Codec{}, relay: relay}
}

// Register makes c the codec for protocol. It panics on a second codec for
// the same protocol: the registry is built from a fixed list at start-up,
// so that is a programming error.
func (r *Registry) Register(protocol string, c Codec) {
	if _, dup := r.codecs[protocol]; dup {
		panic(fmt.Sprintf("proxy: second codec registered for protocol %q", protocol))
	}
	r.codecs[protocol] = c
}

// Codec returns the codec for protocol, or the relay when none is
// registered.
func (r *Registry) Codec(protocol string) Codec {
	if c, ok := r.codecs[protocol]; ok {
		return c
	}
	return r.relay
}

// Protocols lists the protocols with a codec, sorted.
func (r *Registry) Protocols() []string {
	out := make([]string, 0, len(r.codecs))
	for p := range r.codecs {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

// Enforcement is what each protocol's codec enforces, for policy
// validation. Relayed protocols are absent: their targets take access only.
func (r *Registry) Enforcement() policy.Enforcement {
	enf := policy.Enforcement{}
	for p, c := range r.codecs {
		enf[p] = slices.Clone(c.Enforces())
	}
	return enf
}

// ProtocolErrors is the set of protocols whose codec refuses a client in
// the protocol's own terms. The kernel sends unbound clients of these
// protocols to the proxy, to read why, instead of failing connect() with
// EPERM. Every registered codec can (see Codec.Refuse).
func (r *Registry) ProtocolErrors() map[string]bool {
	out := make(map[string]bool, len(r.codecs))
	for p := range r.codecs {
		out[p] = true
	}
	return out
}
