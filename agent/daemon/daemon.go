// Package daemon wires wardend together: the BPF enforcer, login sessions,
// policy, the proxy, the control socket, metrics and event recording.
package daemon

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/cilium/ebpf/ringbuf"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/wardenhq/warden/agent/clientca"
	"github.com/wardenhq/warden/agent/commands"
	"github.com/wardenhq/warden/agent/config"
	"github.com/wardenhq/warden/agent/control"
	"github.com/wardenhq/warden/agent/lineage"
	"github.com/wardenhq/warden/agent/metrics"
	"github.com/wardenhq/warden/agent/natsconn"
	"github.com/wardenhq/warden/agent/proxy"
	"github.com/wardenhq/warden/agent/proxy/codecs"
	httpcodec "github.com/wardenhq/warden/agent/proxy/http"
	sshcodec "github.com/wardenhq/warden/agent/proxy/ssh"
	"github.com/wardenhq/warden/agent/recording"
	"github.com/wardenhq/warden/agent/reviews"
	"github.com/wardenhq/warden/agent/session"
	"github.com/wardenhq/warden/agent/targets"
	"github.com/wardenhq/warden/bpf/loader"
	"github.com/wardenhq/warden/pkg/cgroupv2"
	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/pkg/idtoken"
	"github.com/wardenhq/warden/pkg/policy"
	"github.com/wardenhq/warden/pkg/redact"
)

// Messages users read when the proxy refuses them. They carry the fix.
const (
	MsgUnbound = "warden: no verified identity for this session; run 'warden login'"
	MsgExpired = "warden: your login has expired; run 'warden login' again"
)

// Recorder receives every event the agent produces, and counts what other
// components lost: agent.loss events are the recorder's alone to build.
// *recorder.Recorder is one.
type Recorder interface {
	// Emit returns an error when the event was not stored; the recorder
	// has counted it as lost either way.
	Emit(*event.Event) error
	// Lost counts n events that source could not record, for reason.
	Lost(source, reason string, n uint64)
}

// Loss source and reasons the daemon reports through Recorder.Lost.
const (
	lossSourceBPF = "bpf"
	// reasonDenialUnreadable: a kernel denial record could not be decoded.
	reasonDenialUnreadable = "denial_record_unreadable"
)

// Agent cgroup and session directory names under the cgroup root.
const (
	sessionsCgroupName = "warden.sessions"
)

// resolveInterval is how often DNS-named targets are looked up again.
const resolveInterval = 30 * time.Second

// kernelLossInterval is how often the enforcer's loss counters are read.
const kernelLossInterval = 5 * time.Second

// Daemon is a running wardend.
type Daemon struct {
	cfg       config.Config
	log       zerolog.Logger
	rec       Recorder
	host      event.Host
	enf       *loader.Enforcer
	sessions  *session.Manager
	verifier  *idtoken.Verifier
	watcher   *policy.Watcher
	metrics   *metrics.Metrics
	listeners []net.Listener
	metricsLn net.Listener // nil when metrics_listen is ""
	proxy     *proxy.Proxy
	control   *control.Server
	codecs    *proxy.Registry

	// lineage applies the kernel's process events to the process table
	// and consults sessionCgroups, the session index, for every event.
	lineage        *lineage.Tracker
	sessionCgroups atomic.Pointer[map[uint64]*session.Session]
	// redactor is the policy's redaction of process arguments, which the
	// lineage tracker reads for every image it records.
	redactor atomic.Pointer[redact.Redactor]

	mu     sync.RWMutex
	policy *policy.Policy
	table  *targets.Table

	// access is where syncAccess writes which identity reaches which
	// target: the enforcer's map (a fake in tests).
	access interface {
		SyncAccess(map[uint32]map[uint32]uint64) error
	}
	// reviews opens reviews at the collector and holds the live
	// just-in-time access grants.
	reviews *reviews.Client
	// locks refuses logins of locked people (the kill switch's --lock).
	locks *session.Locks
	// expiryWake tells maintainSessions a login moved the next expiry.
	expiryWake chan struct{}
	// commands applies the collector's kills and locks; logins wait for
	// its backlog until syncDeadline (see awaitCommands).
	commands     *commands.Subscriber
	syncDeadline time.Time
	// recordings stores SSH session recordings (WARDEN_RECORDINGS).
	recordings *recording.NATSStore
}

