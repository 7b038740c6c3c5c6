package event

import _ "embed"

// JSONSchema is the JSON Schema (draft 2020-12) of warden.event/v1, from
// schema/warden.event.v1.json. It is embedded so that the collector and the
// CLI can validate events without finding the file at run time.
//
//go:embed schema/warden.event.v1.json
var JSONSchema []byte

// JSONSchemaID is the $id of JSONSchema.
const JSONSchemaID = "https://github.com/wardenhq/warden/pkg/event/schema/warden.event.v1.json"
