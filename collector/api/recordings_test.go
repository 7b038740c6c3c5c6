package api

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/wardenhq/warden/agent/recording"
	"github.com/wardenhq/warden/collector/store"
	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/tests/harness"
)

func TestRecordingServedOnlyWhenItMatchesItsEvent(t *testing.T) {
	st, err := store.Open(harness.StoreLocation(t, t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	recs := recording.NewMemoryStore()
	w := recording.NewWriter(recs, "ssh-A", recording.Header{Width: 80, Height: 24}, recording.WriterOptions{ChunkSize: 32})
	w.Output([]byte("hello-warden from a recorded shell\r\n"))
	sum, err := w.Close()
	if err != nil {
		t.Fatal(err)
	}
	// A session still running: chunks, no manifest, no end event.
	open := recording.NewWriter(recs, "ssh-B", recording.Header{Width: 80, Height: 24}, recording.WriterOptions{ChunkSize: 8})
	open.Output([]byte("partial output"))
	defer open.Close()
	end := &event.Event{ID: "01J00000000000000000000001", Time: time.Now().UTC(), Type: event.SSHSession,
		Host: event.Host{ID: "h"}, Target: &event.Target{Name: "app-1"},
		Data: event.SSHSessionData{Phase: "end", SSHSession: "ssh-A", Recording: sum.Object, RecordingSHA256: sum.SHA256, RecordingBytes: sum.Bytes}.Data()}
	raw, _ := json.Marshal(end)
	if _, err := st.Insert(context.Background(), []store.Record{{Event: end, Raw: raw}}); err != nil {
		t.Fatal(err)
	}
	s := New(Config{Store: st, Recordings: recs, Logger: zerolog.Nop()})
	get := func(id, query string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodGet, "/v1/recordings/"+id+query, nil)
		r.SetPathValue("id", id)
		rw := httptest.NewRecorder()
		s.recording(rw, r)
		return rw
	}
	if rw := get("ssh-A", ""); rw.Code != http.StatusOK || rw.Header().Get(HeaderRecordingSHA256) != sum.SHA256 || rw.Header().Get(HeaderRecordingEvent) != end.ID || !bytes.Contains(rw.Body.Bytes(), []byte("hello-warden")) {
		t.Fatalf("ssh-A: %d %v %q", rw.Code, rw.Header(), rw.Body.String())
	}
	if rw := get("ssh-B", ""); rw.Code != http.StatusNotFound {
		t.Fatalf("ssh-B without an end event: %d %s", rw.Code, rw.Body.String())
	}
	// Wait for ssh-B's first chunk, uploaded in the background.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if _, err := recs.Get(context.Background(), recording.ChunkName("ssh-B", 1)); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("ssh-B's first chunk was never stored")
		}
	}
	if rw := get("ssh-B", "?partial=true"); rw.Code != http.StatusOK || rw.Header().Get(HeaderRecordingVerified) != "false" {
		t.Fatalf("ssh-B partial: %d %v", rw.Code, rw.Header())
	}
	// A chunk changed in the object store: refused, not served.
	flipFirstByte(t, recs, recording.ChunkName("ssh-A", 1))
	if rw := get("ssh-A", ""); rw.Code != http.StatusConflict || bytes.Contains(rw.Body.Bytes(), []byte("hello-warden")) {
		t.Fatalf("tampered ssh-A: %d %q", rw.Code, rw.Body.String())
	}
	if rw := get("ssh-none", ""); rw.Code != http.StatusNotFound {
		t.Fatalf("unknown recording: %d", rw.Code)
	}
}

// flipFirstByte changes one byte of a stored object, as tampering in the
// object store would.
func flipFirstByte(t *testing.T, s recording.Store, name string) {
	t.Helper()
	b, err := s.Get(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x20
	if err := s.Put(context.Background(), name, b); err != nil {
		t.Fatal(err)
	}
}
