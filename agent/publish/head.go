package publish

import (
	"encoding/json"
	"errors"
)

// eventHead is what the publisher needs of an event: its id, for JetStream's
// duplicate detection, and its type, for the subject.
type eventHead struct {
	ID   string `json:"id"`
	Type string `json:"type"`
}

// scan reads the head from a spooled event. The recorder writes events in
// canonical form, where top-level id and type are plain strings, so a
// shallow scan of the top-level members finds them without decoding the
// whole event (a full decode per event cost more than the publish). Any
// other record, malformed ones included, goes through encoding/json, which
// also supplies the error.
func (h *eventHead) scan(data []byte) error {
	if id, typ, ok := scanHead(data); ok {
		h.ID, h.Type = id, typ
		return nil
	}
	return json.Unmarshal(data, h)
}

var errNotPlain = errors.New("not a plain canonical event")

// scanHead walks the members of the top-level object of data, skipping
// values, and returns the id and type members. ok is false unless data is
// one object whose members it could step through, with id and type plain
// strings (no escapes): anything else is for encoding/json to judge.
func scanHead(data []byte) (id, typ string, ok bool) {
	i := skipSpace(data, 0)
	if i >= len(data) || data[i] != '{' {
		return "", "", false
	}
	i++
	for {
		i = skipSpace(data, i)
		if i >= len(data) || data[i] != '"' {
			return "", "", false
		}
		kEnd, plain := stringEnd(data, i)
		if kEnd < 0 || !plain {
			return "", "", false
		}
		key := string(data[i+1 : kEnd-1])
		i = skipSpace(data, kEnd)
		if i >= len(data) || data[i] != ':' {
			return "", "", false
		}
		i = skipSpace(data, i+1)
		vEnd, err := valueEnd(data, i)
		if err != nil {
			return "", "", false
		}
		if key == "id" || key == "type" {
			if data[i] != '"' {
				return "", "", false
			}
			if end, plain := stringEnd(data, i); !plain || end != vEnd {
				return "", "", false
			}
			if key == "id" {
				id = string(data[i+1 : vEnd-1])
			} else {
				typ = string(data[i+1 : vEnd-1])
			}
		}
		i = skipSpace(data, vEnd)
		if i < len(data) && data[i] == ',' {
			i++
			continue
		}
		if i < len(data) && data[i] == '}' && skipSpace(data, i+1) == len(data) {
			return id, typ, true
		}
		return "", "", false
	}
}

func skipSpace(data []byte, i int) int {
	for i < len(data) && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r') {
		i++
	}
	return i
}

// stringEnd returns the index after the string starting at data[i] (a
// quote), or -1 if it is unterminated; plain reports no escapes.
func stringEnd(data []byte, i int) (end int, plain bool) {
	plain = true
	for j := i + 1; j < len(data); j++ {
		switch data[j] {
		case '\\':
			plain = false
			j++
		case '"':
			return j + 1, plain
		}
	}
	return -1, false
}

// valueEnd returns the index after the JSON value starting at data[i]. It
// tracks strings and nesting only; encoding/json validates the rest at the
// collector.
func valueEnd(data []byte, i int) (int, error) {
	if i >= len(data) {
		return 0, errNotPlain
	}
	switch data[i] {
	case '"':
		end, _ := stringEnd(data, i)
		if end < 0 {
			return 0, errNotPlain
		}
		return end, nil
	case '{', '[':
		depth := 0
		for j := i; j < len(data); j++ {
			switch data[j] {
			case '"':
				end, _ := stringEnd(data, j)
				if end < 0 {
					return 0, errNotPlain
				}
				j = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1, nil
				}
			}
		}
		return 0, errNotPlain
	default: // number, true, false, null
		j := i
		for j < len(data) && data[j] != ',' && data[j] != '}' && data[j] != ']' &&
			data[j] != ' ' && data[j] != '\t' && data[j] != '\n' && data[j] != '\r' {
			j++
		}
		if j == i {
			return 0, errNotPlain
		}
		return j, nil
	}
}
