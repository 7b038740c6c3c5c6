package api

import (
	"context"
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

// ReviewPerson is the review.Person a verified caller decides as.
func ReviewPerson(c *idtoken.Claims) review.Person {
	return review.Person{Sub: c.Subject, Email: c.Email, Groups: c.Groups}
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
	return claims, ReviewPerson(claims), true
}

// maySee reports whether someone may see rv: readers see every review,
// others those they requested or may decide.
func (s *Server) maySee(c *idtoken.Claims, p review.Person, rv *review.Review) bool {
	return s.IsReader(c) || rv.Requester.Sub == p.Sub || len(rv.Decider(p)) > 0
}

// listReviews serves GET /v1/reviews?state=&kind=&limit=, newest first.
func (s *Server) listReviews(w http.ResponseWriter, r *http.Request) {
	claims, _, ok := s.reviewer(w, r)
	if !ok {
		return
	}
	q, err := parseReviewQuery(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	rs, err := s.ListReviews(r.Context(), claims, q)
	if err != nil {
		s.internal(w, err)
		return
	}
	writeJSON(w, http.StatusOK, cc.ReviewList{Reviews: rs})
}

// ErrNoReviews: this collector serves no reviews.
var ErrNoReviews = errors.New("this collector serves no reviews")

// ListReviews returns the reviews q selects that c may see: readers see
// every review, others those they requested or may decide. Never nil.
func (s *Server) ListReviews(ctx context.Context, c *idtoken.Claims, q reviews.Query) ([]review.Review, error) {
	if s.cfg.Reviews == nil {
		return nil, ErrNoReviews
	}
	if !s.IsReader(c) {
		p := ReviewPerson(c)
		q.Keep = func(rv *review.Review) bool { return s.maySee(c, p, rv) }
	}
	rs, err := s.cfg.Reviews.List(ctx, q)
	if rs == nil && err == nil {
		rs = []review.Review{}
	}
	return rs, err
}

// MayDecide reports whether c may approve or deny rv now: it is pending
// and c is in one of its approver groups (and not its requester, as
// review.Review.Decider says).
func MayDecide(c *idtoken.Claims, rv *review.Review) bool {
	return rv.State == review.Pending && len(rv.Decider(ReviewPerson(c))) > 0
}

// DecideReview approves or denies review id as c, with reason. The
// review service checks that c may decide it (reviews.ErrNotDecider
// otherwise); ReviewStatus maps its errors to HTTP statuses.
func (s *Server) DecideReview(ctx context.Context, c *idtoken.Claims, id string, approve bool, reason string) (*review.Review, error) {
	if s.cfg.Reviews == nil {
		return nil, ErrNoReviews
	}
	if !review.ValidID(id) {
		return nil, fmt.Errorf("%w: %q is not a review id (R- followed by a ULID)", reviews.ErrInvalid, id)
	}
	p := ReviewPerson(c)
	rv, err := s.cfg.Reviews.Decide(ctx, id, p, approve, reason)
	if errors.Is(err, reviews.ErrNotDecider) {
		s.log.Warn().Str("sub", p.Sub).Strs("groups", p.Groups).Str("review", id).Msg("review decision refused")
	}
	return rv, err
}

// ReviewStatus is the HTTP status of a review service error.
func ReviewStatus(err error) int {
	switch {
	case errors.Is(err, ErrNoReviews):
		return http.StatusServiceUnavailable
	case errors.Is(err, reviews.ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, reviews.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, reviews.ErrNotDecider):
		return http.StatusForbidden
	case errors.Is(err, reviews.ErrNotPending), errors.Is(err, reviews.ErrAlreadyDecided):
		return http.StatusConflict
	}
	return http.StatusInternalServerError
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
	claims, _, ok := s.reviewer(w, r)
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
	rv, err := s.DecideReview(r.Context(), claims, id, approve, req.Reason)
	if err != nil {
		s.reviewError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, rv)
}

// reviewError answers a review service error with its status.
func (s *Server) reviewError(w http.ResponseWriter, err error) {
	if st := ReviewStatus(err); st != http.StatusInternalServerError {
		writeError(w, st, err.Error())
		return
	}
	s.internal(w, err)
}

// oneLineErr keeps a decoding error on one line.
func oneLineErr(err error) string { return strings.Join(strings.Fields(err.Error()), " ") }
