package mysql

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"

	"filippo.io/edwards25519"
)

// Authentication plugins Warden can log in with.
const (
	PluginNative      = "mysql_native_password"
	PluginCachingSHA2 = "caching_sha2_password"
	PluginSHA256      = "sha256_password"
	PluginEd25519     = "client_ed25519"
	PluginClear       = "mysql_clear_password"
)

// caching_sha2_password's AuthMoreData bytes.
const (
	SHA2RequestPublicKey = 0x02
	SHA2FastAuthOK       = 0x03
	SHA2FullAuth         = 0x04
)

// NativePassword is mysql_native_password's answer to scramble:
// SHA1(password) XOR SHA1(scramble + SHA1(SHA1(password))). An empty
// password answers with nothing.
func NativePassword(scramble []byte, password string) []byte {
	if password == "" {
		return []byte{}
	}
	scramble = scramble20(scramble)
	h1 := sha1.Sum([]byte(password))
	h2 := sha1.Sum(h1[:])
	h := sha1.New()
	h.Write(scramble)
	h.Write(h2[:])
	h3 := h.Sum(nil)
	for i := range h3 {
		h3[i] ^= h1[i]
	}
	return h3
}

// scramble20 is the 20 bytes of a scramble the hash plugins use.
func scramble20(s []byte) []byte {
	if len(s) > 20 {
		return s[:20]
	}
	return s
}

// CachingSHA2Password is caching_sha2_password's fast answer:
// SHA256(password) XOR SHA256(SHA256(SHA256(password)) + scramble).
func CachingSHA2Password(scramble []byte, password string) []byte {
	if password == "" {
		return []byte{}
	}
	scramble = scramble20(scramble)
	m1 := sha256.Sum256([]byte(password))
	m2 := sha256.Sum256(m1[:])
	h := sha256.New()
	h.Write(m2[:])
	h.Write(scramble)
	m3 := h.Sum(nil)
	for i := range m3 {
		m3[i] ^= m1[i]
	}
	return m3
}

// EncryptPassword is the full-authentication answer of
// caching_sha2_password and sha256_password on a connection without TLS:
// the NUL-terminated password XOR the scramble, under the server's RSA
// public key (PEM) with OAEP padding.
func EncryptPassword(pubPEM []byte, scramble []byte, password string) ([]byte, error) {
	block, _ := pem.Decode(pubPEM)
	if block == nil {
		return nil, errors.New("server public key: no PEM block")
	}
	var pub *rsa.PublicKey
	if k, err := x509.ParsePKIXPublicKey(block.Bytes); err == nil {
		rk, ok := k.(*rsa.PublicKey)
		if !ok {
			return nil, fmt.Errorf("server public key: %T, want RSA", k)
		}
		pub = rk
	} else if rk, err2 := x509.ParsePKCS1PublicKey(block.Bytes); err2 == nil {
		pub = rk
	} else {
		return nil, fmt.Errorf("server public key: %w", err)
	}
	scramble = scramble20(scramble)
	plain := append([]byte(password), 0)
	if len(scramble) > 0 {
		for i := range plain {
			plain[i] ^= scramble[i%len(scramble)]
		}
	}
	out, err := rsa.EncryptOAEP(sha1.New(), rand.Reader, pub, plain, nil)
	if err != nil {
		return nil, fmt.Errorf("encrypt password: %w", err)
	}
	return out, nil
}

// Ed25519Password is MariaDB's client_ed25519 answer: an Ed25519
// signature of the scramble under the key whose expanded secret is
// SHA512(password), as MariaDB's plugin derives it (the password stands
// where RFC 8032 puts the seed, whatever its length).
func Ed25519Password(scramble []byte, password string) ([]byte, error) {
	h := sha512.Sum512([]byte(password))
	s, err := edwards25519.NewScalar().SetBytesWithClamping(h[:32])
	if err != nil {
		return nil, fmt.Errorf("ed25519 key: %w", err)
	}
	a := (&edwards25519.Point{}).ScalarBaseMult(s)
	mh := sha512.New()
	mh.Write(h[32:])
	mh.Write(scramble)
	r, err := edwards25519.NewScalar().SetUniformBytes(mh.Sum(nil))
	if err != nil {
		return nil, fmt.Errorf("ed25519 nonce: %w", err)
	}
	rp := (&edwards25519.Point{}).ScalarBaseMult(r)
	kh := sha512.New()
	kh.Write(rp.Bytes())
	kh.Write(a.Bytes())
	kh.Write(scramble)
	k, err := edwards25519.NewScalar().SetUniformBytes(kh.Sum(nil))
	if err != nil {
		return nil, fmt.Errorf("ed25519 challenge: %w", err)
	}
	sig := edwards25519.NewScalar().MultiplyAdd(k, s, r)
	return append(rp.Bytes(), sig.Bytes()...), nil
}

// AuthSwitch is an AuthSwitchRequest: the server asks for another plugin.
type AuthSwitch struct {
	Plugin string
	Data   []byte // the new scramble, without a trailing NUL
}

// ParseAuthSwitch decodes an AuthSwitchRequest (header 0xFE).
func ParseAuthSwitch(p []byte) (*AuthSwitch, error) {
	d := &decoder{b: p}
	if h := d.u8(); d.err == nil && h != HeaderEOF {
		return nil, fmt.Errorf("auth switch: header 0x%02x", h)
	}
	a := &AuthSwitch{Plugin: string(d.nulString())}
	data := d.rest()
	if len(data) > 0 && data[len(data)-1] == 0 {
		data = data[:len(data)-1]
	}
	a.Data = append([]byte(nil), data...)
	if d.err != nil {
		return nil, fmt.Errorf("auth switch: %w", d.err)
	}
	return a, nil
}

// Encode returns the AuthSwitchRequest payload.
func (a *AuthSwitch) Encode() []byte {
	b := append([]byte{HeaderEOF}, a.Plugin...)
	b = append(b, 0)
	b = append(b, a.Data...)
	return append(b, 0)
}
