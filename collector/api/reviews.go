package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/wardenhq/warden/collector/reviews"
	cc "github.com/wardenhq/warden/pkg/collectorclient"
	"github.com/wardenhq/warden/pkg/idtoken"
	"github.com/wardenhq/warden/pkg/review"
)

// Limits of the review endpoints.
const (
	// DefaultReviewLimit and MaxReviewLimit bound GET /v1/reviews.
	DefaultReviewLimit = 100
	MaxReviewLimit     = 1000
	// maxDecisionBody bounds an approve or deny body.
	maxDecisionBody = 16 << 10
)

// reviewRoutes are the review endpoints, part of routes. Each one
// identifies the caller itself (accessHandler): who may see or decide a
// review depends on the review (its requester and approver groups), not
// on a fixed group.
func (s *Server) reviewRoutes() []route {
	return []route{
		{"GET /v1/reviews", accessHandler, s.listReviews},
		{"GET /v1/reviews/{id}", accessHandler, s.getReview},
		{"POST /v1/reviews/{id}/approve", accessHandler, func(w http.ResponseWriter, r *http.Request) { s.decideReview(w, r, true) }},
		{"POST /v1/reviews/{id}/deny", accessHandler, func(w http.ResponseWriter, r *http.Request) { s.decideReview(w, r, false) }},
	}
}

// reviewer identifies the caller and checks that reviews are served. On
// failure it has written the answer.
func (s *Server) reviewer(w http.ResponseWriter, r *http.Request) (*idtoken.Claims, review.Person, bool) {
	claims, ok := s.identify(w, r)
	if !ok {
		return nil, review.Person{}, false
	}
	if s.cfg.Reviews == nil {
		writeError(w, http.StatusServiceUnavailable, "this collector serves no reviews")
		return nil, review.Person{}, false
	}
	return claims, review.Person{Sub: claims.Subject, Email: claims.Email, Groups: claims.Groups}, true
}

// maySee reports whether someone may see rv: readers see every review,
// others those they requested or may decide.
func (s *Server) maySee(c *idtoken.Claims, p review.Person, rv *review.Review) bool {
	return s.isReader(c) || rv.Requester.Sub == p.Sub || len(rv.Decider(p)) > 0
}

// listReviews serves GET /v1/reviews?state=&kind=&limit=, newest first.
func (s *Server) listReviews(w http.ResponseWriter, r *http.Request) {
	claims, p, ok := s.reviewer(w, r)
	if !ok {
		return
	}
	q, err := parseReviewQuery(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if !s.isReader(claims) {
		q.Keep = func(rv *review.Review) bool { return s.maySee(claims, p, rv) }
	}
	rs, err := s.cfg.Reviews.List(r.Context(), q)
	if err != nil {
		s.internal(w, err)
		return
	}
	if rs == nil {
		rs = []review.Review{}
	}
	writeJSON(w, http.StatusOK, cc.ReviewList{Reviews: rs})
}

func parseReviewQuery(r *http.Request) (reviews.Query, error) {
	q := reviews.Query{States: []review.State{review.Pending}, Limit: DefaultReviewLimit}
	v := r.URL.Query()
	for k, vals := range v {
		if k != "state" && k != "kind" && k != "limit" {
			return q, &paramError{k, "unknown parameter for this endpoint (state, kind, limit)"}
		}
		if len(vals) > 1 {
			return q, &paramError{k, "given more than once"}
		}
	}
	switch st := v.Get("state"); st {
	case "":
	case "all":
		q.States = nil
	case string(review.Pending), string(review.Approved), string(review.Denied), string(review.Expired):
		q.States = []review.State{review.State(st)}
	default:
		return q, &paramError{"state", fmt.Sprintf("%q: want pending, approved, denied, expired or all", st)}
	}
	switch k := v.Get("kind"); k {
	case "":
	case string(review.KindStatement), string(review.KindAccess):
		q.Kind = review.Kind(k)
	default:
		return q, &paramError{"kind", fmt.Sprintf("%q: want statement or access", k)}
	}
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxReviewLimit {
			return q, &paramError{"limit", fmt.Sprintf("%q: want an integer from 1 to %d", s, MaxReviewLimit)}
		}
		q.Limit = n
	}
	return q, nil
}

// reviewID reads and checks the {id} of the path; on failure it has
// written a 400.
func reviewID(w http.ResponseWriter, r *http.Request) (string, bool) {
	id := r.PathValue("id")
	if !review.ValidID(id) {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("%q is not a review id (R- followed by a ULID, as warden review list shows)", id))
		return "", false
	}
	return id, true
}

// getReview serves GET /v1/reviews/{id} to readers, the requester and the
// people who may decide it.
func (s *Server) getReview(w http.ResponseWriter, r *http.Request) {
	claims, p, ok := s.reviewer(w, r)
	if !ok {
		return
	}
	id, ok := reviewID(w, r)
	if !ok {
		return
	}
	rv, err := s.cfg.Reviews.Get(r.Context(), id)
	if err != nil {
		s.reviewError(w, err)
		return
	}
	if !s.maySee(claims, p, rv) {
		writeError(w, http.StatusForbidden, fmt.Sprintf("%s may not see review %s: not its requester, not a member of its approvers (%s), not a reader",
			p.Name(), id, strings.Join(rv.Approvers, ", ")))
		return
	}
	writeJSON(w, http.StatusOK, rv)
}

// decideReview serves POST /v1/reviews/{id}/approve and .../deny.
func (s *Server) decideReview(w http.ResponseWriter, r *http.Request, approve bool) {
	_, p, ok := s.reviewer(w, r)
	if !ok {
		return
	}
	id, ok := reviewID(w, r)
	if !ok {
		return
	}
	var req cc.DecisionRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxDecisionBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil && !errors.Is(err, io.EOF) {
		writeError(w, http.StatusBadRequest, "request body: "+oneLineErr(err)+` (want {"reason": "..."})`)
		return
	}
	if dec.More() {
		writeError(w, http.StatusBadRequest, "request body: more than one JSON value")
		return
	}
	rv, err := s.cfg.Reviews.Decide(r.Context(), id, p, approve, req.Reason)
	if err != nil {
		if errors.Is(err, reviews.ErrNotDecider) {
			s.log.Warn().Str("sub", p.Sub).Strs("groups", p.Groups).Str("review", id).Msg("review decision refused")
		}
		s.reviewError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, rv)
}

// reviewError answers a review service error with its status.
func (s *Server) reviewError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, reviews.ErrInvalid):
		writeError(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, reviews.ErrNotFound):
		writeError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, reviews.ErrNotDecider):
		writeError(w, http.StatusForbidden, err.Error())
	case errors.Is(err, reviews.ErrNotPending), errors.Is(err, reviews.ErrAlreadyDecided):
		writeError(w, http.StatusConflict, err.Error())
	default:
		s.internal(w, err)
	}
}

// oneLineErr keeps a decoding error on one line.
func oneLineErr(err error) string { return strings.Join(strings.Fields(err.Error()), " ") }
