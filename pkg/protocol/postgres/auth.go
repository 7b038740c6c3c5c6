package postgres

import (
	"bytes"
	"crypto/hmac"
	"crypto/md5"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
)

// MD5Password answers an AuthenticationMD5Password challenge:
// "md5" + md5(md5(password + user) + salt), in hex.
func MD5Password(user, password string, salt [4]byte) string {
	inner := md5.Sum([]byte(password + user))
	h := md5.New()
	h.Write([]byte(hex.EncodeToString(inner[:])))
	h.Write(salt[:])
	return "md5" + hex.EncodeToString(h.Sum(nil))
}

// SCRAMMechanism is the only SASL mechanism Warden offers upstream. The
// channel-binding variant needs TLS to the server.
const SCRAMMechanism = "SCRAM-SHA-256"

// SCRAM is the client side of one SCRAM-SHA-256 exchange (RFC 5802, RFC
// 7677) as PostgreSQL runs it: the user name is taken from the startup
// message, so the client-first message carries an empty one.
type SCRAM struct {
	password        []byte
	clientNonce     string
	clientFirstBare string
	serverSignature []byte
}

// NewSCRAM starts an exchange for password.
func NewSCRAM(password string) (*SCRAM, error) {
	nonce := make([]byte, 18)
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("scram nonce: %w", err)
	}
	s := &SCRAM{password: []byte(password), clientNonce: base64.RawStdEncoding.EncodeToString(nonce)}
	s.clientFirstBare = "n=,r=" + s.clientNonce
	return s, nil
}

// ClientFirst is the SASLInitialResponse payload.
func (s *SCRAM) ClientFirst() []byte { return []byte("n,," + s.clientFirstBare) }

// ClientFinal answers the server-first message (AuthenticationSASLContinue).
func (s *SCRAM) ClientFinal(serverFirst []byte) ([]byte, error) {
	attrs := parseSCRAM(serverFirst)
	nonce, saltB64, iterStr := attrs["r"], attrs["s"], attrs["i"]
	if nonce == "" || saltB64 == "" || iterStr == "" {
		return nil, errors.New("scram: malformed server-first message")
	}
	if len(nonce) <= len(s.clientNonce) || nonce[:len(s.clientNonce)] != s.clientNonce {
		return nil, errors.New("scram: server nonce does not extend the client nonce")
	}
	salt, err := base64.StdEncoding.DecodeString(saltB64)
	if err != nil {
		return nil, fmt.Errorf("scram: salt: %w", err)
	}
	iter, err := strconv.Atoi(iterStr)
	if err != nil || iter < 1 || iter > 10_000_000 {
		return nil, fmt.Errorf("scram: bad iteration count %q", iterStr)
	}
	salted, err := pbkdf2.Key(sha256.New, string(s.password), salt, iter, sha256.Size)
	if err != nil {
		return nil, fmt.Errorf("scram: pbkdf2: %w", err)
	}
	clientKey := hmacSHA256(salted, []byte("Client Key"))
	storedKey := sha256.Sum256(clientKey)
	withoutProof := "c=biws,r=" + nonce
	authMessage := []byte(s.clientFirstBare + "," + string(serverFirst) + "," + withoutProof)
	clientSig := hmacSHA256(storedKey[:], authMessage)
	proof := make([]byte, len(clientKey))
	for i := range clientKey {
		proof[i] = clientKey[i] ^ clientSig[i]
	}
	serverKey := hmacSHA256(salted, []byte("Server Key"))
	s.serverSignature = hmacSHA256(serverKey, authMessage)
	return []byte(withoutProof + ",p=" + base64.StdEncoding.EncodeToString(proof)), nil
}

// Verify checks the server-final message (AuthenticationSASLFinal), which
// proves the server knew the password too.
func (s *SCRAM) Verify(serverFinal []byte) error {
	attrs := parseSCRAM(serverFinal)
	if e := attrs["e"]; e != "" {
		return fmt.Errorf("scram: server error %q", e)
	}
	sig, err := base64.StdEncoding.DecodeString(attrs["v"])
	if err != nil || s.serverSignature == nil || subtle.ConstantTimeCompare(sig, s.serverSignature) != 1 {
		return errors.New("scram: server signature does not verify")
	}
	return nil
}

func hmacSHA256(key, msg []byte) []byte {
	h := hmac.New(sha256.New, key)
	h.Write(msg)
	return h.Sum(nil)
}

func parseSCRAM(b []byte) map[string]string {
	attrs := map[string]string{}
	for _, kv := range bytes.Split(b, []byte(",")) {
		if len(kv) >= 2 && kv[1] == '=' {
			attrs[string(kv[:1])] = string(kv[2:])
		}
	}
	return attrs
}

// Authentication request codes: the first field of an Authentication ('R')
// message from the server.
const (
	AuthOK                = 0
	AuthCleartextPassword = 3
	AuthMD5Password       = 5
	AuthSASL              = 10
	AuthSASLContinue      = 11
	AuthSASLFinal         = 12
)
