package ssh

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"

	"golang.org/x/crypto/ssh"

	"github.com/wardenhq/warden/agent/recording"
	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/pkg/guard"
	"github.com/wardenhq/warden/pkg/policy"
	"github.com/wardenhq/warden/pkg/sshcmd"
)

// globalRequests relays connection-level requests from one side to the
// other, refusing what the policy does not allow. fromClient says which
// side in sends them.
func (ss *session) globalRequests(in <-chan *ssh.Request, to ssh.Conn, fromClient bool) {
	for r := range in {
		ok, why := ss.globalAllowed(r.Type, fromClient)
		if !ok {
			if why != "" {
				ss.log.Info().Str("request", r.Type).Str("reason", why).Msg("ssh global request refused")
			}
			if r.WantReply {
				r.Reply(false, nil)
			}
			continue
		}
		okUp, payload, err := to.SendRequest(r.Type, r.WantReply, r.Payload)
		if err != nil {
			okUp = false
		}
		if r.WantReply {
			r.Reply(okUp, payload)
		}
	}
}

// globalAllowed decides a connection-level request. why is "" for a
// request refused as a matter of course (not worth a log line).
func (ss *session) globalAllowed(typ string, fromClient bool) (bool, string) {
	switch typ {
	case "keepalive@openssh.com":
		return true, ""
	case "no-more-sessions@openssh.com":
		return fromClient, ""
	case "tcpip-forward", "cancel-tcpip-forward", "streamlocal-forward@openssh.com", "cancel-streamlocal-forward@openssh.com":
		if fromClient && ss.allow.Allows(policy.SSHAllowRemoteForward) {
			return true, ""
		}
		return false, "remote_forward is not in the target's ssh.allow"
	}
	// hostkeys-00@openssh.com from the target would teach the client the
	// target's own keys under its name; the client trusts the agent's
	// host CA instead. Anything else is unknown, so refused.
	return false, ""
}

// channelAllowed decides a channel open by its type.
func (ss *session) channelAllowed(typ string, fromClient bool) (bool, string) {
	var need string
	switch {
	case fromClient && typ == "session":
		return true, ""
	case fromClient && (typ == "direct-tcpip" || typ == "direct-streamlocal@openssh.com"):
		need = policy.SSHAllowLocalForward
	case !fromClient && (typ == "forwarded-tcpip" || typ == "forwarded-streamlocal@openssh.com"):
		need = policy.SSHAllowRemoteForward
	case !fromClient && typ == "auth-agent@openssh.com":
		need = policy.SSHAllowAgentForward
	case !fromClient && typ == "x11":
		need = policy.SSHAllowX11
	default:
		return false, fmt.Sprintf("warden: channel type %s is not relayed", typ)
	}
	if ss.allow.Allows(need) {
		return true, ""
	}
	return false, fmt.Sprintf("warden: %s is not allowed on target %s (ssh.allow)", need, ss.s.Attribution.Target.Name)
}

// channels relays the channels one side opens to the other.
func (ss *session) channels(in <-chan ssh.NewChannel, to ssh.Conn, fromClient bool) {
	for nc := range in {
		if ok, why := ss.channelAllowed(nc.ChannelType(), fromClient); !ok {
			ss.log.Info().Str("channel", nc.ChannelType()).Bool("from_client", fromClient).Str("reason", why).Msg("ssh channel refused")
			nc.Reject(ssh.Prohibited, why)
			continue
		}
		ss.wg.Add(1)
		go func() {
			defer ss.wg.Done()
			ss.channel(nc, to, fromClient)
		}()
	}
}

