package redis

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/wardenhq/warden/agent/proxy"
	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/pkg/guard"
	"github.com/wardenhq/warden/pkg/masking"
	"github.com/wardenhq/warden/pkg/policy"
	resp "github.com/wardenhq/warden/pkg/protocol/redis"
)

func tlsClient(c net.Conn, cfg *tls.Config) *tls.Conn { return tls.Client(c, cfg) }

// session is one client connection.
type session struct {
	s      *proxy.Stream
	cr, ur *resp.Reader
	uw     *bufio.Writer
	masker *masking.Masker
	keys   []string // key patterns masked whole for this identity
	creds  bool

	// scriptGuard is why scripting is refused unless a rule allows it:
	// the rule of a deny rule on commands, or "masking" when keys are
	// masked; "" when scripting is judged like any command.
	scriptGuard string

	// mu guards pending and out. Replies and the proxy's own answers
	// are put in out in the order of the commands they answer, and the
	// writer alone writes out to the client, so that neither loop ever
	// blocks on a client that is busy writing a long pipeline rather
	// than reading: the direction client→server keeps flowing, as it
	// would to the server itself.
	mu      sync.Mutex
	cond    *sync.Cond // out changed, or closed
	pending []*pending
	out     []byte
	closed  bool

	// Client loop state.
	inTx    bool
	txDirty bool    // a command inside MULTI was refused: EXEC aborts
	txPlans []*plan // masking of each queued command's reply in EXEC's

	// Upstream loop state: subscriptions by kind (see pubsub.go).
	subs map[string]map[string]bool
}

// pending is a reply the client is owed, in order.
type pending struct {
	// local is a reply the proxy gives itself, nil for the server's.
	local []byte
	// plan says how to mask the server's reply.
	plan *plan
	// abort turns the server's reply (to the DISCARD sent instead of
	// EXEC) into this EXECABORT error.
	abort []byte
	// pubsub is a subscribe-family command: the server answers with one
	// confirmation per channel (see pubsub.go).
	pubsub *pubsubWait
	// reset marks a RESET, which ends every subscription.
	reset bool
	// swallow is a reply the client is not owed: the vaulted login the
	// proxy sends again after a RESET.
	swallow bool
}

// maxOut bounds the replies held for a client that does not read them;
// past it the upstream loop waits, as a server stops reading a client
// whose output buffer is full.
const maxOut = 64 << 20

func newSession(s *proxy.Stream) *session {
	ss := &session{
		s:  s,
		cr: resp.NewReader(s.Client),
		ur: resp.NewReader(s.Upstream), uw: bufio.NewWriterSize(s.Upstream, 16<<10),
		masker: s.Guard.Masker(),
		creds:  s.Attribution.TargetPolicy.Credentials != nil,
		subs:   map[string]map[string]bool{},
	}
	ss.cond = sync.NewCond(&ss.mu)
	groups := s.Guard.Groups()
	if p := s.Attribution.Policy; p != nil {
		for _, m := range p.MaskingFor(s.Attribution.Target.Name) {
			if !m.Exempt(groups) {
				ss.keys = append(ss.keys, m.Keys...)
			}
		}
		for _, r := range p.RulesFor(s.Attribution.Target.Name) {
			if r.Action == policy.Deny && len(r.When.Commands) > 0 && !r.Exempt(groups) {
				ss.scriptGuard = r.Name
				break
			}
		}
	}
	if ss.scriptGuard == "" && len(ss.keys) > 0 {
		ss.scriptGuard = ruleMasking
	}
	return ss
}

// Rules the codec itself applies, as decisions name them.
const (
	ruleScripting = "scripting"
	ruleMasking   = "masking"
	ruleProtocol  = "protocol"
	ruleAudit     = "audit"
)

