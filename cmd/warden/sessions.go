package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/wardenhq/warden/pkg/collectorclient"
)

func runSessions(args []string) int {
	if len(args) > 0 && args[0] == "kill" {
		return runSessionsKill(args[1:])
	}
	fs := flag.NewFlagSet("warden sessions", flag.ContinueOnError)
	client := collectorFlags(fs)
	user := fs.String("user", "", "only sessions of this `USER` (OIDC sub or email)")
	since := fs.String("since", "24h", "sessions with activity from this `TIME` on: RFC 3339 or a duration back from now")
	limit := fs.Int("limit", 100, "at most `N` sessions")
	jsonOut := fs.Bool("json", false, "print one JSON session per line")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "warden sessions: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if _, err := collectorclient.ParseTime(*since, time.Now()); err != nil {
		fmt.Fprintf(os.Stderr, "warden sessions: --since: %v\n", err)
		return 2
	}
	if *limit < 1 {
		fmt.Fprintf(os.Stderr, "warden sessions: --limit %d: must be at least 1\n", *limit)
		return 2
	}
	cl, err := client()
	if err != nil {
		return collectorFail("sessions", err)
	}
	ctx, cancel := interruptible()
	defer cancel()
	ss, err := cl.Sessions(ctx, collectorclient.SessionQuery{User: *user, Since: *since, Limit: *limit})
	if err != nil {
		return collectorFail("sessions", err)
	}
	if *jsonOut {
		for _, s := range ss {
			b, err := json.Marshal(s)
			if err != nil {
				return collectorFail("sessions", err)
			}
			fmt.Println(string(b))
		}
		return 0
	}
	if err := collectorclient.WriteSessions(os.Stdout, ss); err != nil {
		return collectorFail("sessions", err)
	}
	return 0
}
