package mysql

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/wardenhq/warden/agent/proxy"
	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/pkg/guard"
	"github.com/wardenhq/warden/pkg/masking"
	"github.com/wardenhq/warden/pkg/mysqlguard"
	"github.com/wardenhq/warden/pkg/policy"
	wire "github.com/wardenhq/warden/pkg/protocol/mysql"
)

// stmtInfo is one statement Warden let through, for its record and the
// masking of its results.
type stmtInfo struct {
	stmt     *mysqlguard.Statement
	rule     string // the allow rule that matched, for the record
	prepared bool   // sent with COM_STMT_EXECUTE
}

// op is one statement on its way: its record and how its result went.
type op struct {
	info    *stmtInfo
	receipt proxy.Receipt
	start   time.Time
	rows    int64
	plan    *masking.Plan
}

// Warden's own refusal rules, beside the policy's.
const (
	ruleParse       = "parse"
	ruleLocalInfile = "local-infile"
	ruleKill        = "kill"
	rulePrepare     = "prepare"
	ruleCommand     = "command"
)

// run carries commands until either side closes.
func (ss *session) run(ctx context.Context) error {
	defer close(ss.ended)
	ss.s.OnClose(ss.requestClose)
	defer ss.s.OnClose(nil)
	for {
		_, pkt, err := ss.cr.Next()
		if err != nil {
			if isClosed(err) {
				return nil
			}
			return err
		}
		ss.mu.Lock()
		err = ss.command(ctx, pkt)
		if err != nil && ss.closeReason.Load() != nil && !ss.told {
			// The agent ended the session while this command ran: say
			// so in the command's place.
			ss.told = true
			ss.cw.Write((&wire.ERR{Code: erServerShutdown, State: stateConnectionDone, Message: *ss.closeReason.Load()}).Encode())
			ss.cw.Flush()
		}
		ss.mu.Unlock()
		if errors.Is(err, errQuit) {
			return nil
		}
		if err != nil {
			if isClosed(err) {
				return nil
			}
			return err
		}
	}
}

var errQuit = errors.New("client quit")

func isClosed(err error) bool {
	return err == nil || errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrDeadlineExceeded) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || strings.Contains(err.Error(), "connection reset")
}