// Run starts the daemon and blocks until ctx is done. Each value received
// on reload re-reads the policy file (SIGHUP). BPF programs stay attached
// (pinned) after Run returns, so enforcement outlives the process.
// collectors, such as the recorder and the publisher, are served with the
// daemon's own metrics. A start-up error names what failed (a config key
// and its value where one is to blame); nothing started stays open.
func Run(ctx context.Context, cfg config.Config, rec Recorder, log zerolog.Logger, reload <-chan os.Signal, collectors ...prometheus.Collector) error {
	d := &Daemon{cfg: cfg, log: log, rec: rec, expiryWake: make(chan struct{}, 1)}
	if err := d.start(ctx); err != nil {
		d.close()
		if ctx.Err() != nil {
			return fmt.Errorf("stopped during start-up: %w", err)
		}
		return err
	}
	// The recorder's and publisher's own metrics (losses, spool, NATS
	// connection) are served beside the daemon's.
	for _, c := range collectors {
		if err := d.metrics.Registry.Register(c); err != nil {
			d.close()
			return fmt.Errorf("register metrics: %w", err)
		}
	}
	return d.run(ctx, reload)
}

// start opens everything the daemon runs on. On error the caller closes
// what was opened (close copes with a partial start). Checks that touch
// neither the kernel nor the network come first, so a mistake in the
// configuration or the policy is reported before anything is attached.
func (d *Daemon) start(ctx context.Context) error {
	cfg := d.cfg
	hostname, _ := os.Hostname()
	d.host = event.Host{ID: cfg.HostID, Name: hostname}

	clientTLS, err := openClientTLS(cfg)
	if err != nil {
		return err
	}
	// The SSH host CA's line for ssh_known_hosts goes beside the socket,
	// world-readable, like the client CA's certificate.
	sshCA, err := sshcodec.LoadHostCA(filepath.Join(cfg.StateDir, "ssh-host-ca.key"), filepath.Join(filepath.Dir(cfg.Socket), "ssh_known_hosts"))
	if err != nil {
		return err
	}
	natsOpts, err := natsconn.Options(cfg.NATS, cfg.HostID, d.log)
	if err != nil {
		return err
	}
	if d.recordings, err = recording.DialNATS(cfg.NATS.URL, natsOpts...); err != nil {
		return err
	}
	// Recordings a previous run left unfinished lack at most their last
	// chunk; they are counted as lost (agent.loss) before any new one.
	recordings, err := recording.WithJournal(d.recordings, filepath.Join(cfg.StateDir, "recordings"))
	if err != nil {
		return err
	}
	if orphans, err := recordings.Orphans(); err != nil {
		return err
	} else if len(orphans) > 0 {
		d.log.Warn().Strs("recordings", orphans).Msg("ssh recordings left unfinished by the previous run; each may lack its last chunk")
		d.rec.Lost(recording.LossSource, recording.LossAgentStopped, uint64(len(orphans)))
	}
	// The HTTP codec's identity tokens are signed with the agent's key;
	// services verify them with the key set published beside the socket.
	httpIdentity, err := httpcodec.OpenIdentity(cfg.KeyFile, cfg.HostID, filepath.Join(filepath.Dir(cfg.Socket), httpcodec.JWKSFile))
	if err != nil {
		return err
	}
	d.codecs = codecs.New(codecs.Options{ClientTLS: clientTLS, HTTPIdentity: httpIdentity, SSHHostCA: sshCA, Recordings: recordings})
	// Validate the policy now; the watcher loads it again below, once
	// there is a kernel to apply it to.
	p, err := policy.Load(cfg.PolicyFile, d.codecs.Enforcement())
	if err != nil {
		return policyError(cfg.PolicyFile, err)
	}
	// The process table is seeded before the watcher applies the policy:
	// seeded arguments get its redaction too.
	d.redactor.Store(redact.New(p.Redaction))

	var port uint16
	d.listeners, port, err = listenProxy(cfg.ProxyListen)
	if err != nil {
		return err
	}
	// The metrics port is taken at start too, so a conflict is a start-up
	// error, not a failure after "wardend running".
	if cfg.MetricsListen != "" {
		if d.metricsLn, err = net.Listen("tcp", cfg.MetricsListen); err != nil {
			return fmt.Errorf("metrics_listen %s: %w", cfg.MetricsListen, errnoOf(err))
		}
	}
	if d.verifier, err = newVerifier(ctx, cfg, d.log); err != nil {
		return err
	}

	root := cfg.CgroupRoot
	if root == "" {
		if root, err = cgroupv2.Mount(); err != nil {
			return fmt.Errorf("find cgroup root: %w", err)
		}
	}
	mount, err := cgroupv2.Mount()
	if err != nil {
		return fmt.Errorf("find cgroup2 mount: %w", err)
	}
	agentCgroupID, err := ownCgroup(root)
	if err != nil {
		return fmt.Errorf("cgroup_root %s: %w", root, err)
	}
	if d.enf, err = loader.Load(loader.Options{CgroupPath: root, PinDir: cfg.BPFPinDir}); err != nil {
		return fmt.Errorf("load BPF programs: %w", err)
	}
	d.access = d.enf
	if err := d.enf.Exempt(agentCgroupID); err != nil {
		return fmt.Errorf("exempt wardend's own cgroup: %w", err)
	}
	d.metrics = metrics.New(d.enf.Counters)
	d.metrics.Pprof = cfg.Pprof
	d.lineage, err = lineage.Start(lineage.StartOptions{
		HostID: cfg.HostID, PinDir: cfg.BPFPinDir,
		CgroupMount: mount, SessionsDir: filepath.Join(root, sessionsCgroupName),
		Recorder: d.rec, Sessions: d.sessionIdentity, Redactor: d.redactor.Load,
		Log: d.log.With().Str("component", "lineage").Logger(),
	})
	if err != nil {
		return fmt.Errorf("start process lineage: %w", err)
	}
	for _, c := range d.lineage.Collectors() {
		if err := d.metrics.Registry.Register(c); err != nil {
			return fmt.Errorf("register lineage metrics: %w", err)
		}
	}

	proxyV4 := netip.MustParseAddrPort(d.listeners[0].Addr().String()).Addr()
	if err := d.enf.SetProxy(proxyV4, netip.IPv6Loopback(), port); err != nil {
		return fmt.Errorf("point the BPF programs at the proxy: %w", err)
	}
	d.reviews, err = reviews.New(reviews.Config{URL: cfg.NATS.URL, HostID: cfg.HostID, NATSOptions: natsOpts, Recorder: d.rec, Logger: d.log,
		GrantsChanged: func() {
			if err := d.syncAccess(); err != nil {
				d.log.Error().Err(err).Msg("access grants not applied to the kernel")
			}
		}})
	if err != nil {
		return err
	}
	d.proxy = proxy.New(proxy.Options{
		Listeners:  d.listeners,
		Attributor: d.enf,
		Authorize:  d.authorize,
		Codecs:     d.codecs,
		Recorder:   d.rec,
		Reviews:    d.reviews,
		// audit_failure: deny refuses what cannot be recorded.
		AuditFailure: auditFailure(cfg.AuditFailure),
		Metrics:      d.metrics,
		Log:          d.log.With().Str("component", "proxy").Logger(),
	})

	stateFile := filepath.Join(cfg.StateDir, "sessions.json")
	sessions, expired, err := session.Open(session.Options{
		Dir:       filepath.Join(root, sessionsCgroupName),
		StateFile: stateFile,
		Kernel:    d.enf,
	})
	if err != nil {
		return fmt.Errorf("restore login sessions (%s): %w", stateFile, err)
	}
	d.sessions = sessions
	for _, s := range expired {
		// Expired while the agent was down: its connections ended with
		// the agent.
		d.emitSession(event.SessionExpired, s, nil, []event.ClosedConnection{})
	}
	// Locks are read before the control socket accepts the first login.
	locksFile := filepath.Join(cfg.StateDir, "locks.json")
	if d.locks, err = session.OpenLocks(locksFile); err != nil {
		return fmt.Errorf("login locks (%s): %w", locksFile, err)
	}
	// Kills and locks sent while the agent was away wait in its durable
	// consumer; logins wait for them, for a while (awaitCommands).
	d.commands, err = commands.New(commands.Config{URL: cfg.NATS.URL, HostID: cfg.HostID, NATSOptions: natsOpts, Handler: d, Logger: d.log})
	if err != nil {
		return err
	}
	d.syncDeadline = time.Now().Add(commandsSyncWait)

	var firstApply error
	loaded := false
	d.watcher, err = policy.NewWatcher(cfg.PolicyFile, policy.WatchOptions{
		Enforcement: d.codecs.Enforcement(),
		OnLoad: func(p *policy.Policy) {
			err := d.applyPolicy(ctx, p)
			if !loaded {
				// NewWatcher's own load: start fails on it.
				loaded, firstApply = true, err
				return
			}
			if err != nil {
				d.log.Error().Err(err).Str("policy", cfg.PolicyFile).Msg("policy loaded but not applied")
			}
		},
		OnError: func(err error) {
			d.metrics.PolicyReloadErrors.Inc()
			d.log.Error().Err(err).Msg("policy rejected; the previous policy stays in force")
		},
	})
	if err != nil {
		return policyError(cfg.PolicyFile, err)
	}
	if firstApply != nil {
		return fmt.Errorf("apply policy_file %s: %w", cfg.PolicyFile, firstApply)
	}

	d.control, err = control.Listen(cfg.Socket, d, d.log.With().Str("component", "control").Logger())
	if err != nil {
		return fmt.Errorf("socket %s: %w", cfg.Socket, err)
	}
	return nil
}

