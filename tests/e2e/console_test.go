package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/wardenhq/warden/pkg/collectorclient"
	"github.com/wardenhq/warden/pkg/devidp"
	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/tests/harness"
	"github.com/wardenhq/warden/tests/testenv"
)

// TestConsole drives the web console (docs/console.md) in a real headless
// Chromium against the real collector, with events from the real agent:
// a person signs in through the dev IdP, watches a denial arrive live,
// walks its lineage, replays an SSH session and approves a held psql;
// a reader outside the approver groups is refused by the server. Each
// step leaves a screenshot in the test's artifacts (go test -artifacts
// keeps them; docs/console/ has a run's).
func TestConsole(t *testing.T) {
	testenv.RequireCommand(t, "psql")
	testenv.RequireCommand(t, "ssh")
	testenv.RequireCommand(t, "script")
	e := harness.NewEnv(t)
	pg := e.StartPostgres()
	secret := e.VaultedApp(pg)
	pg.Exec("orders", "CREATE TABLE t (v int); ALTER TABLE t OWNER TO app")
	sshd := e.StartVaultedSSHD()
	// bob (dba) reads through the console and decides dba reviews; sam
	// (soc) reads and decides nothing.
	e.StartCollectorWith("--readers", harness.ReaderGroup+",dba")
	e.StartAgent(fmt.Sprintf(`targets:
  - name: orders-db
    protocol: postgres
    address: 127.0.0.1:%d
    credentials:
      username: app
      password_file: %s
  - name: app-1
    protocol: ssh
    address: 127.0.0.1:%d
    ssh:
      host_key: %q
    credentials:
      username: root
      user_ca_key_file: %s
access:
  - groups: [engineering]
    targets: [orders-db, app-1]
rules:
  - name: no-drop
    targets: [orders-db]
    when: { statements: [drop] }
    action: deny
  - name: unbounded-writes
    targets: [orders-db]
    when: { statements: [delete], no_where: true }
    action: review
    review: { approvers: [dba], hold: 3m, grant: once }
`, pg.Port, secret, sshd.Port, sshd.HostKeyPub, sshd.UserCAKey))
	alice := e.Token(devidp.IssueOptions{Sub: "alice"})
	conn := fmt.Sprintf("host=127.0.0.1 port=%d dbname=orders user=whoever sslmode=disable connect_timeout=10", pg.Port)
	rv := &reviewEnv{Env: e, pg: pg}
	sh := &sshEnv{Env: e, sshd: sshd, knownHosts: filepath.Join(e.Dir, "ssh_known_hosts")}

	console := "http://" + harness.CollectorAddr
	b := harness.StartBrowser(t, e.NS)
	bob := b.NewPage("bob")

	// 1. Sign in: the console sends the browser to the dev IdP, which
	// lists its users; bob picks himself and lands where he was going.
	bob.Do("open /live", chromedp.Navigate(console+"/live?type=db.query"),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid=signin-bob]`)))
	bob.Shot("signin")
	signIn(t, bob, "bob", "bob@corp.example", "/live")
	if c := harness.Run(bob, "document.cookie", chromedp.Evaluate[string](`document.cookie`)); strings.Contains(c, "warden_console") {
		t.Errorf("the session cookie is readable from JavaScript (not HttpOnly): %q", c)
	}

	// 2. A denied statement appears on /live without a reload: a mark
	// set in the page before psql runs must still be there after.
	table := fmt.Sprintf("console_mark_%d", time.Now().UnixNano())
	bob.Do("mark the page", chromedp.Evaluate[chromedp.Void](`window.wardenTestMark = "`+table+`"`))
	out := rv.start(t, alice, fmt.Sprintf("psql %q -c 'DROP TABLE IF EXISTS %s'", conn, table)).wait(t, 30*time.Second)
	if !strings.Contains(out, `denied by rule "no-drop"`) {
		t.Fatalf("psql's DROP was not refused:\n%s", out)
	}
	denial := e.WaitEvent(collectorclient.Query{Type: string(event.DBQuery), User: "alice"}, "the DROP's db.query", func(ev *event.Event) bool {
		s, _ := ev.Data["statement"].(string)
		return strings.Contains(s, table) && ev.Decision != nil && ev.Decision.Action == event.Deny
	})
	row := fmt.Sprintf(`[data-testid=event-row][data-type="db.query"][data-event-id=%q]`, denial.ID)
	bob.Do("the denial arrives live", chromedp.WaitVisible(chromedp.CSS(row)))
	if text := harness.Run(bob, "the row's text", chromedp.Text(chromedp.CSS(row))); !strings.Contains(text, table) {
		t.Errorf("the live row of %s does not show the statement: %q", denial.ID, text)
	}
	if mark := harness.Run(bob, "the page's mark", chromedp.Evaluate[string](`String(window.wardenTestMark)`)); mark != table {
		t.Errorf("/live was reloaded to show the denial (mark %q)", mark)
	}
	bob.Shot("live-denial")

	// 3. Its lineage, as a tree with the person at the root.
	bob.Do("open the lineage", chromedp.Click(chromedp.CSS(row+` a[data-testid=lineage-link]`)),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid=lineage-tree]`)),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid=lineage-person]`)))
	if loc := harness.Run(bob, "location", chromedp.Location()); !strings.HasSuffix(loc, "/lineage/"+denial.ID) {
		t.Errorf("the lineage link went to %s", loc)
	}
	if who := harness.Run(bob, "the root", chromedp.Text(chromedp.CSS(`[data-testid=lineage-person]`))); !strings.Contains(who, "alice@corp.example") {
		t.Errorf("the lineage's root is %q, not alice", who)
	}
	if tree := harness.Run(bob, "the tree", chromedp.Text(chromedp.CSS(`[data-testid=lineage-tree]`))); !strings.Contains(tree, "psql") {
		t.Errorf("the lineage tree does not show psql:\n%s", tree)
	}
	bob.Shot("lineage")

	// 4. Replay a recorded SSH session: the shell's answer, which only
	// the recording's output holds, shows in the player's terminal.
	out = sh.sh(t, alice, fmt.Sprintf(`export TERM=xterm-256color
{ sleep 2; echo 'echo hello-$((6*7))-warden'; sleep 1; echo exit; } | script -qfec %s /dev/null; echo rc=$?`, shq(sh.ssh(sshd.Port, "-tt"))))
	if !strings.Contains(out, "hello-42-warden") {
		t.Fatalf("interactive ssh session:\n%s", out)
	}
	end := e.WaitEvent(collectorclient.Query{Type: string(event.SSHSession), Target: "app-1"}, "ssh.session end with a recording", func(ev *event.Event) bool {
		rec, _ := ev.Data["recording"].(map[string]any)
		return ev.Data["phase"] == "end" && rec != nil && rec["sha256"] != nil && recorded(e, ev)
	})
	bob.Do("open the replay", chromedp.Navigate(console+"/replay/"+end.ID),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid=replay-player] .ap-terminal`)))
	playUntil(t, bob, "hello-42-warden")
	if hash := harness.Run(bob, "the hash check", chromedp.Text(chromedp.CSS(`[data-testid=replay-hash]`))); !strings.Contains(hash, "hash matches") {
		t.Errorf("replay of %s: %q", end.ID, hash)
	}
	bob.Shot("replay")

	// 5. alice's DELETE without WHERE is held for a review. sam (soc)
	// reads the queue, but is no dba: Approve is disabled for him, and
	// the server refuses his POST, CSRF token and all.
	rv.seed(3)
	held := rv.start(t, alice, fmt.Sprintf("psql %q -v ON_ERROR_STOP=1 -c 'DELETE FROM t'", conn))
	r := rv.pending(t, "alice", "unbounded-writes")
	reviewRow := fmt.Sprintf(`[data-testid=review-row][data-review-id=%q]`, r.ID)

	sam := b.NewPage("sam")
	sam.Do("open /reviews", chromedp.Navigate(console+"/reviews"),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid=signin-sam]`)))
	signIn(t, sam, "sam", "sam@corp.example", "/reviews")
	sam.Do("the pending review", chromedp.WaitVisible(chromedp.CSS(reviewRow)))
	approve := reviewRow + ` button[data-testid=approve]`
	for _, button := range []string{approve, reviewRow + ` button[data-testid=deny]`} {
		if !harness.Run(sam, "buttons disabled", chromedp.Evaluate[bool](fmt.Sprintf(`document.querySelector(%q).disabled`, button))) {
			t.Errorf("%s is enabled for sam, who is not in the rule's approver groups", button)
		}
	}
	sam.Shot("reader-view")
	ans := harness.Run(sam, "POST approve as sam", chromedp.Evaluate[struct {
		Status int    `json:"status"`
		Body   string `json:"body"`
	}](fmt.Sprintf(`fetch("/reviews/%s/approve", {
		method: "POST",
		headers: {"Content-Type": "application/x-www-form-urlencoded"},
		body: new URLSearchParams({reason: "not mine to approve", csrf: document.querySelector('meta[name=csrf-token]').content}),
		redirect: "manual",
	}).then(async r => ({status: r.status, body: await r.text()}))`, r.ID), chromedp.EvalAwaitPromise))
	if ans.Status != 403 || !strings.Contains(ans.Body, "not a member of dba") {
		t.Errorf("sam's POST /reviews/%s/approve: HTTP %d, want 403 naming the approver groups:\n%s", r.ID, ans.Status, ans.Body)
	}
	// The page's own form, its controls enabled by hand: what sam sees
	// is the server's refusal.
	resp := sam.Response("submit the form anyway", chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`document.querySelectorAll(%q).forEach(el => el.disabled = false)`, reviewRow+` [disabled]`)),
		chromedp.SendKeys(chromedp.CSS(reviewRow+` [name=reason]`), "let me"),
		chromedp.Click(chromedp.CSS(approve)))
	text := harness.Run(sam, "the refusal", chromedp.Text(chromedp.CSS(`body`)))
	if resp.Status != 403 || !strings.Contains(text, "not a member of dba") {
		t.Errorf("sam's Approve through the form: HTTP %d, the page says\n%s", resp.Status, text)
	}
	sam.Shot("reader-refused")
	if still := rv.pending(t, "alice", "unbounded-writes"); still.ID != r.ID {
		t.Fatalf("after sam's refused approval the pending review is %s, not %s", still.ID, r.ID)
	}
	select {
	case <-held.done:
		held.done <- nil
		t.Fatalf("psql finished before any approval:\n%s", held.out.String())
	default:
	}

	// 6. bob approves it in the console, with a reason; the held psql
	// completes.
	bob.Do("approve", chromedp.Navigate(console+"/reviews"),
		chromedp.WaitVisible(chromedp.CSS(reviewRow)),
		chromedp.SendKeys(chromedp.CSS(reviewRow+` [name=reason]`), "ticket 4711, cleanup is fine"))
	bob.Shot("review-pending")
	bob.Do("click Approve", chromedp.Click(chromedp.CSS(approve)))
	out = held.wait(t, 30*time.Second)
	if !strings.Contains(out, "DELETE 3") {
		t.Fatalf("the held psql after bob's approval:\n%s", out)
	}
	if n := pg.QueryInt("orders", "SELECT count(*) FROM t"); n != 0 {
		t.Fatalf("%d rows after the approved DELETE", n)
	}
	bob.Do("the review leaves the queue", chromedp.Navigate(console+"/reviews"),
		chromedp.WaitNotPresent(chromedp.CSS(reviewRow)))
	bob.Shot("review-approved")
	ev := e.WaitEvent(collectorclient.Query{Type: string(event.ReviewDecided), User: "alice"}, "review.decided", func(ev *event.Event) bool {
		return ev.Data["review_id"] == r.ID
	})
	if ev.Data["outcome"] != "approved" || !strings.Contains(fmt.Sprint(ev.Data), "ticket 4711") {
		t.Errorf("review.decided of %s: %v", r.ID, ev.Data)
	}

	// 7. The agent on the integrity page, its chain head and checkpoint.
	bob.Do("integrity", chromedp.Navigate(console+"/integrity"),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid=agent-row][data-host=`+harness.HostID+`]`)))
	bob.Shot("integrity")
}

