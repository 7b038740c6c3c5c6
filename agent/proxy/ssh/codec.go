// Package ssh is the proxy's SSH codec. It terminates the client's SSH
// connection, opens its own to the target with the target's vaulted
// credentials, and relays channels and requests one for one, accepting or
// refusing each under the policy: exec requests through the Guard (every
// program the command line runs, see pkg/sshcmd), subsystems, forwarding
// and agent or X11 channels by the target's ssh.allow. Shell and exec
// sessions are recorded as asciicast v2 (see agent/recording).
//
// The client authenticates with "none": the person is already known from
// the kernel's binding. The client sees a host certificate signed by the
// agent's host CA (see HostCA), and the proxy checks the target's own host
// key against the policy's pin.
package ssh

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/rs/zerolog"
	"golang.org/x/crypto/ssh"

	"github.com/wardenhq/warden/agent/proxy"
	"github.com/wardenhq/warden/agent/recording"
	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/pkg/policy"
	"github.com/wardenhq/warden/pkg/redact"
)

// ServerVersion is the identification the proxy sends clients.
const ServerVersion = "SSH-2.0-Warden"

// HandshakeTimeout bounds the client's and the target's handshake and
// login.
const HandshakeTimeout = 30 * time.Second

// Options configure the codec.
type Options struct {
	// HostCA signs the host certificates clients see. Nil makes one with a
	// throw-away CA key: clients then cannot verify it (offline policy
	// checks and tests only).
	HostCA *HostCA
	// Recordings stores session recordings. Nil refuses shells and exec
	// requests: a session that cannot be recorded does not run.
	Recordings recording.Store
	// Recording tunes the recording writer (tests); zero values are the
	// defaults.
	Recording recording.WriterOptions
}

// Codec is the SSH codec.
type Codec struct {
	opts Options
}

// New returns the SSH codec.
func New(opts Options) *Codec {
	return &Codec{opts: opts}
}

// Enforces lists what the codec enforces: command rules on exec requests
// (with review) and vaulted upstream credentials.
func (c *Codec) Enforces() []policy.Capability {
	return []policy.Capability{policy.CapCommands, policy.CapReview, policy.CapCredentials}
}

// hostCA returns the configured CA, or a throw-away one.
func (c *Codec) hostCA() (*HostCA, error) {
	if c.opts.HostCA != nil {
		return c.opts.HostCA, nil
	}
	tmp, err := ephemeralCA()
	if err != nil {
		return nil, err
	}
	return tmp, nil
}

var (
	ephemeralOnce sync.Once
	ephemeral     *HostCA
	ephemeralErr  error
)

func ephemeralCA() (*HostCA, error) {
	ephemeralOnce.Do(func() {
		key, err := newEd25519Signer()
		if err != nil {
			ephemeralErr = err
			return
		}
		ephemeral, ephemeralErr = NewHostCA(key)
	})
	return ephemeral, ephemeralErr
}

// Refuse completes the SSH handshake far enough to tell the client why:
// the reason goes out as an authentication banner, which ssh prints on
// stderr, and every login attempt then fails. The target is never
// contacted.
func (c *Codec) Refuse(ctx context.Context, client net.Conn, att *proxy.Attribution) error {
	client.SetDeadline(time.Now().Add(HandshakeTimeout))
	ca, err := c.hostCA()
	if err != nil {
		return err
	}
	signer, err := ca.Signer(Principals(att.Target, att.Kernel.OrigDst.String()))
	if err != nil {
		return err
	}
	reason := att.Decision.Reason
	if reason == "" {
		reason = "warden: access denied"
	}
	cfg := &ssh.ServerConfig{
		ServerVersion:  ServerVersion,
		BannerCallback: func(ssh.ConnMetadata) string { return reason + "\r\n" },
		NoClientAuthCallback: func(ssh.ConnMetadata) (*ssh.Permissions, error) {
			return nil, errors.New("refused")
		},
		// Only publickey is offered, and refused: a client with keys
		// fails at once, and none is ever prompted for a password that
		// could not help.
		PublicKeyCallback: func(ssh.ConnMetadata, ssh.PublicKey) (*ssh.Permissions, error) {
			return nil, errors.New("refused")
		},
		MaxAuthTries: 1,
	}
	cfg.AddHostKey(signer)
	_, _, _, err = ssh.NewServerConn(client, cfg)
	if err == nil {
		return errors.New("refused client authenticated")
	}
	return nil
}