// run serves until ctx is done or a component fails. Every goroutine is
// the errgroup's: the first failure stops the others, and run returns it
// once all have returned.
func (d *Daemon) run(ctx context.Context, reload <-chan os.Signal) error {
	defer d.close()
	d.emit(&event.Event{Type: event.AgentStart,
		Data: event.Start{CgroupRoot: d.cfg.CgroupRoot, Proxy: d.cfg.ProxyListen, PolicyDigest: d.currentPolicy().Digest}.Data()})
	d.log.Info().Str("proxy", d.cfg.ProxyListen).Str("socket", d.cfg.Socket).Msg("wardend running")

	g, ctx := errgroup.WithContext(ctx)
	spawn := func(name string, fn func(context.Context) error) {
		g.Go(func() error {
			err := fn(ctx)
			switch {
			case ctx.Err() != nil:
				// Stopping: errors of a component on its way out are
				// not why the daemon stopped.
				if err != nil {
					d.log.Debug().Err(err).Str("component", name).Msg("error while stopping")
				}
				return nil
			case err != nil:
				return fmt.Errorf("%s: %w", name, err)
			default:
				return fmt.Errorf("%s stopped on its own", name)
			}
		})
	}
	spawn("proxy", d.proxy.Serve)
	spawn("control", d.control.Serve)
	spawn("policy watcher", d.watcher.Run)
	spawn("sessions", d.maintainSessions)
	spawn("commands", d.commands.Run)
	spawn("reviews", d.reviews.Run)
	spawn("denials", d.readDenials)
	spawn("kernel losses", d.watchKernelLosses)
	spawn("lineage", d.lineage.Run)
	spawn("resolver", d.refreshTargets)
	spawn("reload", func(ctx context.Context) error {
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-reload:
				d.log.Info().Msg("reloading policy on request")
				d.watcher.Reload() // outcome reported through the watcher callbacks
			}
		}
	})
	if d.metricsLn != nil {
		spawn("metrics", func(ctx context.Context) error { return d.metrics.Serve(ctx, d.metricsLn) })
	}
	err := g.Wait()
	d.emit(&event.Event{Type: event.AgentStop})
	return err
}

