package http

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	nethttp "net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/wardenhq/warden/agent/proxy"
	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/pkg/guard"
	"github.com/wardenhq/warden/pkg/policy"
	httpwire "github.com/wardenhq/warden/pkg/protocol/http"
)

// Rule names of the codec's own refusals, in decisions and denial bodies.
const (
	ruleAmbiguous = "ambiguous"
	ruleUpgrade   = "upgrade"
	ruleAudit     = "audit"
)

// Identity headers, set by Warden on every forwarded request; whatever
// the client sent under X-Warden- is dropped first.
const (
	headerUser     = "X-Warden-User"
	headerGroups   = "X-Warden-Groups"
	headerIdentity = "X-Warden-Identity"
)

// stream serves the requests of one client connection.
type stream struct {
	c        *Codec
	s        *proxy.Stream
	target   policy.Target
	scheme   string
	maxBody  int64
	rules    map[string]policy.Rule
	rp       *httputil.ReverseProxy
	tr       *nethttp.Transport
	upstream atomic.Pointer[net.Conn] // the proxy's connection, used by the first dial
	// results carries http.response records to the stream's recording
	// goroutine: the request was recorded before it went out, and its
	// result need not hold the client's next request on a keep-alive
	// connection while the spool syncs.
	results  chan resultRecord
	recorded chan struct{} // closed when the recording goroutine ends
}

// resultRecord is one http.response to record.
type resultRecord struct {
	receipt proxy.Receipt
	data    event.HTTPResponseData
}

func newStream(c *Codec, s *proxy.Stream) (*stream, error) {
	att := s.Attribution
	st := &stream{c: c, s: s, target: att.TargetPolicy, scheme: "http", maxBody: att.TargetPolicy.HTTPSettings().MaxBody,
		rules: map[string]policy.Rule{}, results: make(chan resultRecord, 64), recorded: make(chan struct{})}
	go st.recordResults()
	if att.Policy != nil {
		for _, r := range att.Policy.RulesFor(att.Target.Name) {
			st.rules[r.Name] = r
		}
	}
	up := s.Upstream
	st.upstream.Store(&up)
	st.tr = &nethttp.Transport{
		DialContext:           st.dial,
		MaxConnsPerHost:       16,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
		// Warden decides what encodings to ask for (see forward), and
		// speaks HTTP/1.1 upstream whatever the client speaks.
		DisableCompression: true,
		TLSNextProto:       map[string]func(string, *tls.Conn) nethttp.RoundTripper{},
	}
	if att.Target.Protocol == policy.ProtocolHTTPS || st.target.UpstreamTLS().Enabled() {
		cfg, err := st.upstreamTLS()
		if err != nil {
			return nil, fmt.Errorf("upstream TLS for %s: %w", att.Target.Name, err)
		}
		st.scheme = "https"
		st.tr.DialTLSContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			raw, err := st.dial(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			tc := tls.Client(raw, cfg)
			if err := tc.HandshakeContext(ctx); err != nil {
				raw.Close()
				return nil, fmt.Errorf("TLS to %s: %w", att.Target.Name, err)
			}
			return tc, nil
		}
	}
	st.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = st.scheme
			pr.Out.URL.Host = att.Kernel.OrigDst.String()
			pr.Out.Host = pr.In.Host
			for k := range pr.Out.Header {
				if strings.HasPrefix(k, "X-Warden-") {
					delete(pr.Out.Header, k)
				}
			}
			if set, ok := pr.In.Context().Value(setKey{}).(nethttp.Header); ok {
				for k, v := range set {
					pr.Out.Header[k] = v
				}
			}
		},
		Transport:      st.tr,
		FlushInterval:  -1, // server-sent events and long polls pass at once
		ModifyResponse: st.modifyResponse,
		ErrorHandler:   st.upstreamError,
		ErrorLog:       debugLog(s.Log),
	}
	return st, nil
}

// upstreamTLS is the TLS to the target: the target's tls settings, or
// for an https target without any, verify-full against the system roots.
func (st *stream) upstreamTLS() (*tls.Config, error) {
	t := st.target
	if !t.UpstreamTLS().Enabled() {
		t.TLS = policy.UpstreamTLS{Mode: policy.TLSVerifyFull}
	}
	cfg, err := proxy.UpstreamTLSConfig(t, "http/1.1")
	if err != nil {
		return nil, err
	}
	if t.TLS.ServerName != "" && t.UpstreamTLS().Mode == policy.TLSVerifyFull {
		cfg.ServerName = t.TLS.ServerName
	}
	return cfg, nil
}

