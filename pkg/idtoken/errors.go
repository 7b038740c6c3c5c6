package idtoken

import "errors"

// Reasons a token is rejected. Every error returned by [Verifier.Verify] is an
// [*Error] whose Reason is one of these, so callers can classify with
// errors.Is(err, idtoken.ErrExpired) and still show err.Error() to the user.
var (
	// ErrMalformed: the token is not a well-formed signed JWT with the
	// claims an ID token must have.
	ErrMalformed = errors.New("malformed token")
	// ErrSignature: the token is unsigned, uses a forbidden algorithm, or its
	// signature does not verify against the issuer's published keys.
	ErrSignature = errors.New("invalid token signature")
	// ErrIssuer: the token was issued by another issuer.
	ErrIssuer = errors.New("wrong token issuer")
	// ErrAudience: the token was issued for another client.
	ErrAudience = errors.New("wrong token audience")
	// ErrExpired: the token is outside its validity window (expired, or not
	// yet valid).
	ErrExpired = errors.New("token expired")
	// ErrClaims: a claim Warden needs has the wrong type or is missing
	// (for example a groups claim that is neither a string nor a list of strings).
	ErrClaims = errors.New("invalid token claims")
	// ErrUnavailable: the token could not be checked because the issuer's
	// discovery document or keys could not be fetched. The token may be fine;
	// retrying later can succeed.
	ErrUnavailable = errors.New("identity provider unavailable")
)

// Error is a token verification failure. Its message is specific and safe to
// show to the user: it never contains the token.
type Error struct {
	// Reason is one of the Err* sentinels of this package.
	Reason error
	// Msg is the human-readable explanation.
	Msg string
	// Cause is the underlying error, if any (for example a network error
	// behind ErrUnavailable). It is not part of Error() unless Msg includes it.
	Cause error
}

// Error returns the user-facing message.
func (e *Error) Error() string { return e.Msg }

// Unwrap exposes the Reason (for errors.Is) and the Cause (for errors.As).
func (e *Error) Unwrap() []error {
	if e.Cause == nil {
		return []error{e.Reason}
	}
	return []error{e.Reason, e.Cause}
}

func newError(reason error, msg string) *Error { return &Error{Reason: reason, Msg: msg} }
