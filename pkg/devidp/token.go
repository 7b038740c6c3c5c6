package devidp

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/cryptosigner"
)

// IssueOptions describe an ID token for [IdP.Issue].
//
// Several knobs exist only so tests can forge bad tokens and check that the
// verifier rejects them: Audience, Issuer, IssuedAt (with a short TTL, for
// expired tokens), SignWith (a key that is not in the JWKS), AlgNone (an
// unsigned token) and Claims (wrongly typed claims).
type IssueOptions struct {
	// Sub is the "sub" claim. Required. It need not be a configured user:
	// Issue trusts its caller. (POST /dev/token only accepts configured users.)
	Sub string
	// Email, Name and Groups become the "email", "name" and "groups" claims;
	// empty ones are omitted.
	Email  string
	Name   string
	Groups []string
	// Audience is the "aud" claim. Default: the IdP's client id.
	Audience []string
	// Issuer is the "iss" claim. Default: the IdP's issuer.
	Issuer string
	// TTL is the lifetime: exp = iat + TTL. Default 1h. A negative TTL gives
	// a token that is already expired.
	TTL time.Duration
	// IssuedAt is the "iat" claim. Default: now.
	IssuedAt time.Time
	// SignWith signs with this key instead of the IdP's. The header still
	// carries the IdP's kid, like an attacker's forgery would, so verifiers
	// find the published key and must reject the signature.
	SignWith crypto.Signer
	// AlgNone emits an unsigned token with header alg "none".
	AlgNone bool
	// Claims are extra claims, added last; they override the standard ones
	// (for example "groups": 42 to test a wrongly typed claim). A nil value
	// removes the claim (for example "exp": nil).
	Claims map[string]any
}

// Issue mints an ID token. See [IssueOptions] for the knobs.
func (p *IdP) Issue(opts IssueOptions) (string, error) {
	if opts.Sub == "" {
		return "", errors.New("devidp: issue: Sub is required")
	}
	iat := opts.IssuedAt
	if iat.IsZero() {
		iat = p.now()
	}
	ttl := opts.TTL
	if ttl == 0 {
		ttl = time.Hour
	}
	iss := opts.Issuer
	if iss == "" {
		iss = p.issuer
	}
	claims := map[string]any{
		"iss": iss,
		"sub": opts.Sub,
		"iat": iat.Unix(),
		"exp": iat.Add(ttl).Unix(),
	}
	// A single audience is a string, as most IdPs send it; several are an array.
	switch aud := opts.Audience; len(aud) {
	case 0:
		claims["aud"] = p.clientID
	case 1:
		claims["aud"] = aud[0]
	default:
		claims["aud"] = aud
	}
	if opts.Email != "" {
		claims["email"] = opts.Email
		claims["email_verified"] = true
	}
	if opts.Name != "" {
		claims["name"] = opts.Name
	}
	if opts.Groups != nil {
		claims["groups"] = opts.Groups
	}
	for k, v := range opts.Claims {
		if v == nil {
			delete(claims, k)
			continue
		}
		claims[k] = v
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("devidp: issue: encode claims: %w", err)
	}

	if opts.AlgNone {
		// go-jose refuses to produce alg "none", rightly; build it by hand.
		header := `{"alg":"none","typ":"JWT"}`
		return b64([]byte(header)) + "." + b64(payload) + ".", nil
	}

	key := p.key
	alg := p.alg
	if opts.SignWith != nil {
		key = opts.SignWith
		if alg, err = algFor(key.Public()); err != nil {
			return "", fmt.Errorf("devidp: issue: SignWith: %w", err)
		}
	}
	signer, err := jose.NewSigner(jose.SigningKey{
		Algorithm: alg,
		Key:       jose.JSONWebKey{Key: cryptosigner.Opaque(key), KeyID: p.kid},
	}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return "", fmt.Errorf("devidp: issue: signer: %w", err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("devidp: issue: sign: %w", err)
	}
	tok, err := jws.CompactSerialize()
	if err != nil {
		return "", fmt.Errorf("devidp: issue: serialize: %w", err)
	}
	return tok, nil
}

// issueFor mints a normal token for a configured user.
func (p *IdP) issueFor(u User, ttl time.Duration) (string, error) {
	return p.Issue(IssueOptions{Sub: u.Sub, Email: u.Email, Name: u.Name, Groups: nonNil(u.Groups), TTL: ttl})
}

// nonNil makes an absent group list an empty "groups": [] claim, so tokens
// for group-less users still show the claim.
func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// algFor picks the JWS algorithm for a public key.
func algFor(pub crypto.PublicKey) (jose.SignatureAlgorithm, error) {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return "", fmt.Errorf("RSA key has %d bits; at least 2048 are required", k.N.BitLen())
		}
		return jose.RS256, nil
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return jose.ES256, nil
		case elliptic.P384():
			return jose.ES384, nil
		case elliptic.P521():
			return jose.ES512, nil
		}
		return "", fmt.Errorf("unsupported ECDSA curve %s", k.Curve.Params().Name)
	case ed25519.PublicKey:
		return jose.EdDSA, nil
	}
	return "", fmt.Errorf("unsupported key type %T (want RSA, ECDSA or Ed25519)", pub)
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