// command handles one client command and its whole response.
func (ss *session) command(ctx context.Context, pkt []byte) error {
	ss.cw.Seq = 1
	if len(pkt) == 0 {
		return errors.New("empty command packet")
	}
	switch cmd := pkt[0]; cmd {
	case wire.ComQuit:
		ss.forward(pkt)
		ss.uw.Flush()
		return errQuit
	case wire.ComQuery:
		return ss.query(ctx, string(pkt[1:]))
	case wire.ComStmtPrepare:
		return ss.prepare(ctx, string(pkt[1:]))
	case wire.ComStmtExecute:
		return ss.execute(pkt)
	case wire.ComStmtFetch:
		return ss.fetch(pkt)
	case wire.ComStmtSendLongData:
		return ss.forwardFlush(pkt) // no response
	case wire.ComStmtClose:
		if len(pkt) >= 5 {
			delete(ss.stmts, binary.LittleEndian.Uint32(pkt[1:]))
		}
		return ss.forwardFlush(pkt) // no response
	case wire.ComStmtReset, wire.ComPing, wire.ComStatistics, wire.ComDebug, wire.ComSetOption:
		if err := ss.forwardFlush(pkt); err != nil {
			return err
		}
		return ss.relayOne()
	case wire.ComResetConnection:
		if err := ss.forwardFlush(pkt); err != nil {
			return err
		}
		ss.stmts = map[uint32]*prepared{}
		if err := ss.relayOne(); err != nil {
			return err
		}
		return ss.readLexing() // the session's settings are back to the defaults
	case wire.ComInitDB:
		name := string(pkt[1:])
		req := guard.Request{Kinds: []string{"use"}, Text: "USE `" + strings.ReplaceAll(name, "`", "``") + "`"}
		s := &mysqlguard.Statement{Kinds: req.Kinds, Normalized: req.Text, Fingerprint: "use"}
		if refused := ss.decide(ctx, []*mysqlguard.Statement{s}, []guard.Request{req}); refused {
			return nil
		}
		o, ok := ss.begin(&stmtInfo{stmt: s})
		if !ok {
			return nil
		}
		if err := ss.forwardFlush(pkt); err != nil {
			return err
		}
		_, p, err := ss.ur.Next()
		if err != nil {
			return err
		}
		if len(p) > 0 && p[0] == wire.HeaderOK {
			ss.db = name
		}
		ss.finish(o, p)
		ss.cw.Write(p)
		return ss.cw.Flush()
	case wire.ComFieldList:
		table, _, _ := strings.Cut(string(pkt[1:]), "\x00")
		req := guard.Request{Kinds: []string{"show"}, Tables: []string{strings.ToLower(table)}, Text: "SHOW COLUMNS FROM `" + strings.ReplaceAll(table, "`", "``") + "`"}
		s := &mysqlguard.Statement{Kinds: req.Kinds, Tables: req.Tables, Normalized: req.Text, Fingerprint: "field_list"}
		if ss.decide(ctx, []*mysqlguard.Statement{s}, []guard.Request{req}) {
			return nil
		}
		if err := ss.forwardFlush(pkt); err != nil {
			return err
		}
		for { // column definitions, then EOF or ERR
			_, p, err := ss.ur.Next()
			if err != nil {
				return err
			}
			ss.cw.Write(p)
			if wire.IsEOF(p) || wire.IsERR(p) {
				return ss.cw.Flush()
			}
		}
	case wire.ComProcessKill:
		if len(pkt) < 5 {
			return errors.New("short COM_PROCESS_KILL")
		}
		id := uint64(binary.LittleEndian.Uint32(pkt[1:]))
		if reason := ss.killRefusal(id); reason != "" {
			ss.refuse(nil, event.Decision{Action: event.Deny, Rule: ruleKill, Reason: reason}, erSpecificAccess, stateAccess, reason)
			return nil
		}
		if err := ss.forwardFlush(pkt); err != nil {
			return err
		}
		return ss.relayOne()
	case wire.ComChangeUser:
		msg := "warden: COM_CHANGE_USER is not allowed through Warden: the person behind a connection cannot change; open a new connection"
		ss.refuse(nil, event.Decision{Action: event.Deny, Rule: ruleCommand, Reason: msg}, erNotSupported, stateAccess, msg)
		return nil
	default:
		// Replication (COM_BINLOG_DUMP, COM_REGISTER_SLAVE), MariaDB's
		// bulk execute (its capability is never forwarded), server
		// administration by command (COM_SHUTDOWN, COM_REFRESH,
		// COM_CREATE_DB, COM_DROP_DB, COM_PROCESS_INFO) and anything
		// unknown: all go around statement checks, so none passes.
		msg := fmt.Sprintf("warden: %s is not allowed through Warden; use the SQL statement instead", wire.CommandName(cmd))
		ss.refuse(nil, event.Decision{Action: event.Deny, Rule: ruleCommand, Reason: msg}, erUnknownComError, "08S01", msg)
		return nil
	}
}

func (ss *session) forward(pkt []byte) error {
	ss.uw.Seq = 0
	return ss.uw.Write(pkt)
}

func (ss *session) forwardFlush(pkt []byte) error {
	if err := ss.forward(pkt); err != nil {
		return err
	}
	return ss.uw.Flush()
}

// relayOne relays a one-packet response (OK, ERR, a status string).
func (ss *session) relayOne() error {
	_, p, err := ss.ur.Next()
	if err != nil {
		return err
	}
	if wire.IsERR(p) {
		p = ss.redactERR(p)
	}
	ss.cw.Write(p)
	return ss.cw.Flush()
}

