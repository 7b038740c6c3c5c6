package harness

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/wardenhq/warden/tests/testenv"
)

// XRDP is a real xrdp server inside the test's namespace, on 127.0.0.1,
// offering TLS and standard RDP security (xrdp does not implement
// CredSSP, so it never selects NLA). Without credentials a client gets
// xrdp's own login screen, which keeps the session open: enough for the
// negotiation, the relay and time limits.
type XRDP struct {
	env  *Env
	Dir  string
	Port int
	proc *Process
}

// StartXRDP starts xrdp in the foreground with a configuration and TLS
// certificate of its own, and waits until it accepts connections. It
// stops at cleanup.
func (e *Env) StartXRDP() *XRDP {
	e.T.Helper()
	bin := testenv.RequireCommand(e.T, "xrdp")
	dir, err := os.MkdirTemp("", "warden-xrdp-")
	if err != nil {
		e.T.Fatal(err)
	}
	e.T.Cleanup(func() { os.RemoveAll(dir) })
	cert := NewTestCA(e.T, "xrdp test CA").Issue(e.T, "127.0.0.1")
	crt, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(crt, cert.CertPEM, 0o600); err != nil {
		e.T.Fatal(err)
	}
	if err := os.WriteFile(key, cert.KeyPEM, 0o600); err != nil {
		e.T.Fatal(err)
	}
	ln, err := e.NS.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		e.T.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	// Channels must be allowed: FreeRDP joins its static channels, and
	// xrdp with none allowed fails the join.
	ini := fmt.Sprintf(`[Globals]
ini_version=1
fork=false
port=tcp://127.0.0.1:%d
use_vsock=false
security_layer=negotiate
crypt_level=high
certificate=%s
key_file=%s
ssl_protocols=TLSv1.2, TLSv1.3
max_bpp=24
allow_channels=true
[Logging]
LogFile=%s
LogLevel=INFO
EnableSyslog=false
[Channels]
rdpdr=true
rdpsnd=true
drdynvc=true
cliprdr=true
rail=true
xrdpvr=true
[Xvnc]
name=Xvnc
lib=libvnc.so
username=ask
password=ask
ip=127.0.0.1
port=-1
`, port, crt, key, filepath.Join(dir, "xrdp.log"))
	path := filepath.Join(dir, "xrdp.ini")
	if err := os.WriteFile(path, []byte(ini), 0o600); err != nil {
		e.T.Fatal(err)
	}
	x := &XRDP{env: e, Dir: dir, Port: port}
	x.proc = e.StartProcess("xrdp", exec.Command("nsenter", "--net="+e.NS.Path, "--", bin, "--nodaemon", "--config", path))
	e.T.Cleanup(func() {
		if e.T.Failed() {
			e.T.Logf("--- xrdp log ---\n%s", x.Log())
		}
	})
	e.Eventually("xrdp listens", func() error {
		if x.proc.Exited() {
			e.T.Fatalf("xrdp exited:\n%s\n%s", x.proc.Output(), x.Log())
		}
		c, err := e.NS.DialContext(context.Background(), "tcp4", x.Addr())
		if err != nil {
			return err
		}
		c.Close()
		return nil
	})
	return x
}

// Addr is host:port of the server on 127.0.0.1.
func (x *XRDP) Addr() string { return "127.0.0.1:" + strconv.Itoa(x.Port) }

// Log is xrdp's log file so far.
func (x *XRDP) Log() string {
	b, _ := os.ReadFile(filepath.Join(x.Dir, "xrdp.log"))
	return string(b)
}

// Xvfb is a virtual X display inside the test's namespace, for X clients
// such as xfreerdp on a machine without a screen. It listens only on its
// abstract socket, which belongs to the namespace: nothing outside sees
// it, and it cannot collide with a display elsewhere.
type Xvfb struct {
	// Display is the DISPLAY value for clients in the namespace (":N").
	Display string
	proc    *Process
}

// StartXvfb starts Xvfb on a display it picks itself and waits until it
// is ready. It stops at cleanup.
func (e *Env) StartXvfb() *Xvfb {
	e.T.Helper()
	bin := testenv.RequireCommand(e.T, "Xvfb")
	r, w, err := os.Pipe()
	if err != nil {
		e.T.Fatal(err)
	}
	defer r.Close()
	// -displayfd: Xvfb picks a free display and writes its number to fd 3
	// once it accepts clients. -ac: the test's own users connect.
	cmd := exec.Command("nsenter", "--net="+e.NS.Path, "--", bin, "-displayfd", "3", "-nolisten", "tcp", "-nolisten", "unix",
		"-ac", "-screen", "0", "1024x768x24")
	cmd.ExtraFiles = []*os.File{w}
	x := &Xvfb{}
	x.proc = e.StartProcess("Xvfb", cmd)
	w.Close()
	got := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(r).ReadString('\n')
		got <- strings.TrimSpace(line)
	}()
	select {
	case n := <-got:
		if n == "" {
			e.T.Fatalf("Xvfb did not report its display:\n%s", x.proc.Output())
		}
		x.Display = ":" + n
	case <-time.After(30 * time.Second):
		e.T.Fatalf("Xvfb did not start:\n%s", x.proc.Output())
	}
	return x
}
