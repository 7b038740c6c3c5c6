package harness

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/wardenhq/warden/tests/testenv"
)

// Nginx is a real nginx (Debian's) inside the test's namespace, serving
// fixed JSON on 127.0.0.1, plain on Port and, with TLS, on TLSPort. Its
// access log records, for every request it received, the method, URI,
// status and the headers Warden sets or injects.
type Nginx struct {
	env *Env
	// Dir holds the configuration, logs and certificates; removed at
	// cleanup.
	Dir           string
	Port, TLSPort int
	proc          *Process
}

// NginxOptions change how StartNginxWith configures the server.
type NginxOptions struct {
	// TLS, when set, adds a TLS listener (TLSPort) with this certificate.
	TLS *ServerCert
}

// NginxUsers is what nginx answers on /users: personal data for masking
// tests, in JSON.
const NginxUsers = `{"users":[{"id":1,"name":"Carol","email":"carol@example.org","card":"4111 1111 1111 1111","ssn":"078-05-1120"}]}`

// StartNginx starts nginx in the foreground with its own configuration
// and waits until it answers. It serves:
//   - /users: NginxUsers;
//   - /whoami: the X-Warden-User, X-Warden-Groups and X-Warden-Identity
//     headers it received, as JSON (never Authorization: a test checks
//     that the client does not see it);
//   - anything else: {"ok":true,"uri":URI}.
func (e *Env) StartNginx() *Nginx {
	e.T.Helper()
	return e.StartNginxWith(NginxOptions{})
}

// StartNginxWith is StartNginx with options.
func (e *Env) StartNginxWith(opts NginxOptions) *Nginx {
	e.T.Helper()
	if _, err := os.Stat("/usr/sbin/nginx"); err != nil {
		testenv.Unavailable(e.T, "needs nginx (apt-get install nginx-light): %v", err)
	}
	dir, err := os.MkdirTemp("", "warden-nginx-")
	if err != nil {
		e.T.Fatal(err)
	}
	e.T.Cleanup(func() { os.RemoveAll(dir) })
	n := &Nginx{env: e, Dir: dir, Port: e.freePort()}
	tlsListen := ""
	if opts.TLS != nil {
		n.TLSPort = e.freePort()
		cert, key := filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
		if err := os.WriteFile(cert, opts.TLS.CertPEM, 0o600); err != nil {
			e.T.Fatal(err)
		}
		if err := os.WriteFile(key, opts.TLS.KeyPEM, 0o600); err != nil {
			e.T.Fatal(err)
		}
		tlsListen = fmt.Sprintf("listen 127.0.0.1:%d ssl http2;\n    ssl_certificate %s;\n    ssl_certificate_key %s;", n.TLSPort, cert, key)
	}
	// Temporary files in the test's directory: the package's defaults
	// belong to the system's nginx.
	for _, d := range []string{"body", "proxy", "fastcgi", "uwsgi", "scgi"} {
		if err := os.MkdirAll(filepath.Join(dir, "tmp", d), 0o700); err != nil {
			e.T.Fatal(err)
		}
	}
	conf := fmt.Sprintf(`daemon off;
master_process off;
pid %[1]s/nginx.pid;
error_log stderr info;
events { worker_connections 256; }
http {
  client_body_temp_path %[1]s/tmp/body;
  proxy_temp_path %[1]s/tmp/proxy;
  fastcgi_temp_path %[1]s/tmp/fastcgi;
  uwsgi_temp_path %[1]s/tmp/uwsgi;
  scgi_temp_path %[1]s/tmp/scgi;
  log_format warden '$request_method $request_uri $status auth="$http_authorization" user="$http_x_warden_user" groups="$http_x_warden_groups" ae="$http_accept_encoding"';
  access_log %[1]s/access.log warden;
  default_type application/json;
  server {
    listen 127.0.0.1:%[2]d;
    %[3]s
    location = /users { return 200 '%[4]s'; }
    location = /whoami { return 200 '{"user":"$http_x_warden_user","groups":"$http_x_warden_groups","identity":"$http_x_warden_identity"}'; }
    location / { return 200 '{"ok":true,"uri":"$request_uri"}'; }
  }
}
`, dir, n.Port, tlsListen, NginxUsers)
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		e.T.Fatal(err)
	}
	n.proc = e.StartProcess("nginx", e.NSCommand("/usr/sbin/nginx", "-p", dir, "-c", path))
	e.Eventually("nginx answers", func() error {
		if n.proc.Exited() {
			e.T.Fatalf("nginx exited:\n%s", n.proc.Output())
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := e.NS.DialContext(ctx, "tcp4", n.Addr())
		if err != nil {
			return err
		}
		return c.Close()
	})
	return n
}

// freePort returns a port on 127.0.0.1 in the namespace that nothing
// listens on.
func (e *Env) freePort() int {
	ln, err := e.NS.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		e.T.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// Addr is host:port of the plain listener.
func (n *Nginx) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(n.Port)) }

// AccessLog returns the access log's lines so far.
func (n *Nginx) AccessLog() []string {
	b, err := os.ReadFile(filepath.Join(n.Dir, "access.log"))
	if err != nil && !os.IsNotExist(err) {
		n.env.T.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		if l != "" {
			lines = append(lines, l)
		}
	}
	return lines
}

// Output is what nginx logged (its error log goes to stderr).
func (n *Nginx) Output() string { return n.proc.Output() }