// channel opens nc's twin on the other side and relays the pair.
func (ss *session) channel(nc ssh.NewChannel, to ssh.Conn, fromClient bool) {
	b, bReqs, err := to.OpenChannel(nc.ChannelType(), nc.ExtraData())
	if err != nil {
		var oe *ssh.OpenChannelError
		if errors.As(err, &oe) {
			nc.Reject(oe.Reason, oe.Message)
		} else {
			nc.Reject(ssh.ConnectionFailed, "warden: "+err.Error())
		}
		return
	}
	a, aReqs, err := nc.Accept()
	if err != nil {
		b.Close()
		return
	}
	p := &pair{ss: ss, a: a, b: b, fromClient: fromClient, session: fromClient && nc.ChannelType() == "session"}
	if p.session {
		ss.mu.Lock()
		ss.chans[a] = struct{}{}
		ss.mu.Unlock()
		defer func() {
			ss.mu.Lock()
			delete(ss.chans, a)
			ss.mu.Unlock()
		}()
	}
	p.relay(aReqs, bReqs)
}

// pair is a channel and its twin: a was opened by the side that started
// it, b by the proxy on the other side. For a client session, a is the
// client's and b the target's.
type pair struct {
	ss         *session
	a, b       ssh.Channel
	fromClient bool
	session    bool

	// answering is held while a request from a is forwarded and its
	// answer relayed back, and by what b's requests and close relay to a:
	// a target may answer exec, print, exit and close before the answer
	// has reached the client, which then sees the channel close under its
	// request (ssh: "EOF") and loses the exit status.
	answering sync.Mutex

	mu      sync.Mutex
	pty     *ptyReq
	started bool   // shell, exec or subsystem forwarded
	kind    string // "shell", "exec", "scp", "sftp", ...
	rec     *recording.Writer
	sftp    *sftpTap
}

type ptyReq struct {
	Term       string
	Cols, Rows uint32
	W, H       uint32
	Modes      string
}

func (p *pair) relay(aReqs, bReqs <-chan *ssh.Request) {
	var copies sync.WaitGroup
	cp := func(dst io.Writer, src io.Reader, after func()) {
		copies.Add(1)
		go func() {
			defer copies.Done()
			io.Copy(dst, src)
			if after != nil {
				after()
			}
		}()
	}
	// Downstream: what the target (b) sends to the client (a).
	var downDone sync.WaitGroup
	downDone.Add(2)
	cp(p.tap(p.a, false), p.b, func() { downDone.Done() })
	cp(p.tap(p.a.Stderr(), false), p.b.Stderr(), func() { downDone.Done() })
	go func() {
		downDone.Wait()
		p.a.CloseWrite()
	}()
	// Upstream: the client's input.
	cp(p.tap(p.b, true), p.a, func() { p.b.CloseWrite() })
	cp(p.b.Stderr(), p.a.Stderr(), nil)

	var reqs sync.WaitGroup
	reqs.Add(1)
	go func() {
		defer reqs.Done()
		for r := range bReqs {
			p.fromB(r)
		}
		// b closed: what it sent is relayed before a closes.
		downDone.Wait()
		p.answering.Lock()
		p.a.Close()
		p.answering.Unlock()
	}()
	for r := range aReqs {
		p.fromA(r)
	}
	p.b.Close()
	reqs.Wait()
	p.a.Close()
	copies.Wait()
	if p.sftp != nil {
		p.sftp.close()
	}
}

// tap wraps a writer of the pair so that what passes is counted and, for
// a recorded session, recorded. up is the client→target direction.
func (p *pair) tap(w io.Writer, up bool) io.Writer {
	if !p.session {
		return w
	}
	return tapWriter{w: w, p: p, up: up}
}

type tapWriter struct {
	w  io.Writer
	p  *pair
	up bool
}

func (t tapWriter) Write(b []byte) (int, error) {
	ss := t.p.ss
	t.p.mu.Lock()
	rec, sftp := t.p.rec, t.p.sftp
	t.p.mu.Unlock()
	if t.up {
		ss.bytesIn.Add(int64(len(b)))
		if rec != nil && ss.allow != nil && ss.allow.RecordInput {
			rec.Input(b)
		}
		if sftp != nil {
			sftp.fromClient(b)
		}
	} else {
		ss.bytesOut.Add(int64(len(b)))
		if rec != nil {
			rec.Output(b)
		}
		if sftp != nil {
			sftp.fromServer(b)
		}
	}
	return t.w.Write(b)
}

