// Package natsconn builds the NATS connection options every NATS client of
// the agent (publisher, command subscriber, review client, recordings)
// shares from agent.yaml's nats section: the host's creds, TLS, and the
// host's own inbox prefix, the only reply subjects its user may read.
package natsconn

import (
	"fmt"
	"os"
	"strings"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/wardenhq/warden/agent/config"
	"github.com/wardenhq/warden/pkg/natsauth"
)

// Options returns the connection options of host hostID for cfg. It reads
// the creds file now, so that creds issued for another host (which the
// server would let connect, then refuse every subject) are a start-up
// error naming both hosts. Permission violations the server reports later
// go to log.
func Options(cfg config.NATS, hostID string, log zerolog.Logger) ([]nats.Option, error) {
	opts := []nats.Option{
		nats.CustomInboxPrefix(natsauth.InboxPrefix(natsauth.RoleAgent, hostID)),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			ev := log.Error().Err(err)
			if sub != nil {
				ev = ev.Str("subject", sub.Subject)
			}
			ev.Msg("NATS error (a permissions violation means this host's creds do not allow it)")
		}),
	}
	if cfg.CredsFile != "" {
		if err := checkCreds(cfg.CredsFile, hostID); err != nil {
			return nil, err
		}
		opts = append(opts, nats.UserCredentials(cfg.CredsFile))
	}
	if cfg.TLS.CAFile != "" {
		opts = append(opts, nats.RootCAs(cfg.TLS.CAFile))
	}
	if cfg.TLS.CertFile != "" || cfg.TLS.KeyFile != "" {
		opts = append(opts, nats.ClientCert(cfg.TLS.CertFile, cfg.TLS.KeyFile))
	}
	return opts, nil
}

// checkCreds reads the user JWT of a creds file (never its seed) and
// checks that it was issued for hostID's agent.
func checkCreds(path, hostID string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("nats.creds_file: %w", err)
	}
	tok, err := jwt.ParseDecoratedJWT(b)
	if err != nil {
		return fmt.Errorf("nats.creds_file %s: not a NATS creds file: %w", path, err)
	}
	uc, err := jwt.DecodeUserClaims(tok)
	if err != nil {
		return fmt.Errorf("nats.creds_file %s: user JWT: %w", path, err)
	}
	want := natsauth.JWTName(natsauth.RoleAgent, hostID)
	if uc.Name != want {
		if rest, ok := strings.CutPrefix(uc.Name, string(natsauth.RoleAgent)+":"); ok {
			return fmt.Errorf("nats.creds_file %s was enrolled for host %q, but host_id is %q: run warden-collector enroll %s", path, rest, hostID, hostID)
		}
		return fmt.Errorf("nats.creds_file %s is the creds of %q, not of an agent: run warden-collector enroll %s", path, uc.Name, hostID)
	}
	return nil
}