// dial hands the transport the proxy's own upstream connection first,
// then dials the same destination again for further connections (the
// client sent requests in parallel, or the target closed an idle one).
// The agent's own connections are not redirected by the kernel.
func (st *stream) dial(ctx context.Context, network, _ string) (net.Conn, error) {
	if c := st.upstream.Swap(nil); c != nil && *c != nil {
		return *c, nil
	}
	d := net.Dialer{Timeout: 10 * time.Second}
	return d.DialContext(ctx, "tcp", st.s.Attribution.Kernel.OrigDst.String())
}

// close releases the stream's upstream connections and waits until every
// result is recorded.
func (st *stream) close() {
	st.tr.CloseIdleConnections()
	close(st.results)
	<-st.recorded
}

// recordResults records the stream's http.response events, in order.
func (st *stream) recordResults() {
	defer close(st.recorded)
	for r := range st.results {
		if err := st.s.Audit.Result(r.receipt, event.HTTPResponse, r.data); err != nil {
			st.s.Log.Debug().Err(err).Msg("http.response not recorded")
		}
	}
}

// ServeHTTP decides one request and forwards it or refuses it.
func (st *stream) ServeHTTP(w nethttp.ResponseWriter, r *nethttp.Request) {
	start := time.Now()
	rec := event.HTTPRequestData{Method: r.Method, Host: r.Host, Proto: r.Proto}
	if rf, ok := r.Context().Value(refusalKey{}).(*refusal); ok {
		rec.Method, rec.Path, rec.Host = rf.Method, rawPath(rf.Target), ""
		st.refuse(w, rec, nethttp.StatusBadRequest, ruleAmbiguous, "warden: request refused: "+rf.Reason, "", true)
		return
	}
	// The request target as the client sent it (HTTP/2's :path).
	raw := r.RequestURI
	if raw == "" {
		raw = r.URL.RequestURI()
	}
	rawP, rawQ, _ := strings.Cut(raw, "?")
	rec.Path, rec.Query = rawPath(rawP), redactQuery(rawQ)
	upgrade := upgradeOf(r)
	rec.Upgrade = upgrade

	path := "*"
	if !(r.Method == nethttp.MethodOptions && rawP == "*") {
		p, err := httpwire.Canonical(rawP)
		if err != nil {
			reason := err.Error()
			var amb *httpwire.AmbiguousError
			if errors.As(err, &amb) {
				reason = "ambiguous request: " + amb.Reason
			}
			st.refuse(w, rec, nethttp.StatusBadRequest, ruleAmbiguous, "warden: "+reason+"; refused because servers read it differently", "", upgrade != "")
			return
		}
		path = p
	}
	rec.Path = path
	req := guard.Request{
		Commands: []string{r.Method}, Method: r.Method, Path: path, Upgrade: upgrade,
		Text:  r.Method + " " + path,
		Exact: r.Method + " " + path + "?" + rawQ,
	}
	v := st.s.Guard.Check([]guard.Request{req})
	if v.Action == policy.Review {
		v = st.s.Guard.Decide(r.Context(), []guard.Request{req}, guard.Hold{})
	}
	rec.ReviewID = v.ReviewID()
	switch v.Action {
	case policy.Deny:
		st.refuse(w, rec, nethttp.StatusForbidden, v.Rule,
			fmt.Sprintf("warden: %s %s denied by rule %q", r.Method, path, v.Rule), "", upgrade != "")
		return
	case policy.Review:
		st.refuse(w, rec, nethttp.StatusForbidden, v.Rule, reviewMessage(r.Method, path, v.Rule, v.Review), v.ReviewID(), upgrade != "")
		return
	}
	if upgrade != "" && !st.allowsUpgrade(v.Rule) {
		st.refuse(w, rec, nethttp.StatusForbidden, ruleUpgrade,
			fmt.Sprintf("warden: upgrade to %s is not allowed on %s; an allow rule with when.upgrade must name it", upgrade, st.s.Attribution.Target.Name), "", true)
		return
	}
	dec := event.Decision{Action: event.Allow, Rule: v.Rule}
	receipt, err := st.s.Audit.Request(event.HTTPRequest, dec, rec)
	if err != nil {
		var u *proxy.UnrecordedError
		cause := "audit error"
		if errors.As(err, &u) {
			cause = u.Cause
		}
		st.s.Log.Warn().Err(err).Msg("http request refused: the audit log cannot record it")
		w.Header().Set("Retry-After", "5")
		closeIfUpgrade(w, r)
		writeJSON(w, nethttp.StatusServiceUnavailable, denial{Error: fmt.Sprintf("warden: the audit log cannot record this request (%s); refusing", cause), Rule: ruleAudit})
		return
	}
	st.forward(w, r, path, receipt, start, upgrade)
}

