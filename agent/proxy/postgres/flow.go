package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/wardenhq/warden/agent/proxy"
	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/pkg/guard"
	"github.com/wardenhq/warden/pkg/masking"
	"github.com/wardenhq/warden/pkg/policy"
	pgwire "github.com/wardenhq/warden/pkg/protocol/postgres"
	"github.com/wardenhq/warden/pkg/sqlguard"
)

// opKind is what a request forwarded upstream will be answered with. The
// server answers requests strictly in order, so a FIFO of ops tells the
// upstream loop what each response belongs to.
type opKind uint8

const (
	opExec     opKind = iota // a statement of a Query, or an Execute
	opParse                  // ParseComplete
	opBind                   // BindComplete
	opDescribe               // [ParameterDescription] RowDescription | NoData
	opClose                  // CloseComplete
	opSync                   // ReadyForQuery: the end of a Query or of a Sync
	opProbe                  // Warden's own Describe of a COPY's source, for its columns
)

// op is one expected response. Fields after the first block belong to the
// upstream loop once the op is queued.
type op struct {
	kind     opKind
	info     *stmtInfo
	name     string // portal (Execute, Describe 'P') or statement name
	describe byte   // 'S' or 'P'
	swallow  bool   // Warden's own request: the client must not see the answer
	denial   *pgproto3.ErrorResponse
	start    time.Time
	receipt  proxy.Receipt // the statement's db.query event
	probeFor *op           // opProbe: the COPY's exec op

	shape      []masking.Field
	shapeKnown bool
	plan       *masking.Plan
	planned    bool
	rows       int64
	copyOut    bool
	copyCSV    bool
	copyHeader bool // the next CopyData is the header line
}

// opQueue is the FIFO of expected responses, shared by the two loops.
type opQueue struct {
	mu  sync.Mutex
	ops []*op
}

func (q *opQueue) push(o ...*op) {
	q.mu.Lock()
	q.ops = append(q.ops, o...)
	q.mu.Unlock()
}

func (q *opQueue) peek() *op {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.ops) == 0 {
		return nil
	}
	return q.ops[0]
}

// pop removes the head if it is of kind k.
func (q *opQueue) pop(k opKind) *op {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.ops) == 0 || q.ops[0].kind != k {
		return nil
	}
	o := q.ops[0]
	q.ops[0] = nil
	q.ops = q.ops[1:]
	return o
}

// dropUntilSync discards what an error made the server skip: everything
// up to the next Sync or the end of the Query.
func (q *opQueue) dropUntilSync() {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.ops) > 0 && q.ops[0].kind != opSync {
		q.ops[0] = nil
		q.ops = q.ops[1:]
	}
}

// empty reports whether nothing sent upstream awaits its answer.
func (q *opQueue) empty() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.ops) == 0
}

// popThroughSync discards up to and including the next Sync.
func (q *opQueue) popThroughSync() {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.ops) > 0 {
		k := q.ops[0].kind
		q.ops[0] = nil
		q.ops = q.ops[1:]
		if k == opSync {
			return
		}
	}
}

