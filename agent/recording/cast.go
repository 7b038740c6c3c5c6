package recording

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// CastHeader is an asciicast v2 header as read back.
type CastHeader struct {
	Version   int               `json:"version"`
	Width     int               `json:"width"`
	Height    int               `json:"height"`
	Timestamp int64             `json:"timestamp"`
	Env       map[string]string `json:"env"`
	Title     string            `json:"title"`
}

// CastEvent is one asciicast v2 event line: seconds since the start, kind
// ("o", "i", "r") and data.
type CastEvent struct {
	Time float64
	Kind string
	Data string
}

// MaxLine bounds one line of a cast, so that a corrupt recording cannot
// make the reader buffer without limit.
const MaxLine = 16 << 20

// ParseCast reads an asciicast v2 recording. Errors name the line.
func ParseCast(data []byte) (CastHeader, []CastEvent, error) {
	var h CastHeader
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64<<10), MaxLine)
	if !sc.Scan() {
		if err := sc.Err(); err != nil {
			return h, nil, fmt.Errorf("cast header: %w", err)
		}
		return h, nil, fmt.Errorf("cast is empty")
	}
	if err := json.Unmarshal(sc.Bytes(), &h); err != nil {
		return h, nil, fmt.Errorf("cast line 1 (header): %w", err)
	}
	if h.Version != 2 {
		return h, nil, fmt.Errorf("cast line 1: version %d, want 2", h.Version)
	}
	var evs []CastEvent
	for n := 2; sc.Scan(); n++ {
		line := sc.Bytes()
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var raw []json.RawMessage
		if err := json.Unmarshal(line, &raw); err != nil || len(raw) != 3 {
			return h, nil, fmt.Errorf("cast line %d: want [time, kind, data]", n)
		}
		var e CastEvent
		var ts json.Number
		if err := json.Unmarshal(raw[0], &ts); err != nil {
			return h, nil, fmt.Errorf("cast line %d: time: %w", n, err)
		}
		t, err := strconv.ParseFloat(ts.String(), 64)
		if err != nil || t < 0 {
			return h, nil, fmt.Errorf("cast line %d: time %q", n, ts)
		}
		e.Time = t
		if err := json.Unmarshal(raw[1], &e.Kind); err != nil {
			return h, nil, fmt.Errorf("cast line %d: kind: %w", n, err)
		}
		if err := json.Unmarshal(raw[2], &e.Data); err != nil {
			return h, nil, fmt.Errorf("cast line %d: data: %w", n, err)
		}
		if e.Kind == "r" {
			w, hh, ok := strings.Cut(e.Data, "x")
			if _, err1 := strconv.Atoi(w); !ok || err1 != nil {
				return h, nil, fmt.Errorf("cast line %d: resize %q, want COLSxROWS", n, e.Data)
			}
			if _, err2 := strconv.Atoi(hh); err2 != nil {
				return h, nil, fmt.Errorf("cast line %d: resize %q, want COLSxROWS", n, e.Data)
			}
		}
		evs = append(evs, e)
	}
	if err := sc.Err(); err != nil {
		return h, nil, fmt.Errorf("cast: %w", err)
	}
	return h, evs, nil
}
