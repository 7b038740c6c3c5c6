package api

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/wardenhq/warden/agent/recording"
	"github.com/wardenhq/warden/collector/store"
	"github.com/wardenhq/warden/pkg/event"
)

// Response headers of GET /v1/recordings/{id}.
const (
	// HeaderRecordingSHA256 is the sha256 the session's ssh.session end
	// event gives; the body hashes to it.
	HeaderRecordingSHA256 = "Warden-Recording-Sha256"
	// HeaderRecordingEvent is that event's id, so a client can fetch it
	// and check the hash itself.
	HeaderRecordingEvent = "Warden-Recording-Event"
	// HeaderRecordingVerified is "false" for a partial recording served
	// without an end event to check it against (?partial=true).
	HeaderRecordingVerified = "Warden-Recording-Verified"
)

// recording serves GET /v1/recordings/{id}: the asciicast v2 recording of
// SSH session id, read from the WARDEN_RECORDINGS bucket and checked
// against the sha256 in the session's ssh.session end event. A recording
// that does not match is refused (409), never served. One without an end
// event (the session runs, or its agent was killed) is served only with
// ?partial=true, marked unverified.
func (s *Server) recording(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Recordings == nil {
		writeError(w, http.StatusServiceUnavailable, "recordings are not available: the collector has no object store")
		return
	}
	id := r.PathValue("id")
	partial, _ := strconv.ParseBool(r.URL.Query().Get("partial"))
	end, sum, err := s.recordingEnd(r, id)
	if err != nil {
		s.internal(w, err)
		return
	}
	if end == "" && !partial {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no ssh.session end event records %q (a session still running, or its agent was killed: add ?partial=true for what was stored, unverified)", id))
		return
	}
	data, _, err := recording.Read(r.Context(), s.cfg.Recordings, id, sum)
	switch {
	case errors.Is(err, recording.ErrNotFound):
		writeError(w, http.StatusNotFound, fmt.Sprintf("recording %q is not in the object store", id))
		return
	case err != nil && end != "":
		s.log.Warn().Err(err).Str("recording", id).Msg("recording does not match its event")
		writeError(w, http.StatusConflict, err.Error())
		return
	case err != nil:
		s.internal(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/x-asciicast")
	if end != "" {
		w.Header().Set(HeaderRecordingSHA256, sum)
		w.Header().Set(HeaderRecordingEvent, end)
	} else {
		w.Header().Set(HeaderRecordingVerified, "false")
	}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(data)
}

// recordingEnd finds the ssh.session end event of session id and returns
// its event id and the recording's sha256 ("" when there is none).
func (s *Server) recordingEnd(r *http.Request, id string) (string, string, error) {
	// Newest first, a page at a time: the end of a session being
	// replayed is usually recent, and memory stays bounded.
	f := store.Filter{Types: []string{string(event.SSHSession)}, Desc: true, Limit: recordingPage}
	for {
		rows, err := s.cfg.Store.Query(r.Context(), f)
		if err != nil {
			return "", "", fmt.Errorf("find the end of ssh session %s: %w", id, err)
		}
		for _, row := range rows {
			e, err := row.Event()
			if err != nil {
				continue
			}
			if e.Data["ssh_session"] != id || e.Data["phase"] != "end" {
				continue
			}
			rec, _ := e.Data["recording"].(map[string]any)
			sum, _ := rec["sha256"].(string)
			if sum == "" {
				return "", "", fmt.Errorf("ssh session %s ended without a recording hash", id)
			}
			return e.ID, sum, nil
		}
		if len(rows) < f.Limit {
			return "", "", nil
		}
		f.AfterID = rows[len(rows)-1].ID
	}
}

// recordingPage is how many ssh.session events recordingEnd reads at once.
const recordingPage = 1000