// forward sends an allowed request to the target and the response back.
func (st *stream) forward(w nethttp.ResponseWriter, r *nethttp.Request, path string, receipt proxy.Receipt, start time.Time, upgrade string) {
	mres := &maskResult{}
	out := r.Clone(context.WithValue(r.Context(), maskKey{}, mres))
	// The target gets the path that was judged, not one it might decode
	// differently.
	out.URL = &url.URL{Path: path, RawQuery: out.URL.RawQuery}
	if path == "*" {
		out.URL = &url.URL{Opaque: "*"}
	}
	// Warden's headers are set in Rewrite, after the reverse proxy has
	// removed the hop-by-hop ones: a client's "Connection:
	// X-Warden-Identity" (or Authorization) must not take them off.
	set := nethttp.Header{}
	out = out.WithContext(context.WithValue(out.Context(), setKey{}, set))
	if err := st.identityHeaders(set); err != nil {
		st.s.Log.Error().Err(err).Msg("identity token not signed; request refused")
		closeIfUpgrade(w, r)
		writeJSON(w, nethttp.StatusServiceUnavailable, denial{Error: "warden: cannot sign the identity token for this request", Rule: ruleAudit})
		return
	}
	if cr := st.target.Credentials; cr != nil && cr.Header != "" {
		val, err := readSecret(cr.ValueFile)
		if err != nil {
			// The file's name only: never its content.
			st.s.Log.Error().Err(err).Str("value_file", cr.ValueFile).Msg("credential not read; request refused")
			closeIfUpgrade(w, r)
			writeJSON(w, nethttp.StatusBadGateway, denial{Error: fmt.Sprintf("warden: the credential for %s cannot be read; tell the Warden administrator", st.s.Attribution.Target.Name), Rule: "credentials"})
			return
		}
		set.Set(cr.Header, val)
	}
	if st.s.Guard.Masker() != nil {
		// Bodies Warden must read are asked for unencoded.
		set.Set("Accept-Encoding", "identity")
	}
	body := &countingBody{ReadCloser: out.Body}
	if out.Body != nil && out.Body != nethttp.NoBody {
		out.Body = body
	}
	cw := &countingWriter{ResponseWriter: w, status: nethttp.StatusOK}
	// The result is recorded however the response ends: the reverse
	// proxy aborts a response it cannot finish (a body that could not be
	// masked) by panicking with http.ErrAbortHandler, which net/http
	// expects back.
	aborted := true
	defer func() {
		if aborted {
			if _, _, merr := mres.get(); merr == nil {
				mres.fail(errors.New("the response was cut short"))
			}
		}
		st.results <- st.result(receipt, cw, body, mres, start)
	}()
	st.rp.ServeHTTP(cw, out)
	aborted = false
}

// result is the http.response record of a forwarded request.
func (st *stream) result(receipt proxy.Receipt, cw *countingWriter, body *countingBody, mres *maskResult, start time.Time) resultRecord {
	res := event.HTTPResponseData{RequestID: receipt.ID}
	res.Status, res.BytesIn, res.BytesOut = cw.status, body.n.Load(), cw.n.Load()
	res.Upgraded = cw.status == nethttp.StatusSwitchingProtocols
	res.DurationMS = float64(time.Since(start).Microseconds()) / 1000
	keys, detected, merr := mres.get()
	res.MaskedKeys, res.Detected = keys, detected
	if merr != nil {
		res.Error = merr.Error()
	}
	if e := cw.err(); e != "" && res.Error == "" {
		res.Error = e
	}
	return resultRecord{receipt, res}
}

