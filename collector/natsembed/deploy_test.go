package natsembed_test

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/wardenhq/warden/pkg/natsauth"
)

// The shipped cluster configs (deploy/nats-cluster) load in nats-server's
// own parser with the trust chain warden-collector nats-config writes:
// operator mode, TLS for clients, mutual TLS on routes, three replicas'
// worth of routes.
func TestClusterConfigsLoad(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	deploy := filepath.Join(filepath.Dir(file), "..", "..", "deploy", "nats-cluster")
	dir := t.TempDir()
	auth, err := natsauth.Open(filepath.Join(dir, "auth"))
	if err != nil {
		t.Fatal(err)
	}
	lines, err := auth.ServerConfig()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "warden-auth.conf"), []byte(lines), 0o644); err != nil {
		t.Fatal(err)
	}
	cert, key := selfSigned(t, dir)
	for _, n := range []string{"nats-1", "nats-2", "nats-3"} {
		b, err := os.ReadFile(filepath.Join(deploy, n+".conf"))
		if err != nil {
			t.Fatal(err)
		}
		conf := strings.NewReplacer("/etc/nats/tls/"+n+".crt", cert, "/etc/nats/tls/"+n+".key", key,
			"/etc/nats/tls/ca.crt", cert, "/var/lib/nats/jetstream", filepath.Join(dir, n)).Replace(string(b))
		path := filepath.Join(dir, n+".conf")
		if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		opts, err := server.ProcessConfigFile(path)
		if err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		if opts.ServerName != n || opts.TLSConfig == nil || opts.Cluster.TLSConfig == nil || len(opts.Routes) != 3 {
			t.Fatalf("%s: name %q, client TLS %v, route TLS %v, %d routes", n, opts.ServerName, opts.TLSConfig != nil, opts.Cluster.TLSConfig != nil, len(opts.Routes))
		}
		if len(opts.TrustedOperators) != 1 || opts.SystemAccount != auth.SystemAccount() {
			t.Fatalf("%s: %d trusted operators, system account %q; want Warden's", n, len(opts.TrustedOperators), opts.SystemAccount)
		}
		if _, ok := opts.AccountResolver.(*server.MemAccResolver); !ok {
			t.Fatalf("%s: resolver %T, want the preloaded memory resolver", n, opts.AccountResolver)
		}
	}
}