// Serve carries one allowed SSH connection until either side ends it.
func (c *Codec) Serve(ctx context.Context, s *proxy.Stream) error {
	att := s.Attribution
	tp := att.TargetPolicy
	dst := att.Kernel.OrigDst.String()
	sess := &session{
		c: c, s: s, log: s.Log, ctx: ctx,
		id:    "ssh-" + ulid.Make().String(),
		start: time.Now(),
		allow: tp.SSH,
		chans: map[ssh.Channel]struct{}{},
	}
	if att.Policy != nil {
		sess.redactor = redact.New(att.Policy.Redaction)
	}
	if att.Identity != nil {
		sess.groups = att.Identity.Groups
	}
	ca, err := c.hostCA()
	if err != nil {
		return err
	}
	signer, err := ca.Signer(Principals(att.Target, dst))
	if err != nil {
		return err
	}

	hostKeyCB, pinErr := hostKeyCallback(tp, dst)
	if pinErr != nil {
		// Nothing to check the target's key against: refused before any
		// login, the reason shown as Refuse shows it.
		sess.refused(pinErr)
		refusal := *att
		refusal.Decision = event.Decision{Action: event.Deny, Rule: "host_key", Reason: upstreamReason(att.Target.Name, pinErr)}
		return c.Refuse(ctx, s.Client, &refusal)
	}
	cfg := &ssh.ServerConfig{ServerVersion: ServerVersion}
	cfg.AddHostKey(signer)
	creds := tp.Credentials
	var upstream ssh.Conn
	var upChans <-chan ssh.NewChannel
	var upReqs <-chan *ssh.Request
	var upErr error
	dialUp := func(user string, auth ssh.AuthMethod) error {
		s.Upstream.SetDeadline(time.Now().Add(HandshakeTimeout))
		conn, ch, rq, err := ssh.NewClientConn(s.Upstream, hostKeyAddr(tp, dst), &ssh.ClientConfig{
			User: user, Auth: []ssh.AuthMethod{auth}, HostKeyCallback: hostKeyCB,
			ClientVersion: "SSH-2.0-Warden", Timeout: HandshakeTimeout,
		})
		if err != nil {
			return err
		}
		s.Upstream.SetDeadline(time.Time{})
		upstream, upChans, upReqs = conn, ch, rq
		sess.remoteUser = user
		return nil
	}
	if creds != nil {
		// The person is known from the kernel's binding: "none" is the
		// whole client login.
		cfg.NoClientAuth = true
	} else {
		// No vaulted login: the user's own password or answers go to
		// the target, once (the upstream connection is spent by a
		// failed login).
		var tried atomic.Bool
		login := func(meta ssh.ConnMetadata, auth ssh.AuthMethod) (*ssh.Permissions, error) {
			if !tried.CompareAndSwap(false, true) {
				return nil, errors.New("one login attempt per connection")
			}
			sess.auth = "passthrough"
			if err := dialUp(meta.User(), auth); err != nil {
				upErr = err
				return nil, err
			}
			return &ssh.Permissions{}, nil
		}
		cfg.PasswordCallback = func(meta ssh.ConnMetadata, pw []byte) (*ssh.Permissions, error) {
			return login(meta, ssh.Password(string(pw)))
		}
		cfg.KeyboardInteractiveCallback = func(meta ssh.ConnMetadata, client ssh.KeyboardInteractiveChallenge) (*ssh.Permissions, error) {
			return login(meta, ssh.KeyboardInteractive(func(name, instruction string, questions []string, echos []bool) ([]string, error) {
				return client(name, instruction, questions, echos)
			}))
		}
	}

	s.Client.SetDeadline(time.Now().Add(HandshakeTimeout))
	cconn, cChans, cReqs, err := ssh.NewServerConn(s.Client, cfg)
	if err != nil {
		if upErr != nil {
			sess.refused(upErr)
		}
		return fmt.Errorf("ssh client handshake: %w", err)
	}
	s.Client.SetDeadline(time.Time{})
	defer cconn.Close()
	sess.client = cconn
	// The session's context ends with the client's connection, so a
	// command held for review is withdrawn when the client goes away.
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		cconn.Wait()
		cancel()
	}()
	sess.ctx = cctx
	if creds != nil {
		sess.auth = authName(creds)
		auth, err := credentialAuth(creds, att.Identity, sessionName(att, sess.id), tp.SSH)
		if err == nil {
			err = dialUp(creds.Username, auth)
		}
		if err != nil {
			sess.refused(err)
			return sess.refuseChannels(cChans, cReqs, upstreamReason(att.Target.Name, err))
		}
	}
	defer upstream.Close()
	sess.upstream = upstream

	// The session is recorded before anything of it reaches the target.
	if _, err := s.Audit.Request(event.SSHSession, event.Decision{Action: event.Allow, Rule: att.Decision.Rule},
		event.SSHSessionData{Phase: "start", SSHSession: sess.id, RemoteUser: sess.remoteUser, Auth: sess.auth}); err != nil {
		s.Log.Warn().Err(err).Msg("ssh session refused: the audit log cannot record it")
		return sess.refuseChannels(cChans, cReqs, "warden: the audit log cannot record this session; refusing")
	}
	s.OnClose(sess.closeWith)
	defer s.OnClose(nil)
	sess.run(cChans, cReqs, upChans, upReqs)
	sess.end()
	return nil
}

