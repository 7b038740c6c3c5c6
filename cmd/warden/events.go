package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/wardenhq/warden/pkg/collectorclient"
)

// collectorFlags adds the flags every collector command shares
// (--collector, --collector-ca, --token-file) to a FlagSet and returns a
// constructor for the client they name. The client carries the caller's
// ID token (collectorToken) with every request.
func collectorFlags(fs *flag.FlagSet) func() (*collectorclient.Client, error) {
	u := fs.String("collector", "", "collector API `URL` (default $"+collectorclient.EnvURL+" or "+collectorclient.DefaultURL+")")
	ca := fs.String("collector-ca", "", "PEM `PATH` of the CA of an https collector, instead of the system roots (default $"+collectorclient.EnvCA+")")
	tokenFile := fs.String("token-file", "", "read your OIDC ID token from `PATH` (- for standard input) instead of $"+EnvTokenFile+" or the token warden login cached")
	return func() (*collectorclient.Client, error) {
		return collectorClient(collectorclient.ResolveURL(*u), *ca, *tokenFile)
	}
}

// collectorClient returns a client of the collector at rawURL that sends
// the caller's ID token.
func collectorClient(rawURL, caFile, tokenFile string) (*collectorclient.Client, error) {
	if caFile == "" {
		caFile = os.Getenv(collectorclient.EnvCA)
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("collector URL %q: %w", rawURL, err)
	}
	if u.Scheme == "http" && !loopback(u.Hostname()) {
		// The token is a bearer credential: whoever reads it on the way
		// reads the audit log as you until it expires.
		return nil, fmt.Errorf("collector URL %s: your ID token is sent only over https (or plain http to a loopback address); use https:// (and --collector-ca for a private CA)", u.Redacted())
	}
	hc, err := collectorclient.HTTPClient(caFile)
	if err != nil {
		return nil, err
	}
	cl, err := collectorclient.New(rawURL, hc)
	if err != nil {
		return nil, err
	}
	token, err := collectorToken(tokenFile)
	if err != nil {
		return nil, err
	}
	return cl.WithToken(token), nil
}

func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// collectorFail reports an error of a collector command on one line. The
// collector's refusals (401, 403) are its own message, which says what is
// missing; problems with the caller's token name the fix.
func collectorFail(cmd string, err error) int {
	var te *tokenError
	var ce *collectorclient.Error
	switch {
	case errors.As(err, &te):
		fmt.Fprintf(os.Stderr, "warden: %s\n", te.msg)
	case errors.As(err, &ce) && ce.Status == http.StatusUnauthorized:
		fmt.Fprintf(os.Stderr, "warden %s: the collector refused your ID token (HTTP 401): %s; run warden login, or pass --token-file PATH\n", cmd, ce.Message)
	case errors.As(err, &ce) && ce.Status == http.StatusForbidden:
		fmt.Fprintf(os.Stderr, "warden %s: not allowed (HTTP 403): %s\n", cmd, ce.Message)
	default:
		fmt.Fprintf(os.Stderr, "warden %s: %s\n", cmd, strings.Join(strings.Fields(err.Error()), " "))
	}
	return 1
}

// interruptible returns a context cancelled by SIGINT or SIGTERM, so that
// --follow ends cleanly on Ctrl-C.
func interruptible() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

func runEvents(args []string) int {
	fs := flag.NewFlagSet("warden events", flag.ContinueOnError)
	client := collectorFlags(fs)
	typ := fs.String("type", "", "only events of this `TYPE` (e.g. db.query, integrity.violation)")
	user := fs.String("user", "", "only events of this `USER` (OIDC sub or email)")
	target := fs.String("target", "", "only events concerning this target `NAME`")
	since := fs.String("since", "", "from this `TIME` on: RFC 3339 or a duration back from now (1h, 7d)")
	until := fs.String("until", "", "before this `TIME`: RFC 3339 or a duration back from now")
	limit := fs.Int("limit", 100, "at most `N` events")
	follow := fs.Bool("follow", false, "keep printing new events as they are stored (with --since: stored ones first)")
	jsonOut := fs.Bool("json", false, "print one JSON event per line, as stored")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "warden events: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *limit < 1 {
		fmt.Fprintf(os.Stderr, "warden events: --limit %d: must be at least 1\n", *limit)
		return 2
	}
	if *follow && *until != "" {
		fmt.Fprintln(os.Stderr, "warden events: --until cannot be combined with --follow")
		return 2
	}
	q := collectorclient.Query{Type: *typ, User: *user, Target: *target, Limit: *limit}
	now := time.Now()
	for _, tf := range []struct {
		name, val string
		dst       *time.Time
	}{{"since", *since, &q.Since}, {"until", *until, &q.Until}} {
		if tf.val == "" {
			continue
		}
		t, err := collectorclient.ParseTime(tf.val, now)
		if err != nil {
			fmt.Fprintf(os.Stderr, "warden events: --%s: %v\n", tf.name, err)
			return 2
		}
		*tf.dst = t
	}
	cl, err := client()
	if err != nil {
		return collectorFail("events", err)
	}
	ctx, cancel := interruptible()
	defer cancel()

	emit := func(raw json.RawMessage, problems []string) {
		if *jsonOut {
			fmt.Println(string(raw))
			return
		}
		fmt.Println(collectorclient.FormatEvent(raw, problems))
	}
	header := func() {
		if !*jsonOut {
			fmt.Println(collectorclient.EventHeader)
		}
	}
	if *follow {
		header()
		err := cl.Follow(ctx, q, func(raw json.RawMessage) error {
			emit(raw, nil)
			return nil
		})
		if ctx.Err() != nil {
			return 0
		}
		return collectorFail("events", err)
	}

	// Without --since the interesting events are the latest ones: ask
	// newest first, print oldest first.
	q.Desc = q.Since.IsZero()
	list, err := cl.Events(ctx, q)
	if err != nil {
		return collectorFail("events", err)
	}
	header()
	evs := list.Events
	if q.Desc {
		for i, j := 0, len(evs)-1; i < j; i, j = i+1, j-1 {
			evs[i], evs[j] = evs[j], evs[i]
		}
	}
	for _, raw := range evs {
		var head struct {
			ID string `json:"id"`
		}
		_ = json.Unmarshal(raw, &head)
		emit(raw, list.Integrity[head.ID])
	}
	if list.NextAfterID != "" {
		if q.Desc {
			fmt.Fprintf(os.Stderr, "warden events: showing the latest %d; older ones exist (use --since or --limit)\n", len(evs))
		} else {
			fmt.Fprintf(os.Stderr, "warden events: showing the first %d; more exist (raise --limit or narrow the query)\n", len(evs))
		}
	}
	return 0
}
