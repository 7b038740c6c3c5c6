package event

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/json"
	"flag"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/santhosh-tekuri/jsonschema/v6"
)

var printExamples = flag.String("print-examples", "", "write the docs/events.md examples to this file")

// exampleKey is the documented example signing key: its seed is
// sha256("warden.event/v1 example key"), so readers can verify the examples.
func exampleKey() ed25519.PrivateKey {
	seed := sha256.Sum256([]byte("warden.event/v1 example key"))
	return ed25519.NewKeyFromSeed(seed[:])
}

// examples returns one sealed event of every type, forming one chain, in the
// order docs/events.md shows them.
func examples() []*Event {
	t0 := time.Date(2025, 3, 14, 9, 26, 53, 589793238, time.UTC)
	host := Host{ID: "bastion-1", Name: "bastion-1.prod.example.com"}
	alice := &Identity{Sub: "00u1a2b3c4", Email: "alice@example.com", Name: "Alice Example", Groups: []string{"engineering", "dba"}, Issuer: "https://idp.example.com", SessionID: "s-01JPA7Q5"}
	shell := Ancestor{ExecID: "bastion-1:4211:1741944000000000000", PID: 4211, UID: 1001, Binary: "/usr/bin/bash", Args: []string{"-bash"}}
	sshd := Ancestor{ExecID: "bastion-1:4190:1741943990000000000", PID: 4190, UID: 0, Binary: "/usr/sbin/sshd"}
	psql := &Process{ExecID: "bastion-1:5120:1741944400000000000", PID: 5120, UID: 1001, Binary: "/usr/bin/psql", Args: []string{"psql", "-h", "10.0.0.5", "orders"}, ParentExecID: shell.ExecID, Ancestors: []Ancestor{shell, sshd}, CgroupID: 8812}
	db := &Target{Name: "orders-db", Protocol: "postgres", Address: "10.0.0.5:5432"}
	ssh := &Target{Name: "build-host", Protocol: "ssh", Address: "10.0.1.7:22"}
	api := &Target{Name: "billing-api", Protocol: "http", Address: "billing.internal:443"}
	cache := &Target{Name: "sessions-cache", Protocol: "redis", Address: "10.0.2.9:6379"}
	desk := &Target{Name: "win-jump", Protocol: "rdp", Address: "10.0.3.4:3389"}
	allow := func(rule string) *Decision { return &Decision{Action: Allow, Rule: rule} }
	// The db.result names the db.query's id, known once ids are assigned
	// below.
	query := &Event{Type: DBQuery, Identity: alice, Process: psql, Target: db, Decision: allow(""),
		Data: Query{Database: "orders", DBUser: "app", Statement: "SELECT id, email FROM customers WHERE id = $1",
			Fingerprint: "a0ead580058af585", Kind: "select", Tables: []string{"customers"}, Protocol: "simple"}.Data()}
	result := &Event{Type: DBResult, Identity: alice, Process: psql, Target: db}
	evs := []*Event{
		{Type: AgentStart, Identity: nil, Data: map[string]any{"version": "0.1.0", "cgroup_root": "/sys/fs/cgroup/unified", "proxy": "127.0.0.1:15001", "policy_digest": "sha256:9f2c41d0"}},
		{Type: SessionLogin, Identity: alice, Process: &Process{ExecID: shell.ExecID, PID: shell.PID, UID: 1001, Binary: shell.Binary, Args: shell.Args, ParentExecID: sshd.ExecID, Ancestors: []Ancestor{sshd}}, Decision: allow("token"),
			Data: map[string]any{"uid": 1001, "cgroup": "/sys/fs/cgroup/unified/warden/s-01JPA7Q5", "login_time": "2025-03-14T09:26:53Z", "expires": "2025-03-14T17:26:53Z"}},
		{Type: ProcessExec, Identity: alice, Process: psql, Data: map[string]any{"cwd": "/home/alice"}},
		{Type: NetConnect, Identity: alice, Process: psql, Target: db, Decision: allow("access"), Data: map[string]any{"original_dst": "10.0.0.5:5432", "verdict": "redirect", "via": "proxy", "upstream_local": "10.0.0.2:40112"}},
		query,
		result,
		{Type: ReviewRequested, Identity: alice, Process: psql, Target: db, Decision: &Decision{Action: Review, Rule: "unbounded-writes", Reason: `warden: review R-01JPA7T0Q3M5X9K2B4C6D8E0F1 required by rule "unbounded-writes"`},
			Data: ReviewRequest{ID: "R-01JPA7T0Q3M5X9K2B4C6D8E0F1", Kind: "statement", Rule: "unbounded-writes", Statement: "DELETE FROM customers",
				Fingerprint: "5d41402abc4b2a76b9719d911017c592ae1f1e6f0c2b6fb7e1a0d5c8b3e4f6a7", Approvers: []string{"dba", "security"}, Require: "any",
				Grant: "once", Hold: 2 * time.Minute, ExpiresAt: time.Date(2025, 3, 14, 10, 26, 53, 0, time.UTC)}.Data()},
		{Type: ReviewDecided, Identity: alice, Target: &Target{Name: "orders-db"}, Decision: &Decision{Action: Allow, Rule: "unbounded-writes", Reason: "review R-01JPA7T0Q3M5X9K2B4C6D8E0F1 approved"},
			Data: ReviewDecision{ID: "R-01JPA7T0Q3M5X9K2B4C6D8E0F1", Kind: "statement", Rule: "unbounded-writes", Outcome: "approved", Reviewer: "bob@example.com",
				Comment: "ok for the migration window", Approvals: []string{"bob@example.com"}, Fingerprint: "5d41402abc4b2a76b9719d911017c592ae1f1e6f0c2b6fb7e1a0d5c8b3e4f6a7",
				RequestedAt: time.Date(2025, 3, 14, 9, 26, 53, 0, time.UTC), DecidedAt: time.Date(2025, 3, 14, 9, 28, 10, 0, time.UTC),
				GrantUntil: time.Date(2025, 3, 14, 9, 43, 10, 0, time.UTC)}.Data()},
		{Type: SSHSession, Identity: alice, Process: &Process{ExecID: "bastion-1:5301:1741944500000000000", PID: 5301, UID: 1001, Binary: "/usr/bin/ssh", Args: []string{"ssh", "deploy@10.0.1.7"}, ParentExecID: shell.ExecID, Ancestors: []Ancestor{shell, sshd}}, Target: ssh, Decision: allow("access"),
			Data: SSHSessionData{Phase: "start", SSHSession: "ssh-01JPA7V2K9Q4M1X8B3C5D7E9F0", RemoteUser: "deploy", Auth: "user_ca"}.Data()},
		{Type: SSHExec, Identity: alice, Target: ssh, Decision: &Decision{Action: Deny, Rule: "no-rm", Reason: `warden: command refused by rule "no-rm" (runs rm)`},
			Data: SSHExecData{SSHSession: "ssh-01JPA7V2K9Q4M1X8B3C5D7E9F0", Command: "sh -c 'true; rm -rf /srv/app'", Programs: []string{"sh", "true", "rm"}, RemoteUser: "deploy", Kind: "exec"}.Data()},
		{Type: SSHSFTP, Identity: alice, Target: ssh,
			Data: SSHSFTPData{SSHSession: "ssh-01JPA7V2K9Q4M1X8B3C5D7E9F0", Op: "write", Path: "/srv/app/config.yml", Bytes: 2481, Status: "ok"}.Data()},
		{Type: SSHSession, Identity: alice, Target: ssh,
			Data: SSHSessionData{Phase: "end", SSHSession: "ssh-01JPA7V2K9Q4M1X8B3C5D7E9F0", RemoteUser: "deploy", Auth: "user_ca", DurationMS: 754210, BytesIn: 3120, BytesOut: 88412,
				Recording: "ssh-01JPA7V2K9Q4M1X8B3C5D7E9F0", RecordingSHA256: "9b74c9897bac770ffc029102a200c5de9a2c1f6e5b5a3d4c2e1f0a9b8c7d6e5f", RecordingBytes: 91807}.Data()},
		{Type: HTTPRequest, Identity: alice, Target: api, Decision: allow(""), Data: map[string]any{"method": "GET", "host": "billing.internal", "path": "/v1/invoices/991", "status": 200, "duration_ms": 31.7, "bytes_in": 0, "bytes_out": 1834}},
		{Type: RedisCommand, Identity: alice, Target: cache, Decision: &Decision{Action: Deny, Rule: "no-flush", Reason: `warden: FLUSHALL denied by rule "no-flush"`}, Data: Redis{Command: "FLUSHALL"}.Data()},
		{Type: RDPSession, Identity: alice, Target: desk, Decision: allow("access"),
			Data: RDP{Phase: "end", Cookie: "alice", Requested: []string{"ssl", "hybrid", "hybrid_ex"}, Selected: "hybrid_ex",
				BytesFromClient: 1843211, BytesFromServer: 48211933, Duration: 42*time.Minute + 7*time.Second, EndReason: "client closed"}.Data()},
		{Type: NetConnect, Identity: nil, Process: &Process{ExecID: "bastion-1:6001:1741944700000000000", PID: 6001, UID: 998, Binary: "/usr/bin/python3", Args: []string{"python3", "exfil.py"}, ParentExecID: "bastion-1:1:0", Ancestors: []Ancestor{{ExecID: "bastion-1:1:0", PID: 1, Binary: "/usr/lib/systemd/systemd"}}}, Target: db,
			Decision: &Decision{Action: Deny, Rule: "identity", Reason: "warden: no verified identity for this session; run 'warden login'"},
			Data:     map[string]any{"original_dst": "10.0.0.5:5432", "verdict": "unbound", "via": "kernel", "errno": "EPERM"}},
		{Type: ProcessExit, Identity: alice, Process: psql, Data: map[string]any{"exit_code": 0, "duration_ms": 91234}},
		{Type: AgentSpoolPressure, Identity: nil, Data: SpoolPressure{Bytes: 859832320, MaxBytes: 1 << 30, Percent: 80}.Data()},
		{Type: AgentLoss, Identity: nil, Data: map[string]any{"count": 3, "reason": "spool_full", "source": "recorder", "first_time": "2025-03-14T09:27:01.5Z", "last_time": "2025-03-14T09:27:01.9Z", "types": map[string]any{"db.query": 3}}},
		{Type: AccessRevoked, Identity: alice, Target: db, Decision: &Decision{Action: Deny, Rule: "access", Reason: "warden: access to target orders-db revoked by policy"},
			Data: Revocation{PolicyDigest: "sha256:41c07a9e", ConnectionsClosed: []ClosedConnection{{Target: "orders-db", Client: "10.0.0.5:40112", PID: 5120, Since: t0.Add(5 * time.Second)}}}.Data()},
		{Type: SessionExpired, Identity: alice, Data: Session{UID: 1001, Cgroup: "/sys/fs/cgroup/unified/warden/s-01JPA7Q5", LoginTime: t0, Expires: t0.Add(8 * time.Hour),
			ConnectionsClosed: []ClosedConnection{{Target: "build-host", Client: "10.0.1.7:51544", PID: 5301, Since: t0.Add(10 * time.Second)}}}.Data()},
		{Type: SessionLogout, Identity: alice, Data: Session{UID: 1001, Cgroup: "/sys/fs/cgroup/unified/warden/s-01JPA7Q5", LoginTime: t0, Expires: t0.Add(8 * time.Hour), ConnectionsClosed: []ClosedConnection{}}.Data()},
		{Type: SessionKilled, Identity: alice, Decision: &Decision{Action: Deny, Rule: "kill", Reason: "warden: session killed by soc@example.com: credential theft suspected"},
			Data: Killed{By: "soc@example.com", Reason: "credential theft suspected", Sessions: []string{"s-01JPA7Q5"},
				Processes:         []KilledProcess{{PID: 4211, Binary: "/usr/bin/bash"}, {PID: 5120, Binary: "/usr/bin/psql"}},
				ConnectionsClosed: []ClosedConnection{{Target: "orders-db", Client: "10.0.0.5:40118", PID: 5120, Since: t0.Add(20 * time.Second)}},
				LockedUntil:       t0.Add(time.Hour)}.Data()},
		{Type: AgentStop, Identity: nil, Data: map[string]any{"reason": "signal: terminated"}},
	}
	for i, e := range evs {
		e.Schema = Schema
		e.Time = t0.Add(time.Duration(i) * 1250 * time.Millisecond)
		var entropy [10]byte
		entropy[9] = byte(i)
		e.ID = ulid.MustNew(ulid.Timestamp(e.Time), bytes.NewReader(entropy[:])).String()
		e.Host = host
	}
	result.Data = QueryResult{RequestID: query.ID, DurationMS: 2.4, Command: "SELECT 1", Rows: 1, RowsReturned: 1, MaskedColumns: []string{"email"}}.Data()
	s := NewSigner(exampleKey(), 0, "")
	for _, e := range evs {
		s.Seal(e)
	}
	return evs
}