// close releases what start opened, however far it got. Pinned BPF
// programs stay attached.
func (d *Daemon) close() {
	if d.recordings != nil {
		d.recordings.Close()
	}
	for _, ln := range d.listeners {
		ln.Close() // the proxy closes them too when it served; twice is harmless
	}
	if d.metricsLn != nil {
		d.metricsLn.Close() // likewise the metrics server
	}
	if d.lineage != nil {
		if err := d.lineage.Close(); err != nil {
			d.log.Warn().Err(err).Msg("close lineage bpf handles")
		}
	}
	if d.enf != nil {
		if err := d.enf.Close(); err != nil {
			d.log.Warn().Err(err).Msg("close bpf handles")
		}
	}
}

// policyError names the policy file in front of its problems, which follow
// one per line as file:line:column: message.
func policyError(path string, err error) error {
	if problems := policy.Errors(err); len(problems) > 0 {
		return fmt.Errorf("policy_file %s is invalid (%s):\n%w", path, plural(len(problems), "problem"), err)
	}
	return fmt.Errorf("policy_file %s: %w", path, err)
}

// plural is "1 problem", "2 problems".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// listenProxy opens the proxy's IPv4 listener on addr and an IPv6 one on
// [::1] and the same port.
func listenProxy(addr string) ([]net.Listener, uint16, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || !ap.Addr().Is4() {
		return nil, 0, fmt.Errorf("proxy_listen %q: want an IPv4 address and port", addr)
	}
	ln4, err := net.Listen("tcp4", addr)
	if err != nil {
		return nil, 0, fmt.Errorf("proxy_listen %s: %w", addr, errnoOf(err))
	}
	port := uint16(ln4.Addr().(*net.TCPAddr).Port)
	// IPv6 targets are redirected to [::1] on the same port. Without IPv6
	// on loopback those connections fail, which is closed, not open.
	ln6, err := net.Listen("tcp6", netip.AddrPortFrom(netip.IPv6Loopback(), port).String())
	if err != nil {
		return []net.Listener{ln4}, port, nil
	}
	return []net.Listener{ln4, ln6}, port, nil
}

