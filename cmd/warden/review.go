package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/wardenhq/warden/pkg/collectorclient"
	"github.com/wardenhq/warden/pkg/review"
)

const reviewUsage = `usage: warden review list [--state pending|approved|denied|expired|all] [--kind statement|access] [--json]
       warden review show ID [--json]
       warden review approve ID [--reason TEXT]
       warden review deny ID [--reason TEXT]

Reviews are statements held for approval and requests for just-in-time
access, kept by the collector. list shows those you may see: all of them for
the collector's --readers, else those you requested and those you may decide.
Only members of a review's approver groups decide it, never its requester.
`

func runReview(args []string) int {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, reviewUsage)
		return 2
	}
	switch args[0] {
	case "list":
		return runReviewList(args[1:])
	case "show":
		return runReviewShow(args[1:])
	case "approve":
		return runReviewDecide(args[1:], true)
	case "deny":
		return runReviewDecide(args[1:], false)
	case "-h", "--help", "help":
		fmt.Fprint(os.Stdout, reviewUsage)
		return 0
	}
	fmt.Fprintf(os.Stderr, "warden review: unknown subcommand %q\n\n%s", args[0], reviewUsage)
	return 2
}

// reviewFlags is a FlagSet of a review subcommand with the collector
// flags and the shared usage.
func reviewFlags(name string) (*flag.FlagSet, func() (*collectorclient.Client, error)) {
	fs := flag.NewFlagSet("warden review "+name, flag.ContinueOnError)
	client := collectorFlags(fs)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), reviewUsage+"\nflags:\n")
		fs.PrintDefaults()
	}
	return fs, client
}

// oneID checks that the positionals are exactly one review id.
func oneID(cmd string, pos []string) (string, bool) {
	switch {
	case len(pos) == 0:
		fmt.Fprintf(os.Stderr, "warden %s: give the review ID (R-…, as warden review list shows)\n", cmd)
		return "", false
	case len(pos) > 1:
		fmt.Fprintf(os.Stderr, "warden %s: unexpected argument %q\n", cmd, pos[1])
		return "", false
	case !review.ValidID(pos[0]):
		fmt.Fprintf(os.Stderr, "warden %s: %q is not a review id (R- followed by 26 characters, as warden review list shows)\n", cmd, pos[0])
		return "", false
	}
	return pos[0], true
}

func runReviewList(args []string) int {
	fs, client := reviewFlags("list")
	state := fs.String("state", "pending", "only reviews in this `STATE`: pending, approved, denied, expired or all")
	kind := fs.String("kind", "", "only this `KIND` of review: statement or access (default both)")
	limit := fs.Int("limit", 100, "at most `N` reviews, newest first")
	jsonOut := fs.Bool("json", false, "print one JSON review per line")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "warden review list: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *state != "all" && !slices.Contains(review.States, review.State(*state)) {
		fmt.Fprintf(os.Stderr, "warden review list: --state %q: want pending, approved, denied, expired or all\n", *state)
		return 2
	}
	if *kind != "" && *kind != string(review.KindStatement) && *kind != string(review.KindAccess) {
		fmt.Fprintf(os.Stderr, "warden review list: --kind %q: want statement or access\n", *kind)
		return 2
	}
	if *limit < 1 {
		fmt.Fprintf(os.Stderr, "warden review list: --limit %d: want at least 1\n", *limit)
		return 2
	}
	cl, err := client()
	if err != nil {
		return collectorFail("review list", err)
	}
	ctx, cancel := interruptible()
	defer cancel()
	rs, err := cl.Reviews(ctx, collectorclient.ReviewQuery{State: *state, Kind: *kind, Limit: *limit})
	if err != nil {
		return collectorFail("review list", err)
	}
	if *jsonOut {
		return printJSONLines(os.Stdout, rs)
	}
	if len(rs) == 0 {
		which := *state + " "
		if *state == "all" {
			which = ""
		}
		fmt.Fprintf(os.Stderr, "no %sreviews you may see\n", which)
		return 0
	}
	if err := collectorclient.WriteReviews(os.Stdout, rs, time.Now()); err != nil {
		return collectorFail("review list", err)
	}
	return 0
}

