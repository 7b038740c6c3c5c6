package ingest

import (
	"encoding/json"
	"errors"
	"fmt"

	fastjson "github.com/segmentio/encoding/json"

	"github.com/wardenhq/warden/pkg/event"
)

// plainEvent has Event's fields without its UnmarshalJSON, which decodes
// the payload with UseNumber through a second parser.
type plainEvent event.Event

// wireEvent is what the ingester decodes of a message: every field of
// event.Event, typed as there (so that a message event.Event would reject
// is rejected here too), except the payload, which the collector stores
// verbatim in the raw JSON and never reads. Skipping it saves building a
// map of interfaces per event, the largest part of decoding. The shallower
// Data field hides the embedded one.
type wireEvent struct {
	plainEvent
	Data json.RawMessage `json:"data,omitempty"`
}

// decode parses a message into an event and checks the fields the store
// cannot do without. The returned event has no Data; the message's bytes
// are what is stored.
func decode(data []byte) (*event.Event, error) {
	return decodeWith(fastjson.Unmarshal, data)
}

// decodeWith is decode with the JSON decoder unmarshal. The ingester uses
// segmentio/encoding's, which keeps encoding/json's semantics at a quarter
// of its cost (FuzzDecode compares the two).
func decodeWith(unmarshal func([]byte, any) error, data []byte) (*event.Event, error) {
	var w wireEvent
	if err := unmarshal(data, &w); err != nil {
		return nil, fmt.Errorf("not a JSON event: %w", err)
	}
	// event.Event's map[string]any takes an object or null, nothing else.
	if len(w.Data) > 0 && w.Data[0] != '{' && string(w.Data) != "null" {
		return nil, fmt.Errorf("not a JSON event: data is %.20s, want an object", w.Data)
	}
	e := (*event.Event)(&w.plainEvent)
	switch {
	case e.Schema != event.Schema && e.Schema != event.SchemaV1:
		return nil, fmt.Errorf("schema %q, want %q (or %q)", e.Schema, event.Schema, event.SchemaV1)
	case e.ID == "":
		return nil, errors.New("event has no id")
	case e.Type == "":
		return nil, fmt.Errorf("event %s has no type", e.ID)
	case e.Host.ID == "":
		return nil, fmt.Errorf("event %s has no host.id", e.ID)
	case e.Time.IsZero():
		return nil, fmt.Errorf("event %s has no time", e.ID)
	}
	return e, nil
}