// errnoOf returns the system error behind err ("address already in use"),
// or err when there is none: the operator needs the cause, not the call
// chain that met it.
func errnoOf(err error) error {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return err
}

// newVerifier sets up token verification for cfg.OIDC and checks the
// issuer. An issuer that is configured wrong (its discovery document is
// missing, names another issuer, or its certificate is not trusted) stops
// the start at once: no login could ever succeed. One that cannot be
// reached is tried for issuerWait, since the IdP may be coming up with the
// host, then stops the start too, naming the issuer and the network error.
func newVerifier(ctx context.Context, cfg config.Config, log zerolog.Logger) (*idtoken.Verifier, error) {
	// NewVerifier's own discovery attempt is skipped (a done context) so
	// that the one attempt below returns its cause to classify.
	skip, cancel := context.WithCancel(ctx)
	cancel()
	v, err := idtoken.NewVerifier(skip, idtoken.Config{
		Issuer: cfg.OIDC.Issuer, ClientID: cfg.OIDC.ClientID, GroupsClaim: cfg.OIDC.GroupsClaim, CAFile: cfg.OIDC.CAFile,
	})
	if err != nil {
		return nil, fmt.Errorf("oidc: %w", err)
	}
	deadline := time.Now().Add(issuerWait)
	for {
		err = v.Discover(ctx)
		if err == nil || ctx.Err() != nil {
			return v, ctx.Err()
		}
		cause := err
		var ie *idtoken.Error
		if errors.As(err, &ie) && ie.Cause != nil {
			cause = ie.Cause
		}
		if !issuerUnreachable(cause) {
			return nil, fmt.Errorf("oidc.issuer %s is not a usable OpenID Connect issuer: %s", cfg.OIDC.Issuer, oneLine(cause.Error(), 200))
		}
		if time.Now().After(deadline) {
			// Starting without the IdP would accept no login: say so
			// now rather than run a daemon nobody can use.
			return nil, fmt.Errorf("oidc.issuer %s is unreachable (tried for %s): %s", cfg.OIDC.Issuer, issuerWait, oneLine(cause.Error(), 200))
		}
		log.Warn().Err(err).Str("issuer", cfg.OIDC.Issuer).Msg("identity provider unreachable; retrying")
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// issuerWait is how long start-up waits for an unreachable IdP, so that a
// host booting both at once does not fail on the race.
const issuerWait = 10 * time.Second

// issuerUnreachable reports whether a discovery failure is the network's
// (it may pass) rather than the configuration's. A name that does not
// exist is the configuration's.
func issuerUnreachable(err error) bool {
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return !dnsErr.IsNotFound
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) {
		return true
	}
	var netErr net.Error
	return errors.As(err, &netErr) && netErr.Timeout()
}

// oneLine folds s (an HTTP body, say) onto one line of at most n bytes.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// applyPolicy recomputes the kernel's target and access tables, then
// closes the open connections the new policy no longer allows.
func (d *Daemon) applyPolicy(ctx context.Context, p *policy.Policy) error {
	if err := d.installPolicy(ctx, p); err != nil {
		return err
	}
	// Outside d.mu: closing takes up to proxy.CloseTimeout, and every new
	// connection's authorization reads the policy meanwhile.
	d.revokeAccess(ctx, p)
	return nil
}

// installPolicy puts p in force: the kernel's target and access tables and
// the daemon's view.
func (d *Daemon) installPolicy(ctx context.Context, p *policy.Policy) error {
	local, err := targets.LocalAddrs()
	if err != nil {
		return err
	}
	table, err := targets.Build(ctx, p, targets.Options{Resolver: net.DefaultResolver, LocalAddrs: local, ProtocolErrors: d.codecs.ProtocolErrors()})
	if err != nil {
		return err
	}
	for _, msg := range table.Shadowed {
		d.log.Warn().Str("policy", p.Source).Msg("targets overlap: " + msg)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.enf.SyncTargets(table.Entries); err != nil {
		return err
	}
	d.policy, d.table = p, table
	d.redactor.Store(redact.New(p.Redaction))
	if err := d.syncAccessLocked(); err != nil {
		return err
	}
	d.log.Info().Str("policy", p.Source).Str("digest", p.Digest).Int("targets", len(p.Targets)).Int("kernel_entries", len(table.Entries)).Msg("policy applied")
	return nil
}

func (d *Daemon) syncAccess() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.syncAccessLocked()
}

func (d *Daemon) syncAccessLocked() error {
	allowed := map[uint32]map[uint32]uint64{}
	sessions := d.sessions.List()
	d.setSessions(sessions)
	for _, s := range sessions {
		for name, until := range d.reach(d.policy, s) {
			if allowed[s.IdentityID] == nil {
				allowed[s.IdentityID] = map[uint32]uint64{}
			}
			var expires uint64
			if !until.IsZero() {
				expires = session.BootTimeAt(until) // never 0, which would mean no end
			}
			allowed[s.IdentityID][targets.ID(name)] = expires
		}
	}
	d.metrics.SessionsActive.Set(float64(len(sessions)))
	return d.access.SyncAccess(allowed)
}

// reach returns the targets s may connect to under p, each with the end of
// its just-in-time window (zero: no end, a plain access entry).
func (d *Daemon) reach(p *policy.Policy, s *session.Session) map[string]time.Time {
	out := map[string]time.Time{}
	for _, name := range p.TargetsFor(s.Identity.Groups) {
		out[name] = time.Time{}
	}
	if d.reviews == nil {
		return out
	}
	now := time.Now()
	for _, g := range d.reviews.Grants() {
		if g.Sub != s.Identity.Subject || !now.Before(g.Until) {
			continue
		}
		if _, plain := out[g.Target]; plain {
			continue
		}
		// The policy in force must still offer the target for review:
		// removing the access entry withdraws its grants too.
		if _, ok := p.AccessReview(s.Identity.Groups, g.Target); ok {
			out[g.Target] = g.Until
		}
	}
	return out
}

func (d *Daemon) currentPolicy() *policy.Policy {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.policy
}

func (d *Daemon) target(id uint32) (event.Target, bool) {
	_, t, ok := d.lookupTarget(id)
	return t, ok
}

// lookupTarget returns the policy in force, the policy's target with
// kernel id id, and its event view.
func (d *Daemon) lookupTarget(id uint32) (*policy.Policy, event.Target, bool) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	t, ok := d.table.ByID[id]
	if !ok {
		return d.policy, event.Target{Name: fmt.Sprintf("unknown-%d", id)}, false
	}
	return d.policy, event.Target{Name: t.Name, Protocol: t.Protocol, Address: t.Address}, true
}