// run carries the session until one side ends it. The client loop owns
// writes upstream; replies are written by the upstream loop, and answers
// of the proxy's own by whichever loop reaches them first in order.
func (ss *session) run(ctx context.Context) error {
	clientc, upc, wc := make(chan error, 1), make(chan error, 1), make(chan error, 1)
	go func() { clientc <- ss.clientLoop(ctx) }()
	go func() { upc <- ss.upstreamLoop() }()
	go func() { wc <- ss.writer() }()
	var err error
	left := 3
	select {
	case err = <-clientc:
		clientc = nil
	case err = <-upc:
		upc = nil
	case err = <-wc:
		wc = nil
	}
	left--
	// Deliver what the client is owed (the answer to a protocol error,
	// the replies before the server closed), briefly, then end it all.
	ss.mu.Lock()
	ss.closed = true
	ss.cond.Broadcast()
	ss.mu.Unlock()
	if wc != nil {
		ss.s.Client.SetWriteDeadline(time.Now().Add(2 * time.Second))
		err = errors.Join(err, <-wc)
		wc = nil
		left--
	}
	ss.s.Client.Close()
	ss.s.Upstream.Close()
	errs := []error{quiet(err)}
	for ; left > 0; left-- {
		select {
		case e := <-clientc:
			errs = append(errs, quiet(e))
		case e := <-upc:
			errs = append(errs, quiet(e))
		case e := <-wc:
			errs = append(errs, quiet(e))
		}
	}
	return errors.Join(errs...)
}

// writer writes out to the client until the session closes and out is
// empty.
func (ss *session) writer() error {
	for {
		ss.mu.Lock()
		for len(ss.out) == 0 && !ss.closed {
			ss.cond.Wait()
		}
		b := ss.out
		ss.out = nil
		ss.cond.Broadcast() // room for the upstream loop
		ss.mu.Unlock()
		if len(b) == 0 {
			return nil
		}
		if _, err := ss.s.Client.Write(b); err != nil {
			return err
		}
	}
}

// emit queues b for the client. Callers hold mu.
func (ss *session) emit(b []byte) {
	ss.out = append(ss.out, b...)
	ss.cond.Broadcast()
}

func quiet(err error) error {
	if err == nil || errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrDeadlineExceeded) ||
		strings.Contains(err.Error(), "connection reset") {
		return nil
	}
	return err
}

// clientLoop reads, checks, records and forwards commands.
func (ss *session) clientLoop(ctx context.Context) error {
	for {
		cmd, err := ss.cr.ReadCommand()
		if err != nil {
			var pe *resp.ProtocolError
			if errors.As(err, &pe) {
				// As the server does: say so, and close.
				ss.reply(resp.Error("ERR " + pe.Error()))
				ss.uw.Flush()
			}
			return err
		}
		if err := ss.command(ctx, cmd); err != nil {
			return err
		}
		// Pipelined commands already here go upstream together.
		if ss.cr.Buffered() == 0 {
			if err := ss.uw.Flush(); err != nil {
				return err
			}
		}
	}
}

// upstreamLoop reads the server's replies and writes them to the client,
// masked, in order with the proxy's own answers.
func (ss *session) upstreamLoop() error {
	for {
		rep, err := ss.ur.ReadReply()
		if err != nil {
			return err
		}
		if err := ss.deliver(rep); err != nil {
			return err
		}
	}
}

// deliver writes the server's reply rep to the client: the answer to the
// oldest pending command, or a published message.
func (ss *session) deliver(rep resp.Reply) error {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	for len(ss.out) > maxOut && !ss.closed {
		ss.cond.Wait()
	}
	if ss.subscribed() && isMessage(rep) {
		ss.maskDetect(&rep)
		ss.emit(resp.AppendReply(nil, rep))
		return nil
	}
	if len(ss.pending) == 0 || ss.pending[0].local != nil {
		return errors.New("redis: the server sent a reply to no command")
	}
	p := ss.pending[0]
	done := true
	switch {
	case p.abort != nil:
		// The reply to the DISCARD that replaced EXEC.
		if rep.Kind == resp.KindError {
			// DISCARD failed (no MULTI upstream): show the server's.
			break
		}
		rep = resp.Reply{Kind: resp.KindError, Str: p.abort}
	case p.pubsub != nil:
		done = ss.confirm(p.pubsub, rep)
	case p.reset:
		clear(ss.subs)
	case p.swallow:
		ss.pending = ss.pending[1:]
		if rep.Kind == resp.KindError {
			return fmt.Errorf("redis: the vaulted login after RESET failed: %s", rep.Str)
		}
		return nil
	}
	if p.plan != nil {
		p.plan.apply(ss, &rep)
	} else {
		ss.maskDetect(&rep)
	}
	if done {
		ss.pending = ss.pending[1:]
	}
	// Answers of the proxy's own that were waiting for this reply.
	out := resp.AppendReply(nil, rep)
	for len(ss.pending) > 0 && ss.pending[0].local != nil {
		out = append(out, ss.pending[0].local...)
		ss.pending = ss.pending[1:]
	}
	ss.emit(out)
	return nil
}

