package targets

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/wardenhq/warden/bpf/loader"
	"github.com/wardenhq/warden/pkg/policy"
)

// fakeResolver answers from a fixed table; a name missing from it fails the
// way a real NXDOMAIN would.
type fakeResolver struct {
	addrs map[string][]string
	calls []string
}

var errNoSuchHost = errors.New("no such host")

func (r *fakeResolver) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	r.calls = append(r.calls, network+" "+host)
	as, ok := r.addrs[host]
	if !ok {
		return nil, errNoSuchHost
	}
	var out []netip.Addr
	for _, a := range as {
		out = append(out, netip.MustParseAddr(a))
	}
	return out, nil
}

// prefixesOf returns the sorted prefixes of the entries for target id, and
// fails if any of them has a port or flags other than those given.
func prefixesOf(t *testing.T, tab *Table, id uint32, port uint16, flags uint32) []string {
	t.Helper()
	var out []string
	for _, e := range tab.Entries {
		if e.ID != id {
			continue
		}
		if e.Port != port || e.Flags != flags {
			t.Errorf("entry %+v: want port %d flags %d", e, port, flags)
		}
		out = append(out, e.Prefix.String())
	}
	slices.Sort(out)
	return out
}

func sorted(s ...string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// localSet is what a local target expands to on a host with the addresses
// 10.1.2.3 and fd00::3, besides the target's own prefixes.
var localSet = []string{"127.0.0.0/8", "::1/128", "0.0.0.0/32", "::/128", "10.1.2.3/32", "fd00::3/128"}

func TestBuild(t *testing.T) {
	local := []netip.Addr{netip.MustParseAddr("10.1.2.3"), netip.MustParseAddr("fd00::3"), netip.MustParseAddr("::ffff:10.1.2.3")}
	res := &fakeResolver{addrs: map[string][]string{
		"db.internal":    {"10.0.0.7", "2001:db8::7"},
		"dup.internal":   {"10.0.0.8", "::ffff:10.0.0.8", "10.0.0.8"},
		"localhost":      {"127.0.0.1", "::1"},
		"self.internal":  {"10.1.2.3"},
		"mapped.example": {"::ffff:192.0.2.9"},
	}}
	tests := []struct {
		name    string
		address string
		want    []string
	}{
		{name: "ipv4", address: "10.0.0.5:5432", want: []string{"10.0.0.5/32"}},
		{name: "ipv6", address: "[2001:db8::5]:5432", want: []string{"2001:db8::5/128"}},
		{name: "cidr4", address: "10.9.0.0/16:5432", want: []string{"10.9.0.0/16"}},
		{name: "cidr6", address: "[2001:db8:1::/48]:5432", want: []string{"2001:db8:1::/48"}},
		{name: "dns v4+v6", address: "db.internal:5432", want: []string{"10.0.0.7/32", "2001:db8::7/128"}},
		{name: "dns mapped is unmapped", address: "mapped.example:5432", want: []string{"192.0.2.9/32"}},
		{name: "dns duplicates deduped", address: "dup.internal:5432", want: []string{"10.0.0.8/32"}},
		{name: "loopback ip", address: "127.0.0.1:5432", want: append([]string{"127.0.0.1/32"}, localSet...)},
		{name: "loopback v6", address: "[::1]:5432", want: localSet},
		{name: "loopback range", address: "127.0.0.0/8:5432", want: localSet},
		{name: "localhost name", address: "localhost:5432", want: append([]string{"127.0.0.1/32"}, localSet...)},
		{name: "local address", address: "10.1.2.3:5432", want: localSet},
		{name: "name of local address", address: "self.internal:5432", want: localSet},
		{name: "local v6 address", address: "[fd00::3]:5432", want: localSet},
		{name: "cidr containing local address", address: "10.1.0.0/16:5432", want: append([]string{"10.1.0.0/16"}, localSet...)},
		{name: "catch-all", address: "0.0.0.0/0:5432", want: append([]string{"0.0.0.0/0"}, localSet...)},
		{name: "remote next to local", address: "10.1.2.4:5432", want: []string{"10.1.2.4/32"}},
		{name: "remote cidr", address: "10.2.0.0/16:5432", want: []string{"10.2.0.0/16"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &policy.Policy{Targets: []policy.Target{{Name: "t", Protocol: policy.ProtocolPostgres, Address: tt.address}}}
			tab, err := Build(context.Background(), p, Options{Resolver: res, LocalAddrs: local})
			if err != nil {
				t.Fatalf("Build: %v", err)
			}
			got := prefixesOf(t, tab, ID("t"), 5432, 0)
			if want := sorted(tt.want...); !slices.Equal(got, want) {
				t.Errorf("prefixes\n got %v\nwant %v", got, want)
			}
			if len(got) != len(tab.Entries) {
				t.Errorf("%d entries, %d for the target", len(tab.Entries), len(got))
			}
			if tab.ByID[ID("t")].Address != tt.address {
				t.Errorf("ByID = %+v", tab.ByID)
			}
		})
	}
}

func TestBuildResolvesOnlyNames(t *testing.T) {
	res := &fakeResolver{addrs: map[string][]string{"db.internal": {"10.0.0.7"}}}
	p := &policy.Policy{Targets: []policy.Target{
		{Name: "a", Protocol: policy.ProtocolTCP, Address: "10.0.0.5:22"},
		{Name: "b", Protocol: policy.ProtocolTCP, Address: "db.internal:22"},
	}}
	if _, err := Build(context.Background(), p, Options{Resolver: res}); err != nil {
		t.Fatal(err)
	}
	if want := []string{"ip db.internal"}; !slices.Equal(res.calls, want) {
		t.Errorf("lookups %q, want %q", res.calls, want)
	}
}

func TestBuildUnresolvableNameNamesTarget(t *testing.T) {
	res := &fakeResolver{addrs: map[string][]string{"db.internal": {"10.0.0.7"}}}
	p := &policy.Policy{Targets: []policy.Target{
		{Name: "orders-db", Protocol: policy.ProtocolPostgres, Address: "db.internal:5432"},
		{Name: "gone-db", Protocol: policy.ProtocolPostgres, Address: "gone.internal:5432"},
	}}
	tab, err := Build(context.Background(), p, Options{Resolver: res})
	if err == nil {
		t.Fatalf("Build succeeded: %+v", tab)
	}
	if tab != nil {
		t.Errorf("table returned with error: %+v", tab)
	}
	for _, want := range []string{`"gone-db"`, "gone.internal"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
	if !errors.Is(err, errNoSuchHost) {
		t.Errorf("error %q does not wrap the resolver's", err)
	}
}

func TestBuildBadAddressNamesTarget(t *testing.T) {
	p := &policy.Policy{Targets: []policy.Target{{Name: "broken", Protocol: policy.ProtocolTCP, Address: "10.0.0.5"}}}
	_, err := Build(context.Background(), p, Options{Resolver: &fakeResolver{}})
	if err == nil || !strings.Contains(err.Error(), `"broken"`) {
		t.Errorf("Build error = %v, want one naming the target", err)
	}
}

func TestBuildProtocolErrorsFlag(t *testing.T) {
	p := &policy.Policy{Targets: []policy.Target{
		{Name: "pg", Protocol: policy.ProtocolPostgres, Address: "db.internal:5432"},
		{Name: "raw", Protocol: policy.ProtocolTCP, Address: "10.0.0.6:9000"},
		{Name: "local-pg", Protocol: policy.ProtocolPostgres, Address: "127.0.0.1:5433"},
	}}
	res := &fakeResolver{addrs: map[string][]string{"db.internal": {"10.0.0.7", "2001:db8::7"}}}
	tab, err := Build(context.Background(), p, Options{
		Resolver:       res,
		ProtocolErrors: map[string]bool{policy.ProtocolPostgres: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[uint32]uint32{ID("pg"): loader.FlagProtocolErrors, ID("raw"): 0, ID("local-pg"): loader.FlagProtocolErrors}
	seen := map[uint32]int{}
	for _, e := range tab.Entries {
		f, ok := want[e.ID]
		if !ok {
			t.Errorf("entry %+v has an unknown id", e)
			continue
		}
		if e.Flags != f {
			t.Errorf("entry %+v: flags %d, want %d", e, e.Flags, f)
		}
		seen[e.ID]++
	}
	if seen[ID("pg")] != 2 || seen[ID("raw")] != 1 || seen[ID("local-pg")] != 5 {
		t.Errorf("entries per target: %v", seen)
	}
}

func TestBuildSeveralTargets(t *testing.T) {
	p := &policy.Policy{Targets: []policy.Target{
		{Name: "a", Protocol: policy.ProtocolPostgres, Address: "10.0.0.5:5432"},
		{Name: "b", Protocol: policy.ProtocolRedis, Address: "10.0.0.5:6379"},
	}}
	tab, err := Build(context.Background(), p, Options{Resolver: &fakeResolver{}})
	if err != nil {
		t.Fatal(err)
	}
	if len(tab.ByID) != 2 || tab.ByID[ID("a")].Name != "a" || tab.ByID[ID("b")].Name != "b" {
		t.Errorf("ByID = %+v", tab.ByID)
	}
	if got := prefixesOf(t, tab, ID("a"), 5432, 0); !slices.Equal(got, []string{"10.0.0.5/32"}) {
		t.Errorf("a: %v", got)
	}
	if got := prefixesOf(t, tab, ID("b"), 6379, 0); !slices.Equal(got, []string{"10.0.0.5/32"}) {
		t.Errorf("b: %v", got)
	}
}

func TestBuildEmptyPolicy(t *testing.T) {
	tab, err := Build(context.Background(), &policy.Policy{}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(tab.Entries) != 0 || tab.ByID == nil || len(tab.ByID) != 0 {
		t.Errorf("table %+v, want empty with a non-nil ByID", tab)
	}
}

func TestBuildIsDeterministic(t *testing.T) {
	p := &policy.Policy{Targets: []policy.Target{
		{Name: "a", Protocol: policy.ProtocolPostgres, Address: "localhost:5432"},
		{Name: "b", Protocol: policy.ProtocolTCP, Address: "db.internal:22"},
	}}
	res := &fakeResolver{addrs: map[string][]string{"localhost": {"::1", "127.0.0.1"}, "db.internal": {"2001:db8::7", "10.0.0.7"}}}
	local := []netip.Addr{netip.MustParseAddr("192.0.2.1")}
	first, err := Build(context.Background(), p, Options{Resolver: res, LocalAddrs: local})
	if err != nil {
		t.Fatal(err)
	}
	res.addrs = map[string][]string{"localhost": {"127.0.0.1", "::1"}, "db.internal": {"10.0.0.7", "2001:db8::7"}}
	second, err := Build(context.Background(), p, Options{Resolver: res, LocalAddrs: local})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(first.Entries, second.Entries) {
		t.Errorf("entries depend on resolver order:\n%v\n%v", first.Entries, second.Entries)
	}
}

func TestID(t *testing.T) {
	names := []string{"", "orders-db", "orders-db2", "ssh-prod", "a"}
	seen := map[uint32]string{}
	for _, n := range names {
		id := ID(n)
		if id == 0 {
			t.Errorf("ID(%q) = 0; 0 means no target in the kernel", n)
		}
		if ID(n) != id {
			t.Errorf("ID(%q) is not stable", n)
		}
		if other, dup := seen[id]; dup {
			t.Errorf("ID(%q) == ID(%q)", n, other)
		}
		seen[id] = n
	}
	// FNV-1a 32 of "orders-db", pinned: the id must survive agent upgrades
	// as well as restarts, since events and the kernel table carry it.
	if got, want := ID("orders-db"), uint32(0x4e405455); got != want {
		t.Errorf("ID(orders-db) = %#x, want %#x", got, want)
	}
}

func TestLocalAddrs(t *testing.T) {
	addrs, err := LocalAddrs()
	if err != nil {
		t.Fatal(err)
	}
	var loopback bool
	for _, a := range addrs {
		if a.Is4In6() {
			t.Errorf("%v is IPv4-mapped", a)
		}
		if a.Zone() != "" {
			t.Errorf("%v has a zone", a)
		}
		loopback = loopback || a.IsLoopback()
	}
	if !loopback {
		t.Errorf("LocalAddrs() = %v, no loopback address", addrs)
	}
}

// Two local targets on one port: each keeps its own address, and the
// addresses only their expansions cover go to the one declared first.
func TestBuildLocalTargetsSharingAPort(t *testing.T) {
	p := &policy.Policy{Targets: []policy.Target{
		{Name: "first", Protocol: policy.ProtocolTCP, Address: "127.0.0.1:5432"},
		{Name: "second", Protocol: policy.ProtocolTCP, Address: "127.0.0.2:5432"},
	}}
	local := []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("192.0.2.10")}
	for range 20 { // map iteration must not decide the outcome
		tab, err := Build(context.Background(), p, Options{Resolver: &fakeResolver{}, LocalAddrs: local})
		if err != nil {
			t.Fatal(err)
		}
		owner := map[string]string{}
		for _, e := range tab.Entries {
			if _, dup := owner[e.Prefix.String()]; dup {
				t.Fatalf("%s listed twice", e.Prefix)
			}
			owner[e.Prefix.String()] = tab.ByID[e.ID].Name
		}
		want := map[string]string{
			"127.0.0.1/32": "first", "127.0.0.2/32": "second", "127.0.0.0/8": "first",
			"192.0.2.10/32": "first", "0.0.0.0/32": "first", "::1/128": "first", "::/128": "first",
		}
		for pfx, name := range want {
			if owner[pfx] != name {
				t.Fatalf("%s belongs to %q, want %q (all: %v)", pfx, owner[pfx], name, owner)
			}
		}
		if len(tab.Shadowed) == 0 {
			t.Fatal("overlap not reported")
		}
	}
}