// killRefusal says why KILL of connection id is refused, or "" when it
// may go: only the owner of a connection made through Warden may end it
// or its statement. Through a shared vaulted account, anyone could
// otherwise end anyone's.
func (ss *session) killRefusal(id uint64) string {
	owner, known := ss.codec.owner(ss.upAddr, id)
	switch {
	case !known:
		return fmt.Sprintf("warden: KILL %d refused: connection %d was not opened through Warden", id, id)
	case owner != ss.sub:
		return fmt.Sprintf("warden: KILL %d refused: connection %d belongs to someone else", id, id)
	}
	return ""
}

// analyze parses a text and decides on it. It returns the statements and
// false, or records the refusal, answers the client with Warden's ERR and
// returns true.
func (ss *session) analyze(ctx context.Context, sql string, prepared bool) ([]*mysqlguard.Statement, string, bool) {
	stmts, err := mysqlguard.Analyze(sql, ss.lx)
	if err != nil {
		var pe *mysqlguard.ParseError
		msg := err.Error()
		if errors.As(err, &pe) {
			msg = pe.Msg
		}
		reason := "warden: statement refused: " + msg + " (Warden parses every statement with a MySQL grammar and refuses what it cannot read, MariaDB-only syntax included)"
		ss.refuse(nil, event.Decision{Action: event.Deny, Rule: ruleParse, Reason: reason}, erParse, stateAccess, reason)
		return nil, "", true
	}
	if prepared && len(stmts) != 1 {
		reason := "warden: statement refused: a prepared statement holds exactly one statement"
		ss.refuse(nil, event.Decision{Action: event.Deny, Rule: ruleParse, Reason: reason}, erParse, stateAccess, reason)
		return nil, "", true
	}
	for _, s := range stmts {
		var rule, reason string
		switch {
		case s.LocalInfile:
			rule, reason = ruleLocalInfile, fmt.Sprintf("warden: LOAD DATA LOCAL INFILE denied by rule %q: it would let the server read files from this machine", ruleLocalInfile)
		case s.PrepareFromVariable:
			rule, reason = rulePrepare, fmt.Sprintf("warden: PREPARE denied by rule %q: Warden checks the text of a prepared statement, and a variable hides it; write the text in the PREPARE", rulePrepare)
		case s.Kill != nil:
			if r := ss.killRefusal(s.Kill.ID); r != "" {
				rule, reason = ruleKill, r
			}
		}
		if rule != "" {
			ss.refuseAll(stmts, event.Decision{Action: event.Deny, Rule: rule, Reason: reason}, erSpecificAccess, stateAccess, reason, prepared)
			return nil, "", true
		}
	}
	reqs := mysqlguard.Requests(stmts)
	v := ss.s.Guard.Decide(ctx, reqs, guard.Hold{Off: true})
	if v.Action != policy.Allow {
		ss.refuseVerdict(stmts, v, prepared)
		return nil, "", true
	}
	return stmts, v.Rule, false
}

// decide is analyze's decision for a command Warden describes itself
// (COM_INIT_DB, COM_FIELD_LIST).
func (ss *session) decide(ctx context.Context, stmts []*mysqlguard.Statement, reqs []guard.Request) bool {
	v := ss.s.Guard.Decide(ctx, reqs, guard.Hold{Off: true})
	if v.Action != policy.Allow {
		ss.refuseVerdict(stmts, v, false)
		return true
	}
	return false
}

// refuseVerdict refuses a batch the policy denies, or that a review did
// not let run. The codec does not hold a client while a person decides
// yet: the review is opened (or an earlier approval used) at once, and a
// statement not yet approved is refused with the review's id, to re-run
// once it is.
func (ss *session) refuseVerdict(stmts []*mysqlguard.Statement, v guard.Verdict, prepared bool) {
	what := strings.ToUpper(v.Kind)
	if what == "" {
		what = "statement"
	}
	action, msg := event.Deny, fmt.Sprintf("warden: %s denied by rule %q", what, v.Rule)
	if v.Action == policy.Review {
		action = event.Review
		r := v.Review
		switch {
		case r == nil || r.Outcome == guard.ReviewUnavailable:
			msg = fmt.Sprintf("warden: %s requires review (rule %q), and the review service is unreachable; retry later", what, v.Rule)
		case r.Outcome == guard.ReviewDenied:
			msg = fmt.Sprintf("warden: review %s denied by %s", r.ID, r.By)
			if r.Reason != "" {
				msg += ": " + r.Reason
			}
		default:
			msg = fmt.Sprintf("warden: %s requires review %s (rule %q); re-run it once the review is approved (warden review show %s)", what, r.ID, v.Rule, r.ID)
		}
	}
	ss.refuseAll(stmts, event.Decision{Action: action, Rule: v.Rule, Reason: msg}, erSpecificAccess, stateAccess, msg, prepared)
}