// reply gives the client an answer of the proxy's own, in its place
// among the replies the server still owes.
func (ss *session) reply(rep resp.Reply) {
	b := resp.AppendReply(nil, rep)
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if len(ss.pending) == 0 {
		ss.emit(b)
		return
	}
	ss.pending = append(ss.pending, &pending{local: b})
}

// forward sends args upstream, owing the client the server's reply.
func (ss *session) forward(args [][]byte, p *pending) error {
	ss.mu.Lock()
	ss.pending = append(ss.pending, p)
	ss.mu.Unlock()
	_, err := ss.uw.Write(resp.AppendCommand(nil, args))
	return err
}

// command handles one client command.
func (ss *session) command(ctx context.Context, cmd resp.Command) error {
	name := cmd.Name()
	sub := resp.Subcommand(cmd.Args)
	keys := resp.Keys(cmd.Args)
	payload := event.Redis{
		Command: strings.ToUpper(name), Subcommand: strings.ToUpper(sub),
		KeyCount: len(keys), ArgCount: len(cmd.Args) - 1, Transaction: ss.inTx, Inline: cmd.Inline,
	}
	for i, k := range keys {
		if i == event.MaxRedisKeys {
			break
		}
		payload.Keys = append(payload.Keys, string(k))
	}
	what := payload.Command
	if sub != "" {
		what += " " + payload.Subcommand
	}

	// What the protocol itself does not let through, whatever the policy.
	if reason := ss.builtin(name, sub, cmd.Args); reason != "" {
		return ss.refuse(payload, event.Decision{Action: event.Deny, Rule: ruleProtocol, Reason: reason}, "NOPERM "+reason)
	}
	if reason := ss.leaks(name, what, cmd.Args, keys); reason != "" {
		return ss.refuse(payload, event.Decision{Action: event.Deny, Rule: ruleMasking, Reason: reason}, "NOPERM "+reason)
	}

	req := guard.Request{Commands: []string{name}, Text: requestText(what, payload.Keys), Exact: exact(cmd.Args)}
	if sub != "" {
		req.Commands = append(req.Commands, name+" "+sub)
	}
	if resp.Scripting(name) {
		req.Commands = append(req.Commands, ruleScripting)
	}
	v := ss.s.Guard.Check([]guard.Request{req})
	if v.Action == policy.Review {
		// Held before anything more goes upstream: flush what came
		// before, so its replies are not held too.
		if err := ss.uw.Flush(); err != nil {
			return err
		}
		v = ss.hold(ctx, req)
	}
	dec := event.Decision{Action: event.Allow, Rule: v.Rule}
	switch {
	case v.Action == policy.Deny:
		dec = event.Decision{Action: event.Deny, Rule: v.Rule, Reason: fmt.Sprintf("warden: %s denied by rule %q", what, v.Rule)}
		return ss.refuse(payload, dec, "NOPERM "+dec.Reason)
	case v.Action == policy.Review:
		msg := reviewMessage(what, v.Rule, v.Review)
		dec = event.Decision{Action: event.Review, Rule: v.Rule, Reason: msg}
		return ss.refuse(payload, dec, "NOPERM "+msg)
	case resp.Scripting(name) && ss.scriptGuard != "" && !allowedByRule(v):
		dec = event.Decision{Action: event.Deny, Rule: ruleScripting, Reason: ss.scriptingReason(what)}
		return ss.refuse(payload, dec, "NOPERM "+dec.Reason)
	}
	if id := v.ReviewID(); id != "" {
		dec.Reason = "approved in review " + id
	}
	if _, err := ss.s.Audit.Request(event.RedisCommand, dec, payload); err != nil {
		msg := "ERR warden: the audit log cannot record this command; refusing"
		var u *proxy.UnrecordedError
		if errors.As(err, &u) {
			msg = fmt.Sprintf("ERR warden: the audit log cannot record this command (%s); refusing", u.Cause)
		}
		ss.s.Log.Warn().Err(err).Msg("command refused: the audit log cannot record it")
		ss.reject(resp.Error(msg))
		return nil
	}
	return ss.pass(name, sub, cmd.Args, keys)
}

