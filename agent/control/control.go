// Package control is the agent's local API on a unix socket, used by the
// warden CLI for login, logout and whoami. The caller is identified by the
// kernel (SO_PEERCRED), never by anything it sends.
package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/wardenhq/warden/agent/session"
	"github.com/wardenhq/warden/pkg/review"
)

// MaxTokenBytes bounds a login request; real ID tokens are a few KiB.
const MaxTokenBytes = 64 << 10

// Service is what the socket exposes.
type Service interface {
	Login(ctx context.Context, peer session.Peer, rawIDToken string) (*session.Session, error)
	Logout(ctx context.Context, peer session.Peer) (*session.Session, error)
	Whoami(ctx context.Context, peer session.Peer) (*session.Session, error)
	// IdP says which identity provider the agent trusts, so the CLI can run
	// the device flow against it. Nothing in it is secret.
	IdP() IdPInfo
	// RequestAccess opens a just-in-time access review of target for the
	// caller's verified identity.
	RequestAccess(ctx context.Context, peer session.Peer, req AccessRequest) (*review.Review, error)
}

// AccessRequest is the body of POST /v1/access.
type AccessRequest struct {
	Target string `json:"target"`
	Reason string `json:"reason"`
	// For is the window asked for; 0 means the policy's grant.
	For review.Duration `json:"for,omitempty"`
}

// maxAccessRequest bounds the body of POST /v1/access.
const maxAccessRequest = 8 << 10

// IdPInfo is the body of GET /v1/idp.
type IdPInfo struct {
	Issuer   string `json:"issuer"`
	ClientID string `json:"client_id"`
	CAFile   string `json:"ca_file,omitempty"`
}

// LoginRequest is the body of POST /v1/login.
type LoginRequest struct {
	IDToken string `json:"id_token"`
}

// ErrorResponse is the body of every failed request.
type ErrorResponse struct {
	Error string `json:"error"`
}

type peerKey struct{}

// Server serves Service on a unix socket.
type Server struct {
	path string
	svc  Service
	log  zerolog.Logger
	http *http.Server
	ln   net.Listener
}

// Listen creates the socket at path, replacing a stale one. The socket is
// world-writable on purpose: any user may log in; who they are is decided
// by the token and by SO_PEERCRED.
func Listen(path string, svc Service, log zerolog.Logger) (*Server, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create socket dir: %w", err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale socket %s: %w", path, err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o666); err != nil {
		ln.Close()
		return nil, fmt.Errorf("chmod %s: %w", path, err)
	}
	s := &Server{path: path, svc: svc, log: log, ln: ln}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/login", s.login)
	mux.HandleFunc("POST /v1/logout", s.logout)
	mux.HandleFunc("GET /v1/whoami", s.whoami)
	mux.HandleFunc("POST /v1/access", s.access)
	mux.HandleFunc("GET /v1/idp", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(svc.IdP())
	})
	s.http = &http.Server{
		Handler: mux,
		// Any local user can connect: bound every phase so none can hold a
		// handler open by stalling.
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			peer, err := peerOf(c)
			if err != nil {
				log.Warn().Err(err).Msg("control connection without peer credentials")
				return ctx
			}
			return context.WithValue(ctx, peerKey{}, peer)
		},
	}
	return s, nil
}

