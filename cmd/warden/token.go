package main

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/wardenhq/warden/agent/control"
)

// EnvTokenFile names the environment variable that points the collector
// commands at an ID token file, instead of the one warden login cached.
const EnvTokenFile = "WARDEN_TOKEN_FILE"

// tokenCacheName is the cached token's path below the user's cache
// directory ($XDG_CACHE_HOME, else ~/.cache).
const tokenCacheName = "warden/id_token"

// tokenError is a problem with the caller's own token, found before
// anything was sent. It prints as "warden: …", since the fix (warden
// login) is the same whichever command met it.
type tokenError struct{ msg string }

func (e *tokenError) Error() string { return e.msg }

// tokenCachePath is where warden login caches the ID token of the user
// running it.
func tokenCachePath() (string, error) {
	dir, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("no cache directory for the ID token: %w", err)
	}
	return filepath.Join(dir, tokenCacheName), nil
}

// cacheToken stores a token the agent has just verified, for the
// collector commands: readable by its user only (0600), in a directory
// only that user may enter, replaced atomically.
func cacheToken(token string) (string, error) {
	path, err := tokenCachePath()
	if err != nil {
		return "", err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("create %s: %w", dir, err)
	}
	if err := privateToMe(dir, true); err != nil {
		return "", err
	}
	f, err := os.CreateTemp(dir, ".id_token-")
	if err != nil {
		return "", fmt.Errorf("cache the ID token in %s: %w", dir, err)
	}
	defer os.Remove(f.Name()) // after a successful rename there is nothing left to remove
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return "", fmt.Errorf("cache the ID token: %w", err)
	}
	if _, err := f.WriteString(token + "\n"); err != nil {
		f.Close()
		return "", fmt.Errorf("cache the ID token: %w", err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("cache the ID token: %w", err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return "", fmt.Errorf("cache the ID token: %w", err)
	}
	return path, nil
}

// removeCachedToken forgets the cached token, if there is one.
func removeCachedToken() error {
	path, err := tokenCachePath()
	if err != nil {
		return nil // nowhere to have cached it
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove the cached ID token %s: %w", path, err)
	}
	return nil
}

// privateToMe checks that path belongs to the caller and nobody else may
// read it. A directory of ours with looser bits is tightened (fix), since
// an earlier tool may have made it; anything else is refused, so that
// another user cannot slip a token (theirs) in or read ours.
func privateToMe(path string, fix bool) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		return fmt.Errorf("%s is a symbolic link; the ID token is kept only in a real file or directory", path)
	case !ok || int(st.Uid) != os.Geteuid():
		return fmt.Errorf("%s belongs to another user; remove it or run warden login as its owner", path)
	case fi.Mode().Perm()&0o077 == 0:
		return nil
	case fix && fi.IsDir():
		if err := os.Chmod(path, 0o700); err != nil {
			return fmt.Errorf("make %s private: %w", path, err)
		}
		return nil
	}
	return fmt.Errorf("%s is readable by others (mode %04o); run warden login again to replace it", path, fi.Mode().Perm())
}

// collectorToken is the one place the collector commands get the
// caller's OIDC ID token: flagValue (--token-file PATH, - for standard
// input), else $WARDEN_TOKEN_FILE, else the token warden login cached. A
// token that has expired by its own exp claim is refused here, with the
// fix, rather than sent to be refused by the collector. The collector
// verifies everything else.
func collectorToken(flagValue string) (string, error) {
	source, path := "--token-file", flagValue
	if path == "" {
		source, path = "$"+EnvTokenFile, os.Getenv(EnvTokenFile)
	}
	var data []byte
	var err error
	switch {
	case path == "-":
		source = "standard input"
		data, err = io.ReadAll(io.LimitReader(os.Stdin, control.MaxTokenBytes))
		if err != nil {
			return "", fmt.Errorf("read the ID token from standard input: %w", err)
		}
	case path != "":
		source = source + " " + path
		if data, err = os.ReadFile(path); err != nil {
			return "", &tokenError{fmt.Sprintf("cannot read the ID token (%s): %v", source, err)}
		}
	default:
		if path, err = tokenCachePath(); err != nil {
			return "", &tokenError{"no ID token: run warden login, or pass --token-file PATH"}
		}
		source = path
		if err := privateToMe(path, false); errors.Is(err, fs.ErrNotExist) {
			return "", &tokenError{"no ID token: run warden login, or pass --token-file PATH"}
		} else if err != nil {
			return "", &tokenError{"the cached ID token is not safe to use: " + err.Error()}
		}
		if data, err = os.ReadFile(path); err != nil {
			return "", &tokenError{fmt.Sprintf("cannot read the cached ID token: %v", err)}
		}
	}
	token := strings.TrimSpace(string(data))
	if token == "" {
		return "", &tokenError{fmt.Sprintf("the ID token (%s) is empty: run warden login, or pass --token-file PATH", source)}
	}
	exp, err := tokenExpiry(token)
	if err != nil {
		return "", &tokenError{fmt.Sprintf("the ID token (%s) %v", source, err)}
	}
	if !time.Now().Before(exp) {
		return "", &tokenError{fmt.Sprintf("your ID token expired at %s: run warden login (token from %s)", exp.Local().Format(time.RFC3339), source)}
	}
	return token, nil
}

// tokenExpiry reads a JWT's exp claim without verifying anything: it only
// saves a round trip for a token that is visibly stale.
func tokenExpiry(token string) (time.Time, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return time.Time{}, errors.New("is not a JWT (three dot-separated parts)")
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return time.Time{}, errors.New("is not a JWT: its payload is not base64url")
	}
	var claims struct {
		Exp *json.Number `json:"exp"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		return time.Time{}, errors.New("is not a JWT: its payload is not a JSON object")
	}
	if claims.Exp == nil {
		return time.Time{}, errors.New(`has no "exp" claim`)
	}
	secs, err := claims.Exp.Float64()
	if err != nil {
		return time.Time{}, fmt.Errorf(`has an "exp" claim that is not a number: %s`, claims.Exp)
	}
	return time.Unix(int64(secs), 0), nil
}