// refuse records a refused command and answers it with msg.
func (ss *session) refuse(payload event.Redis, dec event.Decision, msg string) error {
	if _, err := ss.s.Audit.Request(event.RedisCommand, dec, payload); err != nil {
		// Refused either way; the recorder counts the loss.
		ss.s.Log.Debug().Err(err).Msg("refused command not recorded")
	}
	ss.s.Log.Info().Str("command", payload.Command).Str("rule", dec.Rule).Msg("command refused")
	ss.reject(resp.Error(msg))
	return nil
}

// reject answers a command that does not reach the server. Inside MULTI
// it also dooms the transaction, as the server dooms one whose command it
// could not queue: EXEC then runs nothing.
func (ss *session) reject(rep resp.Reply) {
	if ss.inTx {
		ss.txDirty = true
	}
	ss.reply(rep)
}

// pass forwards an allowed command, with what the codec must remember of
// it: transaction and subscription state, and how to mask its reply.
func (ss *session) pass(name, sub string, args [][]byte, keys [][]byte) error {
	switch name {
	case "auth":
		if ss.creds {
			// The proxy logged in already; the client's password,
			// whatever it is, goes nowhere.
			if ss.inTx {
				ss.reject(resp.Error("ERR warden: AUTH is answered by Warden and cannot be queued in MULTI"))
				return nil
			}
			ss.reply(resp.Status("OK"))
			return nil
		}
	case "hello":
		if len(args) > 1 && string(args[1]) != "2" {
			// RESP3 is not spoken: clients fall back to RESP2.
			ss.reject(resp.Error("NOPROTO warden: only RESP2 is spoken through Warden; use protocol 2"))
			return nil
		}
		if ss.creds {
			args = stripHelloAuth(args)
		}
	case "multi":
		if !ss.inTx {
			ss.inTx, ss.txDirty, ss.txPlans = true, false, nil
			return ss.forward(args, &pending{})
		}
	case "exec":
		if ss.inTx {
			plans := ss.txPlans
			ss.inTx, ss.txPlans = false, nil
			if ss.txDirty {
				ss.txDirty = false
				return ss.forward([][]byte{[]byte("DISCARD")}, &pending{
					abort: []byte("EXECABORT Transaction discarded because of previous errors: Warden refused a command in it"),
				})
			}
			return ss.forward(args, &pending{plan: &plan{tx: plans}})
		}
	case "discard":
		ss.inTx, ss.txDirty, ss.txPlans = false, false, nil
	case "reset":
		ss.inTx, ss.txDirty, ss.txPlans = false, false, nil
		if err := ss.forward(args, &pending{reset: true}); err != nil {
			return err
		}
		if ss.creds {
			// RESET logs the connection in as the server's default
			// user: log in again as the vaulted one, or the client
			// would leave the account the policy gave it.
			return ss.relogin()
		}
		return nil
	case "subscribe", "psubscribe", "ssubscribe", "unsubscribe", "punsubscribe", "sunsubscribe":
		if !ss.inTx {
			return ss.forward(args, &pending{pubsub: newPubsubWait(name, len(args)-1)})
		}
	}
	p := ss.planFor(name, args, keys)
	if ss.inTx {
		// The reply now is QUEUED; the value comes in EXEC's.
		ss.txPlans = append(ss.txPlans, p)
		return ss.forward(args, &pending{})
	}
	return ss.forward(args, &pending{plan: p})
}