func (ss *session) refuseAll(stmts []*mysqlguard.Statement, dec event.Decision, code uint16, state, msg string, prepared bool) {
	for _, s := range stmts {
		ss.record(&stmtInfo{stmt: s, prepared: prepared}, dec)
	}
	if len(stmts) == 0 {
		ss.record(nil, dec)
	}
	ss.cw.Write((&wire.ERR{Code: code, State: state, Message: msg}).Encode())
	ss.cw.Flush()
}

// refuse records one refused command and answers it with Warden's ERR.
func (ss *session) refuse(info *stmtInfo, dec event.Decision, code uint16, state, msg string) {
	ss.record(info, dec)
	ss.cw.Write((&wire.ERR{Code: code, State: state, Message: msg}).Encode())
	ss.cw.Flush()
}

// record records a refused statement. It does not run whether or not the
// record is stored, so a failure is only logged.
func (ss *session) record(info *stmtInfo, dec event.Decision) {
	if _, err := ss.request(info, dec); err != nil {
		ss.s.Log.Warn().Err(err).Str("rule", dec.Rule).Msg("refused statement not recorded")
	}
}

// request records a statement with the decision on it, before it is
// forwarded. info is nil for a command Warden could not parse.
func (ss *session) request(info *stmtInfo, dec event.Decision) (proxy.Receipt, error) {
	q := event.Query{Database: ss.db, DBUser: ss.user}
	if info != nil && info.stmt != nil {
		s := info.stmt
		q.Statement, q.Fingerprint, q.Kind, q.Tables = s.Normalized, s.Fingerprint, s.Kind(), s.Tables
		q.Protocol = "query"
		if info.prepared {
			q.Protocol = "prepared"
		}
	}
	return ss.s.Audit.Request(event.DBQuery, dec, q)
}

// begin records an allowed statement before it is forwarded. When it
// cannot be recorded and the audit fails closed, the client gets an ERR
// instead and begin returns false: a statement that cannot be recorded
// does not run.
func (ss *session) begin(info *stmtInfo) (*op, bool) {
	r, err := ss.request(info, event.Decision{Action: event.Allow, Rule: info.rule})
	if err != nil {
		ss.s.Log.Debug().Err(err).Msg("statement refused: the audit log cannot record it")
		msg := "warden: the audit log cannot record this statement; refusing"
		var u *proxy.UnrecordedError
		if errors.As(err, &u) {
			msg = fmt.Sprintf("warden: the audit log cannot record this statement (%s); refusing", u.Cause)
		}
		ss.cw.Write((&wire.ERR{Code: erUnrecorded, State: "HY000", Message: msg}).Encode())
		ss.cw.Flush()
		return nil, false
	}
	return &op{info: info, receipt: r, start: time.Now()}, true
}

// query handles COM_QUERY: every statement of the text is checked, the
// whole text is refused if any is, and each is recorded before the text
// goes upstream.
func (ss *session) query(ctx context.Context, sql string) error {
	stmts, rule, refused := ss.analyze(ctx, sql, false)
	if refused {
		return nil
	}
	ops := make([]*op, 0, len(stmts))
	relex := false
	for _, s := range stmts {
		o, ok := ss.begin(&stmtInfo{stmt: s, rule: rule})
		if !ok {
			// Nothing of the text runs. The statements before this one
			// were recorded as allowed and have no db.result: they
			// never reached the server.
			return nil
		}
		ops = append(ops, o)
		relex = relex || s.ChangesLexing || s.Kind() == "execute" || s.Kind() == "call"
	}
	if err := ss.forwardFlush(append([]byte{wire.ComQuery}, sql...)); err != nil {
		return err
	}
	if err := ss.relayResults(ops, false, nil); err != nil {
		return err
	}
	if relex {
		return ss.readLexing()
	}
	return nil
}

