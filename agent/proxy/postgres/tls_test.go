package postgres

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wardenhq/warden/pkg/policy"
	pgwire "github.com/wardenhq/warden/pkg/protocol/postgres"
	e2eharness "github.com/wardenhq/warden/tests/harness"
)

// fakeTLSServer listens on host and answers one SSLRequest with answer
// and, for 'S', completes a TLS handshake with cert and echoes "pong" for
// "ping". It returns the address and a channel with the server's
// SSLRequest-decoding error.
func fakeTLSServer(t *testing.T, host string, answer byte, cert *e2eharness.ServerCert) (string, <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	errc := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			errc <- err
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(hang))
		var req [8]byte
		if _, err := io.ReadFull(c, req[:]); err != nil {
			errc <- err
			return
		}
		if binary.BigEndian.Uint32(req[:4]) != 8 || binary.BigEndian.Uint32(req[4:]) != pgwire.SSLRequestCode {
			errc <- errors.New("not an SSLRequest")
			return
		}
		errc <- nil
		c.Write([]byte{answer})
		if answer != 'S' {
			return
		}
		pair, err := tls.X509KeyPair(cert.CertPEM, cert.KeyPEM)
		if err != nil {
			return
		}
		tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{pair}})
		var buf [4]byte
		if _, err := io.ReadFull(tc, buf[:]); err == nil && string(buf[:]) == "ping" {
			tc.Write([]byte("pong"))
		}
	}()
	return ln.Addr().String(), errc
}

// hang bounds every wait so that a broken codec fails the test instead of
// hanging it; nothing here depends on how long things take.
const hang = 10 * time.Second

// privateLoopback is a random address in 127/8, so parallel tests do not
// collide.
func privateLoopback() string {
	return fmt.Sprintf("127.%d.%d.%d:0", 1+rand.IntN(254), rand.IntN(256), 1+rand.IntN(254))
}

func TestPGUpstreamTLS(t *testing.T) {
	ca := e2eharness.NewTestCA(t, "warden test CA")
	other := e2eharness.NewTestCA(t, "someone else's CA")
	dir := t.TempDir()
	caFile := ca.WriteCA(t, filepath.Join(dir, "ca.pem"))
	otherFile := other.WriteCA(t, filepath.Join(dir, "other.pem"))
	garbage := filepath.Join(dir, "garbage.pem")
	os.WriteFile(garbage, []byte("not a certificate"), 0o644)

	tests := []struct {
		name    string
		answer  byte
		hosts   []string // the server certificate's; "ADDR" is the listener's IP
		tls     policy.UpstreamTLS
		wantErr string
	}{
		{"verify-full by address", 'S', []string{"ADDR"}, policy.UpstreamTLS{Mode: policy.TLSVerifyFull, CAFile: caFile}, ""},
		{"verify-full by server_name", 'S', []string{"db.test"}, policy.UpstreamTLS{Mode: policy.TLSVerifyFull, CAFile: caFile, ServerName: "db.test"}, ""},
		{"verify-full wrong CA", 'S', []string{"ADDR"}, policy.UpstreamTLS{Mode: policy.TLSVerifyFull, CAFile: otherFile}, "certificate signed by unknown authority"},
		{"verify-full system roots", 'S', []string{"ADDR"}, policy.UpstreamTLS{Mode: policy.TLSVerifyFull}, "certificate signed by unknown authority"},
		{"verify-full wrong address", 'S', []string{"10.9.9.9", "db.test"}, policy.UpstreamTLS{Mode: policy.TLSVerifyFull, CAFile: caFile}, "certificate is valid for 10.9.9.9, not 127."},
		{"verify-full wrong server_name", 'S', []string{"other.test"}, policy.UpstreamTLS{Mode: policy.TLSVerifyFull, CAFile: caFile, ServerName: "db.test"}, "certificate is valid for other.test, not db.test"},
		{"require ignores the host", 'S', []string{"db.test"}, policy.UpstreamTLS{Mode: policy.TLSRequire, CAFile: caFile}, ""},
		{"require still checks the chain", 'S', []string{"ADDR"}, policy.UpstreamTLS{Mode: policy.TLSRequire, CAFile: otherFile}, "certificate signed by unknown authority"},
		{"server declines", 'N', nil, policy.UpstreamTLS{Mode: policy.TLSVerifyFull, CAFile: caFile}, "does not accept TLS (it answered 'N' to SSLRequest)"},
		{"unreadable CA file", 'S', []string{"ADDR"}, policy.UpstreamTLS{Mode: policy.TLSVerifyFull, CAFile: filepath.Join(dir, "missing.pem")}, "read ca_file"},
		{"CA file without certificates", 'S', []string{"ADDR"}, policy.UpstreamTLS{Mode: policy.TLSVerifyFull, CAFile: garbage}, "holds no PEM certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The certificate must name the listener's address, so pick
			// the address first.
			host, _, _ := net.SplitHostPort(privateLoopback())
			var cert *e2eharness.ServerCert
			if tt.hosts != nil {
				hosts := append([]string(nil), tt.hosts...)
				for i, h := range hosts {
					if h == "ADDR" {
						hosts[i] = host
					}
				}
				cert = ca.Issue(t, hosts...)
			}
			addr, errc := fakeTLSServer(t, host, tt.answer, cert)
			target := policy.Target{Name: "db", Protocol: policy.ProtocolPostgres, Address: addr,
				Credentials: &policy.Credentials{Username: "app", PasswordFile: "/nonexistent", TLS: tt.tls}}
			conn, err := net.DialTimeout("tcp", addr, hang)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			tc, err := upstreamTLS(context.Background(), conn, target)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("upstreamTLS = %v, want an error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("upstreamTLS: %v", err)
			}
			if err := <-errc; err != nil {
				t.Fatalf("server: %v", err)
			}
			tc.SetDeadline(time.Now().Add(hang))
			if _, err := tc.Write([]byte("ping")); err != nil {
				t.Fatal(err)
			}
			var buf [4]byte
			if _, err := io.ReadFull(tc, buf[:]); err != nil || string(buf[:]) != "pong" {
				t.Fatalf("echo over TLS: %q, %v", buf, err)
			}
		})
	}
}