// authorize attributes a redirected connection and re-checks the kernel's
// verdict against the current sessions and policy: the kernel decided at
// connect(), the session or policy may have changed since.
func (d *Daemon) authorize(info loader.ConnInfo) proxy.Attribution {
	att := proxy.Attribution{Kernel: info}
	att.Process, att.Data = d.attribute(info.TGID, info.UID, info.BootTimeNs, info.SessionCgroupID)
	att.Process.CgroupID = info.CgroupID
	pol, tgt, known := d.lookupTarget(info.TargetID)
	att.Target, att.Policy = tgt, pol
	if known {
		att.TargetPolicy, _ = pol.Target(tgt.Name)
	}
	deny := func(rule, reason string) proxy.Attribution {
		att.Decision = event.Decision{Action: event.Deny, Rule: rule, Reason: reason}
		return att
	}
	if !known {
		return deny("policy", fmt.Sprintf("warden: target id %d is no longer in the policy", info.TargetID))
	}
	switch info.Verdict {
	case loader.VerdictUnbound:
		return deny("identity", MsgUnbound)
	case loader.VerdictExpired:
		return deny("identity", MsgExpired)
	case loader.VerdictAllowed:
	default:
		return deny("kernel", fmt.Sprintf("warden: connection refused (%s)", info.Verdict))
	}
	s, ok := d.sessions.ByIdentity(info.IdentityID)
	if !ok || s.CgroupID != info.SessionCgroupID {
		return deny("identity", MsgUnbound)
	}
	att.Identity = identityOf(s)
	att.SessionID = s.ID
	if !time.Now().Before(s.Expires) {
		return deny("identity", MsgExpired)
	}
	if until, ok := d.reach(pol, s)[tgt.Name]; !ok || (!until.IsZero() && !time.Now().Before(until)) {
		return deny("access", accessDenied(s, tgt.Name))
	}
	att.Decision = event.Decision{Action: event.Allow, Rule: "access"}
	return att
}

