package loader_test

import (
	"errors"
	"fmt"
	"golang.org/x/sys/unix"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wardenhq/warden/bpf/loader"
	"github.com/wardenhq/warden/pkg/cgroupv2"
	"github.com/wardenhq/warden/tests/testenv"
)

// kernelFixture loads the programs for real into a cgroup subtree of the
// test's own, with a proxy and a target listening on loopback.
type kernelFixture struct {
	enf    *loader.Enforcer
	root   string
	proxy  net.Listener
	proxy6 net.Listener
	target net.Listener
}

func newKernelFixture(t *testing.T) *kernelFixture {
	t.Helper()
	root := testenv.Cgroup(t)
	enf, err := loader.Load(loader.Options{CgroupPath: root, PinDir: filepath.Join(t.TempDir(), "pins")})
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	t.Cleanup(func() {
		if err := enf.Uninstall(); err != nil {
			t.Errorf("uninstall: %v", err)
		}
	})
	f := &kernelFixture{enf: enf, root: root}
	f.proxy = listen(t, "tcp4", "127.0.0.1:0")
	port := f.proxy.Addr().(*net.TCPAddr).Port
	f.proxy6 = listen(t, "tcp6", fmt.Sprintf("[::1]:%d", port))
	f.target = listen(t, "tcp4", "127.0.0.1:0")
	if err := enf.SetProxy(netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1"), uint16(port)); err != nil {
		t.Fatal(err)
	}
	return f
}