// clientLoop reads the client's messages, checks statements and forwards
// them, or Warden's substitute for refused ones.
func (ss *pgSession) clientLoop(ctx context.Context) error {
	for {
		typ, body, err := ss.cr.Next()
		if err != nil {
			if cw, ok := ss.s.Upstream.(interface{ CloseWrite() error }); ok {
				cw.CloseWrite()
			}
			return err
		}
		switch typ {
		case 'Q':
			err = ss.query(ctx, body)
		case 'P':
			err = ss.parse(ctx, body)
		case 'B':
			var b pgproto3.Bind
			if err = b.Decode(body); err == nil {
				ss.portals[b.DestinationPortal] = ss.stmts[b.PreparedStatement]
				delete(ss.described, b.DestinationPortal)
				ss.q.push(&op{kind: opBind})
				err = ss.uw.Raw(typ, body)
			}
		case 'D':
			var d pgproto3.Describe
			if err = d.Decode(body); err == nil {
				if d.ObjectType == 'P' {
					ss.described[d.Name] = true
				}
				ss.q.push(&op{kind: opDescribe, describe: d.ObjectType, name: d.Name})
				err = ss.uw.Raw(typ, body)
			}
		case 'E':
			var e pgproto3.Execute
			if err = e.Decode(body); err == nil {
				info := ss.portals[e.Portal]
				var receipt proxy.Receipt
				if info != nil && info.review != "" && info.executed {
					ss.q.push(&op{kind: opExec, denial: onceSpent(info.review)})
					err = ss.uw.Send(&pgproto3.Parse{Name: ss.nonce, Query: ss.nonce})
					break
				}
				if info != nil {
					info.executed = true
					var refusal *pgproto3.ErrorResponse
					if receipt, refusal = ss.requestOrRefuse(info); refusal != nil {
						// A named statement that fails to parse: the
						// server skips to the Sync, as for any error,
						// and nothing of the session changes.
						ss.q.push(&op{kind: opExec, denial: refusal})
						err = ss.uw.Send(&pgproto3.Parse{Name: ss.nonce, Query: ss.nonce})
						break
					}
				}
				if ss.masker != nil && !ss.described[e.Portal] {
					// Masking needs the portal's columns and formats,
					// which the client may never have asked for.
					ss.described[e.Portal] = true
					ss.q.push(&op{kind: opDescribe, describe: 'P', name: e.Portal, swallow: true})
					ss.uw.Send(&pgproto3.Describe{ObjectType: 'P', Name: e.Portal})
				}
				ss.q.push(&op{kind: opExec, info: info, name: e.Portal, start: time.Now(), receipt: receipt})
				err = ss.uw.Raw(typ, body)
			}
		case 'C':
			var c pgproto3.Close
			if err = c.Decode(body); err == nil {
				if c.ObjectType == 'S' {
					delete(ss.stmts, c.Name)
				} else {
					delete(ss.portals, c.Name)
					delete(ss.described, c.Name)
				}
				ss.q.push(&op{kind: opClose})
				err = ss.uw.Raw(typ, body)
			}
		case 'S':
			ss.q.push(&op{kind: opSync})
			err = ss.uw.Raw(typ, body)
		case 'F':
			// The fast-path function call names functions by OID, past
			// any rule about function names: refuse it outright.
			e := deniedError(policy.Deny, "function-call", "function call", "")
			e.Message = "warden: the fast-path function call protocol is not allowed; call the function in a SQL statement"
			ss.recordRefusal(nil, event.Decision{Action: event.Deny, Rule: "function-call", Reason: e.Message})
			ss.q.push(&op{kind: opExec, denial: e}, &op{kind: opSync})
			err = ss.uw.Send(&pgproto3.Query{String: ss.nonce})
		case 'X':
			ss.uw.Raw(typ, body)
			return ss.uw.Flush()
		default: // CopyData, CopyDone, CopyFail, Flush
			err = ss.uw.Raw(typ, body)
		}
		if err != nil {
			return err
		}
		if typ == 'H' || ss.cr.Buffered() == 0 {
			if err := ss.uw.Flush(); err != nil {
				return err
			}
		}
	}
}

// ruleEscapes names Warden's own refusal of texts whose strings the server
// may read differently from the check.
const ruleEscapes = "escapes"

// analyze parses sql and decides on it.
func (ss *pgSession) analyze(ctx context.Context, sql string) ([]*sqlguard.Statement, guard.Verdict, string) {
	if reason := sqlguard.Misread(sql, ss.lexing()); reason != "" {
		return nil, guard.Verdict{Action: policy.Deny, Rule: ruleEscapes, Index: -1}, reason
	}
	stmts, err := sqlguard.Analyze(sql)
	if err != nil {
		// pg_query's message points at the offending token of the
		// user's own text; it goes back to the user only.
		return nil, guard.Verdict{Action: policy.Deny, Rule: "parse", Index: -1}, errors.Unwrap(err).Error()
	}
	reqs := make([]guard.Request, len(stmts))
	for i, s := range stmts {
		reqs[i] = s.Request()
	}
	v := ss.decide(ctx, reqs)
	if v.Action == policy.Allow && ss.masker != nil {
		for _, s := range stmts {
			if c := s.Copy; c != nil && c.ToClient && (c.Format == "binary" || !c.Simple) {
				return stmts, guard.Verdict{Action: policy.Deny, Rule: "masking", Index: -1, Kind: "copy"},
					"COPY TO STDOUT in binary format or with custom delimiters cannot be masked; use FORMAT text or csv"
			}
		}
	}
	return stmts, v, ""
}