// violationExample is what the collector stores when a check fails. It is
// raised by the collector, outside any agent's chain, so it is not sealed.
func violationExample() *Event {
	return &Event{
		Schema: Schema, ID: "01JPA8B2K3M4N5P6Q7R8S9T0V1", Time: time.Date(2025, 3, 14, 9, 27, 30, 0, time.UTC),
		Type: IntegrityViolation, Host: Host{ID: "bastion-1", Name: "bastion-1.prod.example.com"},
		Data: map[string]any{"problem": "gap", "detail": "expected seq 18, got 21 (3 missing)", "event_id": "01JPA8B0ZZQ1W2E3R4T5Y6U7I8",
			"host_id": "bastion-1", "seq": 21, "expected_seq": 18, "got_seq": 21, "subject": "warden.events.db.query", "stream_seq": 90211, "collector": "collector-1"},
	}
}

func compileSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(JSONSchema))
	if err != nil {
		t.Fatalf("schema is not JSON: %v", err)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	if err := c.AddResource(JSONSchemaID, doc); err != nil {
		t.Fatal(err)
	}
	sch, err := c.Compile(JSONSchemaID)
	if err != nil {
		t.Fatalf("compile schema: %v", err)
	}
	return sch
}

func validate(sch *jsonschema.Schema, b []byte) error {
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		return err
	}
	return sch.Validate(v)
}