// prepare handles COM_STMT_PREPARE: the statement is checked when it is
// prepared, since that is the only time its text is seen.
func (ss *session) prepare(ctx context.Context, sql string) error {
	stmts, rule, refused := ss.analyze(ctx, sql, true)
	if refused {
		return nil
	}
	if err := ss.forwardFlush(append([]byte{wire.ComStmtPrepare}, sql...)); err != nil {
		return err
	}
	_, p, err := ss.ur.Next()
	if err != nil {
		return err
	}
	if wire.IsERR(p) {
		ss.cw.Write(ss.redactERR(p))
		return ss.cw.Flush()
	}
	pok, err := wire.ParseStmtPrepareOK(p)
	if err != nil {
		return err
	}
	ss.cw.Write(p)
	for _, n := range []uint16{pok.Params, pok.Columns} {
		for i := uint16(0); i < n; i++ {
			_, p, err := ss.ur.Next()
			if err != nil {
				return err
			}
			ss.cw.Write(p)
		}
		if n > 0 && ss.caps&wire.ClientDeprecateEOF == 0 {
			_, p, err := ss.ur.Next()
			if err != nil {
				return err
			}
			ss.cw.Write(p)
		}
	}
	ss.stmts[pok.StatementID] = &prepared{info: &stmtInfo{stmt: stmts[0], rule: rule, prepared: true}}
	ss.lastStmt = pok.StatementID
	return ss.cw.Flush()
}

// execute handles COM_STMT_EXECUTE: recorded like a statement of its own;
// its rows are binary.
func (ss *session) execute(pkt []byte) error {
	if len(pkt) < 5 {
		return errors.New("short COM_STMT_EXECUTE")
	}
	id := binary.LittleEndian.Uint32(pkt[1:])
	if id == lastPrepared {
		id = ss.lastStmt // MariaDB: the statement prepared last
	}
	ps := ss.stmts[id]
	if ps == nil {
		// Not prepared through Warden, so not checked, and the server
		// does not have it either: answer as it would.
		ss.cw.Write((&wire.ERR{Code: erUnknownStmt, State: "HY000", Message: fmt.Sprintf("Unknown prepared statement handler (%d) given to mysqld_stmt_execute", id)}).Encode())
		return ss.cw.Flush()
	}
	o, ok := ss.begin(ps.info)
	if !ok {
		return nil
	}
	ops := []*op{o}
	if err := ss.forwardFlush(pkt); err != nil {
		return err
	}
	if err := ss.relayResults(ops, true, ps); err != nil {
		return err
	}
	if ps.info.stmt.ChangesLexing {
		return ss.readLexing()
	}
	return nil
}

// lastPrepared is the statement id MariaDB reads as "the statement
// prepared last", for a prepare and execute sent together.
const lastPrepared = 0xffffffff

// erUnknownStmt is ER_UNKNOWN_STMT_HANDLER.
const erUnknownStmt = 1243

// fetch handles COM_STMT_FETCH: rows of an open cursor, masked as its
// statement's.
func (ss *session) fetch(pkt []byte) error {
	if len(pkt) < 5 {
		return errors.New("short COM_STMT_FETCH")
	}
	ps := ss.stmts[binary.LittleEndian.Uint32(pkt[1:])]
	if err := ss.forwardFlush(pkt); err != nil {
		return err
	}
	var cols []*wire.Column
	var info *stmtInfo
	if ps != nil {
		cols, info = ps.cursor, ps.info
	}
	o := &op{info: info}
	plan := ss.plan(o, cols, true)
	for {
		_, p, err := ss.ur.Next()
		if err != nil {
			return err
		}
		switch {
		case wire.IsERR(p):
			ss.cw.Write(ss.redactERR(p))
			return ss.cw.Flush()
		case wire.IsEOF(p):
			ss.cw.Write(p)
			return ss.cw.Flush()
		}
		if plan != nil {
			if p, err = ss.maskRow(plan, p, cols, true); err != nil {
				return err
			}
		}
		ss.cw.Write(p)
	}
}