// deny records a refused batch and returns the error the client gets.
func (ss *pgSession) deny(stmts []*sqlguard.Statement, v guard.Verdict, reason string, extended bool) *pgproto3.ErrorResponse {
	action := event.Deny
	if v.Action == policy.Review {
		action = event.Review
	}
	e := deniedError(v.Action, v.Rule, v.Kind, reason)
	switch {
	case v.Rule == "masking":
		e.Message = "warden: statement refused: " + reason
	case v.Review != nil && v.Review.Outcome == guard.ReviewPending && byte(ss.txStatus.Load()) != 'I':
		e = heldInTransaction(v.Rule, v.Review)
	case v.Review != nil:
		e = reviewError(v.Rule, v.Kind, v.Review)
	}
	dec := event.Decision{Action: action, Rule: v.Rule, Reason: e.Message}
	if len(stmts) == 0 {
		ss.recordRefusal(nil, dec)
	}
	for _, s := range stmts {
		ss.recordRefusal(&stmtInfo{stmt: s, extended: extended}, dec)
	}
	return e
}

// recordRefusal records a statement Warden refuses. The statement does
// not run whether or not the record is stored, so a failure is only
// logged: the audit has already counted it as lost.
func (ss *pgSession) recordRefusal(info *stmtInfo, dec event.Decision) {
	if _, err := ss.request(info, dec); err != nil {
		ss.s.Log.Warn().Err(err).Str("rule", dec.Rule).Msg("refused statement not recorded")
	}
}

// requestOrRefuse records an allowed statement before it is forwarded. When
// it cannot be recorded and the audit fails closed, it returns the error
// the client gets instead: a statement that cannot be recorded does not
// run.
func (ss *pgSession) requestOrRefuse(info *stmtInfo) (proxy.Receipt, *pgproto3.ErrorResponse) {
	dec := event.Decision{Action: event.Allow, Rule: info.rule}
	if info.review != "" {
		dec.Reason = "approved in review " + info.review
	}
	r, err := ss.request(info, dec)
	if err == nil {
		return r, nil
	}
	// Debug only: while the spool is full every statement lands here, and
	// the recorder already logs each run of losses once.
	ss.s.Log.Debug().Err(err).Msg("statement refused: the audit log cannot record it")
	return proxy.Receipt{}, unrecordedError(err)
}

// learn adds the aliases of masked columns a statement defines to the
// session's taint set, and returns its derived outputs.
func (ss *pgSession) learn(s *sqlguard.Statement) sqlguard.Outputs {
	if !ss.masker.HasColumns() {
		return sqlguard.Outputs{}
	}
	ss.taintMu.Lock()
	defer ss.taintMu.Unlock()
	out := s.Derived(func(c string) bool { return ss.masker.Column(c) || ss.taint[c] })
	for n := range out.Names {
		ss.taint[n] = true
	}
	return out
}

func (ss *pgSession) tainted(name string) bool {
	ss.taintMu.Lock()
	defer ss.taintMu.Unlock()
	return ss.taint[string(bytes.ToLower([]byte(name)))]
}

// query handles a simple-protocol Query.
func (ss *pgSession) query(ctx context.Context, body []byte) error {
	sql := string(bytes.TrimSuffix(body, []byte{0}))
	stmts, v, reason := ss.analyze(ctx, sql)
	if v.Action != policy.Allow {
		e := ss.deny(stmts, v, reason, false)
		// The server runs Warden's substitute, which fails to parse:
		// its transaction state becomes what a refused statement's
		// should be (failed, inside a transaction), and its error is
		// swapped for e on the way back.
		ss.q.push(&op{kind: opExec, denial: e}, &op{kind: opSync})
		return ss.uw.Send(&pgproto3.Query{String: ss.nonce})
	}
	now := time.Now()
	ops := make([]*op, 0, len(stmts)+1)
	for _, s := range stmts {
		info := &stmtInfo{stmt: s, rule: v.Rule, review: v.ReviewID()}
		receipt, refusal := ss.requestOrRefuse(info)
		if refusal != nil {
			// Nothing of the text runs, as for a denied one. The
			// statements before this one were recorded as allowed
			// and have no db.result: they never reached the server.
			ss.q.push(&op{kind: opExec, denial: refusal}, &op{kind: opSync})
			return ss.uw.Send(&pgproto3.Query{String: ss.nonce})
		}
		info.derived = ss.learn(s)
		o := &op{kind: opExec, info: info, start: now, receipt: receipt}
		if c := s.Copy; c != nil && c.ToClient && ss.masker != nil {
			o.copyCSV = c.Format == "csv"
			o.copyHeader = c.Header
			if ss.masker.HasColumns() && c.Source != "" {
				// Learn the COPY's columns first, so masking by column
				// name applies to its rows too. Describing a prepared
				// statement runs nothing: a data-modifying CTE in the
				// source does not run twice.
				probe := ss.nonce + "_probe"
				ss.q.push(&op{kind: opProbe, probeFor: o})
				ss.uw.Send(&pgproto3.Parse{Name: probe, Query: c.Source})
				ss.uw.Send(&pgproto3.Describe{ObjectType: 'S', Name: probe})
				ss.uw.Send(&pgproto3.Close{ObjectType: 'S', Name: probe})
				ss.uw.Send(&pgproto3.Sync{})
			}
		}
		ops = append(ops, o)
	}
	ss.q.push(append(ops, &op{kind: opSync})...)
	return ss.uw.Raw('Q', body)
}