// authName says how the proxy logs in upstream, for the record.
func authName(c *policy.Credentials) string {
	switch {
	case c.UserCAKeyFile != "":
		return "user_ca"
	case c.KeyFile != "":
		return "key"
	}
	return "password"
}

// sessionName is the session named in a user certificate's KeyId: the
// person's login session, and this SSH connection.
func sessionName(att *proxy.Attribution, id string) string {
	if att.Identity != nil && att.Identity.SessionID != "" {
		return att.Identity.SessionID + "/" + id
	}
	return id
}

// upstreamReason words a failed upstream login for the user. Key and file
// paths stay in the agent's log.
func upstreamReason(target string, err error) string {
	switch {
	case errors.Is(err, ErrHostKey):
		return fmt.Sprintf("warden: target %s presented a host key the policy does not pin; refusing (the agent's log has the fingerprints)", target)
	case strings.Contains(err.Error(), "pins no host key"):
		return fmt.Sprintf("warden: target %s has no pinned host key in the policy; refusing", target)
	case strings.Contains(err.Error(), "unable to authenticate"):
		return fmt.Sprintf("warden: the vaulted login to %s was refused by the target", target)
	}
	return fmt.Sprintf("warden: cannot log in to %s", target)
}

// session is one SSH connection through the proxy.
type session struct {
	c        *Codec
	s        *proxy.Stream
	ctx      context.Context
	log      zerolog.Logger
	id       string
	start    time.Time
	allow    *policy.SSHTarget
	redactor *redact.Redactor
	groups   []string

	client     *ssh.ServerConn
	upstream   ssh.Conn
	remoteUser string
	auth       string

	bytesIn, bytesOut atomic.Int64

	mu    sync.Mutex
	rec   *recording.Writer
	chans map[ssh.Channel]struct{} // client session channels, for closeWith
	wg    sync.WaitGroup
}