// maskKey carries a request's maskResult to modifyResponse.
type maskKey struct{}

// setKey carries the headers Warden sets on a forwarded request to the
// reverse proxy's Rewrite.
type setKey struct{}

// modifyResponse masks the response body, when masking applies.
func (st *stream) modifyResponse(resp *nethttp.Response) error {
	// Never pass the injected credential back, should the target echo it
	// in a header.
	if cr := st.target.Credentials; cr != nil && cr.Header != "" {
		resp.Header.Del(cr.Header)
	}
	if upgradeOf(resp.Request) != "" && resp.StatusCode != nethttp.StatusSwitchingProtocols {
		// The target declined the upgrade. The screen has stopped reading
		// requests on this connection (it expected another protocol), so
		// no further request may follow on it.
		resp.Header.Set("Connection", "close")
	}
	m := st.s.Guard.Masker()
	if m == nil || resp.StatusCode == nethttp.StatusSwitchingProtocols {
		return nil
	}
	res, _ := resp.Request.Context().Value(maskKey{}).(*maskResult)
	if res == nil {
		res = &maskResult{}
	}
	return maskResponse(resp, m, st.maxBody, res)
}

// upstreamError answers a request the target did not answer, or whose
// answer could not be masked.
func (st *stream) upstreamError(w nethttp.ResponseWriter, r *nethttp.Request, err error) {
	msg := fmt.Sprintf("warden: target %s did not answer", st.s.Attribution.Target.Name)
	var mb errMaxBody
	switch {
	case errors.As(err, &mb):
		msg = mb.Error()
	case strings.HasPrefix(err.Error(), "warden: "):
		msg = err.Error()
	case errors.Is(err, context.Canceled):
		return // the client went away
	}
	if res, ok := r.Context().Value(maskKey{}).(*maskResult); ok {
		res.fail(errors.New(msg))
	}
	st.s.Log.Debug().Err(err).Msg("upstream error")
	closeIfUpgrade(w, r)
	writeJSON(w, nethttp.StatusBadGateway, denial{Error: msg, Rule: ""})
}

// refuse answers a request Warden does not forward, and records it.
// closeConn ends the connection after the answer: after an upgrade
// request what follows may not be HTTP, and after a screened refusal the
// stream cannot be read safely.
func (st *stream) refuse(w nethttp.ResponseWriter, rec event.HTTPRequestData, status int, rule, msg, reviewID string, closeConn bool) {
	rec.Status = status
	action := event.Deny
	if reviewID != "" {
		action = event.Review
	}
	if _, err := st.s.Audit.Request(event.HTTPRequest, event.Decision{Action: action, Rule: rule, Reason: msg}, rec); err != nil {
		st.s.Log.Debug().Err(err).Msg("refused request not recorded")
	}
	st.s.Log.Info().Str("method", rec.Method).Str("path", rec.Path).Str("rule", rule).Int("status", status).Msg("http request refused")
	if closeConn {
		w.Header().Set("Connection", "close")
	}
	writeJSON(w, status, denial{Error: msg, Rule: rule, Review: reviewID})
}

// allowsUpgrade reports whether the rule that allowed a request lets it
// switch protocols: only an allow rule with an upgrade condition does.
func (st *stream) allowsUpgrade(rule string) bool {
	r, ok := st.rules[rule]
	return ok && r.Action == policy.Allow && len(r.When.Upgrade) > 0
}

// identityHeaders sets who is behind the request.
func (st *stream) identityHeaders(h nethttp.Header) error {
	id := st.s.Attribution.Identity
	if id == nil {
		// The proxy only serves attributed streams; be explicit anyway.
		return errors.New("no identity")
	}
	user := id.Email
	if user == "" {
		user = id.Sub
	}
	h.Set(headerUser, headerValue(user))
	groups := make([]string, 0, len(id.Groups))
	for _, g := range id.Groups {
		groups = append(groups, headerValue(strings.ReplaceAll(g, ",", " ")))
	}
	h.Set(headerGroups, strings.Join(groups, ","))
	if st.c.opts.Identity == nil {
		return nil
	}
	tok, err := st.c.opts.Identity.Sign(id, st.s.Attribution.Target.Name)
	if err != nil {
		return err
	}
	h.Set(headerIdentity, tok)
	return nil
}