// fromB relays a request the twin's side sent on the channel.
func (p *pair) fromB(r *ssh.Request) {
	switch r.Type {
	case "exit-status", "exit-signal", "eow@openssh.com", "keepalive@openssh.com":
		p.answering.Lock()
		ok, err := p.a.SendRequest(r.Type, r.WantReply, r.Payload)
		p.answering.Unlock()
		if r.WantReply {
			r.Reply(ok && err == nil, nil)
		}
		return
	}
	if r.WantReply {
		r.Reply(false, nil)
	}
}

// fromA decides and relays a request on the channel from its opener.
func (p *pair) fromA(r *ssh.Request) {
	if !p.session {
		p.forward(r)
		return
	}
	switch r.Type {
	case "env", "signal", "break", "xon-xoff", "eow@openssh.com", "keepalive@openssh.com":
		p.forward(r)
	case "pty-req":
		var pr ptyReq
		if ssh.Unmarshal(r.Payload, &pr) == nil {
			p.mu.Lock()
			p.pty = &pr
			p.mu.Unlock()
		}
		p.forward(r)
	case "window-change":
		var wc struct{ Cols, Rows, W, H uint32 }
		if ssh.Unmarshal(r.Payload, &wc) == nil {
			p.mu.Lock()
			rec := p.rec
			p.mu.Unlock()
			if rec != nil {
				rec.Resize(int(wc.Cols), int(wc.Rows))
			}
		}
		p.forward(r)
	case "x11-req":
		p.allowOnly(r, policy.SSHAllowX11)
	case "auth-agent-req@openssh.com":
		p.allowOnly(r, policy.SSHAllowAgentForward)
	case "shell":
		if !p.begin(r, "shell") {
			return
		}
		p.forward(r)
	case "exec":
		p.exec(r)
	case "subsystem":
		p.subsystem(r)
	default:
		p.ss.log.Info().Str("request", r.Type).Msg("ssh channel request refused")
		if r.WantReply {
			r.Reply(false, nil)
		}
	}
}

// forward sends r to the twin and relays the answer.
func (p *pair) forward(r *ssh.Request) {
	p.answering.Lock()
	defer p.answering.Unlock()
	ok, err := p.b.SendRequest(r.Type, r.WantReply, r.Payload)
	if r.WantReply {
		r.Reply(ok && err == nil, nil)
	}
}

// allowOnly forwards r when ssh.allow lists kind, and refuses it
// otherwise, telling the client why on stderr.
func (p *pair) allowOnly(r *ssh.Request, kind string) {
	if p.ss.allow.Allows(kind) {
		p.forward(r)
		return
	}
	p.ss.log.Info().Str("request", r.Type).Msg("ssh channel request refused: not in ssh.allow")
	fmt.Fprintf(p.a.Stderr(), "warden: %s is not allowed on target %s (ssh.allow)\r\n", kind, p.ss.s.Attribution.Target.Name)
	if r.WantReply {
		r.Reply(false, nil)
	}
}

// begin marks the channel as started (one shell, exec or subsystem per
// channel, as the protocol says) and starts its recording. It refuses
// r and returns false when that is not possible.
func (p *pair) begin(r *ssh.Request, kind string) bool {
	p.mu.Lock()
	started := p.started
	p.started, p.kind = true, kind
	p.mu.Unlock()
	if started {
		if r.WantReply {
			r.Reply(false, nil)
		}
		return false
	}
	p.mu.Lock()
	pty := p.pty
	p.mu.Unlock()
	if kind == "sftp" || kind == "scp" || kind == "rsync" || kind == "exec" && pty == nil {
		// File transfers are recorded as ssh.sftp / ssh.exec events,
		// not as terminal output, and so is an exec without a
		// terminal: its output is data (ssh host 'tar c /' > x.tar),
		// and its command line is in its ssh.exec event.
		return true
	}
	rec, err := p.ss.recorder(pty)
	if err != nil {
		p.refuse(r, event.Decision{Action: event.Deny, Rule: "recording", Reason: "warden: this session cannot be recorded (" + err.Error() + "); refusing"})
		return false
	}
	p.mu.Lock()
	p.rec = rec
	p.mu.Unlock()
	return true
}

