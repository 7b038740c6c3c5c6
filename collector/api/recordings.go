package api

import (
	"context"
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
	id := r.PathValue("id")
	partial, _ := strconv.ParseBool(r.URL.Query().Get("partial"))
	rec, err := s.Recording(r.Context(), id, partial)
	switch {
	case errors.Is(err, ErrNoRecordings):
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	case errors.Is(err, recording.ErrNotFound):
		writeError(w, http.StatusNotFound, err.Error())
		return
	case errors.Is(err, ErrRecordingMismatch):
		s.log.Warn().Err(err).Str("recording", id).Msg("recording does not match its event")
		writeError(w, http.StatusConflict, err.Error())
		return
	case err != nil:
		s.internal(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/x-asciicast")
	if rec.EndEventID != "" {
		w.Header().Set(HeaderRecordingSHA256, rec.SHA256)
		w.Header().Set(HeaderRecordingEvent, rec.EndEventID)
	} else {
		w.Header().Set(HeaderRecordingVerified, "false")
	}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(rec.Data)
}

// Errors of Recording.
var (
	// ErrNoRecordings: the collector has no object store.
	ErrNoRecordings = errors.New("recordings are not available: the collector has no object store")
	// ErrRecordingMismatch: the recording's bytes do not hash to the
	// sha256 its ssh.session end event gives (or its manifest's); it is
	// never served.
	ErrRecordingMismatch = errors.New("recording does not match its event")
)

// Recording is an SSH session's recording as Recording read it.
type Recording struct {
	// Data is the asciicast v2 recording.
	Data []byte
	// EndEventID is the ssh.session end event the recording was checked
	// against, and SHA256 the hash it gives; "" for a partial recording,
	// served unverified.
	EndEventID, SHA256 string
}

// Recording reads the recording of SSH session id and checks it against
// the sha256 of the session's ssh.session end event. Without an end event
// it fails (wrapping recording.ErrNotFound) unless partial, when what was
// stored is returned unverified. A recording that does not match fails
// with ErrRecordingMismatch. Callers check the reader role first.
func (s *Server) Recording(ctx context.Context, id string, partial bool) (*Recording, error) {
	if s.cfg.Recordings == nil {
		return nil, ErrNoRecordings
	}
	end, sum, err := s.recordingEnd(ctx, id)
	if err != nil {
		return nil, err
	}
	if end == "" && !partial {
		return nil, fmt.Errorf("no ssh.session end event records %q (a session still running, or its agent was killed: add ?partial=true for what was stored, unverified): %w", id, recording.ErrNotFound)
	}
	data, _, err := recording.Read(ctx, s.cfg.Recordings, id, sum)
	switch {
	case errors.Is(err, recording.ErrNotFound):
		return nil, fmt.Errorf("recording %q is not in the object store: %w", id, recording.ErrNotFound)
	case err != nil && end != "":
		return nil, fmt.Errorf("%w: %w", ErrRecordingMismatch, err)
	case err != nil:
		return nil, err
	}
	return &Recording{Data: data, EndEventID: end, SHA256: sum}, nil
}

// recordingEnd finds the ssh.session end event of session id and returns
// its event id and the recording's sha256 ("" when there is none).
func (s *Server) recordingEnd(ctx context.Context, id string) (string, string, error) {
	// Newest first, a page at a time: the end of a session being
	// replayed is usually recent, and memory stays bounded.
	f := store.Filter{Types: []string{string(event.SSHSession)}, Desc: true, Limit: recordingPage}
	for {
		rows, err := s.cfg.Store.Query(ctx, f)
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
