package ingest

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/wardenhq/warden/pkg/event"
)

const decodeSample = `{"schema":"warden.event/v2","id":"01J0000000000000000000000A","time":"2026-01-02T03:04:05.123456789Z","type":"db.query",` +
	`"host":{"id":"h1","name":"h1"},"identity":{"sub":"alice","email":"a@example.com","groups":["eng"],"issuer":"https://idp","session_id":"s1"},` +
	`"process":{"exec_id":"x1","pid":3,"uid":0,"binary":"/bin/psql","args":["-h","db"],"parent_exec_id":"","ancestors":[]},` +
	`"target":{"name":"db","protocol":"postgres","address":"10.0.0.5:5432"},"decision":{"action":"allow","rule":"r"},` +
	`"data":{"statement":"SELECT 1","rows":50},"seq":7,"prev_hash":"aa","hash":"bb"}`

// TestDecodeAcceptsWhatEventAccepts: the ingester's decoder skips the
// payload, but accepts and rejects exactly the messages event.Event's own
// decoder does, and reads every other field alike.
func TestDecodeAcceptsWhatEventAccepts(t *testing.T) {
	cases := map[string]string{
		"valid":            decodeSample,
		"data null":        strings.Replace(decodeSample, `{"statement":"SELECT 1","rows":50}`, `null`, 1),
		"data number":      strings.Replace(decodeSample, `{"statement":"SELECT 1","rows":50}`, `5`, 1),
		"data array":       strings.Replace(decodeSample, `{"statement":"SELECT 1","rows":50}`, `[1]`, 1),
		"data string":      strings.Replace(decodeSample, `{"statement":"SELECT 1","rows":50}`, `"x"`, 1),
		"data bad inside":  strings.Replace(decodeSample, `"rows":50`, `"rows":5x`, 1),
		"no data":          strings.Replace(decodeSample, `"data":{"statement":"SELECT 1","rows":50},`, ``, 1),
		"process a string": strings.Replace(decodeSample, `"process":{`, `"process":"p","x":{`, 1),
		"seq negative":     strings.Replace(decodeSample, `"seq":7`, `"seq":-7`, 1),
		"time bad":         strings.Replace(decodeSample, `2026-01-02T03:04:05.123456789Z`, `yesterday`, 1),
		"trailing junk":    decodeSample + `x`,
		"not json":         `this is not json`,
	}
	for name, msg := range cases {
		var want event.Event
		wantErr := json.Unmarshal([]byte(msg), &want)
		got, err := decode([]byte(msg))
		if (err != nil) != (wantErr != nil) {
			t.Errorf("%s: decode error %v, event.Event's %v", name, err, wantErr)
			continue
		}
		if err != nil {
			continue
		}
		want.Data = nil
		if !reflect.DeepEqual(*got, want) {
			t.Errorf("%s: decoded\n%+v\nwant\n%+v", name, *got, want)
		}
	}
}

func BenchmarkDecode(b *testing.B) {
	data := []byte(decodeSample)
	b.Run("event.Event", func(b *testing.B) {
		for range b.N {
			var e event.Event
			if err := json.Unmarshal(data, &e); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("ingest", func(b *testing.B) {
		for range b.N {
			if _, err := decode(data); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// FuzzDecode: on any input, the ingester's decoder accepts and rejects as
// the same decoder on encoding/json does, and reads every field alike.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(decodeSample))
	f.Add([]byte(strings.Replace(decodeSample, `"seq":7`, `"Seq":7,"seq":8`, 1)))
	f.Add([]byte(strings.Replace(decodeSample, `"host":{"id":"h1","name":"h1"}`, `"host":{"id":"h\u00e9\ud800"},"host":{"name":"n"}`, 1)))
	f.Add([]byte(strings.Replace(decodeSample, `"pid":3`, `"pid":4294967296`, 1)))
	f.Add([]byte(strings.Replace(decodeSample, `"schema"`, `"SCHEMA"`, 1)))
	f.Add([]byte(strings.Replace(decodeSample, `"seq":7`, `"seq":7.0`, 1)))
	f.Add([]byte(strings.Replace(decodeSample, `"name":"h1"`, "\"name\":\"h\xff\xfe1\"", 1)))
	f.Add([]byte(strings.Replace(decodeSample, `"identity":{`, `"identity":{"sub":"x"},"identity":{`, 1)))
	f.Add([]byte(strings.Replace(decodeSample, `"identity":{"sub":"alice"`, `"identity":null,"x":{"sub":"alice"`, 1)))
	f.Add([]byte(strings.Replace(decodeSample, `"time":"2026-01-02T03:04:05.123456789Z"`, `"time":"2026-01-02T03:04:05+01:00"`, 1)))
	f.Fuzz(func(t *testing.T, msg []byte) {
		want, wantErr := decodeWith(json.Unmarshal, msg)
		got, err := decode(msg)
		if (err != nil) != (wantErr != nil) {
			t.Fatalf("decode error %v, on encoding/json %v, on %q", err, wantErr, msg)
		}
		if err == nil && !reflect.DeepEqual(*got, *want) {
			t.Fatalf("decoded\n%+v\nwant\n%+v\non %q", *got, *want, msg)
		}
	})
}
