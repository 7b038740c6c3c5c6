// Package targets turns the policy's targets into the kernel's target
// table: stable numeric ids, every address a name resolves to, and every
// address that reaches a local target.
package targets

import (
	"context"
	"fmt"
	"hash/fnv"
	"net"
	"net/netip"
	"slices"
	"sort"

	"github.com/wardenhq/warden/bpf/loader"
	"github.com/wardenhq/warden/pkg/policy"
)

// ID returns the kernel id of the target named name. It is a hash of the
// name, so it stays the same across policy reloads and agent restarts.
func ID(name string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(name))
	if id := h.Sum32(); id != 0 {
		return id
	}
	return 1
}

// Resolver looks up a DNS name's addresses.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Table is the kernel view of a policy's targets.
type Table struct {
	Entries []loader.TargetEntry
	ByID    map[uint32]policy.Target
	// Shadowed says which addresses two targets both cover and which one
	// got them, for the daemon to log.
	Shadowed []string
}

// Options configure Build.
type Options struct {
	Resolver Resolver
	// LocalAddrs are the host's own addresses. A target on any of them, or
	// on loopback, is reachable through all of them and through the
	// unspecified address, so all of those are covered.
	LocalAddrs []netip.Addr
	// ProtocolErrors is the set of protocols whose codec can refuse with an
	// error message of its own.
	ProtocolErrors map[string]bool
}

// Build computes the table for p. A name that does not resolve is an error
// naming the target; the caller keeps the previous table for it.
func Build(ctx context.Context, p *policy.Policy, opts Options) (*Table, error) {
	t := &Table{ByID: map[uint32]policy.Target{}}
	// Two local targets on one port expand to the same local addresses.
	// An address a target names (or resolves to) outranks one it only
	// covers by expansion, and between expansions the target declared
	// first keeps the entry, so the outcome never depends on map order.
	type claim struct {
		entry    loader.TargetEntry
		explicit bool
	}
	claims := map[netip.Prefix]map[uint16]*claim{}
	var order []loader.TargetEntry
	add := func(tg policy.Target, e loader.TargetEntry, explicit bool) {
		byPort := claims[e.Prefix]
		if byPort == nil {
			byPort = map[uint16]*claim{}
			claims[e.Prefix] = byPort
		}
		c := byPort[e.Port]
		switch {
		case c == nil:
			byPort[e.Port] = &claim{entry: e, explicit: explicit}
			order = append(order, e)
		case explicit && !c.explicit:
			t.Shadowed = append(t.Shadowed, fmt.Sprintf("%s:%d is target %q's own address; the local expansion of target %q no longer covers it",
				e.Prefix, e.Port, tg.Name, t.ByID[c.entry.ID].Name))
			c.entry, c.explicit = e, true
		case c.entry.ID != e.ID:
			t.Shadowed = append(t.Shadowed, fmt.Sprintf("%s:%d stays with target %q; target %q covers it too",
				e.Prefix, e.Port, t.ByID[c.entry.ID].Name, tg.Name))
		}
	}
	for _, tg := range p.Targets {
		id := ID(tg.Name)
		if other, dup := t.ByID[id]; dup {
			return nil, fmt.Errorf("targets %q and %q hash to the same id; rename one", other.Name, tg.Name)
		}
		t.ByID[id] = tg
		ep, err := tg.Endpoint()
		if err != nil {
			return nil, fmt.Errorf("target %q: %w", tg.Name, err)
		}
		prefixes := []netip.Prefix{ep.Prefix}
		if ep.IsName() {
			addrs, err := opts.Resolver.LookupNetIP(ctx, "ip", ep.Host)
			if err != nil {
				return nil, fmt.Errorf("target %q: resolve %s: %w", tg.Name, ep.Host, err)
			}
			if len(addrs) == 0 {
				return nil, fmt.Errorf("target %q: %s resolves to no address", tg.Name, ep.Host)
			}
			prefixes = prefixes[:0]
			for _, a := range addrs {
				a = a.Unmap()
				prefixes = append(prefixes, netip.PrefixFrom(a, a.BitLen()))
			}
		}
		var flags uint32
		if opts.ProtocolErrors[tg.Protocol] {
			flags |= loader.FlagProtocolErrors
		}
		own := dedupe(prefixes)
		for _, pfx := range own {
			add(tg, loader.TargetEntry{Prefix: pfx, Port: ep.Port, ID: id, Flags: flags}, true)
		}
		if coversLocal(prefixes, opts.LocalAddrs) {
			for _, pfx := range dedupe(localPrefixes(opts.LocalAddrs)) {
				if !slices.Contains(own, pfx) {
					add(tg, loader.TargetEntry{Prefix: pfx, Port: ep.Port, ID: id, Flags: flags}, false)
				}
			}
		}
	}
	for _, e := range order {
		t.Entries = append(t.Entries, claims[e.Prefix][e.Port].entry)
	}
	return t, nil
}

func coversLocal(prefixes []netip.Prefix, local []netip.Addr) bool {
	for _, p := range prefixes {
		if p.Addr().IsLoopback() || p.Addr().IsUnspecified() {
			return true
		}
		for _, a := range local {
			if p.Contains(a) {
				return true
			}
		}
	}
	return false
}

// localPrefixes lists every destination that lands on this host: the
// loopback ranges, the unspecified addresses (connect() to 0.0.0.0 reaches
// a local listener) and each local address.
func localPrefixes(local []netip.Addr) []netip.Prefix {
	out := []netip.Prefix{
		netip.MustParsePrefix("127.0.0.0/8"),
		netip.MustParsePrefix("::1/128"),
		netip.MustParsePrefix("0.0.0.0/32"),
		netip.MustParsePrefix("::/128"),
	}
	for _, a := range local {
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out
}

func dedupe(ps []netip.Prefix) []netip.Prefix {
	seen := map[netip.Prefix]bool{}
	var out []netip.Prefix
	for _, p := range ps {
		p = p.Masked()
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

// LocalAddrs returns the addresses of this host's interfaces, without
// zones (link-local addresses are only reachable with one, and a connect()
// with a zone still goes through the same hook).
func LocalAddrs() ([]netip.Addr, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("list local addresses: %w", err)
	}
	var out []netip.Addr
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(ipn.IP); ok {
				out = append(out, ip.Unmap())
			}
		}
	}
	return out, nil
}
