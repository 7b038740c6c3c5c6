// Command warden-collector consumes Warden events from NATS JetStream,
// verifies their signatures and hash chains, stores them in SQLite and
// serves the query API used by `warden events|lineage|sessions`. Every API
// call carries an OIDC ID token of --oidc-issuer: --readers groups may
// read, --killers groups may kill sessions (sent to the agents on the
// WARDEN_COMMANDS stream). It refuses to start without an issuer. It
// also holds the review queue (docs/reviews.md): agents open reviews over
// NATS, approvers decide them through the API, --webhook is told of both.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/wardenhq/warden/collector"
	"github.com/wardenhq/warden/collector/ingest"
	"github.com/wardenhq/warden/pkg/idtoken"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

func run(args []string, stderr io.Writer) int {
	if len(args) > 0 {
		if sub, ok := subcommands[args[0]]; ok {
			return sub(args[1:], os.Stdout, stderr)
		}
	}
	fs := flag.NewFlagSet("warden-collector", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		embedded   = fs.Bool("embedded-nats", false, "run an in-process NATS server with JetStream (default when --nats-url is not given)")
		natsURL    = fs.String("nats-url", "", "NATS server(s) to consume from, comma-separated (e.g. nats://n1:4222,nats://n2:4222)")
		storePath  = fs.String("store", collector.DefaultStore, "event store: a SQLite `PATH`, or postgres://user@host/db (several collectors may share one)")
		retain     = fs.String("retain", "", "delete events older than this `AGE` (e.g. 400d, 720h), in batches, hourly; default keep everything")
		listen     = fs.String("listen", collector.DefaultListen, "query API address")
		agentKeys  = fs.String("agent-keys", collector.DefaultAgentKeys, "directory of <host_id>.pub agent public keys")
		natsListen = fs.String("nats-listen", collector.DefaultNATSListen, "client address of the embedded NATS server")
		natsStore  = fs.String("nats-store", collector.DefaultNATSStore, "JetStream storage directory of the embedded NATS server")
		natsAuth   = fs.String("nats-auth", collector.DefaultNATSAuth, "`DIR` of the NATS trust chain (operator, account, issued users) the embedded server enforces; made on first start")
		natsCreds  = fs.String("nats-creds", "", "creds `FILE` of this collector's NATS user for --nats-url (warden-collector collector-creds)")
		natsCA     = fs.String("nats-tls-ca", "", "PEM `FILE` of the CA of the --nats-url servers")
		natsCert   = fs.String("nats-tls-cert", "", "PEM certificate `FILE`: the embedded server's (clients must then use TLS), or the collector's client certificate for --nats-url")
		natsKey    = fs.String("nats-tls-key", "", "PEM private key `FILE` of --nats-tls-cert")
		consumer   = fs.String("consumer", collector.DefaultConsumer, "durable consumer name; collectors sharing it split the stream")
		filterSubj = fs.String("filter-subject", "", "consume only this subject filter (sharding), e.g. 'warden.events.bastion-1.>' (whole chains of one host)")
		chainCheck = fs.String("chain-check", string(ingest.ChainFull), "full: signatures, hashes and per-host order; signature: no order checks (for collectors sharing a consumer)")
		standby    = fs.Bool("active-standby", false, "take turns with other collectors of the same --consumer and --store (PostgreSQL): only the holder of the ingest lease consumes, another takes over when it stops")
		replicas   = fs.Int("stream-replicas", 1, "replicas of the WARDEN_EVENTS stream if the collector creates it (3 on a 3-node cluster)")
		name       = fs.String("name", "", "collector name recorded in integrity violations (default: hostname)")
		logLevel   = fs.String("log-level", "info", "log level: debug, info, warn, error")
		readers    = fs.String("readers", "", "comma-separated `GROUPS` whose members may read events, lineage, sessions and locks; default nobody")
		killers    = fs.String("killers", "", "comma-separated `GROUPS` whose members may kill sessions and lock people (warden sessions kill); default nobody")
		issuer     = fs.String("oidc-issuer", "", "OIDC issuer `URL` whose ID tokens authenticate every API call (required)")
		clientID   = fs.String("oidc-client-id", "", "OIDC client `ID` the tokens are issued for, their aud (required)")
		caFile     = fs.String("oidc-ca-file", "", "PEM bundle of the issuer's CA, instead of the system roots")
		groupsClm  = fs.String("oidc-groups-claim", "groups", "ID token claim holding the groups")
		tlsCert    = fs.String("api-tls-cert", "", "PEM certificate `PATH`: serve the API over TLS (with --api-tls-key)")
		tlsKey     = fs.String("api-tls-key", "", "PEM private key `PATH` of --api-tls-cert")
		consoleURL = fs.String("console-url", "", "public base `URL` of the web console, as browsers reach it (the IdP redirects to URL/auth/callback); default the --listen address")
		webhook    = fs.String("webhook", "", "POST each review request and decision to this `URL` (JSON, Slack-compatible)")
	)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: warden-collector [flags]\n       warden-collector enroll|soc-creds|collector-creds|revoke|nats-config ... (-h for each)\n\nflags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "warden-collector: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	lvl, err := zerolog.ParseLevel(*logLevel)
	if err != nil || *logLevel == "" {
		fmt.Fprintf(stderr, "warden-collector: --log-level %q: want debug, info, warn or error\n", *logLevel)
		return 2
	}
	cc, err := ingest.ParseChainCheck(*chainCheck)
	if err != nil {
		fmt.Fprintf(stderr, "warden-collector: --chain-check: %v\n", err)
		return 2
	}
	if *replicas < 1 || *replicas > 5 {
		fmt.Fprintf(stderr, "warden-collector: --stream-replicas %d: want 1 to 5\n", *replicas)
		return 2
	}
	retainFor, err := parseAge(*retain)
	if err != nil {
		fmt.Fprintf(stderr, "warden-collector: --retain: %v\n", err)
		return 2
	}
	if *embedded && *natsURL != "" {
		fmt.Fprintln(stderr, "warden-collector: --embedded-nats and --nats-url exclude each other")
		return 2
	}
	killerGroups, readerGroups := groupList(*killers), groupList(*readers)
	if *issuer == "" || *clientID == "" {
		fmt.Fprintln(stderr, "warden-collector: --oidc-issuer and --oidc-client-id are required: the API serves only people with a verified OIDC ID token, never anonymous callers")
		return 2
	}
	if (*natsCert == "") != (*natsKey == "") {
		fmt.Fprintln(stderr, "warden-collector: --nats-tls-cert and --nats-tls-key go together")
		return 2
	}
	if *natsURL == "" && (*natsCreds != "" || *natsCA != "") {
		fmt.Fprintln(stderr, "warden-collector: --nats-creds and --nats-tls-ca are for --nats-url; the embedded server issues the collector's own user")
		return 2
	}
	if (*tlsCert == "") != (*tlsKey == "") {
		fmt.Fprintln(stderr, "warden-collector: --api-tls-cert and --api-tls-key go together: give both to serve the API over TLS, or neither")
		return 2
	}
	log := zerolog.New(os.Stderr).Level(lvl).With().Timestamp().Str("service", "warden-collector").Logger()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	c, err := collector.New(ctx, collector.Config{
		EmbeddedNATS:   *natsURL == "",
		NATSURL:        *natsURL,
		NATSListen:     *natsListen,
		NATSStore:      *natsStore,
		NATSAuthDir:    *natsAuth,
		NATSCreds:      *natsCreds,
		NATSTLSCA:      *natsCA,
		NATSTLSCert:    *natsCert,
		NATSTLSKey:     *natsKey,
		StorePath:      *storePath,
		Retain:         retainFor,
		Listen:         *listen,
		AgentKeysDir:   *agentKeys,
		Consumer:       *consumer,
		FilterSubject:  *filterSubj,
		ChainCheck:     cc,
		StreamReplicas: *replicas,
		ActiveStandby:  *standby,
		Name:           *name,
		OIDC:           idtoken.Config{Issuer: *issuer, ClientID: *clientID, CAFile: *caFile, GroupsClaim: *groupsClm},
		Readers:        readerGroups,
		Killers:        killerGroups,
		TLSCert:        *tlsCert,
		TLSKey:         *tlsKey,
		ConsoleURL:     *consoleURL,
		Webhook:        *webhook,
		Logger:         log,
	})
	if err != nil {
		// One plain line for the operator: a start-up error is theirs to fix.
		fmt.Fprintf(stderr, "warden-collector: %v\n", err)
		return 1
	}
	if len(readerGroups) == 0 {
		log.Warn().Msg("no --readers: nobody may read events, lineage or sessions")
	}
	log.Info().Str("api", c.APIURL()).Str("console", c.ConsoleURL()).Str("nats", c.NATSURL()).Str("store", c.Store().Dialect()).Dur("retain", retainFor).Str("issuer", *issuer).
		Str("consumer", *consumer).Str("chain_check", string(cc)).Strs("readers", readerGroups).Strs("killers", killerGroups).Msg("warden-collector started")
	if err := c.Run(ctx); err != nil {
		log.Error().Err(err).Msg("stopped")
		return 1
	}
	log.Info().Msg("warden-collector stopped")
	return 0
}

// groupList splits a comma-separated --readers/--killers value.
func groupList(v string) []string {
	var out []string
	for _, g := range strings.Split(v, ",") {
		if g = strings.TrimSpace(g); g != "" {
			out = append(out, g)
		}
	}
	return out
}

// parseAge reads --retain: a number of days ("400d") or a Go duration
// ("720h"); "" is zero (keep everything).
func parseAge(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	var d time.Duration
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n <= 0 || n > 100*366 {
			return 0, fmt.Errorf("%q: want a positive number of days like 400d, or a duration like 720h", s)
		}
		d = time.Duration(n) * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil || d <= 0 {
			return 0, fmt.Errorf("%q: want a positive number of days like 400d, or a duration like 720h", s)
		}
	}
	if d < time.Hour {
		return 0, fmt.Errorf("%q: below one hour, events would go before anyone reads them", s)
	}
	return d, nil
}