// builtin is why a command can never pass, "" for most. Each of these
// either streams data past masking and the per-command record, or breaks
// the one-reply-per-command pairing that masking relies on.
func (ss *session) builtin(name, sub string, args [][]byte) string {
	switch name {
	case "monitor":
		return "warden: MONITOR is not allowed through Warden: it streams every client's commands and values"
	case "sync", "psync", "replconf":
		return "warden: replication is not allowed through Warden: it copies the whole dataset past masking"
	case "client":
		if sub == "reply" && len(args) > 2 && !strings.EqualFold(string(args[2]), "on") {
			return "warden: CLIENT REPLY OFF and SKIP are not allowed through Warden"
		}
	}
	return ""
}

// allowedByRule reports whether an allow rule decided v: scripting
// passes a target's script guard only so.
func allowedByRule(v guard.Verdict) bool {
	return v.Action == policy.Allow && v.Rule != ""
}

func (ss *session) scriptingReason(what string) string {
	if ss.scriptGuard == ruleMasking {
		return fmt.Sprintf("warden: %s denied: a script can read any key out of Warden's sight, and keys are masked on target %s; a rule must allow scripting explicitly",
			what, ss.s.Attribution.Target.Name)
	}
	return fmt.Sprintf("warden: %s denied: a script can run any command out of Warden's sight, and target %s denies commands (rule %q); a rule must allow scripting explicitly",
		what, ss.s.Attribution.Target.Name, ss.scriptGuard)
}

// reviewMessage explains a command a review did not let run.
func reviewMessage(what, rule string, r *guard.ReviewResult) string {
	if r == nil {
		return fmt.Sprintf("warden: %s requires review (rule %q)", what, rule)
	}
	switch r.Outcome {
	case guard.ReviewDenied:
		msg := fmt.Sprintf("warden: %s: review %s denied by %s", what, r.ID, r.By)
		if r.Reason != "" {
			msg += ": " + r.Reason
		}
		return msg
	case guard.ReviewPending:
		return fmt.Sprintf("warden: %s requires review %s (rule %q) and was not approved in time; run it again once approved (warden review show %s)", what, r.ID, rule, r.ID)
	case guard.ReviewCancelled:
		return fmt.Sprintf("warden: %s withdrawn while waiting for review %s", what, r.ID)
	}
	return fmt.Sprintf("warden: review service unreachable; rule %q requires a review of %s: %s", rule, what, r.Detail)
}

// requestText is the command's safe-to-record text: its name and keys.
func requestText(what string, keys []string) string {
	if len(keys) == 0 {
		return what
	}
	return what + " " + strings.Join(keys, " ")
}

// exact is the command as sent, for binding a review's approval to it.
func exact(args [][]byte) string {
	var b strings.Builder
	for i, a := range args {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(strconv.Quote(string(a)))
	}
	return b.String()
}

// stripHelloAuth drops HELLO's AUTH username password: the proxy logged
// in already, and the client's password goes nowhere.
func stripHelloAuth(args [][]byte) [][]byte {
	out := make([][]byte, 0, len(args))
	for i := 0; i < len(args); i++ {
		if i > 1 && strings.EqualFold(string(args[i]), "auth") && i+2 < len(args) {
			i += 2
			continue
		}
		out = append(out, args[i])
	}
	return out
}

// hold asks the review for req, and withdraws it if the client hangs up
// meanwhile (Ctrl-C in redis-cli): Redis has no cancel request, but the
// client's end of the connection says it all. The client loop is blocked
// here, so the watcher may use its reader; it only peeks, and is stopped
// (by a read deadline in the past) before the loop reads again.
func (ss *session) hold(ctx context.Context, req guard.Request) guard.Verdict {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		if _, err := ss.cr.Peek(); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			cancel() // the client is gone
		}
	}()
	v := ss.s.Guard.Decide(ctx, []guard.Request{req}, guard.Hold{Off: ss.inTx})
	ss.s.Client.SetReadDeadline(time.Unix(1, 0))
	<-watched
	ss.s.Client.SetReadDeadline(time.Time{})
	return v
}