// parse handles an extended-protocol Parse: prepared statements are
// checked when they are prepared, since that is the only time their text
// is seen.
func (ss *pgSession) parse(ctx context.Context, body []byte) error {
	var p pgproto3.Parse
	if err := p.Decode(body); err != nil {
		return fmt.Errorf("decode Parse: %w", err)
	}
	stmts, v, reason := ss.analyze(ctx, p.Query)
	if v.Action == policy.Allow && ss.masker != nil {
		for _, s := range stmts {
			if s.Copy != nil && s.Copy.ToClient {
				v, reason = guard.Verdict{Action: policy.Deny, Rule: "masking", Index: -1, Kind: "copy"},
					"COPY TO STDOUT through the extended protocol cannot be masked; send it as a simple query"
			}
		}
	}
	if v.Action != policy.Allow {
		delete(ss.stmts, p.Name)
		e := ss.deny(stmts, v, reason, true)
		ss.q.push(&op{kind: opParse, denial: e})
		return ss.uw.Send(&pgproto3.Parse{Name: p.Name, Query: ss.nonce})
	}
	info := &stmtInfo{rule: v.Rule, extended: true, review: v.ReviewID()}
	if len(stmts) > 0 {
		info.stmt = stmts[0]
		info.derived = ss.learn(stmts[0])
	}
	ss.stmts[p.Name] = info
	ss.q.push(&op{kind: opParse})
	return ss.uw.Raw('P', body)
}

// upstreamLoop reads the server's messages, masks and records, and
// forwards them to the client.
func (ss *pgSession) upstreamLoop() error {
	for {
		typ, body, err := ss.ur.Next()
		if err != nil {
			return err
		}
		if typ == 'Z' && len(body) == 1 {
			ss.txStatus.Store(uint32(body[0]))
		}
		// The lock is for review notices, the one write to the client
		// the client loop makes; it is never contended otherwise.
		ss.cwMu.Lock()
		err = ss.fromUpstream(typ, body)
		if err == nil && ss.ur.Buffered() == 0 {
			err = ss.cw.Flush()
		}
		ss.cwMu.Unlock()
		if err != nil {
			return err
		}
	}
}

