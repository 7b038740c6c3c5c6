package event

import _ "embed"

// JSONSchema is the JSON Schema (draft 2020-12) of warden.event/v2, from
// schema/warden.event.v2.json. It is embedded so that the collector and the
// CLI can validate events without finding the file at run time.
//
//go:embed schema/warden.event.v2.json
var JSONSchema []byte

// JSONSchemaID is the $id of JSONSchema.
const JSONSchemaID = "https://github.com/wardenhq/warden/pkg/event/schema/warden.event.v2.json"

// JSONSchemaV1 is the JSON Schema of warden.event/v1, which stored events
// of older agents follow.
//
//go:embed schema/warden.event.v1.json
var JSONSchemaV1 []byte

// JSONSchemaV1ID is the $id of JSONSchemaV1.
const JSONSchemaV1ID = "https://github.com/wardenhq/warden/pkg/event/schema/warden.event.v1.json"

// CheckpointJSONSchema is the JSON Schema of warden.checkpoint/v1
// messages, from schema/warden.checkpoint.v1.json.
//
//go:embed schema/warden.checkpoint.v1.json
var CheckpointJSONSchema []byte

// CheckpointJSONSchemaID is the $id of CheckpointJSONSchema.
const CheckpointJSONSchemaID = "https://github.com/wardenhq/warden/pkg/event/schema/warden.checkpoint.v1.json"