func listen(t *testing.T, network, addr string) net.Listener {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func (f *kernelFixture) targetPort() uint16 { return uint16(f.target.Addr().(*net.TCPAddr).Port) }

// session makes a cgroup under the test root, optionally bound to identity.
func (f *kernelFixture) session(t *testing.T, name string, identity uint32, expires uint64) string {
	t.Helper()
	dir := filepath.Join(f.root, name)
	if err := cgroupv2.Create(dir); err != nil {
		t.Fatal(err)
	}
	if identity != 0 {
		id, err := cgroupv2.ID(dir)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.enf.PutBinding(loader.Binding{CgroupID: id, IdentityID: identity, ExpiresBootNs: expires}); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// dial runs bash in cgroup dir and connects with /dev/tcp to host:port,
// returning bash's pid and its error output.
func dial(t *testing.T, dir, host string, port uint16) (int, string, error) {
	t.Helper()
	cmd := testenv.CommandIn(t, dir, "bash", "-c", fmt.Sprintf("exec 3<>/dev/tcp/%s/%d && echo hello >&3", host, port))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err := cmd.Run()
	pid := 0
	if cmd.Process != nil {
		pid = cmd.Process.Pid
	}
	return pid, stderr.String(), err
}

// accepted waits for one connection on ln, reads what the client sent and
// returns its remote address.
func accepted(t *testing.T, ln net.Listener) (netip.AddrPort, string) {
	t.Helper()
	ln.(interface{ SetDeadline(time.Time) error }).SetDeadline(time.Now().Add(10 * time.Second))
	c, err := ln.Accept()
	if err != nil {
		t.Fatalf("accept on %s: %v", ln.Addr(), err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 64)
	n, _ := c.Read(buf)
	return c.RemoteAddr().(*net.TCPAddr).AddrPort(), string(buf[:n])
}

func noConnection(t *testing.T, ln net.Listener) {
	t.Helper()
	ln.(interface{ SetDeadline(time.Time) error }).SetDeadline(time.Now().Add(200 * time.Millisecond))
	if c, err := ln.Accept(); err == nil {
		c.Close()
		t.Fatalf("%s got a connection it must never see", ln.Addr())
	}
}

func TestKernelEnforcement(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "bash")
	f := newKernelFixture(t)
	port := f.targetPort()
	const targetID, alice, mallory = 3, 7, 9
	err := f.enf.SyncTargets([]loader.TargetEntry{
		{Prefix: netip.MustParsePrefix("127.0.0.1/32"), Port: port, ID: targetID, Flags: loader.FlagProtocolErrors},
		{Prefix: netip.MustParsePrefix("::1/128"), Port: port, ID: targetID, Flags: loader.FlagProtocolErrors},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.enf.SyncAccess(map[uint32]map[uint32]uint64{alice: {targetID: 0}}); err != nil {
		t.Fatal(err)
	}
	aliceDir := f.session(t, "alice", alice, 0)
	malloryDir := f.session(t, "mallory", mallory, 0)
	unboundDir := f.session(t, "unbound", 0, 0)
	denials, err := f.enf.Denials()
	if err != nil {
		t.Fatal(err)
	}
	defer denials.Close()

	for _, host := range []string{"127.0.0.1", "::ffff:127.0.0.1"} {
		t.Run("allowed via "+host, func(t *testing.T) {
			pid, stderr, err := dial(t, aliceDir, host, port)
			if err != nil {
				t.Fatalf("dial: %v: %s", err, stderr)
			}
			client, got := accepted(t, f.proxy)
			if got != "hello\n" {
				t.Fatalf("proxy read %q", got)
			}
			info, err := f.enf.TakeConn(client)
			if err != nil {
				t.Fatal(err)
			}
			want := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)
			if info.OrigDst != want || info.IdentityID != alice || info.TargetID != targetID ||
				info.TGID != uint32(pid) || info.UID != 0 || info.Verdict != loader.VerdictAllowed {
				t.Fatalf("conn info %+v, want dst %s identity %d target %d tgid %d", info, want, alice, targetID, pid)
			}
			if _, err := f.enf.TakeConn(client); err == nil {
				t.Fatal("connection info can be taken twice")
			}
		})
	}
	t.Run("getpeername reports the original destination", func(t *testing.T) {
		self, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		for _, dst := range []string{fmt.Sprintf("127.0.0.1:%d", port), fmt.Sprintf("[::ffff:127.0.0.1]:%d", port)} {
			cmd := testenv.CommandIn(t, aliceDir, self)
			cmd.Env = append(os.Environ(), peerChild+"="+dst)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("child: %v: %s", err, out)
			}
			client, _ := accepted(t, f.proxy)
			if _, err := f.enf.TakeConn(client); err != nil {
				t.Fatal(err)
			}
			if got := netip.MustParseAddrPort(string(out)); got.Addr().Unmap() != netip.MustParseAddr("127.0.0.1") || got.Port() != port {
				t.Fatalf("getpeername after dialling %s = %s, want the original destination", dst, out)
			}
		}
	})
	t.Run("ipv6", func(t *testing.T) {
		_, stderr, err := dial(t, aliceDir, "::1", port)
		if err != nil {
			t.Fatalf("dial: %v: %s", err, stderr)
		}
		client, _ := accepted(t, f.proxy6)
		info, err := f.enf.TakeConn(client)
		if err != nil {
			t.Fatal(err)
		}
		if info.OrigDst != netip.AddrPortFrom(netip.MustParseAddr("::1"), port) {
			t.Fatalf("orig dst %s", info.OrigDst)
		}
	})
	t.Run("unbound goes to proxy as unbound", func(t *testing.T) {
		if _, stderr, err := dial(t, unboundDir, "127.0.0.1", port); err != nil {
			t.Fatalf("dial: %v: %s", err, stderr)
		}
		client, _ := accepted(t, f.proxy)
		info, err := f.enf.TakeConn(client)
		if err != nil {
			t.Fatal(err)
		}
		if info.Verdict != loader.VerdictUnbound || info.IdentityID != 0 {
			t.Fatalf("conn info %+v", info)
		}
	})
	t.Run("not allowed is EPERM", func(t *testing.T) {
		_, stderr, err := dial(t, malloryDir, "127.0.0.1", port)
		if err == nil || !strings.Contains(stderr, "not permitted") {
			t.Fatalf("dial succeeded or wrong error: %v: %s", err, stderr)
		}
		d := readDenial(t, denials)
		if d.Verdict != loader.VerdictNotAllowed || d.IdentityID != mallory || d.Comm != "bash" {
			t.Fatalf("denial %+v", d)
		}
	})
	t.Run("access window", func(t *testing.T) {
		var ts unix.Timespec
		unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts)
		now := uint64(ts.Nano())
		// A window that ended is no access at all...
		if err := f.enf.SyncAccess(map[uint32]map[uint32]uint64{alice: {targetID: 0}, mallory: {targetID: now - 1}}); err != nil {
			t.Fatal(err)
		}
		_, stderr, err := dial(t, malloryDir, "127.0.0.1", port)
		if err == nil || !strings.Contains(stderr, "not permitted") {
			t.Fatalf("dial in an ended window: %v: %s", err, stderr)
		}
		if d := readDenial(t, denials); d.Verdict != loader.VerdictNotAllowed || d.IdentityID != mallory {
			t.Fatalf("denial %+v", d)
		}
		// ...and one still open lets the connection through.
		if err := f.enf.SyncAccess(map[uint32]map[uint32]uint64{alice: {targetID: 0}, mallory: {targetID: now + uint64(time.Hour)}}); err != nil {
			t.Fatal(err)
		}
		if _, stderr, err := dial(t, malloryDir, "127.0.0.1", port); err != nil {
			t.Fatalf("dial in an open window: %v: %s", err, stderr)
		}
		client, _ := accepted(t, f.proxy)
		if info, err := f.enf.TakeConn(client); err != nil || info.IdentityID != mallory || info.Verdict != loader.VerdictAllowed {
			t.Fatalf("conn info %+v, %v", info, err)
		}
		if err := f.enf.SyncAccess(map[uint32]map[uint32]uint64{alice: {targetID: 0}}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("expired binding", func(t *testing.T) {
		dir := f.session(t, "expired", alice, 1) // boot time 1ns: long past
		if _, stderr, err := dial(t, dir, "127.0.0.1", port); err != nil {
			t.Fatalf("dial: %v: %s", err, stderr)
		}
		client, _ := accepted(t, f.proxy)
		info, err := f.enf.TakeConn(client)
		if err != nil {
			t.Fatal(err)
		}
		if info.Verdict != loader.VerdictExpired || info.IdentityID != 0 {
			t.Fatalf("conn info %+v", info)
		}
	})
	t.Run("tcp target without protocol errors is EPERM when unbound", func(t *testing.T) {
		err := f.enf.SyncTargets([]loader.TargetEntry{{Prefix: netip.MustParsePrefix("127.0.0.0/8"), Port: port, ID: targetID}})
		if err != nil {
			t.Fatal(err)
		}
		_, stderr, err := dial(t, unboundDir, "127.0.0.2", port)
		if err == nil || !strings.Contains(stderr, "not permitted") {
			t.Fatalf("dial: %v: %s", err, stderr)
		}
		if d := readDenial(t, denials); d.Verdict != loader.VerdictUnbound {
			t.Fatalf("denial %+v", d)
		}
	})
	t.Run("non-targets untouched", func(t *testing.T) {
		other := listen(t, "tcp4", "127.0.0.1:0")
		if _, stderr, err := dial(t, unboundDir, "127.0.0.1", uint16(other.Addr().(*net.TCPAddr).Port)); err != nil {
			t.Fatalf("dial: %v: %s", err, stderr)
		}
		if _, got := accepted(t, other); got != "hello\n" {
			t.Fatalf("read %q", got)
		}
	})
	noConnection(t, f.target)
	counters, err := f.enf.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if counters["redirected"] != 8 || counters["denied"] != 3 {
		t.Fatalf("counters %v", counters)
	}
}

func readDenial(t *testing.T, r *loader.DenialReader) loader.Denial {
	t.Helper()
	type result struct {
		d   loader.Denial
		err error
	}
	ch := make(chan result, 1)
	go func() { d, err := r.Read(); ch <- result{d, err} }()
	select {
	case res := <-ch:
		if res.err != nil {
			t.Fatal(res.err)
		}
		return res.d
	case <-time.After(10 * time.Second):
		t.Fatal(errors.New("no denial reported"))
	}
	return loader.Denial{}
}