func accessDenied(s *session.Session, target string) string {
	return fmt.Sprintf("warden: %s (groups: %s) has no access to target %q; ask for a group listed in its access entry",
		s.Identity.Subject, strings.Join(s.Identity.Groups, ", "), target)
}

func identityOf(s *session.Session) *event.Identity {
	groups := s.Identity.Groups
	if groups == nil {
		groups = []string{}
	}
	return &event.Identity{
		Sub: s.Identity.Subject, Email: s.Identity.Email, Name: s.Identity.Name,
		Groups: groups, Issuer: s.Identity.Issuer, SessionID: s.ID,
	}
}

// readDenials turns the kernel's EPERM decisions into events.
func (d *Daemon) readDenials(ctx context.Context) error {
	rd, err := d.enf.Denials()
	if err != nil {
		return err
	}
	defer rd.Close()
	// Close unblocks Read when the daemon stops.
	stop := context.AfterFunc(ctx, func() { rd.Close() })
	defer stop()
	for {
		den, err := rd.Read()
		if errors.Is(err, ringbuf.ErrClosed) {
			return nil
		}
		if err != nil {
			d.log.Error().Err(err).Msg("read denial")
			d.rec.Lost(lossSourceBPF, reasonDenialUnreadable, 1)
			continue
		}
		d.recordDenial(den)
	}
}

func (d *Daemon) recordDenial(den loader.Denial) {
	tgt, _ := d.target(den.TargetID)
	dec := event.Decision{Action: event.Deny, Rule: "access"}
	var id *event.Identity
	var reviewID string
	switch den.Verdict {
	case loader.VerdictNotAllowed:
		if s, ok := d.sessions.ByIdentity(den.IdentityID); ok {
			id = identityOf(s)
			dec.Reason = accessDenied(s, tgt.Name)
			if r := d.reviews.PendingAccess(s.Identity.Subject, tgt.Name); r != "" {
				dec.Reason = fmt.Sprintf("warden: access to %q waits for review %s", tgt.Name, r)
				reviewID = r
			}
		} else {
			dec.Reason = fmt.Sprintf("warden: identity has no access to target %q", tgt.Name)
		}
	case loader.VerdictExpired:
		dec.Rule, dec.Reason = "identity", MsgExpired
	case loader.VerdictUnbound:
		dec.Rule, dec.Reason = "identity", MsgUnbound
	default:
		dec.Rule, dec.Reason = "kernel", fmt.Sprintf("warden: connection refused (%s)", den.Verdict)
	}
	d.metrics.Denied(tgt.Name, den.Verdict.String())
	proc, extra := d.attribute(den.TGID, den.UID, den.BootTimeNs, den.SessionCgroupID)
	proc.CgroupID = den.CgroupID
	if proc.Binary == "" {
		proc.Binary = den.Comm
	}
	data := event.Connect{OriginalDst: den.OrigDst.String(), Verdict: den.Verdict.String(), Via: "kernel", Errno: "EPERM", Notes: extra, ReviewID: reviewID}
	d.emit(&event.Event{
		Type: event.NetConnect, Identity: id, Process: proc, Target: &tgt, Decision: &dec, Data: data.Data(),
	})
}

