package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/wardenhq/warden/pkg/collectorclient"
)

const killUsage = `usage: warden sessions kill SESSION_ID|--user SUB [--host H] --reason TEXT [--lock 1h] [flags]

Ends a session, or every session of a person, on the agents: the binding is
revoked, proxied connections close and every process of the session is
killed. Agents that are away apply it when they come back (within 1 h).
--lock also refuses the person's new logins for that long (warden locks).
Allowed to the collector's --killers groups; your OIDC ID token says who
you are (--token-file, else $WARDEN_TOKEN_FILE, else the token warden login
cached).

flags:
`

// parseInterspersed parses flags that may come after positional arguments
// (warden sessions kill ID --reason x) and returns the positionals.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

func runSessionsKill(args []string) int {
	fs := flag.NewFlagSet("warden sessions kill", flag.ContinueOnError)
	client := collectorFlags(fs)
	user := fs.String("user", "", "kill every session of this person (OIDC `SUB`) instead of one session")
	host := fs.String("host", "", "only on this agent `HOST` id (default: every host; with SESSION_ID: the session's)")
	reason := fs.String("reason", "", "why, shown to the person and recorded (required)")
	lock := fs.String("lock", "", "also refuse the person's new logins for this `DURATION` (e.g. 1h)")
	jsonOut := fs.Bool("json", false, "print the collector's answer as JSON")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), killUsage)
		fs.PrintDefaults()
	}
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	req := collectorclient.KillRequest{User: *user, Host: *host, Reason: strings.TrimSpace(*reason), Lock: *lock}
	switch {
	case len(pos) > 1:
		fmt.Fprintf(os.Stderr, "warden sessions kill: unexpected argument %q\n", pos[1])
		return 2
	case len(pos) == 1 && *user != "":
		fmt.Fprintln(os.Stderr, "warden sessions kill: give a SESSION_ID or --user, not both")
		return 2
	case len(pos) == 0 && *user == "":
		fmt.Fprintln(os.Stderr, "warden sessions kill: give a SESSION_ID or --user SUB")
		return 2
	case len(pos) == 1:
		req.SessionID = pos[0]
	}
	if req.Reason == "" {
		fmt.Fprintln(os.Stderr, "warden sessions kill: --reason is required")
		return 2
	}
	if *lock != "" {
		if d, err := time.ParseDuration(*lock); err != nil || d <= 0 {
			fmt.Fprintf(os.Stderr, "warden sessions kill: --lock %q: want a positive duration like 30m or 1h\n", *lock)
			return 2
		}
	}
	cl, err := client()
	if err != nil {
		return collectorFail("sessions kill", err)
	}
	ctx, cancel := interruptible()
	defer cancel()
	res, err := cl.Kill(ctx, req)
	if err != nil {
		return collectorFail("sessions kill", err)
	}
	if *jsonOut {
		b, _ := json.Marshal(res)
		fmt.Println(string(b))
		return 0
	}
	what := "every session of " + res.Sub
	if res.SessionID != "" {
		what = "session " + res.SessionID + " of " + res.Sub
	}
	where := "every host"
	if res.Host != "" {
		where = "host " + res.Host
	}
	fmt.Printf("kill %s queued: %s on %s\n", res.KillID, what, where)
	if res.Lock != nil {
		fmt.Printf("lock %s: %s may not log in until %s\n", res.Lock.ID, res.Lock.Sub, res.Lock.Until.Local().Format(time.RFC3339))
	}
	fmt.Printf("outcome: warden events --type session.killed --since 5m\n")
	return 0
}

func runLocks(args []string) int {
	fs := flag.NewFlagSet("warden locks", flag.ContinueOnError)
	client := collectorFlags(fs)
	jsonOut := fs.Bool("json", false, "print one JSON lock per line")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "warden locks: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	cl, err := client()
	if err != nil {
		return collectorFail("locks", err)
	}
	ctx, cancel := interruptible()
	defer cancel()
	locks, err := cl.Locks(ctx)
	if err != nil {
		return collectorFail("locks", err)
	}
	if *jsonOut {
		for _, l := range locks {
			b, _ := json.Marshal(l)
			fmt.Println(string(b))
		}
		return 0
	}
	if err := collectorclient.WriteLocks(os.Stdout, locks, time.Now()); err != nil {
		return collectorFail("locks", err)
	}
	return 0
}
