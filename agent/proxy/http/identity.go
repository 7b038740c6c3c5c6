package http

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/wardenhq/warden/pkg/event"
)

// IdentityTTL is how long an X-Warden-Identity token is valid: long
// enough for the request it rides on, too short to be worth replaying.
const IdentityTTL = 60 * time.Second

// JWKSFile is the name of the file, beside the agent's control socket,
// where the agent publishes the key that verifies X-Warden-Identity.
const JWKSFile = "identity-jwks.json"

// Signer issues the X-Warden-Identity tokens: compact JWTs signed with
// EdDSA (ed25519) by the agent's key. It is safe for concurrent use.
type Signer struct {
	key    ed25519.PrivateKey
	kid    string
	issuer string
	now    func() time.Time
}

// NewSigner returns a signer for key; issuer is the tokens' iss claim,
// "warden:" and the agent's host id.
func NewSigner(key ed25519.PrivateKey, hostID string) *Signer {
	return &Signer{key: key, kid: thumbprint(key.Public().(ed25519.PublicKey)), issuer: "warden:" + hostID, now: time.Now}
}

// Issuer is the iss claim of the signer's tokens.
func (s *Signer) Issuer() string { return s.issuer }

// identityClaims are the X-Warden-Identity token's claims.
type identityClaims struct {
	Issuer    string   `json:"iss"`
	Subject   string   `json:"sub"`
	Audience  string   `json:"aud"`
	IssuedAt  int64    `json:"iat"`
	NotBefore int64    `json:"nbf"`
	Expiry    int64    `json:"exp"`
	ID        string   `json:"jti"`
	Email     string   `json:"email,omitempty"`
	Name      string   `json:"name,omitempty"`
	Groups    []string `json:"groups"`
	// IdPIssuer is the identity provider that verified the person.
	IdPIssuer string `json:"idp,omitempty"`
	// Session is the person's Warden session.
	Session string `json:"sid,omitempty"`
}

// Sign returns a token saying that id is behind a request to the target
// called audience.
func (s *Signer) Sign(id *event.Identity, audience string) (string, error) {
	now := s.now()
	var jti [12]byte
	if _, err := rand.Read(jti[:]); err != nil {
		return "", fmt.Errorf("identity token id: %w", err)
	}
	groups := id.Groups
	if groups == nil {
		groups = []string{}
	}
	c := identityClaims{
		Issuer: s.issuer, Subject: id.Sub, Audience: audience,
		IssuedAt: now.Unix(), NotBefore: now.Add(-5 * time.Second).Unix(), Expiry: now.Add(IdentityTTL).Unix(),
		ID: base64.RawURLEncoding.EncodeToString(jti[:]), Email: id.Email, Name: id.Name, Groups: groups,
		IdPIssuer: id.Issuer, Session: id.SessionID,
	}
	header, err := json.Marshal(map[string]string{"alg": "EdDSA", "typ": "JWT", "kid": s.kid})
	if err != nil {
		return "", err
	}
	payload, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("identity token claims: %w", err)
	}
	signing := base64.RawURLEncoding.EncodeToString(header) + "." + base64.RawURLEncoding.EncodeToString(payload)
	sig := ed25519.Sign(s.key, []byte(signing))
	return signing + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// jwk is an ed25519 public key as RFC 8037 writes it.
type jwk struct {
	Kty string `json:"kty"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Kid string `json:"kid,omitempty"`
	Use string `json:"use,omitempty"`
	Alg string `json:"alg,omitempty"`
}

// thumbprint is the RFC 7638 thumbprint of pub, the tokens' kid.
func thumbprint(pub ed25519.PublicKey) string {
	// The members, in lexical order, without white space (RFC 7638 §3).
	canon := fmt.Sprintf(`{"crv":"Ed25519","kty":"OKP","x":"%s"}`, base64.RawURLEncoding.EncodeToString(pub))
	sum := sha256.Sum256([]byte(canon))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// JWKS returns the JSON Web Key Set that verifies the tokens of a signer
// with key pub.
func JWKS(pub ed25519.PublicKey) []byte {
	set := struct {
		Keys []jwk `json:"keys"`
	}{[]jwk{{Kty: "OKP", Crv: "Ed25519", X: base64.RawURLEncoding.EncodeToString(pub), Kid: thumbprint(pub), Use: "sig", Alg: "EdDSA"}}}
	b, _ := json.MarshalIndent(set, "", "  ") // cannot fail: fixed types
	return append(b, '\n')
}

// WriteJWKS publishes the key set for pub at path, readable by everyone,
// replacing any earlier file at once.
func WriteJWKS(path string, pub ed25519.PublicKey) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".jwks-*")
	if err != nil {
		return fmt.Errorf("write identity key set %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(JWKS(pub)); err != nil {
		tmp.Close()
		return fmt.Errorf("write identity key set %s: %w", path, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return fmt.Errorf("write identity key set %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write identity key set %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write identity key set %s: %w", path, err)
	}
	return nil
}

// OpenIdentity loads the agent's signing key from keyFile (wardend made
// it at start, for its events) and publishes the key set that verifies
// its identity tokens at jwksPath, beside the control socket, where every
// user and service on the host can read it. issuer is the host id.
func OpenIdentity(keyFile, hostID, jwksPath string) (*Signer, error) {
	key, err := event.LoadOrCreateKey(keyFile)
	if err != nil {
		return nil, fmt.Errorf("identity tokens: key_file %s: %w", keyFile, err)
	}
	if err := os.MkdirAll(filepath.Dir(jwksPath), 0o755); err != nil {
		return nil, fmt.Errorf("identity tokens: %w", err)
	}
	if err := WriteJWKS(jwksPath, key.Public().(ed25519.PublicKey)); err != nil {
		return nil, fmt.Errorf("identity tokens: %w", err)
	}
	return NewSigner(key, hostID), nil
}