// signIn clicks sub's button on the dev IdP's sign-in page and checks
// the console shows the person signed in, back on path.
func signIn(t *testing.T, p *harness.Page, sub, email, path string) {
	t.Helper()
	p.Do("sign in as "+sub, chromedp.Click(chromedp.CSS(`[data-testid=signin-`+sub+`]`)),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid=whoami]`)))
	if who := harness.Run(p, "whoami", chromedp.Text(chromedp.CSS(`[data-testid=whoami]`))); !strings.Contains(who, email) {
		t.Fatalf("signed in as %s, the console shows %q", sub, who)
	}
	if loc := harness.Run(p, "location", chromedp.Location()); !strings.Contains(loc, harness.CollectorAddr+path) {
		t.Errorf("after signing in the browser is at %s, want %s", loc, path)
	}
}

// recorded reports whether the collector has the recording an ssh.session
// end event names.
func recorded(e *harness.Env, ev *event.Event) bool {
	id, _ := ev.Data["ssh_session"].(string)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := e.Collector.Recording(ctx, id, false)
	return err == nil
}

// playUntil starts the replay if the player waits for a click, and waits
// until its terminal shows want.
func playUntil(t *testing.T, p *harness.Page, want string) {
	t.Helper()
	p.Do("start the player", chromedp.Evaluate[chromedp.Void](`(() => {
		const start = document.querySelector("[data-testid=replay-player] .ap-play-button");
		if (start && start.offsetParent !== null) start.click();
	})()`))
	p.Do("the terminal shows "+want, chromedp.Poll[chromedp.Void](fmt.Sprintf(
		`[...document.querySelectorAll("[data-testid=replay-player] .ap-terminal")].some(el => el.textContent.includes(%q))`, want),
		chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(40*time.Second)))
}