// watchKernelLosses reports records the BPF programs could not deliver.
func (d *Daemon) watchKernelLosses(ctx context.Context) error {
	lossCounters := []string{"denial_lost", "conn_lost", "storage_failed"}
	seen := map[string]uint64{}
	if c, err := d.enf.Counters(); err == nil {
		for _, n := range lossCounters {
			seen[n] = c[n]
		}
	}
	t := time.NewTicker(kernelLossInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		c, err := d.enf.Counters()
		if err != nil {
			d.log.Error().Err(err).Msg("read kernel counters")
			continue
		}
		for _, n := range lossCounters {
			if c[n] > seen[n] {
				d.rec.Lost(lossSourceBPF, n, c[n]-seen[n])
				seen[n] = c[n]
			}
		}
	}
}

// maintainSessions expires sessions on time and removes empty session
// cgroups. The kernel refuses an expired binding on its own clock; this
// closes what is open and records it.
//
// It sleeps until the next session's expiry (woken by logins, which may
// move it), at most expiryMaxWait: a fixed one-second tick would close a
// connection up to a second after its expiry, on top of the closing
// itself, and "closed within 1 s of expiry" would not hold.
func (d *Daemon) maintainSessions(ctx context.Context) error {
	timer := time.NewTimer(d.untilNextExpiry())
	defer timer.Stop()
	reap := time.NewTicker(30 * time.Second)
	defer reap.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-reap.C:
			d.sessions.Reap()
		case <-d.expiryWake:
		case <-timer.C:
			d.expireSessions(ctx, time.Now())
		}
		timer.Reset(d.untilNextExpiry())
	}
}

// refreshTargets re-resolves DNS-named targets periodically.
func (d *Daemon) refreshTargets(ctx context.Context) error {
	t := time.NewTicker(resolveInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		p := d.currentPolicy()
		if !hasNamedTargets(p) {
			continue
		}
		if err := d.applyPolicy(ctx, p); err != nil {
			d.log.Warn().Err(err).Msg("re-resolve targets; keeping the previous addresses")
		}
	}
}

func hasNamedTargets(p *policy.Policy) bool {
	for _, t := range p.Targets {
		if ep, err := t.Endpoint(); err == nil && ep.IsName() {
			return true
		}
	}
	return false
}

// emit records an event about something that has already happened (a
// login bound, a kernel denial, the agent's own start and stop): there is
// nothing left to refuse. A failure is counted by the recorder and
// reported in an agent.loss event; it is only logged at debug level here,
// since a full spool would otherwise flood the log.
func (d *Daemon) emit(e *event.Event) {
	if err := d.rec.Emit(e); err != nil {
		d.log.Debug().Err(err).Str("type", string(e.Type)).Msg("event not recorded")
	}
}

// auditFailure is the proxy's setting for audit_failure, which config
// validation restricts to deny and allow.
func auditFailure(s string) proxy.AuditFailure {
	if s == config.AuditAllow {
		return proxy.FailOpen
	}
	return proxy.FailClosed
}

// emitSession records a session event; closed lists the connections the
// session's end closed (nil for a login).
func (d *Daemon) emitSession(typ event.Type, s *session.Session, proc *event.Process, closed []event.ClosedConnection) {
	d.emit(&event.Event{Type: typ, Identity: identityOf(s), Process: proc,
		Data: event.Session{UID: s.UID, Cgroup: s.Cgroup, LoginTime: s.LoginTime, Expires: s.Expires, ConnectionsClosed: closed}.Data()})
}

// openClientTLS loads (or creates) the authority behind the TLS the proxy
// offers clients, unless client_tls.mode is off, and publishes its
// certificate beside the control socket, whose directory every user can
// reach (state_dir is root's alone).
func openClientTLS(cfg config.Config) (func(netip.Addr) *tls.Config, error) {
	if cfg.ClientTLS.Mode == config.ClientTLSOff {
		return nil, nil
	}
	certFile, keyFile := cfg.ClientCAFiles()
	ca, err := clientca.Open(certFile, keyFile, cfg.HostID)
	if err != nil {
		return nil, err
	}
	if err := ca.WriteCertificate(cfg.PublicClientCA()); err != nil {
		return nil, err
	}
	return ca.ServerConfig, nil
}