func printJSONLines(w io.Writer, rs []review.Review) int {
	for i := range rs {
		b, err := json.Marshal(&rs[i])
		if err != nil {
			return collectorFail("review list", err)
		}
		fmt.Fprintln(w, string(b))
	}
	return 0
}

func runReviewShow(args []string) int {
	fs, client := reviewFlags("show")
	jsonOut := fs.Bool("json", false, "print the review as JSON")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	id, ok := oneID("review show", pos)
	if !ok {
		return 2
	}
	cl, err := client()
	if err != nil {
		return collectorFail("review show", err)
	}
	ctx, cancel := interruptible()
	defer cancel()
	r, err := cl.Review(ctx, id)
	if err != nil {
		return collectorFail("review show", err)
	}
	if *jsonOut {
		b, _ := json.Marshal(r)
		fmt.Println(string(b))
		return 0
	}
	if err := collectorclient.WriteReview(os.Stdout, r, time.Now()); err != nil {
		return collectorFail("review show", err)
	}
	return 0
}

func runReviewDecide(args []string, approve bool) int {
	verb := "deny"
	if approve {
		verb = "approve"
	}
	cmd := "review " + verb
	fs, client := reviewFlags(verb)
	reason := fs.String("reason", "", "why, recorded with the decision and shown to the requester")
	jsonOut := fs.Bool("json", false, "print the review after the decision as JSON")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	id, ok := oneID(cmd, pos)
	if !ok {
		return 2
	}
	cl, err := client()
	if err != nil {
		return collectorFail(cmd, err)
	}
	ctx, cancel := interruptible()
	defer cancel()
	decide := cl.Deny
	if approve {
		decide = cl.Approve
	}
	r, err := decide(ctx, id, strings.TrimSpace(*reason))
	if err != nil {
		return collectorFail(cmd, err)
	}
	if *jsonOut {
		b, _ := json.Marshal(r)
		fmt.Println(string(b))
		return 0
	}
	fmt.Println(decisionSummary(r, time.Now()))
	return 0
}

// decisionSummary says in one line what the decision did.
func decisionSummary(r *review.Review, now time.Time) string {
	what := fmt.Sprintf("%s's %q on %s", r.Requester.Name(), clipLine(r.Statement, 80), r.Target)
	if r.Kind == review.KindAccess {
		what = fmt.Sprintf("%s of access to %s for %s", r.GrantFor.D(), r.Target, r.Requester.Name())
	}
	d, _ := r.LastDecision()
	switch r.State {
	case review.Approved:
		grant := "may run once"
		if r.Kind == review.KindAccess || !r.GrantOnce {
			grant = "is granted"
		}
		until := ""
		if r.GrantUntil != nil {
			until = fmt.Sprintf(" until %s (%s)", r.GrantUntil.Local().Format(time.TimeOnly), r.GrantUntil.Sub(now).Round(time.Second))
		}
		return fmt.Sprintf("%s approved: %s %s%s", r.ID, what, grant, until)
	case review.Denied:
		return fmt.Sprintf("%s denied: %s", r.ID, what)
	case review.Pending:
		got := map[string]bool{}
		for _, prev := range r.Decisions {
			for _, g := range prev.For {
				got[g] = true
			}
		}
		var missing []string
		for _, g := range r.Approvers {
			if !got[g] {
				missing = append(missing, g)
			}
		}
		return fmt.Sprintf("%s: your approval counts for %s; still pending (require all: needs %s too)",
			r.ID, strings.Join(d.For, ", "), strings.Join(missing, ", "))
	}
	return fmt.Sprintf("%s is %s", r.ID, r.State)
}

// clipLine keeps s on one line of at most n runes.
func clipLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}