// headerValue drops what cannot be in a header value.
func headerValue(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, s)
}

// upgradeOf is the protocol r asks to switch to, lower case, "" for none.
func upgradeOf(r *nethttp.Request) string {
	asked := false
	for _, v := range r.Header["Connection"] {
		for _, tok := range strings.Split(v, ",") {
			asked = asked || strings.EqualFold(strings.TrimSpace(tok), "upgrade")
		}
	}
	if !asked {
		return ""
	}
	u := strings.TrimSpace(r.Header.Get("Upgrade"))
	if i := strings.IndexAny(u, ",/ "); i >= 0 {
		u = u[:i]
	}
	if u == "" {
		return ""
	}
	return strings.ToLower(u)
}

// reviewMessage words a request a review did not let through.
func reviewMessage(method, path, rule string, r *guard.ReviewResult) string {
	if r == nil {
		return fmt.Sprintf("warden: %s %s requires review (rule %q)", method, path, rule)
	}
	switch r.Outcome {
	case guard.ReviewDenied:
		msg := fmt.Sprintf("warden: review %s denied by %s", r.ID, r.By)
		if r.Reason != "" {
			msg += ": " + r.Reason
		}
		return msg
	case guard.ReviewPending:
		return fmt.Sprintf("warden: %s %s requires review %s (rule %q) and was not approved in time; send it again once approved (warden review show %s)", method, path, r.ID, rule, r.ID)
	case guard.ReviewCancelled:
		return fmt.Sprintf("warden: request withdrawn while waiting for review %s", r.ID)
	}
	return fmt.Sprintf("warden: rule %q requires a review, and none could be opened (%s); retry later", rule, r.Detail)
}

// rawPath is a path as sent, cut for the record.
func rawPath(p string) string { return clip(p, 256) }

// redactQuery keeps a query's keys and replaces every value with "*":
// URLs carry tokens and personal data often enough that values are not
// recorded.
func redactQuery(q string) string {
	if q == "" {
		return ""
	}
	parts := strings.Split(q, "&")
	for i, p := range parts {
		k, _, hasValue := strings.Cut(p, "=")
		if hasValue {
			parts[i] = clip(k, 64) + "=*"
		} else {
			parts[i] = clip(k, 64)
		}
	}
	return clip(strings.Join(parts, "&"), 1024)
}

// readSecret reads a credential file, without its trailing newline.
func readSecret(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read credential file: %w", err)
	}
	v := strings.TrimRight(string(b), "\r\n")
	if v == "" || strings.ContainsAny(v, "\r\n\x00") {
		return "", fmt.Errorf("credential file %s: want one non-empty line", path)
	}
	return v, nil
}

// countingBody counts the request body bytes read.
type countingBody struct {
	io.ReadCloser
	n atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

// countingWriter records the status and counts the body bytes written.
type countingWriter struct {
	nethttp.ResponseWriter
	status  int
	n       atomic.Int64
	wrote   bool
	aborted atomic.Bool
}

func (w *countingWriter) WriteHeader(code int) {
	if !w.wrote && code >= 200 || code == nethttp.StatusSwitchingProtocols {
		w.status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.wrote = true
	n, err := w.ResponseWriter.Write(p)
	w.n.Add(int64(n))
	if err != nil {
		w.aborted.Store(true)
	}
	return n, err
}

func (w *countingWriter) err() string {
	if w.aborted.Load() {
		return "the client went away before the response ended"
	}
	return ""
}

// Unwrap lets http.ResponseController reach the connection (flushes,
// and the hijack of an upgrade).
func (w *countingWriter) Unwrap() nethttp.ResponseWriter { return w.ResponseWriter }

// Flush passes flushes on, for streamed responses.
func (w *countingWriter) Flush() {
	if f, ok := w.ResponseWriter.(nethttp.Flusher); ok {
		f.Flush()
	}
}

// closeIfUpgrade ends the connection after this answer when r asked to
// switch protocols: the screen passed what followed r on as another
// protocol, so no request may be read after it.
func closeIfUpgrade(w nethttp.ResponseWriter, r *nethttp.Request) {
	if upgradeOf(r) != "" {
		w.Header().Set("Connection", "close")
	}
}