// recorder returns the connection's recording, started on first use with
// the terminal's size and type.
func (ss *session) recorder(pty *ptyReq) (*recording.Writer, error) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.rec != nil {
		return ss.rec, nil
	}
	if ss.c.opts.Recordings == nil {
		return nil, errors.New("no recording store")
	}
	h := recording.Header{Width: 80, Height: 24, Time: ss.start}
	if pty != nil {
		h.Width, h.Height, h.Term = int(pty.Cols), int(pty.Rows), pty.Term
	}
	att := ss.s.Attribution
	who := "unknown"
	if att.Identity != nil {
		who = att.Identity.Sub
		if att.Identity.Email != "" {
			who = att.Identity.Email
		}
	}
	h.Title = fmt.Sprintf("%s@%s (%s) by %s", ss.remoteUser, att.Target.Name, ss.id, who)
	opts := ss.c.opts.Recording
	log := ss.log
	opts.OnError = func(chunk int, err error) {
		log.Warn().Err(err).Int("chunk", chunk).Str("recording", ss.id).Msg("recording chunk not stored")
	}
	ss.rec = recording.NewWriter(ss.c.opts.Recordings, ss.id, h, opts)
	return ss.rec, nil
}

// refuse answers a refused shell or exec: the reason on stderr, exit
// status 1, and the channel closes. It succeeds at the protocol level so
// that the client prints the reason rather than a bare "exec request
// failed".
func (p *pair) refuse(r *ssh.Request, dec event.Decision) {
	if r.WantReply {
		r.Reply(true, nil)
	}
	fmt.Fprintf(p.a.Stderr(), "%s\r\n", dec.Reason)
	p.a.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{1}))
	p.a.CloseWrite()
	p.a.Close()
	p.b.Close()
}

// transfer names file-transfer programs and the ssh.allow entry for them.
var transfer = map[string]string{"scp": policy.SSHAllowSCP, "rsync": policy.SSHAllowSCP}

// exec decides an exec request: the programs its command line runs go
// through the Guard, the request is recorded with the decision before it
// reaches the target, and a refused one never does.
func (p *pair) exec(r *ssh.Request) {
	ss := p.ss
	var x struct{ Command string }
	if err := ssh.Unmarshal(r.Payload, &x); err != nil {
		if r.WantReply {
			r.Reply(false, nil)
		}
		return
	}
	cmd := x.Command
	shown := cmd
	if ss.redactor != nil {
		shown, _ = ss.redactor.CommandLine(cmd, ss.groups)
	}
	data := event.SSHExecData{SSHSession: ss.id, Command: shown, RemoteUser: ss.remoteUser, Kind: "exec"}
	progs, perr := sshcmd.Programs(cmd)
	data.Programs = progs
	var dec event.Decision
	switch {
	case perr != nil:
		dec = event.Decision{Action: event.Deny, Rule: "parse", Reason: fmt.Sprintf("warden: command refused: cannot tell which programs it runs (%v)", perr)}
	default:
		for _, prog := range progs {
			if need, ok := transfer[prog]; ok {
				data.Kind = prog
				if !ss.allow.Allows(need) {
					dec = event.Decision{Action: event.Deny, Rule: "ssh.allow", Reason: fmt.Sprintf("warden: %s is not allowed on target %s (ssh.allow)", need, ss.s.Attribution.Target.Name)}
				}
			}
		}
		if dec.Action == "" {
			dec = p.decide(progs, cmd, shown)
		}
	}
	if dec.Action != event.Allow {
		if _, err := ss.s.Audit.Request(event.SSHExec, dec, data); err != nil {
			ss.log.Warn().Err(err).Msg("refused ssh exec not recorded")
		}
		ss.log.Info().Str("rule", dec.Rule).Msg("ssh exec refused")
		p.refuse(r, dec)
		return
	}
	if _, err := ss.s.Audit.Request(event.SSHExec, dec, data); err != nil {
		p.refuse(r, event.Decision{Action: event.Deny, Rule: "audit", Reason: "warden: the audit log cannot record this command; refusing"})
		return
	}
	if !p.begin(r, data.Kind) {
		return
	}
	p.forward(r)
}