func TestExamplesValidateAndVerify(t *testing.T) {
	sch := compileSchema(t)
	evs := examples()
	v := NewVerifier(StaticKeys{"bastion-1": exampleKey().Public().(ed25519.PublicKey)})
	seen := map[Type]bool{}
	var doc strings.Builder
	for _, e := range evs {
		b, err := json.MarshalIndent(e, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := validate(sch, b); err != nil {
			t.Errorf("%s example fails the schema: %v", e.Type, err)
		}
		if ps := v.Check(wire(t, e)); len(ps) != 0 {
			t.Errorf("%s example: %v", e.Type, ps)
		}
		seen[e.Type] = true
		doc.WriteString("```json\n" + string(b) + "\n```\n\n")
	}
	viol := violationExample()
	vb, _ := json.MarshalIndent(viol, "", "  ")
	if err := validate(sch, vb); err != nil {
		t.Errorf("integrity.violation example fails the schema: %v", err)
	}
	seen[viol.Type] = true
	doc.WriteString("```json\n" + string(vb) + "\n```\n\n")
	cp := checkpointExample(t, evs)
	cb, _ := json.MarshalIndent(cp, "", "  ")
	if err := validate(compileCheckpointSchema(t), cb); err != nil {
		t.Errorf("checkpoint example fails the checkpoint schema: %v", err)
	}
	if _, err := cp.Verify(exampleKey().Public().(ed25519.PublicKey)); err != nil {
		t.Errorf("checkpoint example: %v", err)
	}
	doc.WriteString("```json\n" + string(cb) + "\n```\n\n")
	for _, typ := range knownTypes(t) {
		if !seen[typ] {
			t.Errorf("no example of %s", typ)
		}
	}
	if *printExamples != "" {
		if err := os.WriteFile(*printExamples, []byte(doc.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// docs/events.md shows these exact events, so readers can check the
	// canonical form and signatures by hand.
	md, err := os.ReadFile("../../docs/events.md")
	if err != nil {
		t.Fatalf("read docs: %v", err)
	}
	for _, e := range append(evs, viol) {
		b, _ := json.MarshalIndent(e, "", "  ")
		if !bytes.Contains(md, b) {
			t.Errorf("docs/events.md lacks the current %s example (regenerate with go test ./pkg/event -run TestExamples -print-examples FILE)", e.Type)
		}
	}
	if !bytes.Contains(md, cb) {
		t.Errorf("docs/events.md lacks the current checkpoint example (regenerate with go test ./pkg/event -run TestExamples -print-examples FILE)")
	}
}

// checkpointExample is the example key's signed checkpoint over the
// example chain.
func checkpointExample(t *testing.T, evs []*Event) *Checkpoint {
	t.Helper()
	log := NewMerkleLog()
	for _, e := range evs {
		h, err := LeafHash(e.Hash)
		if err != nil {
			t.Fatal(err)
		}
		log.Append(h)
	}
	signer, err := NewNoteSigner("bastion-1", exampleKey())
	if err != nil {
		t.Fatal(err)
	}
	head := TreeHead{Origin: "bastion-1", Size: log.Size(), Root: log.Root()}
	note, err := SignTreeHead(signer, head)
	if err != nil {
		t.Fatal(err)
	}
	last := evs[len(evs)-1]
	return &Checkpoint{Schema: CheckpointSchema, ID: "01JPA7W1N9R0S1T2V3W4X5Y6Z7", Time: last.Time.Add(time.Second),
		Type: CheckpointType, Host: last.Host, Size: head.Size, Root: EncodeHashes([][]byte{head.Root})[0],
		PrevSize: 0, Consistency: []string{}, IntervalMS: 1000, Note: note}
}

func compileCheckpointSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(CheckpointJSONSchema))
	if err != nil {
		t.Fatalf("checkpoint schema is not JSON: %v", err)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	if err := c.AddResource(CheckpointJSONSchemaID, doc); err != nil {
		t.Fatal(err)
	}
	sch, err := c.Compile(CheckpointJSONSchemaID)
	if err != nil {
		t.Fatalf("compile checkpoint schema: %v", err)
	}
	return sch
}

func TestSchemaRejects(t *testing.T) {
	sch := compileSchema(t)
	byType := map[Type]*Event{}
	for _, e := range examples() {
		byType[e.Type] = e
	}
	data := func(m map[string]any) map[string]any { return m["data"].(map[string]any) }
	for name, c := range map[string]struct {
		typ    Type
		mutate func(m map[string]any)
	}{
		"missing hash":                {AgentLoss, func(m map[string]any) { delete(m, "hash") }},
		"missing identity":            {AgentLoss, func(m map[string]any) { delete(m, "identity") }},
		"bad schema":                  {AgentLoss, func(m map[string]any) { m["schema"] = "warden.event/v1" }},
		"bad id":                      {AgentLoss, func(m map[string]any) { m["id"] = "not-a-ulid" }},
		"seq 0":                       {AgentLoss, func(m map[string]any) { m["seq"] = 0 }},
		"loss without count":          {AgentLoss, func(m map[string]any) { delete(data(m), "count") }},
		"bad decision action":         {AgentLoss, func(m map[string]any) { m["decision"] = map[string]any{"action": "maybe"} }},
		"bad time":                    {AgentLoss, func(m map[string]any) { m["time"] = "yesterday" }},
		"query without statement":     {DBQuery, func(m map[string]any) { delete(data(m), "statement") }},
		"query without decision":      {DBQuery, func(m map[string]any) { delete(m, "decision") }},
		"query statement not text":    {DBQuery, func(m map[string]any) { data(m)["statement"] = 42 }},
		"result without request_id":   {DBResult, func(m map[string]any) { delete(data(m), "request_id") }},
		"result request_id not ulid":  {DBResult, func(m map[string]any) { data(m)["request_id"] = "q-1" }},
		"result negative rows":        {DBResult, func(m map[string]any) { data(m)["rows"] = -1 }},
		"pressure without max_bytes":  {AgentSpoolPressure, func(m map[string]any) { delete(data(m), "max_bytes") }},
		"pressure percent over 100":   {AgentSpoolPressure, func(m map[string]any) { data(m)["percent"] = 101 }},
		"pressure without data":       {AgentSpoolPressure, func(m map[string]any) { delete(m, "data") }},
		"pressure bytes not a number": {AgentSpoolPressure, func(m map[string]any) { data(m)["bytes"] = "lots" }},
		"killed without by":           {SessionKilled, func(m map[string]any) { delete(data(m), "by") }},
		"killed pid not a number":     {SessionKilled, func(m map[string]any) { data(m)["processes"] = []any{map[string]any{"pid": "x"}} }},
		"revoked without target":      {AccessRevoked, func(m map[string]any) { delete(m, "target") }},
		"revoked closed without pid": {AccessRevoked, func(m map[string]any) {
			data(m)["connections_closed"] = []any{map[string]any{"target": "t", "since": "2025-03-14T09:26:53Z"}}
		}},
		"expired closed not a list": {SessionExpired, func(m map[string]any) { data(m)["connections_closed"] = 3 }},
	} {
		base := byType[c.typ]
		if base == nil {
			t.Fatalf("%s: no %s example", name, c.typ)
		}
		b, _ := json.Marshal(base)
		var m map[string]any
		json.Unmarshal(b, &m)
		c.mutate(m)
		b, _ = json.Marshal(m)
		if err := validate(sch, b); err == nil {
			t.Errorf("%s: schema accepted it", name)
		}
	}
}

// TestSchemaCoversStruct checks that every JSON field of the Go types is in
// the schema and that fields without omitempty are required there.
func TestSchemaCoversStruct(t *testing.T) {
	var s map[string]any
	if err := json.Unmarshal(JSONSchema, &s); err != nil {
		t.Fatal(err)
	}
	props := s["properties"].(map[string]any)
	check := func(where string, typ reflect.Type, obj map[string]any) {
		t.Helper()
		var required []string
		for _, r := range asSlice(obj["required"]) {
			required = append(required, r.(string))
		}
		fields := obj["properties"].(map[string]any)
		for f := range typ.Fields() {
			tag := f.Tag.Get("json")
			name, opts, _ := strings.Cut(tag, ",")
			if name == "" || name == "-" || where == "event" && name == "sig" { // sig: v1 only
				continue
			}
			if _, ok := fields[name]; !ok {
				t.Errorf("%s.%s is not in the schema", where, name)
			}
			if opts != "omitempty" && !slices.Contains(required, name) {
				t.Errorf("%s.%s is always present but not required by the schema", where, name)
			}
		}
	}
	check("event", reflect.TypeFor[Event](), s)
	check("host", reflect.TypeFor[Host](), props["host"].(map[string]any))
	check("identity", reflect.TypeFor[Identity](), props["identity"].(map[string]any)["oneOf"].([]any)[1].(map[string]any))
	proc := props["process"].(map[string]any)
	check("process", reflect.TypeFor[Process](), proc)
	check("ancestor", reflect.TypeFor[Ancestor](), proc["properties"].(map[string]any)["ancestors"].(map[string]any)["items"].(map[string]any))
	check("target", reflect.TypeFor[Target](), props["target"].(map[string]any))
	check("decision", reflect.TypeFor[Decision](), props["decision"].(map[string]any))

	// Every type constant is listed.
	listed := asSlice(s["$defs"].(map[string]any)["types"].(map[string]any)["enum"])
	for _, typ := range knownTypes(t) {
		if !slices.Contains(listed, any(string(typ))) {
			t.Errorf("type %s missing from $defs/types", typ)
		}
	}
}

func asSlice(v any) []any {
	s, _ := v.([]any)
	return s
}

// knownTypes lists the Type constants declared in event.go.
func knownTypes(t *testing.T) []Type {
	t.Helper()
	src, err := os.ReadFile("event.go")
	if err != nil {
		t.Fatal(err)
	}
	var out []Type
	for _, line := range strings.Split(string(src), "\n") {
		f := strings.Fields(line)
		if len(f) == 4 && f[1] == "Type" && f[2] == "=" {
			out = append(out, Type(strings.Trim(f[3], `"`)))
		}
	}
	if len(out) < 17 {
		t.Fatalf("found only %d type constants in event.go", len(out))
	}
	return out
}
