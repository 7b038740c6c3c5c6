// Package bench holds Warden's benchmarks. Each one measures a baseline in
// the same run and prints the ratio; run them with 'make bench'.
package bench

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wardenhq/warden/bpf/loader"
	"github.com/wardenhq/warden/pkg/cgroupv2"
	"github.com/wardenhq/warden/tests/harness"
	"github.com/wardenhq/warden/tests/testenv"
)

const childEnv = "WARDEN_BENCH_CONNECT_CHILD"

func requireBench(t *testing.T) {
	if os.Getenv("WARDEN_BENCH") != "1" {
		t.Skip("benchmarks run with 'make bench' (WARDEN_BENCH=1)")
	}
}

// TestMain lets the test binary double as the connect-loop child, so the
// loop runs in a process placed in the measured cgroup from birth.
func TestMain(m *testing.M) {
	if spec := os.Getenv(childEnv); spec != "" {
		os.Exit(connectLoop(spec))
	}
	code := m.Run()
	harness.CleanupBinaries()
	os.Exit(code)
}

// connectLoop does connect()+close() to addr n times and prints ns/op.
func connectLoop(spec string) int {
	addr, nStr, _ := strings.Cut(spec, ",")
	n, _ := strconv.Atoi(nStr)
	ap := netip.MustParseAddrPort(addr)
	sa := &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	start := time.Now()
	for range n {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if err := unix.Connect(fd, sa); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		unix.Close(fd)
	}
	fmt.Println(time.Since(start).Nanoseconds() / int64(n))
	return 0
}

// TestBenchConnectNonTarget measures what Warden costs a connection that is
// not to a target: connect()+close() to loopback in a loop, in a cgroup
// with no programs against one under Warden's programs with 1,000 targets
// and a bound session.
func TestBenchConnectNonTarget(t *testing.T) {
	requireBench(t)
	testenv.RequireRoot(t)
	root := testenv.Cgroup(t)
	plain := filepath.Join(root, "plain")
	enforced := filepath.Join(root, "enforced")
	session := filepath.Join(enforced, "session")
	for _, d := range []string{plain, enforced, session} {
		if err := cgroupv2.Create(d); err != nil {
			t.Fatal(err)
		}
	}
	enf, err := loader.Load(loader.Options{CgroupPath: enforced, PinDir: filepath.Join(t.TempDir(), "pins")})
	if err != nil {
		t.Fatal(err)
	}
	defer enf.Uninstall()
	if err := enf.SetProxy(netip.MustParseAddr("127.0.0.1"), netip.IPv6Loopback(), 15001); err != nil {
		t.Fatal(err)
	}
	var entries []loader.TargetEntry
	for i := range 1000 {
		a := netip.AddrFrom4([4]byte{10, 77, byte(i >> 8), byte(i)})
		entries = append(entries, loader.TargetEntry{Prefix: netip.PrefixFrom(a, 32), Port: 5432, ID: uint32(i + 1)})
	}
	if err := enf.SyncTargets(entries); err != nil {
		t.Fatal(err)
	}
	sid, _ := cgroupv2.ID(session)
	if err := enf.PutBinding(loader.Binding{CgroupID: sid, IdentityID: 1}); err != nil {
		t.Fatal(err)
	}

	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	const perRound = 20000
	run := func(dir string) int64 {
		cmd := testenv.CommandIn(t, dir, self)
		cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s,%d", childEnv, ln.Addr(), perRound))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("connect loop: %v: %s", err, out)
		}
		ns, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
		if err != nil {
			t.Fatalf("connect loop output %q", out)
		}
		return ns
	}
	var base, with []int64
	for range 7 { // alternate, so drift on a noisy machine hits both
		base = append(base, run(plain))
		with = append(with, run(session))
	}
	mb, mw := median(base), median(with)
	t.Logf("connect()+close() to a non-target, %d per round, 7 rounds", perRound)
	fmt.Printf("BENCH connect_nontarget baseline_ns_per_op=%d warden_1000_targets_ns_per_op=%d ratio=%.3f\n", mb, mw, float64(mw)/float64(mb))
}

func median(v []int64) int64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}
