package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeJWT is a token shaped like an ID token with the given exp; the CLI
// reads exp only, the collector verifies the rest.
func fakeJWT(exp time.Time) string {
	b, _ := json.Marshal(map[string]any{"iss": "http://127.0.0.1:1", "sub": "sam", "exp": exp.Unix()})
	return "eyJhbGciOiJSUzI1NiJ9." + base64.RawURLEncoding.EncodeToString(b) + ".c2ln"
}

// isolate points the token lookups at a fresh cache and no token file.
func isolate(t *testing.T) string {
	t.Helper()
	cache := filepath.Join(t.TempDir(), "cache")
	t.Setenv("XDG_CACHE_HOME", cache)
	t.Setenv(EnvTokenFile, "")
	return cache
}

func TestTokenCacheIsPrivate(t *testing.T) {
	cache := isolate(t)
	tok := fakeJWT(time.Now().Add(time.Hour))
	path, err := cacheToken(tok)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(cache, "warden", "id_token"); path != want {
		t.Fatalf("cached at %s, want %s", path, want)
	}
	for p, want := range map[string]os.FileMode{path: 0o600, filepath.Dir(path): 0o700} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s has mode %04o, want %04o", p, fi.Mode().Perm(), want)
		}
	}
	got, err := collectorToken("")
	if err != nil || got != tok {
		t.Fatalf("collectorToken from the cache: %q, %v", got, err)
	}
	// A cache someone loosened is not used.
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := collectorToken(""); err == nil || !strings.Contains(err.Error(), "readable by others") {
		t.Fatalf("loose cache: %v", err)
	}
	// Caching again repairs it; logout forgets it.
	if _, err := cacheToken(tok); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("re-cached with mode %04o", fi.Mode().Perm())
	}
	if err := removeCachedToken(); err != nil {
		t.Fatal(err)
	}
	if _, err := collectorToken(""); err == nil || err.Error() != "no ID token: run warden login, or pass --token-file PATH" {
		t.Fatalf("after logout: %v", err)
	}
}

func TestCollectorTokenSources(t *testing.T) {
	isolate(t)
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	fresh, other := fakeJWT(time.Now().Add(time.Hour)), fakeJWT(time.Now().Add(2*time.Hour))
	exp := time.Now().Add(-time.Minute).Truncate(time.Second)
	expired := write("expired", fakeJWT(exp))
	if _, err := cacheToken(other); err != nil {
		t.Fatal(err)
	}
	// The flag wins over the environment, which wins over the cache.
	t.Setenv(EnvTokenFile, write("env", fresh+"\n"))
	if got, err := collectorToken(""); err != nil || got != fresh {
		t.Fatalf("from $WARDEN_TOKEN_FILE: %q %v", got, err)
	}
	if got, err := collectorToken(write("flag", other)); err != nil || got != other {
		t.Fatalf("from --token-file: %q %v", got, err)
	}

	_, err := collectorToken(expired)
	want := fmt.Sprintf("your ID token expired at %s: run warden login", exp.Local().Format(time.RFC3339))
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("expired token: %v; want %q", err, want)
	}
	for name, content := range map[string]string{"empty": " \n", "not a jwt": "hello", "no exp": "a." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"x"}`)) + ".c"} {
		if _, err := collectorToken(write(name, content)); err == nil || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := collectorToken(filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("missing file: %v", err)
	}
}

// captureStderr runs fn with os.Stderr going to a pipe and returns what
// it wrote.
func captureStderr(t *testing.T, fn func() int) (int, string) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	saved := os.Stderr
	os.Stderr = w
	code := fn()
	os.Stderr = saved
	w.Close()
	out, _ := io.ReadAll(r)
	return code, string(out)
}

// The collector's 401 and 403, and a missing or expired token, reach the
// user as one line that says what is missing, and a non-zero exit.
func TestRefusalsPrintOneLine(t *testing.T) {
	isolate(t)
	var status int
	var answer string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ey") {
			t.Errorf("request without the token: %q", r.Header.Get("Authorization"))
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		io.WriteString(w, answer)
	}))
	defer srv.Close()
	t.Setenv("WARDEN_COLLECTOR", srv.URL)
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	os.WriteFile(tokenFile, []byte(fakeJWT(time.Now().Add(time.Hour))), 0o600)
	expired := filepath.Join(dir, "expired")
	os.WriteFile(expired, []byte(fakeJWT(time.Now().Add(-time.Hour))), 0o600)

	for _, tc := range []struct {
		name   string
		status int
		answer string
		args   []string
		want   string
	}{
		{"401", 401, `{"error":"ID token refused: token audience [\"grafana\"] does not include client id \"warden\""}` + "\n", []string{"--token-file", tokenFile},
			`warden events: the collector refused your ID token (HTTP 401): ID token refused: token audience ["grafana"] does not include client id "warden"; run warden login`},
		{"403", 403, `{"error":"alice may not read events, lineage or sessions:\nnot a member of soc (--readers)"}`, []string{"--token-file", tokenFile},
			"warden events: not allowed (HTTP 403): alice may not read events, lineage or sessions: not a member of soc (--readers)"},
		{"no token", 200, "", nil, "warden: no ID token: run warden login, or pass --token-file PATH"},
		{"expired", 200, "", []string{"--token-file", expired}, "warden: your ID token expired at "},
	} {
		status, answer = tc.status, tc.answer
		code, out := captureStderr(t, func() int { return runEvents(tc.args) })
		if code == 0 || strings.Count(out, "\n") != 1 || !strings.HasPrefix(out, tc.want) || strings.Contains(out, "{") {
			t.Errorf("%s: exit %d, stderr %q; want one line starting %q", tc.name, code, out, tc.want)
		}
	}
}

// A token is a bearer credential: it is not sent in clear text off the
// host.
func TestNoTokenOverPlainHTTP(t *testing.T) {
	isolate(t)
	tokenFile := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tokenFile, []byte(fakeJWT(time.Now().Add(time.Hour))), 0o600)
	if _, err := collectorClient("http://collector.example:8181", "", tokenFile); err == nil || !strings.Contains(err.Error(), "https") {
		t.Fatalf("plain http off the host: %v", err)
	}
	for _, u := range []string{"http://127.0.0.1:8181", "http://localhost:8181", "http://[::1]:8181", "https://collector.example"} {
		if _, err := collectorClient(u, "", tokenFile); err != nil {
			t.Errorf("%s: %v", u, err)
		}
	}
}