// relayResults relays the response to a text (one result per statement,
// in order) or to an execute, masking rows and recording each result.
func (ss *session) relayResults(ops []*op, binaryRows bool, ps *prepared) error {
	next := 0
	current := func() *op {
		if next < len(ops) {
			return ops[next]
		}
		return &op{}
	}
	for {
		o := current()
		_, p, err := ss.ur.Next()
		if err != nil {
			return err
		}
		if len(p) == 0 {
			return errors.New("empty response packet")
		}
		switch p[0] {
		case wire.HeaderERR:
			// An error ends the whole text: later statements never run.
			ss.finish(o, p)
			ss.cw.Write(ss.redactERR(p))
			return ss.cw.Flush()
		case wire.HeaderOK:
			ss.finish(o, p)
			next++
			ss.cw.Write(p)
			if !ss.more(p) {
				return ss.cw.Flush()
			}
			continue
		case wire.HeaderLocalInfile:
			// Never asked for: the capability is not forwarded and LOAD
			// DATA LOCAL is refused. A server asking anyway gets no file.
			ss.s.Log.Warn().Msg("server asked for a local file; refused")
			ss.uw.Seq = ss.ur.Seq + 1
			ss.uw.Write(nil) // an empty packet: no file
			if err := ss.uw.Flush(); err != nil {
				return err
			}
			continue
		}
		n, err := wire.ColumnCount(p)
		if err != nil {
			return err
		}
		ss.cw.Write(p)
		cols := make([]*wire.Column, 0, n)
		for i := uint64(0); i < n; i++ {
			_, p, err := ss.ur.Next()
			if err != nil {
				return err
			}
			c, err := wire.ParseColumn(p)
			if err != nil {
				return err
			}
			cols = append(cols, c)
			ss.cw.Write(p)
		}
		plan := ss.plan(o, cols, binaryRows)
		o.plan = plan
		if ss.caps&wire.ClientDeprecateEOF == 0 {
			_, p, err := ss.ur.Next()
			if err != nil {
				return err
			}
			ss.cw.Write(p)
			if wire.IsEOF(p) && wire.EOFStatus(p, ss.caps&^wire.ClientDeprecateEOF)&wire.StatusCursorExists != 0 {
				// A cursor: the rows come with COM_STMT_FETCH.
				if ps != nil {
					ps.cursor = cols
				}
				ss.finish(o, nil)
				return ss.cw.Flush()
			}
		}
		for {
			_, p, err := ss.ur.Next()
			if err != nil {
				return err
			}
			if wire.IsERR(p) {
				ss.finish(o, p)
				ss.cw.Write(ss.redactERR(p))
				return ss.cw.Flush()
			}
			if wire.IsEOF(p) {
				status := wire.EOFStatus(p, ss.caps)
				if status&wire.StatusCursorExists != 0 && ps != nil {
					ps.cursor = cols
				}
				ss.finish(o, p)
				next++
				ss.cw.Write(p)
				if status&wire.StatusMoreResultsExists == 0 {
					return ss.cw.Flush()
				}
				break
			}
			o.rows++
			if plan != nil {
				if p, err = ss.maskRow(plan, p, cols, binaryRows); err != nil {
					return err
				}
			}
			ss.cw.Write(p)
			if ss.ur.Buffered() == 0 {
				if err := ss.cw.Flush(); err != nil {
					return err
				}
			}
		}
	}
}

// more reports whether an OK says more results follow.
func (ss *session) more(ok []byte) bool {
	o, err := wire.ParseOK(ok, ss.caps)
	return err == nil && o.Status&wire.StatusMoreResultsExists != 0
}

