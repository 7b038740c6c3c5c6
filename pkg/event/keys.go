package event

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Key files.
//
// A public key file holds the standard base64 (RFC 4648, padded) encoding of
// the 32-byte raw ed25519 public key and a newline. The collector finds a
// host's key in "<dir>/<host_id>.pub". For interoperability with openssl,
// LoadPublicKeys also accepts a PEM "PUBLIC KEY" (PKIX) block.
//
// A private key file holds the standard base64 encoding of the 32-byte
// ed25519 seed and a newline, mode 0600.

// PubKeySuffix is the file name suffix of public key files.
const PubKeySuffix = ".pub"

// EncodePublicKey returns the contents of a public key file for pub.
func EncodePublicKey(pub ed25519.PublicKey) []byte {
	return []byte(base64.StdEncoding.EncodeToString(pub) + "\n")
}

// ParsePublicKey decodes the contents of a public key file.
func ParsePublicKey(b []byte) (ed25519.PublicKey, error) {
	b = bytes.TrimSpace(b)
	if bytes.HasPrefix(b, []byte("-----BEGIN")) {
		blk, _ := pem.Decode(b)
		if blk == nil {
			return nil, errors.New("invalid PEM")
		}
		k, err := x509.ParsePKIXPublicKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse PKIX public key: %w", err)
		}
		pub, ok := k.(ed25519.PublicKey)
		if !ok {
			return nil, fmt.Errorf("PEM key is %T, not ed25519", k)
		}
		return pub, nil
	}
	raw, err := base64.StdEncoding.DecodeString(string(b))
	if err != nil {
		return nil, fmt.Errorf("decode base64 public key: %w", err)
	}
	if len(raw) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("public key is %d bytes, want %d", len(raw), ed25519.PublicKeySize)
	}
	return ed25519.PublicKey(raw), nil
}

// WritePublicKey writes pub to path in the public key file format (mode 0644,
// replaced atomically).
func WritePublicKey(path string, pub ed25519.PublicKey) error {
	if len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("write public key %s: key is %d bytes, want %d", path, len(pub), ed25519.PublicKeySize)
	}
	if err := writeFileAtomic(path, EncodePublicKey(pub), 0o644, true); err != nil {
		return fmt.Errorf("write public key: %w", err)
	}
	return nil
}

// LoadPublicKeys reads every "<host_id>.pub" file in dir.
func LoadPublicKeys(dir string) (StaticKeys, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read key dir: %w", err)
	}
	keys := make(StaticKeys)
	for _, ent := range ents {
		name := ent.Name()
		if ent.IsDir() || !strings.HasSuffix(name, PubKeySuffix) || strings.HasPrefix(name, ".") {
			continue
		}
		host := strings.TrimSuffix(name, PubKeySuffix)
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("read public key of host %q: %w", host, err)
		}
		pub, err := ParsePublicKey(b)
		if err != nil {
			return nil, fmt.Errorf("public key of host %q (%s): %w", host, name, err)
		}
		keys[host] = pub
	}
	return keys, nil
}

// LoadOrCreateKey returns the agent's signing key stored at path, creating a
// new one (and its parent directory, mode 0700) if the file does not exist.
// An existing file readable by group or others is refused: anyone who can
// read the key can forge the host's audit trail.
func LoadOrCreateKey(path string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		st, err := os.Stat(path)
		if err != nil {
			return nil, fmt.Errorf("stat signing key: %w", err)
		}
		if st.Mode().Perm()&0o077 != 0 {
			return nil, fmt.Errorf("signing key %s has mode %v; want 0600", path, st.Mode().Perm())
		}
		seed, err := base64.StdEncoding.DecodeString(string(bytes.TrimSpace(b)))
		if err != nil {
			return nil, fmt.Errorf("signing key %s: decode base64: %w", path, err)
		}
		if len(seed) != ed25519.SeedSize {
			return nil, fmt.Errorf("signing key %s: seed is %d bytes, want %d", path, len(seed), ed25519.SeedSize)
		}
		return ed25519.NewKeyFromSeed(seed), nil
	case errors.Is(err, fs.ErrNotExist):
	default:
		return nil, fmt.Errorf("read signing key: %w", err)
	}

	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create signing key dir: %w", err)
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate signing key: %w", err)
	}
	data := []byte(base64.StdEncoding.EncodeToString(priv.Seed()) + "\n")
	// No replace: if another process created the key meanwhile, use theirs so
	// that one host never has two keys.
	if err := writeFileAtomic(path, data, 0o600, false); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return LoadOrCreateKey(path)
		}
		return nil, fmt.Errorf("create signing key: %w", err)
	}
	return priv, nil
}

// writeFileAtomic writes data to a temporary file beside path, fsyncs it and
// moves it into place, so a crash never leaves a half-written key. With
// replace false it fails with fs.ErrExist if path exists.
func writeFileAtomic(path string, data []byte, perm os.FileMode, replace bool) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after a successful rename or link+remove
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if replace {
		err = os.Rename(tmp, path)
	} else {
		err = os.Link(tmp, path) // fails if path exists, unlike rename
	}
	if err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		// Make the new directory entry durable too.
		_ = d.Sync()
		d.Close()
	}
	return nil
}
