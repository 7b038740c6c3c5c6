package policy

import (
	"net/netip"
	"strings"
	"testing"
)

func TestParseAddress(t *testing.T) {
	tests := []struct {
		in     string
		host   string
		prefix string
		port   uint16
		str    string // String(), when different from in
	}{
		{in: "10.0.0.5:5432", prefix: "10.0.0.5/32", port: 5432},
		{in: "[2001:db8::5]:5432", prefix: "2001:db8::5/128", port: 5432},
		{in: "[::ffff:10.0.0.5]:5432", prefix: "10.0.0.5/32", port: 5432, str: "10.0.0.5:5432"},
		{in: "10.0.0.0/24:5432", prefix: "10.0.0.0/24", port: 5432},
		{in: "0.0.0.0/0:5432", prefix: "0.0.0.0/0", port: 5432},
		{in: "[2001:db8::/64]:6379", prefix: "2001:db8::/64", port: 6379},
		{in: "[::ffff:10.0.0.0/120]:5432", prefix: "10.0.0.0/24", port: 5432, str: "10.0.0.0/24:5432"},
		{in: "db.internal:5432", host: "db.internal", port: 5432},
		{in: "DB.Internal.:5432", host: "db.internal", port: 5432, str: "db.internal:5432"},
		{in: "localhost:1", host: "localhost", port: 1},
		{in: "x-1.a2:65535", host: "x-1.a2", port: 65535},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			ep, err := ParseAddress(tt.in)
			if err != nil {
				t.Fatalf("ParseAddress: %v", err)
			}
			var want netip.Prefix
			if tt.prefix != "" {
				want = netip.MustParsePrefix(tt.prefix)
			}
			if ep.Host != tt.host || ep.Prefix != want || ep.Port != tt.port {
				t.Errorf("got %+v, want host %q prefix %v port %d", ep, tt.host, want, tt.port)
			}
			if ep.IsName() != (tt.host != "") {
				t.Errorf("IsName() = %v", ep.IsName())
			}
			str := tt.str
			if str == "" {
				str = tt.in
			}
			if ep.String() != str {
				t.Errorf("String() = %q, want %q", ep.String(), str)
			}
			// The canonical form must parse back to the same endpoint.
			if again, err := ParseAddress(ep.String()); err != nil || again != ep {
				t.Errorf("ParseAddress(%q) = %+v, %v; want %+v", ep.String(), again, err, ep)
			}
		})
	}
}

func TestParseAddressErrors(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", "missing :port"},
		{"10.0.0.5", "missing :port"},
		{"10.0.0.5:", "missing port"},
		{":5432", "missing host"},
		{"10.0.0.5:0", `port "0" is not a number from 1 to 65535`},
		{"10.0.0.5:65536", `port "65536" is not`},
		{"10.0.0.5:-1", `port "-1" is not`},
		{"10.0.0.5:pg", `port "pg" is not`},
		{"2001:db8::5:5432", "IPv6 addresses must be in brackets"},
		{"[2001:db8::5:5432", "missing ]"},
		{"[10.0.0.5]:5432", "is IPv4; write it without brackets"},
		{"[db.internal]:5432", `invalid IP address "db.internal"`},
		{"[fe80::1%eth0]:22", "zoned IPv6 address"},
		{"10.0.0:5432", `invalid IP address "10.0.0"`},
		{"10.0.0.256:5432", `invalid IP address "10.0.0.256"`},
		{"0.0.0.0:5432", "unspecified address"},
		{"[::]:5432", "unspecified address"},
		{"10.0.0.5/24:5432", "has host bits set; did you mean 10.0.0.0/24?"},
		{"10.0.0.0/33:5432", "invalid prefix"},
		{"10.0.0.0/:5432", "invalid prefix"},
		{"[2001:db8::/64:5432", "missing ]"},
		{"[::ffff:0:0/64]:5432", "wider than the IPv4-mapped range"},
		{"db_1.internal:5432", `'_' is not a letter`},
		{"-db.internal:5432", "cannot start or end with -"},
		{"db..internal:5432", "each dot-separated label"},
		{strings.Repeat("a", 64) + ".internal:5432", "each dot-separated label"},
		{strings.Repeat("abcdefg.", 32) + "com:5432", "longer than 253"},
		{"db.123:5432", "the last label is all digits"},
		{"db internal:5432", `' ' is not a letter`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			ep, err := ParseAddress(tt.in)
			if err == nil {
				t.Fatalf("ParseAddress succeeded with %+v, want error containing %q", ep, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

func TestTargetEndpoint(t *testing.T) {
	ep, err := Target{Address: "10.1.2.3:22"}.Endpoint()
	if err != nil || ep.Prefix != netip.MustParsePrefix("10.1.2.3/32") || ep.Port != 22 {
		t.Errorf("Endpoint() = %+v, %v", ep, err)
	}
	if _, err := (Target{Address: "nope"}).Endpoint(); err == nil {
		t.Error("Endpoint() of a bad address succeeded")
	}
}
