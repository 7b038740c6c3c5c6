package natsembed

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"

	"github.com/wardenhq/warden/pkg/natsauth"
)

// ApplyAuth makes opts trust a's chain: its operator, its system account,
// and a memory resolver holding both accounts' JWTs (revocations
// included). Users then need creds a issued.
func ApplyAuth(opts *server.Options, a *natsauth.Authority) error {
	opJWT, err := a.OperatorJWT()
	if err != nil {
		return fmt.Errorf("natsembed: operator JWT: %w", err)
	}
	oc, err := jwt.DecodeOperatorClaims(opJWT)
	if err != nil {
		return fmt.Errorf("natsembed: operator JWT: %w", err)
	}
	accts, err := a.AccountJWTs()
	if err != nil {
		return fmt.Errorf("natsembed: %w", err)
	}
	res := &server.MemAccResolver{}
	for k, v := range accts {
		if err := res.Store(k, v); err != nil {
			return fmt.Errorf("natsembed: preload account %s: %w", k, err)
		}
	}
	opts.TrustedOperators = []*jwt.OperatorClaims{oc}
	opts.SystemAccount = a.SystemAccount()
	opts.AccountResolver = res
	return nil
}

// resolverOf returns the memory resolver ApplyAuth set, if any.
func resolverOf(opts *server.Options) *server.MemAccResolver {
	r, _ := opts.AccountResolver.(*server.MemAccResolver)
	return r
}

// applyTLS requires TLS of every client when certFile and keyFile are set.
func applyTLS(opts *server.Options, certFile, keyFile string) error {
	switch {
	case certFile == "" && keyFile == "":
		return nil
	case certFile == "" || keyFile == "":
		return errors.New("natsembed: a TLS certificate needs its key and the key its certificate")
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return fmt.Errorf("natsembed: TLS certificate %s, key %s: %w", certFile, keyFile, err)
	}
	opts.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	opts.TLS = true
	opts.TLSTimeout = 5
	return nil
}

// applyCluster configures the route listener and the other nodes.
func applyCluster(opts *server.Options, c *Cluster) error {
	if c == nil {
		return nil
	}
	host, portStr, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return fmt.Errorf("natsembed: cluster listen address %q: %w", c.Listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return fmt.Errorf("natsembed: cluster listen port %q: %w", portStr, err)
	}
	opts.Cluster = server.ClusterOpts{Name: c.Name, Host: host, Port: port}
	for _, r := range c.Routes {
		u, err := url.Parse(r)
		if err != nil {
			return fmt.Errorf("natsembed: route %q: %w", r, err)
		}
		opts.Routes = append(opts.Routes, u)
	}
	return nil
}

// ReloadAuth applies a's current account JWT (revocations, signing keys)
// to the running server: users revoked since the server started are
// disconnected and refused from now on, with no restart.
func (s *Server) ReloadAuth(a *natsauth.Authority) error {
	accts, err := a.AccountJWTs()
	if err != nil {
		return fmt.Errorf("natsembed: %w", err)
	}
	tok := accts[a.Account()]
	ac, err := jwt.DecodeAccountClaims(tok)
	if err != nil {
		return fmt.Errorf("natsembed: account JWT: %w", err)
	}
	if s.res != nil {
		if err := s.res.Store(a.Account(), tok); err != nil {
			return fmt.Errorf("natsembed: store account JWT: %w", err)
		}
	}
	acc, err := s.ns.LookupAccount(a.Account())
	if err != nil {
		return fmt.Errorf("natsembed: account %s: %w", a.Account(), err)
	}
	s.ns.UpdateAccountClaims(acc, ac)
	return nil
}