// refused records a session the proxy could not open upstream, with the
// cause, which names the pin or key at fault for the auditor.
func (ss *session) refused(err error) {
	ss.log.Warn().Err(err).Msg("ssh upstream login failed")
	rule := "upstream"
	if errors.Is(err, ErrHostKey) || strings.Contains(err.Error(), "pins no host key") {
		rule = "host_key"
	}
	dec := event.Decision{Action: event.Deny, Rule: rule, Reason: upstreamReason(ss.s.Attribution.Target.Name, err)}
	if _, rerr := ss.s.Audit.Request(event.SSHSession, dec, event.SSHSessionData{Phase: "start", SSHSession: ss.id,
		RemoteUser: ss.remoteUser, Auth: ss.auth, Error: err.Error()}); rerr != nil {
		ss.log.Debug().Err(rerr).Msg("refused ssh session not recorded")
	}
}

// refuseChannels answers a client whose session cannot proceed: every
// channel it opens is refused with reason, which ssh prints, and the
// connection closes after the first (or after HandshakeTimeout).
func (ss *session) refuseChannels(chans <-chan ssh.NewChannel, reqs <-chan *ssh.Request, reason string) error {
	go ssh.DiscardRequests(reqs)
	t := time.NewTimer(HandshakeTimeout)
	defer t.Stop()
	select {
	case nc, ok := <-chans:
		if ok {
			nc.Reject(ssh.Prohibited, reason)
		}
	case <-t.C:
	case <-ss.ctx.Done():
	}
	return errors.New(reason)
}

// closeWith ends the session for reason (the agent's lifetime checks):
// every open session channel gets it on stderr, then the connections close.
func (ss *session) closeWith(_ context.Context, reason string) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	for ch := range ss.chans {
		fmt.Fprintf(ch.Stderr(), "\r\n%s\r\n", reason)
		ch.CloseWrite()
	}
}

// run relays until either side closes its connection.
func (ss *session) run(cChans <-chan ssh.NewChannel, cReqs <-chan *ssh.Request, uChans <-chan ssh.NewChannel, uReqs <-chan *ssh.Request) {
	done := make(chan struct{}, 4)
	relay := func(f func()) {
		ss.wg.Add(1)
		go func() {
			defer ss.wg.Done()
			f()
			done <- struct{}{}
		}()
	}
	relay(func() { ss.globalRequests(cReqs, ss.upstream, true) })
	relay(func() { ss.globalRequests(uReqs, ss.client, false) })
	relay(func() { ss.channels(cChans, ss.upstream, true) })
	relay(func() { ss.channels(uChans, ss.client, false) })
	// One side gone ends the connection: close both so every relay
	// returns.
	select {
	case <-done:
	case <-ss.ctx.Done():
	}
	ss.client.Close()
	ss.upstream.Close()
	ss.wg.Wait()
}

// end records the session's end with its recording.
func (ss *session) end() {
	d := event.SSHSessionData{Phase: "end", SSHSession: ss.id, RemoteUser: ss.remoteUser, Auth: ss.auth,
		DurationMS: time.Since(ss.start).Milliseconds(), BytesIn: ss.bytesIn.Load(), BytesOut: ss.bytesOut.Load()}
	ss.mu.Lock()
	rec := ss.rec
	ss.mu.Unlock()
	if rec != nil {
		sum, err := rec.Close()
		if err != nil {
			ss.log.Warn().Err(err).Msg("ssh recording incomplete")
			d.Error = "recording incomplete: " + err.Error()
		}
		d.Recording, d.RecordingSHA256, d.RecordingBytes, d.RecordingLost = sum.Object, sum.SHA256, sum.Bytes, sum.Lost
	}
	if err := ss.s.Audit.Result(proxy.Receipt{}, event.SSHSession, d); err != nil {
		ss.log.Warn().Err(err).Msg("ssh session end not recorded")
	}
}
