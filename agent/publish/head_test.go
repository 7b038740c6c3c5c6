package publish

import (
	"encoding/json"
	"strings"
	"testing"
)

var headCases = []string{
	`{"data":{"statement":"select \"}\" from t","rows":[1,{"a":"]"}]},"hash":"ab","id":"01J","seq":3,"type":"db.query"}`,
	`{"id":"01J","type":"agent.start"}`,
	` { "type" : "x.y" , "id" : "I" , "n" : null , "b" : true , "f" : -1.5e3 } `,
	`{"id":"a\"b","type":"t"}`,
	`{"id":"a","type":"t"`,
	`{"id":"a","type":"t"} trailing`,
	`{"id":1,"type":"t"}`,
	`{"id":"a"}`,
	`[{"id":"a","type":"t"}]`,
	`{"data":{"x":"unterminated},"id":"a","type":"t"}`,
	``, `{`, `{"id"`, `{"id":`, `{"id":"a",}`,
}

func TestScanHeadAgreesWithEncodingJSON(t *testing.T) {
	for _, c := range headCases {
		checkHead(t, c)
	}
	if id, typ, ok := scanHead([]byte(headCases[0])); !ok || id != "01J" || typ != "db.query" {
		t.Fatalf("canonical event: %q %q %v", id, typ, ok)
	}
}

// checkHead: whenever the shallow scan answers for valid JSON, it answers
// what encoding/json does.
func checkHead(t *testing.T, data string) {
	t.Helper()
	id, typ, ok := scanHead([]byte(data))
	if !ok || !json.Valid([]byte(data)) {
		return
	}
	var want eventHead
	if err := json.Unmarshal([]byte(data), &want); err != nil {
		t.Fatalf("%q: %v", data, err)
	}
	// encoding/json also matches keys case-insensitively ("ID"); the
	// recorder writes them in lower case only, so such texts are skipped.
	lower := strings.ToLower(data)
	if strings.Count(lower, `"id"`) != strings.Count(data, `"id"`) || strings.Count(lower, `"type"`) != strings.Count(data, `"type"`) {
		return
	}
	if id != want.ID || typ != want.Type {
		t.Fatalf("%q: scan gives %q %q, encoding/json %q %q", data, id, typ, want.ID, want.Type)
	}
}

func FuzzScanHead(f *testing.F) {
	for _, c := range headCases {
		f.Add(c)
	}
	f.Fuzz(checkHead)
}
