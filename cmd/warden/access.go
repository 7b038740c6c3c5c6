package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/wardenhq/warden/agent/control"
	"github.com/wardenhq/warden/pkg/review"
)

const accessUsage = `usage: warden access request TARGET --reason TEXT [--for 1h] [--json]

Asks for a just-in-time window on TARGET, under the policy access entry that
offers it for review to one of your groups. The approvers it names decide
(warden review approve ID); once approved, connect() to TARGET works from
this login session until the window ends.
`

func runAccess(args []string) int {
	if len(args) == 0 || args[0] != "request" {
		fmt.Fprint(os.Stderr, accessUsage)
		return 2
	}
	fs := flag.NewFlagSet("warden access request", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(os.Stderr, accessUsage) }
	reason := fs.String("reason", "", "why you need access (required; the approvers read it)")
	window := fs.Duration("for", 0, "the window to ask for (default: what the policy grants)")
	asJSON := fs.Bool("json", false, "print the review as JSON")
	// The target comes first, as the usage shows; flags follow it.
	rest := args[1:]
	var target string
	if len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
		target, rest = rest[0], rest[1:]
	}
	if err := fs.Parse(rest); err != nil {
		return 2
	}
	if target == "" && fs.NArg() > 0 {
		target = fs.Arg(0)
	}
	if target == "" {
		fmt.Fprint(os.Stderr, accessUsage)
		return 2
	}
	if strings.TrimSpace(*reason) == "" {
		return fail("access request", errors.New("--reason is required: the approvers need to know why"))
	}
	if *window < 0 {
		return fail("access request", fmt.Errorf("--for %s: want a positive duration", *window))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := agentClient().RequestAccess(ctx, control.AccessRequest{Target: target, Reason: *reason, For: review.Duration(*window)})
	if err != nil {
		return fail("access request", err)
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		enc.Encode(r)
		return 0
	}
	quorum := "one of"
	if r.Require == review.RequireAll {
		quorum = "each of"
	}
	switch r.State {
	case review.Approved:
		fmt.Printf("review %s is already approved: you may connect to %s until %s\n", r.ID, r.Target, r.GrantUntil.Local().Format(time.RFC3339))
	default:
		fmt.Printf("review %s opened: access to %s for %s, waiting for %s %s\n", r.ID, r.Target, r.GrantFor.D(), quorum, strings.Join(r.Approvers, ", "))
		fmt.Printf("an approver runs: warden review approve %s\n", r.ID)
	}
	return 0
}