// Serve answers requests until ctx is done.
func (s *Server) Serve(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.http.Serve(s.ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("control socket: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.http.Shutdown(shutdownCtx)
	<-errc
	os.Remove(s.path)
	return err
}

func peerOf(c net.Conn) (session.Peer, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return session.Peer{}, errors.New("not a unix connection")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return session.Peer{}, err
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return session.Peer{}, err
	}
	if credErr != nil {
		return session.Peer{}, fmt.Errorf("SO_PEERCRED: %w", credErr)
	}
	return session.Peer{PID: int(cred.Pid), UID: cred.Uid}, nil
}

func (s *Server) peer(w http.ResponseWriter, r *http.Request) (session.Peer, bool) {
	p, ok := r.Context().Value(peerKey{}).(session.Peer)
	if !ok {
		writeError(w, http.StatusForbidden, errors.New("the kernel did not identify the calling process"))
	}
	return p, ok
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	peer, ok := s.peer(w, r)
	if !ok {
		return
	}
	var req LoginRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxTokenBytes)).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("login request is not valid JSON with an id_token: %w", err))
		return
	}
	sess, err := s.svc.Login(r.Context(), peer, req.IDToken)
	s.reply(w, sess, err, http.StatusUnauthorized)
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	if peer, ok := s.peer(w, r); ok {
		sess, err := s.svc.Logout(r.Context(), peer)
		s.reply(w, sess, err, http.StatusNotFound)
	}
}

func (s *Server) whoami(w http.ResponseWriter, r *http.Request) {
	if peer, ok := s.peer(w, r); ok {
		sess, err := s.svc.Whoami(r.Context(), peer)
		s.reply(w, sess, err, http.StatusNotFound)
	}
}

func (s *Server) access(w http.ResponseWriter, r *http.Request) {
	peer, ok := s.peer(w, r)
	if !ok {
		return
	}
	var req AccessRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxAccessRequest))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("access request is not valid JSON with a target and a reason: %w", err))
		return
	}
	rev, err := s.svc.RequestAccess(r.Context(), peer, req)
	if err != nil {
		writeError(w, http.StatusForbidden, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(rev)
}

func (s *Server) reply(w http.ResponseWriter, sess *session.Session, err error, status int) {
	if err != nil {
		writeError(w, status, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(sess)
}

func writeError(w http.ResponseWriter, status int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(ErrorResponse{Error: err.Error()})
}

// Client talks to the agent's socket.
type Client struct {
	http *http.Client
}

// NewClient returns a client for the socket at path.
func NewClient(path string) *Client {
	return &Client{http: &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}},
	}}
}

// Login binds the identity in rawIDToken to the caller's shell.
func (c *Client) Login(ctx context.Context, rawIDToken string) (*session.Session, error) {
	body, _ := json.Marshal(LoginRequest{IDToken: rawIDToken})
	return c.do(ctx, http.MethodPost, "/v1/login", body)
}

// Logout unbinds the caller's session.
func (c *Client) Logout(ctx context.Context) (*session.Session, error) {
	return c.do(ctx, http.MethodPost, "/v1/logout", nil)
}

// Whoami returns the caller's session.
func (c *Client) Whoami(ctx context.Context) (*session.Session, error) {
	return c.do(ctx, http.MethodGet, "/v1/whoami", nil)
}

// IdP returns the identity provider the agent trusts.
func (c *Client) IdP(ctx context.Context) (IdPInfo, error) {
	var info IdPInfo
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://wardend/v1/idp", nil)
	if err != nil {
		return info, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return info, fmt.Errorf("reach wardend: %w", err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&info); err != nil {
		return info, fmt.Errorf("decode wardend reply: %w", err)
	}
	return info, nil
}

// RequestAccess asks for a just-in-time window on a target.
func (c *Client) RequestAccess(ctx context.Context, req AccessRequest) (*review.Review, error) {
	body, _ := json.Marshal(req)
	var r review.Review
	if err := c.call(ctx, http.MethodPost, "/v1/access", body, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

func (c *Client) do(ctx context.Context, method, path string, body []byte) (*session.Session, error) {
	var s session.Session
	if err := c.call(ctx, method, path, body, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

func (c *Client) call(ctx context.Context, method, path string, body []byte, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, "http://wardend"+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("reach wardend: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e ErrorResponse
		if json.NewDecoder(resp.Body).Decode(&e) == nil && e.Error != "" {
			return errors.New(e.Error)
		}
		return fmt.Errorf("wardend answered %s", resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decode wardend reply: %w", err)
	}
	return nil
}
