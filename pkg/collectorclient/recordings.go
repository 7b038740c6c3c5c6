package collectorclient

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
)

// MaxRecording bounds the recording Recording reads: a terminal session
// of many hours is a few hundred megabytes at most.
const MaxRecording = 1 << 30

// Recording is an SSH session's asciicast v2 recording with the event that
// vouches for it.
type Recording struct {
	Cast []byte
	// SHA256 is the hash the session's ssh.session end event gives, and
	// EventID that event; both "" for an unverified partial recording.
	SHA256, EventID string
}

// Recording fetches the recording of SSH session id. Unless partial, the
// collector serves it only with its end event, and Recording checks the
// body against the hash in that event (fetched separately, so a body and
// a header changed together on the way still do not pass).
func (c *Client) Recording(ctx context.Context, id string, partial bool) (*Recording, error) {
	v := url.Values{}
	if partial {
		v.Set("partial", "true")
	}
	resp, err := c.do(ctx, "/v1/recordings/"+url.PathEscape(id), v)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxRecording+1))
	if err != nil {
		return nil, fmt.Errorf("collector: read recording %s: %w", id, err)
	}
	if len(body) > MaxRecording {
		return nil, fmt.Errorf("collector: recording %s is larger than %d bytes", id, MaxRecording)
	}
	rec := &Recording{Cast: body, EventID: resp.Header.Get("Warden-Recording-Event")}
	if rec.EventID == "" {
		if !partial {
			return nil, fmt.Errorf("collector: recording %s came without its event", id)
		}
		return rec, nil
	}
	raw, err := c.Event(ctx, rec.EventID)
	if err != nil {
		return nil, fmt.Errorf("recording %s: its event %s: %w", id, rec.EventID, err)
	}
	var ev struct {
		Data struct {
			SSHSession string `json:"ssh_session"`
			Recording  struct {
				SHA256 string `json:"sha256"`
			} `json:"recording"`
		} `json:"data"`
	}
	if err := json.Unmarshal(raw, &ev); err != nil {
		return nil, fmt.Errorf("recording %s: decode event %s: %w", id, rec.EventID, err)
	}
	sum := sha256.Sum256(body)
	got := hex.EncodeToString(sum[:])
	if ev.Data.SSHSession != id || ev.Data.Recording.SHA256 != got {
		return nil, fmt.Errorf("recording %s: sha256 %s does not match event %s (%s); refusing to play it", id, got, rec.EventID, ev.Data.Recording.SHA256)
	}
	rec.SHA256 = got
	return rec, nil
}