func (ss *pgSession) fromUpstream(typ byte, body []byte) error {
	head := ss.q.peek()
	if head != nil && head.kind == opProbe {
		return ss.probeResponse(head, typ, body)
	}
	switch typ {
	case 'T': // RowDescription
		fields, err := decodeFields(body)
		if err != nil {
			return err
		}
		switch {
		case head != nil && head.kind == opExec:
			head.shape, head.shapeKnown = fields, true
		case head != nil && head.kind == opDescribe:
			ss.q.pop(opDescribe)
			if head.describe == 'P' {
				ss.shapes[head.name] = fields
			}
			if head.swallow {
				return nil
			}
		}
	case 'n': // NoData
		if head != nil && head.kind == opDescribe {
			ss.q.pop(opDescribe)
			if head.describe == 'P' {
				ss.shapes[head.name] = nil
			}
			if head.swallow {
				return nil
			}
		}
	case 'D': // DataRow
		if head != nil && head.kind == opExec {
			head.rows++
			if ss.masker != nil {
				masked, err := ss.maskRow(head, body)
				if err != nil {
					return err
				}
				return ss.cw.Raw(typ, masked)
			}
		}
	case 'C', 's': // CommandComplete, PortalSuspended
		if o := ss.q.pop(opExec); o != nil {
			ss.finish(o, body, typ == 's', "")
		}
	case 'I': // EmptyQueryResponse
		ss.q.pop(opExec)
	case '1':
		ss.q.pop(opParse)
	case '2':
		ss.q.pop(opBind)
	case '3':
		ss.q.pop(opClose)
	case 'H': // CopyOutResponse
		if head != nil && head.kind == opExec {
			head.copyOut = true
			if len(body) > 0 && body[0] != 0 && ss.masker != nil {
				// Binary COPY is refused before it runs; if one gets
				// here anyway, end the session rather than leak it.
				return errors.New("binary COPY output cannot be masked")
			}
		}
	case 'd': // CopyData
		if head != nil && head.kind == opExec && head.copyOut && ss.masker != nil {
			if head.copyHeader {
				// Column names, not data.
				head.copyHeader = false
				break
			}
			return ss.cw.Raw(typ, ss.maskCopy(head, body))
		}
	case 'E':
		var e pgproto3.ErrorResponse
		if err := e.Decode(body); err != nil {
			return fmt.Errorf("decode ErrorResponse: %w", err)
		}
		if head != nil && head.denial != nil {
			e = *head.denial
		} else {
			if head != nil && head.kind == opExec && head.info != nil {
				ss.finish(head, nil, false, e.Code)
			}
			ss.redactError(&e)
		}
		ss.q.dropUntilSync()
		return ss.cw.Send(&e)
	case 'N':
		if ss.masker != nil {
			var e pgproto3.NoticeResponse
			if err := e.Decode(body); err != nil {
				return fmt.Errorf("decode NoticeResponse: %w", err)
			}
			ss.redactError((*pgproto3.ErrorResponse)(&e))
			return ss.cw.Send(&e)
		}
	case 'A':
		if ss.masker != nil {
			var n pgproto3.NotificationResponse
			if err := n.Decode(body); err != nil {
				return fmt.Errorf("decode NotificationResponse: %w", err)
			}
			n.Payload = ss.masker.RedactString(n.Payload)
			return ss.cw.Send(&n)
		}
	case 'S': // ParameterStatus
		ss.noteParameter(body)
	case 'Z':
		ss.q.popThroughSync()
	}
	return ss.cw.Raw(typ, body)
}

// probeResponse consumes the answer to Warden's own column probe.
func (ss *pgSession) probeResponse(head *op, typ byte, body []byte) error {
	switch typ {
	case 'T':
		var rd pgproto3.RowDescription
		if err := rd.Decode(body); err != nil {
			return fmt.Errorf("decode RowDescription: %w", err)
		}
		fields := pgwire.CopyFields(&rd)
		head.probeFor.shape, head.probeFor.shapeKnown = fields, true
	case 'Z':
		ss.q.pop(opProbe)
	case 'S', 'A', 'N':
		// Asynchronous messages are the session's, not the probe's.
		// Route them through the normal path (masking included).
		ss.q.mu.Lock()
		ss.q.ops[0] = &op{kind: opSync}
		ss.q.mu.Unlock()
		err := ss.fromUpstream(typ, body)
		ss.q.mu.Lock()
		ss.q.ops[0] = head
		ss.q.mu.Unlock()
		return err
	}
	return nil
}

// redactError hides detected values in server messages: a unique
// violation's detail quotes the row.
func (ss *pgSession) redactError(e *pgproto3.ErrorResponse) {
	if ss.masker == nil {
		return
	}
	m := ss.masker
	e.Message, e.Detail, e.Hint = m.RedactString(e.Message), m.RedactString(e.Detail), m.RedactString(e.Hint)
	e.Where, e.InternalQuery = m.RedactString(e.Where), m.RedactString(e.InternalQuery)
	if ss.masker.HasColumns() && e.Detail != "" && len(maskedColumnsIn(e.Detail, ss.masker)) > 0 {
		// "Key (ssn)=(...)" quotes a masked column's value.
		e.Detail = "(detail hidden by warden: it quotes a masked column)"
	}
}

