package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Endpoint is a parsed target address. Exactly one of Host and Prefix is
// set.
type Endpoint struct {
	// Host is a DNS name, lower-cased and without a trailing dot. The agent
	// resolves it (every A and AAAA record) and redirects all the results.
	Host string
	// Prefix is the address range the target covers: a single-address
	// prefix (/32 or /128) for an IP literal, the CIDR otherwise. IPv4-mapped
	// IPv6 addresses are stored as IPv4, so the agent sees one canonical form
	// and can cover both itself.
	Prefix netip.Prefix
	// Port is the TCP port, 1-65535.
	Port uint16
}

// IsName reports whether the endpoint is a DNS name to be resolved.
func (e Endpoint) IsName() bool { return e.Host != "" }

// String returns the endpoint in the syntax ParseAddress accepts.
func (e Endpoint) String() string {
	port := strconv.Itoa(int(e.Port))
	switch {
	case e.IsName():
		return e.Host + ":" + port
	case e.Prefix.IsSingleIP():
		return netip.AddrPortFrom(e.Prefix.Addr(), e.Port).String()
	case e.Prefix.Addr().Is6():
		return "[" + e.Prefix.String() + "]:" + port
	default:
		return e.Prefix.String() + ":" + port
	}
}

// ParseAddress parses a target address. The accepted forms are:
//
//	10.0.0.5:5432          IPv4 address
//	[2001:db8::5]:5432     IPv6 address, in brackets
//	10.0.0.0/24:5432       IPv4 prefix: every address in it
//	[2001:db8::/64]:5432   IPv6 prefix, in brackets
//	db.internal:5432       DNS name, resolved by the agent
//
// Prefixes must have no host bits set, so that "10.0.0.5/24" (probably a
// mistake for one host or for the whole subnet) is rejected rather than
// guessed at. The unspecified addresses and zoned IPv6 addresses are
// rejected because they do not name a remote endpoint.
func ParseAddress(s string) (Endpoint, error) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return Endpoint{}, errors.New("missing :port (want host:port, for example 10.0.0.5:5432)")
	}
	host, portStr := s[:i], s[i+1:]
	port, err := parsePort(portStr)
	if err != nil {
		return Endpoint{}, err
	}
	if host == "" {
		return Endpoint{}, errors.New("missing host before :port")
	}

	bracketed := strings.HasPrefix(host, "[")
	if bracketed {
		if !strings.HasSuffix(host, "]") {
			return Endpoint{}, errors.New("missing ] after IPv6 address")
		}
		host = host[1 : len(host)-1]
	} else if strings.Contains(host, ":") {
		return Endpoint{}, errors.New("IPv6 addresses must be in brackets, for example [2001:db8::5]:5432")
	}

	if !strings.Contains(host, "/") && !bracketed && !looksLikeIPv4(host) {
		name, err := parseDNSName(host)
		if err != nil {
			return Endpoint{}, err
		}
		return Endpoint{Host: name, Port: port}, nil
	}

	var prefix netip.Prefix
	if strings.Contains(host, "/") {
		prefix, err = netip.ParsePrefix(host)
		if err != nil {
			return Endpoint{}, fmt.Errorf("invalid prefix %q (want address/length, for example 10.0.0.0/24)", host)
		}
	} else {
		addr, err := netip.ParseAddr(host)
		if err != nil {
			return Endpoint{}, fmt.Errorf("invalid IP address %q", host)
		}
		if addr.Zone() != "" {
			return Endpoint{}, fmt.Errorf("zoned IPv6 address %q is not supported", host)
		}
		prefix = netip.PrefixFrom(addr, addr.BitLen())
	}
	if bracketed != prefix.Addr().Is6() {
		if bracketed {
			return Endpoint{}, fmt.Errorf("%q is IPv4; write it without brackets", host)
		}
		return Endpoint{}, fmt.Errorf("IPv6 %q must be in brackets", host)
	}
	if prefix, err = canonicalPrefix(prefix, host); err != nil {
		return Endpoint{}, err
	}
	if prefix.Addr().IsUnspecified() && prefix.IsSingleIP() {
		return Endpoint{}, fmt.Errorf("%s is the unspecified address, not a target", prefix.Addr())
	}
	return Endpoint{Prefix: prefix, Port: port}, nil
}

func parsePort(s string) (uint16, error) {
	if s == "" {
		return 0, errors.New("missing port after the colon")
	}
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("port %q is not a number from 1 to 65535", s)
	}
	return uint16(n), nil
}

// canonicalPrefix stores IPv4-mapped IPv6 as IPv4, since the agent needs one
// canonical key and covers the mapped form itself, and rejects host bits.
func canonicalPrefix(p netip.Prefix, written string) (netip.Prefix, error) {
	if p.Addr().Is4In6() {
		if p.Bits() < 96 {
			return netip.Prefix{}, fmt.Errorf("prefix %q is wider than the IPv4-mapped range; write an IPv4 prefix", written)
		}
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	if m := p.Masked(); m != p {
		return netip.Prefix{}, fmt.Errorf("prefix %q has host bits set; did you mean %s?", written, m)
	}
	return p, nil
}

// looksLikeIPv4 reports whether s is made only of digits and dots. Such a
// string must parse as an IPv4 address: treating "10.0.0" as a DNS name
// would quietly resolve to nothing.
func looksLikeIPv4(s string) bool {
	return strings.Trim(s, "0123456789.") == ""
}

// parseDNSName validates a host name per RFC 1123 and returns it in the form
// the agent resolves: lower case, no trailing dot.
func parseDNSName(s string) (string, error) {
	name := strings.ToLower(strings.TrimSuffix(s, "."))
	if len(name) > 253 {
		return "", fmt.Errorf("host name %q is longer than 253 characters", s)
	}
	labels := strings.Split(name, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 {
			return "", fmt.Errorf("invalid host name %q: each dot-separated label must be 1 to 63 characters", s)
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return "", fmt.Errorf("invalid host name %q: a label cannot start or end with -", s)
		}
		for _, c := range l {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return "", fmt.Errorf("invalid host name %q: %q is not a letter, a digit, '-' or '.'", s, c)
			}
		}
	}
	if strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		// RFC 3696: the top-level label is never all-numeric. Catches typos
		// in IP addresses before they become a DNS lookup.
		return "", fmt.Errorf("invalid host name %q: the last label is all digits", s)
	}
	return name, nil
}
