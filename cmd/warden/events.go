package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/wardenhq/warden/pkg/collectorclient"
)

// collectorFlags adds --collector to a FlagSet and returns a constructor
// for the client it names.
func collectorFlags(fs *flag.FlagSet) func() (*collectorclient.Client, error) {
	u := fs.String("collector", "", "collector API `URL` (default $"+collectorclient.EnvURL+" or "+collectorclient.DefaultURL+")")
	return func() (*collectorclient.Client, error) {
		return collectorclient.New(collectorclient.ResolveURL(*u), nil)
	}
}

// collectorFail reports an error of a collector command.
func collectorFail(cmd string, err error) int {
	fmt.Fprintf(os.Stderr, "warden %s: %v\n", cmd, err)
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