// maskedColumnsIn yields the masked column names a "Key (a, b)=(...)"
// detail mentions.
func maskedColumnsIn(detail string, m *masking.Masker) map[string]bool {
	out := map[string]bool{}
	open := bytes.IndexByte([]byte(detail), '(')
	close := bytes.IndexByte([]byte(detail), ')')
	if open < 0 || close < open {
		return out
	}
	for _, c := range bytes.Split([]byte(detail[open+1:close]), []byte(",")) {
		name := string(bytes.ToLower(bytes.Trim(bytes.TrimSpace(c), `"`)))
		if m.Column(name) {
			out[name] = true
		}
	}
	return out
}

// plan computes an exec op's masking plan on its first row.
func (ss *pgSession) plan(o *op, ncols int) *masking.Plan {
	if o.planned {
		return o.plan
	}
	o.planned = true
	fields, known := o.shape, o.shapeKnown
	if !known && o.info != nil && o.info.extended {
		fields, known = ss.shapes[o.name], true
		if fields == nil {
			known = false
		}
	}
	if !known {
		// Fail closed: with no column names every value is masked.
		fields = make([]masking.Field, ncols)
		for i := range fields {
			fields[i] = masking.Field{Name: "?column?", Derived: true}
		}
	}
	fields = append([]masking.Field(nil), fields...)
	for i := range fields {
		if ss.tainted(fields[i].Name) {
			fields[i].Derived = true
		}
		if o.info != nil && i < len(o.info.derived.Positions) && o.info.derived.Positions[i] {
			fields[i].Derived = true
		}
	}
	o.plan = ss.masker.Plan(fields)
	return o.plan
}

// maskRow masks one DataRow body.
func (ss *pgSession) maskRow(o *op, body []byte) ([]byte, error) {
	values, err := pgwire.DecodeDataRowInto(ss.rowValues, body)
	if err != nil {
		return nil, err
	}
	ss.rowValues = values
	p := ss.plan(o, len(values))
	if p == nil || !p.Row(values) {
		return body, nil
	}
	ss.rowOut = pgwire.AppendDataRow(ss.rowOut[:0], values)
	return ss.rowOut, nil
}

// maskCopy masks one COPY TO STDOUT row.
func (ss *pgSession) maskCopy(o *op, line []byte) []byte {
	ncols := bytes.Count(line, []byte{'\t'}) + 1
	if o.copyCSV {
		ncols = bytes.Count(line, []byte{','}) + 1
	}
	if !o.shapeKnown && !ss.masker.HasColumns() {
		// Detectors only: no need to know the columns.
		o.shapeKnown, o.shape = true, make([]masking.Field, ncols)
		for i := range o.shape {
			o.shape[i] = masking.Field{Name: "?column?", Cell: masking.CellText}
		}
	}
	p := ss.plan(o, ncols)
	if p == nil {
		return line
	}
	if o.copyCSV {
		return pgwire.MaskCopyCSV(p, line)
	}
	return pgwire.MaskCopyText(p, line)
}

// finish records how a statement ended, linked to its db.query event.
func (ss *pgSession) finish(o *op, tag []byte, suspended bool, sqlstate string) {
	if o.info == nil {
		return
	}
	r := event.QueryResult{
		RequestID:    o.receipt.ID,
		DurationMS:   float64(time.Since(o.start).Microseconds()) / 1000,
		Rows:         -1,
		RowsReturned: o.rows,
		Suspended:    suspended,
		Error:        sqlstate,
	}
	if tag != nil {
		r.Command = string(bytes.TrimSuffix(tag, []byte{0}))
		if i := strings.LastIndexByte(r.Command, ' '); i >= 0 {
			if n, err := strconv.ParseInt(r.Command[i+1:], 10, 64); err == nil {
				r.Rows = n
			}
		}
	}
	if o.plan != nil {
		r.MaskedColumns = o.plan.MaskedNames()
	}
	ss.s.Audit.Result(o.receipt, event.DBResult, r)
}

// decodeFields turns a RowDescription into masking fields.
func decodeFields(body []byte) ([]masking.Field, error) {
	var rd pgproto3.RowDescription
	if err := rd.Decode(body); err != nil {
		return nil, fmt.Errorf("decode RowDescription: %w", err)
	}
	return pgwire.MaskFields(&rd), nil
}