// decide asks the Guard about an exec request's programs, holding the
// client (with notices on stderr) while a review rule waits for a
// decision.
func (p *pair) decide(progs []string, cmd, shown string) event.Decision {
	ss := p.ss
	reqs := []guard.Request{{Commands: progs, Text: shown, Exact: cmd}}
	v := ss.s.Guard.Check(reqs)
	if v.Action == policy.Review {
		// ss.ctx ends with the client's connection: a client that goes
		// away while held withdraws the command.
		v = ss.s.Guard.Decide(ss.ctx, reqs, guard.Hold{Waiting: func(w guard.Waiting) {
			fmt.Fprintf(p.a.Stderr(), "warden: review %s required by rule %q; waiting up to %s (approve: warden review approve %s)\r\n",
				w.ID, w.Rule, w.Left.Round(1e9), w.ID)
		}})
	}
	switch v.Action {
	case policy.Allow:
		return event.Decision{Action: event.Allow, Rule: v.Rule}
	case policy.Deny:
		return event.Decision{Action: event.Deny, Rule: v.Rule,
			Reason: fmt.Sprintf("warden: command refused by rule %q (runs %s)", v.Rule, strings.Join(matched(ss, v.Rule, progs), ", "))}
	}
	return event.Decision{Action: event.Review, Rule: v.Rule, Reason: reviewReason(v)}
}

// matched lists the programs that rule names, for the refusal message.
func matched(ss *session, rule string, progs []string) []string {
	pol := ss.s.Attribution.Policy
	if pol == nil {
		return progs
	}
	for _, r := range pol.RulesFor(ss.s.Attribution.Target.Name) {
		if r.Name != rule {
			continue
		}
		var out []string
		for _, p := range progs {
			if slices.ContainsFunc(r.When.Commands, func(c string) bool { return strings.EqualFold(c, p) }) {
				out = append(out, p)
			}
		}
		if len(out) > 0 {
			return out
		}
	}
	return progs
}

// reviewReason words a review verdict that did not end in approval.
func reviewReason(v guard.Verdict) string {
	r := v.Review
	if r == nil {
		return fmt.Sprintf("warden: command held for review by rule %q, and no review service is available", v.Rule)
	}
	switch r.Outcome {
	case guard.ReviewDenied:
		msg := fmt.Sprintf("warden: review %s of rule %q was denied by %s", r.ID, v.Rule, r.By)
		if r.Reason != "" {
			msg += ": " + r.Reason
		}
		return msg
	case guard.ReviewPending:
		return fmt.Sprintf("warden: review %s required by rule %q is still pending; run the command again once it is approved (warden review approve %s)", r.ID, v.Rule, r.ID)
	case guard.ReviewCancelled:
		return fmt.Sprintf("warden: review %s of rule %q withdrawn", r.ID, v.Rule)
	}
	return fmt.Sprintf("warden: command needs a review (rule %q), which cannot be opened: %s", v.Rule, r.Detail)
}

// subsystem relays a subsystem request: sftp when ssh.allow lists it,
// every other subsystem refused.
func (p *pair) subsystem(r *ssh.Request) {
	var x struct{ Name string }
	if err := ssh.Unmarshal(r.Payload, &x); err != nil || x.Name != "sftp" {
		fmt.Fprintf(p.a.Stderr(), "warden: subsystem %q is not relayed\r\n", x.Name)
		if r.WantReply {
			r.Reply(false, nil)
		}
		return
	}
	if !p.ss.allow.Allows(policy.SSHAllowSFTP) {
		p.allowOnly(r, policy.SSHAllowSFTP)
		return
	}
	if !p.begin(r, "sftp") {
		return
	}
	p.mu.Lock()
	p.sftp = newSFTPTap(p.ss)
	p.mu.Unlock()
	p.forward(r)
}