// plan computes the masking of a result set from its column definitions.
// A column is masked whole when its name, or the table column it reads
// (org_name: an alias does not hide it), is masked. An expression (no
// org_name) is masked whole when it may compute from a masked column:
// when its own select-list entry reads one, or, where the statement's
// result columns cannot be told apart (see mysqlguard.Statement.Outputs),
// when the statement reads one anywhere.
func (ss *session) plan(o *op, cols []*wire.Column, binaryRows bool) *masking.Plan {
	if ss.masker == nil {
		return nil
	}
	anyMasked := func(names []string) bool {
		for _, c := range names {
			if ss.masker.Column(c) {
				return true
			}
		}
		return false
	}
	var outputs [][]string
	readsMasked := ss.masker.HasColumns() // statement unknown: assume the worst
	if o.info != nil && o.info.stmt != nil {
		readsMasked = anyMasked(o.info.stmt.Columns)
		if len(o.info.stmt.Outputs) == len(cols) {
			outputs = o.info.stmt.Outputs
		}
	}
	fields := make([]masking.Field, len(cols))
	for i, c := range cols {
		fields[i] = c.Field(binaryRows)
		expr := c.OrgName == ""
		switch {
		case ss.masker.Column(strings.ToLower(c.OrgName)):
			fields[i].Derived = true
		case expr && outputs != nil:
			fields[i].Derived = anyMasked(outputs[i])
		case expr:
			fields[i].Derived = readsMasked
		}
	}
	return ss.masker.Plan(fields)
}

// maskRow masks one row packet.
func (ss *session) maskRow(plan *masking.Plan, p []byte, cols []*wire.Column, binaryRows bool) ([]byte, error) {
	if binaryRows {
		values, err := wire.DecodeBinaryRow(p, cols)
		if err != nil {
			return nil, err
		}
		if !plan.Row(values) {
			return p, nil
		}
		return wire.AppendBinaryRow(make([]byte, 0, len(p)+16), cols, values), nil
	}
	values, err := wire.DecodeTextRow(p, len(cols))
	if err != nil {
		return nil, err
	}
	if !plan.Row(values) {
		return p, nil
	}
	return wire.AppendTextRow(make([]byte, 0, len(p)+16), values), nil
}

// redactERR hides detected values in a server error: a duplicate-key
// error quotes the row.
func (ss *session) redactERR(p []byte) []byte {
	if ss.masker == nil {
		return p
	}
	e, err := wire.ParseERR(p, ss.caps)
	if err != nil {
		return p
	}
	e.Message = ss.masker.RedactString(e.Message)
	if ss.masker.HasColumns() && e.Code == 1062 {
		// "Duplicate entry '...' for key '...'" quotes a key's value,
		// which may be a masked column's.
		key := ""
		if i := strings.LastIndex(e.Message, "for key"); i >= 0 {
			key = " " + e.Message[i:]
		}
		e.Message = "Duplicate entry (value hidden by warden)" + key
	}
	return e.Encode()
}

// finish records how a statement ended, from its last packet (OK, EOF or
// ERR), linked to its db.query event.
func (ss *session) finish(o *op, last []byte) {
	if o == nil || o.info == nil {
		return
	}
	r := event.QueryResult{
		RequestID:    o.receipt.ID,
		DurationMS:   float64(time.Since(o.start).Microseconds()) / 1000,
		Rows:         -1,
		RowsReturned: o.rows,
		Command:      strings.ToUpper(o.info.stmt.Kind()),
	}
	switch {
	case wire.IsERR(last):
		if e, err := wire.ParseERR(last, ss.caps); err == nil {
			r.Error = e.State
		}
	case len(last) > 0 && last[0] == wire.HeaderOK:
		if ok, err := wire.ParseOK(last, ss.caps); err == nil {
			r.Rows = int64(ok.AffectedRows)
		}
		if db := o.info.stmt.UseDB; db != "" {
			ss.db = db // later records name the database in use
		}
	}
	if o.plan != nil {
		r.MaskedColumns = o.plan.MaskedNames()
	}
	ss.s.Audit.Result(o.receipt, event.DBResult, r)
}
