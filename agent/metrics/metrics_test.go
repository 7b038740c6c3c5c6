package metrics

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// pprof is absent unless asked for; /metrics is there either way.
func TestPprofOptIn(t *testing.T) {
	for _, on := range []bool{false, true} {
		m := New(nil)
		m.Pprof = on
		srv := httptest.NewServer(m.Handler())
		want := map[string]int{"/metrics": http.StatusOK, "/debug/pprof/": http.StatusNotFound, "/debug/pprof/goroutine?debug=1": http.StatusNotFound}
		if on {
			want["/debug/pprof/"], want["/debug/pprof/goroutine?debug=1"] = http.StatusOK, http.StatusOK
		}
		for path, code := range want {
			resp, err := http.Get(srv.URL + path)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != code {
				t.Errorf("pprof %v: GET %s = %d, want %d", on, path, resp.StatusCode, code)
			}
		}
		srv.Close()
	}
}
